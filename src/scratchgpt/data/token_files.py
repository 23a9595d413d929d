"""Token files: a tokenized corpus on disk, read back memory-mapped.

A token file is a 1-D NumPy ``.npy`` array, so its dtype and length travel with it: uint16
when every id fits (vocabularies up to 65,536 tokens, GPT-2's included), else uint32. Reading
it with ``mmap_mode="r"`` maps the file into memory instead of loading it, so a corpus larger
than RAM trains fine: the operating system pages in only the windows being used.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds ids ``0 .. vocab_size - 1``."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def write_token_file(path: str | Path, chunks: Iterable[np.ndarray], vocab_size: int) -> Path:
    """Write ``chunks`` of ids one after the other as one ``.npy`` file, atomically.

    The total length is not known up front, so the ids stream into a temporary file behind room
    for the ``.npy`` header, and the header, which holds the length, is written last. The
    temporary file has a name of its own in the same directory and is renamed over ``path`` only
    once complete and synced to disk: neither a crash nor a second process writing the same file
    can leave a half-written token file behind.
    """
    path = Path(path)
    dtype = token_dtype(vocab_size)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_npy_header(dtype, 0))
            length = 0
            for chunk in chunks:
                chunk = np.asarray(chunk)
                if chunk.size and (chunk.min() < 0 or chunk.max() >= vocab_size):
                    raise ValueError(f"token id out of range 0..{vocab_size - 1} in {path}")
                f.write(chunk.astype(dtype, copy=False).tobytes())
                length += chunk.size
            f.seek(0)
            f.write(_npy_header(dtype, length))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def _npy_header(dtype: np.dtype, length: int) -> bytes:
    """The ``.npy`` header of a 1-D array. NumPy pads it so that the length can grow in place:
    its size does not depend on ``length``."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header,
        {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (length,)},
    )
    return header.getvalue()


def read_token_file(path: str | Path) -> np.ndarray:
    """The ids in ``path``, memory-mapped (nothing is read until it is used)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"token file not found: {path}")
    tokens = np.load(path, mmap_mode="r")
    if tokens.ndim != 1 or tokens.dtype not in (np.uint16, np.uint32):
        raise ValueError(f"{path} is not a token file (a 1-D uint16/uint32 array)")
    return tokens
