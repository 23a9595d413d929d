"""A Hugging Face checkpoint's weights: ``model.safetensors``, or shards, read tensor by tensor.

A small model is one ``model.safetensors``; a big one is split into shards
(``model-00001-of-00002.safetensors``, ...) and ``model.safetensors.index.json``'s
``weight_map`` says which shard holds each tensor. :class:`SafetensorsCheckpoint` opens them
all and reads one tensor when it is looked up, in the dtype asked (``--dtype``), so that
converting a checkpoint holds at most the converted weights plus the tensor being read.

Each tensor is read with ``pread`` into fresh memory (safetensors >= 0.8). Memory-mapping the
files instead keeps every page that was read resident for as long as one tensor of the file
lives, on top of the copies the conversion makes (our fused ``qkv`` and ``fc``), about 1.4x
the weights; reading costs one copy per tensor, which the page cache makes cheap.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)


def resolve_dtype(name: str, device: torch.device | str = "cpu") -> torch.dtype:
    """The dtype ``--dtype name`` asks for on ``device``. ``auto`` is bfloat16 on a GPU that
    computes in it and float32 elsewhere: a CPU computes bfloat16 far slower than float32."""
    if name == "auto":
        device = torch.device(device)
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose {', '.join(DTYPE_CHOICES)}")
    return DTYPES[name]


def safe_open_file(path: Path) -> Any:
    """``safe_open`` reading each tensor with ``pread`` into fresh memory (safetensors >= 0.8);
    older versions only memory-map."""
    try:
        return safe_open(path, framework="pt", backend="pread")
    except TypeError:
        return safe_open(path, framework="pt")


def shard_files(directory: Path) -> dict[str, Path]:
    """Which file holds each tensor of ``directory``'s checkpoint (``{name: file}``), from
    ``model.safetensors.index.json`` if there is one, else all of ``model.safetensors``'s.
    Errors name the file that is missing or wrong."""
    index = directory / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except json.JSONDecodeError as exc:
            raise ValueError(f"{index} line {exc.lineno}: not valid JSON ({exc.msg})") from None
        except (KeyError, TypeError):
            raise ValueError(f"{index}: expected a JSON object with a \"weight_map\" "
                             "({tensor name: shard file})") from None
        files = {name: directory / shard for name, shard in weight_map.items()}
        for shard in sorted(set(files.values())):
            if not shard.is_file():
                raise FileNotFoundError(f"{index} names the shard {shard.name}, which is missing "
                                        f"from {directory}; download the model again")
        return files
    single = directory / SINGLE_FILE
    if not single.is_file():
        raise FileNotFoundError(f"{directory} has config.json but no weights: expected "
                                f"{SINGLE_FILE} or {INDEX_FILE} with its shards")
    with safe_open_file(single) as f:
        return dict.fromkeys(f.keys(), single)


class SafetensorsCheckpoint(Mapping[str, torch.Tensor]):
    """The tensors of a model directory's safetensors files, each read (and cast to ``dtype``)
    only when it is looked up. Use it as a context manager: it keeps the files open."""

    def __init__(self, directory: str | Path, dtype: torch.dtype) -> None:
        self.directory = Path(directory)
        self.dtype = dtype
        self._files = shard_files(self.directory)
        self._stack = ExitStack()
        self._open: dict[Path, Any] = {}

    def __enter__(self) -> SafetensorsCheckpoint:
        for path in sorted(set(self._files.values())):
            handle = self._stack.enter_context(safe_open_file(path))
            held = set(handle.keys())
            missing = [n for n, p in self._files.items() if p == path and n not in held]
            if missing:
                self._stack.close()
                raise KeyError(f"{self.directory / INDEX_FILE} places {missing[0]!r} in "
                               f"{path.name}, which does not hold it")
            self._open[path] = handle
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        self._open.clear()

    def __getitem__(self, name: str) -> torch.Tensor:
        tensor = self._open[self._files[name]].get_tensor(name)
        return tensor.to(self.dtype)  # no copy when the file holds this dtype already

    def __contains__(self, name: object) -> bool:  # Mapping's default would read the tensor
        return name in self._files

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)
