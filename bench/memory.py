"""Memory for the benchmarks: what a training step keeps, counted and measured in a fresh process.

Two figures, as the benchmarks print them:

- **tensors**: the bytes of the weights, gradients and optimizer state, counted by summing the
  tensors (:func:`tensor_bytes`; a storage shared by several tensors counts once, and a sharded
  ``DTensor`` counts the piece this process holds);
- **peak** (:class:`PeakMemory`): on CUDA ``torch.cuda.max_memory_allocated``; on CPU the peak
  resident memory (``VmHWM``) above the resident memory when the measurement began (after the
  imports), which adds the activations and what the allocator keeps.

A process's peak never comes down, so each contender is measured in a process of its own:
:func:`run_child` starts one (or ``torchrun``'s several), and each reports its figures with
:func:`report`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPORT_DIR = "BENCH_REPORT_DIR"  # where run_child's processes write their reports


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU does not)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_bytes(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak) of this process, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_kind(device: torch.device) -> str:
    """What :class:`PeakMemory` measures on ``device``, for a table's caption."""
    return ("torch.cuda.max_memory_allocated" if device.type == "cuda" else
            "peak RSS (VmHWM) above the RSS after the imports")


class PeakMemory:
    """This process's peak memory from :meth:`reset` on (see :func:`peak_kind`). Made after
    the imports: on CPU the resident memory then is the baseline, so that the peak counts the
    model, its training state and the step, not the libraries."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.baseline = rss_bytes("VmRSS") if device.type == "cpu" else 0

    def reset(self) -> None:
        """Forget the peak so far (what building the model took): it restarts from now."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS now

    def peak(self) -> int:
        synchronize(self.device)
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return rss_bytes("VmHWM") - self.baseline


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the storages under ``tensors``, each once (tied weights, views of one buffer);
    of a ``DTensor``, the storage of this process's piece (``to_local``)."""
    seen: dict[int, int] = {}
    for t in tensors:
        local = t.to_local() if hasattr(t, "to_local") else t  # a DTensor: this piece
        storage = local.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The tensors of the optimizer's state (AdamW: two moments and a step count per weight)."""
    return [v for state in optimizer.state.values() for v in state.values()
            if isinstance(v, torch.Tensor)]


def tensor_bytes(model: nn.Module, *optimizers: torch.optim.Optimizer) -> int:
    """Bytes of ``model``'s weights, their gradients and the optimizers' state, each storage
    once."""
    params = list(model.parameters())
    tensors = [*params, *(p.grad for p in params if p.grad is not None)]
    for optimizer in optimizers:
        tensors += optimizer_tensors(optimizer)
    return storage_bytes(tensors)


def report(figures: dict[str, Any]) -> None:
    """In a process that :func:`run_child` started: hand ``figures`` to the parent (one file
    per process, named by its torchrun ``RANK``)."""
    rank = os.environ.get("RANK", "0")
    Path(os.environ[REPORT_DIR], f"{rank}.json").write_text(json.dumps(figures))


def run_child(script: str | Path, argv: list[str], *,
              launcher: list[str] | None = None) -> list[dict[str, Any]]:
    """Run ``python [launcher] script argv`` in fresh processes and return what each
    :func:`report`-ed, in rank order. ``launcher``: the module options before the script, as
    ``["-m", "torch.distributed.run", "--nproc-per-node", "2"]``. A process that fails stops
    the benchmark with the end of its output."""
    with tempfile.TemporaryDirectory() as reports:
        command = [sys.executable, *(launcher or []), str(script), *argv]
        done = subprocess.run(command, capture_output=True, text=True,
                              env={**os.environ, REPORT_DIR: reports})
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n"
                             f"{(done.stdout + done.stderr)[-4000:]}")
        files = sorted(Path(reports).glob("*.json"), key=lambda path: int(path.stem))
        if not files:
            raise SystemExit(f"{' '.join(command)} reported nothing:\n{done.stdout[-4000:]}")
        return [json.loads(path.read_text()) for path in files]
