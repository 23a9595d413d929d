"""Running a training job in a run directory: what pretraining and every fine-tuning share.

A job (``scratchgpt pretrain``, ``scratchgpt finetune classify``, ...) knows how to build its
model, its task and its tokenizer from its settings; :func:`run_job` does the rest, the same
for all of them:

1. check the device, the run directory (on ``--resume``, that it holds a run of this
   command) and, under FSDP, that the settings shard, before anything is built, and use the
   CPU threads ``--threads`` asks for,
2. start the processes of a ``torchrun`` launch (or just this one),
3. let the job build everything (on ``--resume``, from what the run directory holds), and
   check a resumed run's model is the one it trained,
4. write the run directory (``tokenizer.json``, the job's own files, then ``config.toml``)
   only once the run can start, so a bad setting or a bad file leaves nothing behind,
5. resume from the newest checkpoint, or start over if there is none, and say which (a job
   starts over exactly as a fresh run of its settings starts: the same model, the same data),
6. train, and on Ctrl-C, or a checkpoint that cannot be written (a full disk), say how to
   continue.

``SCRATCHGPT_MAX_STEPS=N`` in the environment caps every job at N optimizer steps, whatever
its settings or epochs say (and says so): a smoke test of a real command line, as the guide's
test in CI runs each command of ``docs/guide/`` exactly as the guide shows it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from scratchgpt.config_files import load_toml
from scratchgpt.run_dir import (
    CHECKPOINTS,
    CONFIG_FILE,
    check_run_dir,
    model_tables,
    start_run_dir,
)
from scratchgpt.tokenizers import Tokenizer
from scratchgpt.training import distributed
from scratchgpt.training.checkpoints import META, CheckpointWriteError, resume_checkpoint
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.sharding import check_shardable
from scratchgpt.training.trainer import FitResult, Task, Trainer, resolve_device, resolve_precision


@dataclass
class Setup:
    """What a job builds before it trains."""

    model: nn.Module
    task: Task
    tokenizer: Tokenizer
    tables: dict[str, dict[str, Any]]  # config.toml: the settings, and the model's tables
    write: Callable[[Path], None] | None = None  # writes the job's own files into a new run


class Job(Protocol):
    """A training job: its settings, and how to build its model, task and tokenizer."""

    command: str  # how a user runs it, for messages: "pretrain", "finetune classify"
    train: TrainConfig

    def setup(self, process: distributed.ProcessInfo, resume_dir: Path | None) -> Setup:
        """Build everything; when resuming, ``resume_dir`` is the run directory, whose
        tokenizer (and any file of the job's) must be used again. Where it holds no checkpoint
        yet, the model must be the one a fresh run starts with, built the same way."""
        ...


STEP_CAP_ENV = "SCRATCHGPT_MAX_STEPS"


def step_cap() -> int | None:
    """The cap ``SCRATCHGPT_MAX_STEPS`` puts on every job's steps, or None."""
    value = os.environ.get(STEP_CAP_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{STEP_CAP_ENV} must be a whole number of steps, 1 or more, got "
                         f"{value!r}")
    return int(value)


def log(message: str) -> None:
    """A progress message for people: stderr, so that stdout stays the command's output."""
    print(message, file=sys.stderr, flush=True)


def check_same_model(saved: dict[str, Any], current: dict[str, Any], run_dir: Path) -> None:
    """Refuse to resume ``run_dir`` with a model other than the one it trained."""
    differ = []
    saved, current = model_tables(saved), model_tables(current)
    for table, before in saved.items():
        now = current[table]
        differ += [f"{key}: {before.get(key)} in the run, {now.get(key)} now"
                   for key in sorted(before.keys() | now.keys()) if before.get(key) != now.get(key)]
    if differ:
        raise ValueError(f"cannot resume {run_dir} with a different model shape ("
                         + "; ".join(differ) + ")")


def keep_global_batch(train: TrainConfig, run_dir: Path,
                      process: distributed.ProcessInfo) -> None:
    """A run resumed on another number of processes keeps its global batch, on which the
    order of its data depends: the batch per process becomes the global batch over
    processes x micro-batches, and is said. One that does not divide is an error."""
    checkpoint = resume_checkpoint(run_dir / CHECKPOINTS)
    try:
        meta = json.loads((checkpoint / META).read_text()) if checkpoint else {}
    except (OSError, json.JSONDecodeError):
        return  # loading the checkpoint says what is wrong with it
    saved, before = meta.get("global_batch"), meta.get("world_size", 1)
    if not isinstance(saved, int) or (saved == train.global_batch(process.world_size)
                                      and before == process.world_size):
        return
    per_process, rest = divmod(saved, process.world_size * train.grad_accum_steps)
    if rest or not per_process:
        fits = [n for n in range(1, saved + 1) if saved % (n * train.grad_accum_steps) == 0]
        raise ValueError(
            f"{checkpoint} trained with a global batch of {saved} sequences, which "
            f"{process.world_size} process(es) x {train.grad_accum_steps} micro-batch(es) do "
            f"not divide: resume on {', '.join(map(str, fits))} process(es), or with another "
            "--grad-accum-steps")
    if process.is_main:
        log(f"resuming on {process.world_size} process(es), {before} "
            f"before: --batch-size {per_process} per process keeps the run's global batch of "
            f"{saved}")
    train.batch_size = per_process


def run_job(job: Job, run_dir: Path, *, resume: bool = False,
            show_progress: bool = True) -> FitResult:
    """Run (or, with ``resume``, continue) ``job`` in ``run_dir``; see the module docstring."""
    device = resolve_device(job.train.device)
    check_run_dir(run_dir, job.command, resume)
    if job.train.strategy == "fsdp":  # said before any process joins or reads the data
        check_shardable(job.train, resolve_precision(job.train.precision, device))
    if job.train.threads is not None:
        torch.set_num_threads(job.train.threads)
    process = distributed.init_distributed(device.type, strategy=job.train.strategy,
                                           backend=job.train.backend)
    try:
        if resume:
            keep_global_batch(job.train, run_dir, process)
        setup = job.setup(process, run_dir if resume else None)
        cap = step_cap()
        if cap is not None and job.train.max_steps > cap:
            if process.is_main:
                log(f"{STEP_CAP_ENV}={cap}: training {cap} of its {job.train.max_steps} steps")
            job.train.max_steps = cap
        if resume:
            check_same_model(load_toml(run_dir / CONFIG_FILE), setup.tables, run_dir)
        trainer = Trainer(setup.model, setup.task, job.train, run_dir, process=process,
                          show_progress=show_progress)
        if process.is_main and not resume:  # the run can start: only now is anything written
            start_run_dir(run_dir, setup.tokenizer, setup.tables, setup.write)
        distributed.barrier(process)
        if resume:
            checkpoint = trainer.resume_latest()
            if process.is_main:
                log(f"resumed from {checkpoint} (step {trainer.step})" if checkpoint else
                    f"--resume: {run_dir / CHECKPOINTS} holds no checkpoint yet (the run "
                    "stopped before its first one); starting from the beginning")
                if trainer.step >= job.train.max_steps:
                    log(f"the run has already trained its {job.train.max_steps} steps; "
                        "pass a larger --max-steps to train on")
        try:
            result = trainer.fit()
        except CheckpointWriteError as err:
            fix = "free some space" if err.disk_full else "fix that"
            raise CheckpointWriteError(f"{err}; {fix}, then continue with: scratchgpt "
                                       f"{job.command} --out {run_dir} --resume",
                                       err.disk_full) from err
        if process.is_main and result.interrupted:
            log(f"interrupted: saved a checkpoint at step {result.step}; "
                f"continue with: scratchgpt {job.command} --out {run_dir} --resume")
        return result
    finally:
        distributed.shutdown(process)
