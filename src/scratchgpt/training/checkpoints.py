"""Checkpoints that survive crashes and resume a run bit for bit, and the weight I/O they use.

Layout of ``RUN_DIR/checkpoints/``::

    step-00000200/
        model.safetensors   the weights (safe to load: no pickle)
        state.pt            optimizer, step, RNG states, data position (torch.load weights_only)
        meta.json           step, validation loss, sha256 of the two files above
    best -> a directory like the above, for the lowest validation loss so far

A checkpoint is written into a temporary directory, every file fsynced, and only then renamed
into place; a crash at any moment leaves either the old set or the new one, never half of one.
``meta.json`` is written last and lists checksums, so a truncated or altered file is caught on
load with a message naming it. A write that fails (a full disk, most often) removes what it
wrote and says which file it was writing, on which device, and which checkpoint is the last good
one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from scratchgpt.training.errors import CheckpointError

WEIGHTS = "model.safetensors"
STATE = "state.pt"
META = "meta.json"
BEST = "best"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class Checkpoint:
    """What a checkpoint directory holds, loaded."""

    path: Path
    step: int
    val_loss: float | None
    weights: dict[str, torch.Tensor]
    state: dict[str, Any]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointWriteError(CheckpointError):
    """A checkpoint that could not be written (``disk_full``: for want of space); what it had
    written is removed."""

    def __init__(self, message: str, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full


class _WriteFailed(Exception):
    """Raised inside :func:`_write_dir`: the file that could not be written, and whether the
    device it is on is full."""

    def __init__(self, path: Path, disk_full: bool) -> None:
        super().__init__(str(path))
        self.path = path
        self.disk_full = disk_full


def _no_space_left(error: BaseException, directory: Path, needed: int) -> bool:
    """Whether ``error`` came from a full disk. An ``OSError`` says so (``ENOSPC``); torch.save
    and safetensors report it in their own words, so there the free space decides: less than
    the ``needed`` bytes left, measured before the partial files are removed."""
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    try:
        return shutil.disk_usage(directory).free < needed
    except OSError:
        return False


def device_of(path: Path) -> str:
    """The filesystem ``path`` is on, for people: ``/dev/sda1 (mounted at /)``, or the mount
    point alone where ``/proc/mounts`` does not say."""
    mount = path.resolve()
    while not mount.exists() or not os.path.ismount(mount):
        mount = mount.parent
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        lines = []
    sources = [fields[0] for fields in (line.split() for line in lines)
               if len(fields) > 1 and fields[1] == str(mount)]
    return f"{sources[-1]} (mounted at {mount})" if sources else f"the disk mounted at {mount}"


def _write_dir(target: Path, weights: dict[str, torch.Tensor], state: dict[str, Any],
               meta: dict[str, Any]) -> None:
    """Write a checkpoint directory atomically: temp dir, fsync, rename. A failure removes the
    temp dir and raises :class:`_WriteFailed` naming the file (under ``target``) being written."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
    writing = target
    try:
        tmp.mkdir(parents=True)
        writing = target / WEIGHTS
        save_file(weights, tmp / WEIGHTS)
        writing = target / STATE
        torch.save(state, tmp / STATE)
        writing = target / META
        meta = {**meta, "sha256": {name: _sha256(tmp / name) for name in (WEIGHTS, STATE)}}
        (tmp / META).write_text(json.dumps(meta, indent=2))
        for name in (WEIGHTS, STATE, META):
            _fsync(tmp / name)
        _fsync(tmp)
        writing = target
        old = target.with_name(f".{target.name}.old")
        if target.exists():  # only "best" is ever replaced; step directories are new
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        tmp.rename(target)
        _fsync(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    except (OSError, RuntimeError, SafetensorError) as err:  # torch.save: RuntimeError
        needed = sum(t.numel() * t.element_size() for t in weights.values())
        full = _no_space_left(err, target.parent, needed)  # before the partial files go
        shutil.rmtree(tmp, ignore_errors=True)
        raise _WriteFailed(writing, full) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def unique_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with tied tensors stored once (safetensors refuses shared memory)."""
    seen: set[int] = set()
    weights = {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            weights[name] = tensor
    return weights


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Load ``weights`` (as written by :func:`unique_weights`), naming any mismatched tensor."""
    expected = model.state_dict()
    for name, tensor in weights.items():
        if name not in expected:
            raise ValueError(f"{source}: unexpected tensor {name!r}; is it from another model?")
        if tensor.shape != expected[name].shape:
            raise ValueError(
                f"{source}: tensor {name!r} has shape {tuple(tensor.shape)}, the model expects "
                f"{tuple(expected[name].shape)}: the checkpoint is from a model of another shape"
            )
    missing = set(unique_weights(model)) - set(weights)
    if missing:
        raise ValueError(f"{source}: missing tensor(s) {', '.join(sorted(missing))}")
    model.load_state_dict(weights, strict=False)


def step_dirs(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    """Complete step checkpoints, oldest first."""
    if not checkpoint_dir.is_dir():
        return []
    found = []
    for child in checkpoint_dir.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / META).exists():
            found.append((int(match.group(1)), child))
    return sorted(found)


def save_checkpoint(
    checkpoint_dir: Path,
    *,
    step: int,
    weights: dict[str, torch.Tensor],
    state: dict[str, Any],
    val_loss: float | None,
    keep_last: int,
    is_best: bool,
) -> Path:
    """Save ``step``; keep the newest ``keep_last`` step checkpoints and the best one."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    meta = {"step": step, "val_loss": val_loss}
    target = checkpoint_dir / f"step-{step:08d}"
    try:
        _write_dir(target, weights, state, meta)
        if is_best:
            _write_dir(checkpoint_dir / BEST, weights, state, meta)
    except _WriteFailed as failed:
        error = failed.__cause__
        last = resume_checkpoint(checkpoint_dir)
        good = (f"the last good checkpoint is {last}, intact" if last else
                "no checkpoint was written before this one")
        if failed.disk_full:
            raise CheckpointWriteError(f"no space left on {device_of(failed.path)} writing "
                                       f"{failed.path}; {good}", disk_full=True) from error
        raise CheckpointWriteError(f"could not write {failed.path} ({error}); {good}") from error
    for _, old in step_dirs(checkpoint_dir)[:-keep_last]:
        shutil.rmtree(old)
    return target


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load and verify one checkpoint directory."""
    meta_path = path / META
    if not meta_path.exists():
        raise CheckpointError(f"{path} is not a complete checkpoint: {META} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{meta_path} is corrupted: {err}") from None
    checksums = meta.get("sha256") if isinstance(meta, dict) else None
    if not isinstance(checksums, dict) or not {WEIGHTS, STATE} <= checksums.keys():
        raise CheckpointError(
            f"{meta_path} lists no sha256 for {WEIGHTS} and {STATE}, so the checkpoint cannot "
            "be verified; it was not written by scratchgpt's save_checkpoint, or was edited. "
            "Resume from another checkpoint by deleting this directory"
        )
    for name, expected in checksums.items():
        file = path / name
        if not file.exists():
            raise CheckpointError(f"{file} is missing")
        if _sha256(file) != expected:
            raise CheckpointError(
                f"{file} is corrupted or truncated (its sha256 differs from {META}); "
                "resume from an earlier checkpoint by deleting this directory"
            )
    try:
        weights = load_file(path / WEIGHTS, device=str(map_location))
        state = torch.load(path / STATE, map_location=map_location, weights_only=True)
    except (SafetensorError, RuntimeError, OSError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from None
    return Checkpoint(path, int(meta["step"]), meta.get("val_loss"), weights, state)


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest complete step checkpoint, or None."""
    found = step_dirs(checkpoint_dir)
    return found[-1][1] if found else None


def resume_checkpoint(checkpoint_dir: Path) -> Path | None:
    """Where a run resumes: the newest step checkpoint, or ``best`` where it is newer (or
    the only one left); None if there is neither."""
    latest = latest_checkpoint(checkpoint_dir)
    best = checkpoint_dir / BEST
    if not (best / META).exists():
        return latest
    if latest is None or _meta_step(best) > _meta_step(latest):
        return best
    return latest


def _meta_step(path: Path) -> int:
    try:
        return int(json.loads((path / META).read_text())["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path / META} is corrupted: {err}") from None
