"""Checkpoints that survive crashes and resume a run bit for bit, and the weight I/O they use.

Layout of ``RUN_DIR/checkpoints/``::

    step-00000200/
        model.safetensors   the weights (safe to load: no pickle)
        state.pt            optimizer, step, RNG states, data position (torch.load weights_only)
        meta.json           step, validation loss, sha256 of the two files above
    best -> a directory like the above, for the lowest validation loss so far

A run sharded with FSDP (:mod:`.sharded_checkpoints`) writes, instead of ``model.safetensors``,
``model/`` and ``optimizer/``: one safetensors file per process holding its pieces, and where
each sits in the whole. Loading them for anything but training puts the pieces together
(:func:`read_shards`), so every loader reads either kind.

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
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from scratchgpt.training.errors import CheckpointError

WEIGHTS = "model.safetensors"
MODEL_SHARDS = "model"  # a sharded checkpoint's weights: one safetensors file per process
OPTIMIZER_SHARDS = "optimizer"  # and its optimizer state
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


def no_space_left(error: BaseException, directory: Path, needed: int) -> bool:
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


def files_under(directory: Path) -> list[str]:
    """Every file under ``directory``, as sorted paths relative to it (``model/shard-...``)."""
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*")
                  if path.is_file())


def seal(tmp: Path, target: Path, meta: dict[str, Any]) -> None:
    """Finish a checkpoint written into ``tmp``: ``meta.json`` with the sha256 of every file,
    everything fsynced, then ``tmp`` renamed to ``target`` (an older ``target`` replaced only
    once the new one is whole)."""
    names = files_under(tmp)
    meta = {**meta, "sha256": {name: _sha256(tmp / name) for name in names}}
    (tmp / META).write_text(json.dumps(meta, indent=2))
    for name in [*names, META]:
        _fsync(tmp / name)
    for directory in {(tmp / name).parent for name in names} | {tmp}:
        _fsync(directory)
    swap_into_place(tmp, target)


def swap_into_place(tmp: Path, target: Path) -> None:
    """Rename the whole directory ``tmp`` to ``target``; an older ``target`` is set aside
    first and removed only once the new one is in place."""
    old = target.with_name(f".{target.name}.old")
    if target.exists():  # only "best" is ever replaced; step directories are new
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    tmp.rename(target)
    _fsync(target.parent)
    shutil.rmtree(old, ignore_errors=True)


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
        seal(tmp, target, meta)
    except (OSError, RuntimeError, SafetensorError) as err:  # torch.save: RuntimeError
        needed = sum(t.numel() * t.element_size() for t in weights.values())
        full = no_space_left(err, target.parent, needed)  # before the partial files go
        shutil.rmtree(tmp, ignore_errors=True)
        raise _WriteFailed(writing, full) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def tied_names(model: nn.Module) -> set[str]:
    """The names under which a parameter appears a second time (GPT-2's output head is its
    token embedding: ``out_head.weight`` is ``tok_emb.weight``)."""
    first: dict[int, str] = {}
    tied = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if first.setdefault(id(param), name) != name:
            tied.add(name)
    return tied


def unique_weights(model: nn.Module, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """The state dict (``state``, else ``model.state_dict()``) with tied tensors stored once:
    safetensors refuses two names for one memory."""
    tied = tied_names(model)
    state = model.state_dict() if state is None else state
    return {name: tensor for name, tensor in state.items() if name not in tied}


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
    layout: dict[str, int] | None = None,
) -> Path:
    """Save ``step``; keep the newest ``keep_last`` step checkpoints and the best one.
    ``layout``: the run's ``world_size`` and ``global_batch``, for ``meta.json``."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    meta = {"step": step, "val_loss": val_loss, **(layout or {})}
    target = checkpoint_dir / f"step-{step:08d}"
    try:
        _write_dir(target, weights, state, meta)
        if is_best:
            _write_dir(checkpoint_dir / BEST, weights, state, meta)
    except _WriteFailed as failed:
        error = failed.__cause__
        raise write_error(checkpoint_dir, failed.path, failed.disk_full, error) from error
    prune(checkpoint_dir, keep_last)
    return target


def write_error(checkpoint_dir: Path, path: Path, disk_full: bool,
                cause: BaseException | None) -> CheckpointWriteError:
    """The error for a checkpoint that could not be written at ``path`` for ``cause``: what
    failed, and which checkpoint is the last good one."""
    last = resume_checkpoint(checkpoint_dir)
    good = (f"the last good checkpoint is {last}, intact" if last else
            "no checkpoint was written before this one")
    if disk_full:
        return CheckpointWriteError(f"no space left on {device_of(path)} writing {path}; "
                                    f"{good}", disk_full=True)
    return CheckpointWriteError(f"could not write {path} ({cause}); {good}")


def prune(checkpoint_dir: Path, keep_last: int) -> None:
    """Remove all but the newest ``keep_last`` step checkpoints (``best`` stays)."""
    for _, old in step_dirs(checkpoint_dir)[:-keep_last]:
        shutil.rmtree(old)


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check a checkpoint directory against its ``meta.json`` (every file there, whole and
    unchanged) and return the meta."""
    meta_path = path / META
    if not meta_path.exists():
        raise CheckpointError(f"{path} is not a complete checkpoint: {META} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{meta_path} is corrupted: {err}") from None
    checksums = meta.get("sha256") if isinstance(meta, dict) else None
    has_weights = isinstance(checksums, dict) and (
        WEIGHTS in checksums or any(name.startswith(f"{MODEL_SHARDS}/") for name in checksums))
    if not has_weights or STATE not in checksums:
        raise CheckpointError(
            f"{meta_path} lists no sha256 for the weights and {STATE}, so the checkpoint cannot "
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
    return meta


def read_shards(directory: Path, template: dict[str, torch.Tensor] | None = None,
                **load: Any) -> dict[str, torch.Tensor]:
    """The tensors that the processes of a sharded save wrote into ``directory`` (each
    process's pieces in a safetensors file of its own, with where each piece sits in the whole)
    put together: into ``template``'s tensors, which may be pieces of another sharding (the
    resharding that lets a run resume on another number of processes), or else into whole
    tensors on the CPU (``consolidated``). ``load``: options of ``dcp.load``."""
    from torch.distributed import checkpoint as dcp  # the only users of distributed I/O

    reader = dcp.HuggingFaceStorageReader(str(directory))
    if template is None:
        sizes = reader.read_metadata().state_dict_metadata
        template = {name: torch.empty(meta.size, dtype=meta.properties.dtype)
                    for name, meta in sizes.items()}
        load = {"no_dist": True}
    with warnings.catch_warnings():  # that it reads without a process group: we mean it to
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        dcp.load(template, storage_reader=reader, **load)
    return template


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load and verify one checkpoint directory; a sharded one's weights are consolidated."""
    meta = verify_checkpoint(path)
    try:
        if (path / WEIGHTS).exists():
            weights = load_file(path / WEIGHTS, device=str(map_location))
        else:
            weights = {name: tensor.to(map_location)
                       for name, tensor in read_shards(path / MODEL_SHARDS).items()}
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
