"""Token files: a tokenized corpus on disk, read back memory-mapped.

A token file is a 1-D NumPy ``.npy`` array, so its dtype and length travel with it: uint16
when every id fits (vocabularies up to 65,536 tokens, GPT-2's included), else uint32. Reading
it with ``mmap_mode="r"`` maps the file into memory instead of loading it, so a corpus larger
than RAM trains fine: the operating system pages in only the windows being used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds ids ``0 .. vocab_size - 1``."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def write_token_file(path: str | Path, chunks: Iterable[np.ndarray], vocab_size: int) -> Path:
    """Write ``chunks`` of ids one after the other as one ``.npy`` file, atomically.

    The chunks stream through a raw temporary file (the total length is not known up front),
    which is then copied block by block under an ``.npy`` header and renamed into place: a
    crash leaves no half-written token file behind.
    """
    path = Path(path)
    dtype = token_dtype(vocab_size)
    raw = path.with_name(path.name + ".raw.tmp")
    tmp = path.with_name(path.name + ".tmp")
    try:
        length = 0
        with raw.open("wb") as f:
            for chunk in chunks:
                chunk = np.asarray(chunk)
                if chunk.size and (chunk.min() < 0 or chunk.max() >= vocab_size):
                    raise ValueError(f"token id out of range 0..{vocab_size - 1} in {path}")
                f.write(chunk.astype(dtype, copy=False).tobytes())
                length += chunk.size
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(length,))
        source = np.memmap(raw, dtype=dtype, mode="r", shape=(length,)) if length else out
        block = 1 << 24
        for start in range(0, length, block):
            out[start : start + block] = source[start : start + block]
        out.flush()
        del out, source
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        raw.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return path


def read_token_file(path: str | Path) -> np.ndarray:
    """The ids in ``path``, memory-mapped (nothing is read until it is used)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"token file not found: {path}")
    tokens = np.load(path, mmap_mode="r")
    if tokens.ndim != 1 or tokens.dtype not in (np.uint16, np.uint32):
        raise ValueError(f"{path} is not a token file (a 1-D uint16/uint32 array)")
    return tokens
