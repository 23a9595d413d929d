"""One training loop for pretraining and every fine-tuning.

A task brings what differs — its batches, its loss, how to evaluate and what to show — and
the :class:`Trainer` does what is always the same: forward, backward, update (with warmup and
cosine decay, gradient clipping and accumulation, mixed precision, several processes), and
every ``eval_every`` steps an evaluation, a text sample and a checkpoint that resumes exactly.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.std import tqdm

from scratchgpt.model.gpt import set_activation_checkpointing
from scratchgpt.progress import progress_bar
from scratchgpt.training import distributed
from scratchgpt.training.checkpoints import (
    BEST,
    CheckpointWriteError,
    load_checkpoint,
    load_weights,
    resume_checkpoint,
    save_checkpoint,
    unique_weights,
)
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.errors import CheckpointError
from scratchgpt.training.optimizers import build_optimizer
from scratchgpt.training.records import RunRecords
from scratchgpt.training.schedule import lr_at
from scratchgpt.training.sharded_checkpoints import is_sharded, load_sharded, save_sharded
from scratchgpt.training.sharding import check_shardable, set_gradient_sync, shard_model

Batch = tuple[torch.Tensor, ...]


class BatchStream(Protocol):
    """An endless, resumable source of training batches for one process."""

    def __next__(self) -> Batch: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Task(Protocol):
    """What a training job brings to the :class:`Trainer`."""

    best_metric: str  # the metric of evaluate() that picks checkpoints/best: "val_loss", ...
    higher_is_better: bool  # False for a loss, True for an accuracy
    progress_metrics: tuple[str, ...]  # metrics of the last evaluation shown beside the loss

    def train_stream(self, rank: int, world_size: int) -> BatchStream:
        """This process's share of the training batches (``batch[0]`` is the input ids)."""
        ...

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Scalar loss of ``model`` on ``batch`` (already on the model's device): a mean."""
        ...

    def loss_terms(self, batch: Batch) -> torch.Tensor | int:
        """How many terms the mean of :meth:`loss` is over (target tokens, examples, pairs):
        what a micro-batch weighs in its step."""
        ...

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Metrics on fixed batches; must include ``train_loss`` and ``val_loss``."""
        ...

    def sample(self, model: nn.Module) -> str | None:
        """Something to read (e.g. generated text), or None."""
        ...


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU; a device that is not there is an
    error that says why."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a device: use auto, cpu, cuda, cuda:N or "
                         "mps") from None
    if device.type == "cuda" and torch.cuda.device_count() <= (device.index or 0):
        why = (f"{torch.cuda.device_count()} CUDA GPU(s) are visible"
               if torch.backends.cuda.is_built()
               else f"this PyTorch ({torch.__version__}) is a build without CUDA")
        raise ValueError(f"device {name!r} is not available: {why}; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} is not available (no Apple GPU); use --device cpu "
                         "or auto")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: fp32 on CPU (bf16 matmuls are slow there), bf16 on CUDA if supported, else fp16."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """Mixed precision: matmuls in bf16/fp16, the rest (softmax, norms, loss) in fp32."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextmanager
def _catch_sigint() -> Iterator[list[bool]]:
    """Turn Ctrl-C into a flag the loop checks between steps, so a step is never cut in half."""
    flag = [False]

    def handler(signum: int, frame: Any) -> None:
        flag[0] = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave Ctrl-C alone
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _indent(text: str) -> str:
    """Generated text for a terminal: indented, with control characters (which a small model
    emits freely, and which could drive the terminal) shown as U+FFFD."""
    shown = "".join(c if c.isprintable() or c in "\n\t" else "\ufffd" for c in text)
    return "\n".join("  " + line for line in shown.split("\n"))


@dataclass
class FitResult:
    step: int
    tokens: int
    interrupted: bool
    metrics: list[dict[str, Any]]


class Trainer:
    """Trains ``model`` on ``task``; writes records and checkpoints into ``run_dir``."""

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        config: TrainConfig,
        run_dir: Path,
        *,
        process: distributed.ProcessInfo | None = None,
        show_progress: bool = True,
    ) -> None:
        self.config = config
        self.task = task
        self.run_dir = run_dir
        self.process = process or distributed.ProcessInfo()
        self.device = resolve_device(config.device)
        if self.process.distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", self.process.local_rank)
        self.precision = resolve_precision(config.precision, self.device)
        self.strategy = distributed.resolve_strategy(config.strategy, self.process.world_size)
        set_activation_checkpointing(model, config.activation_checkpointing)
        if self.strategy == "fsdp":  # sharded in place, each block sent to the device as it is
            # cut: the whole model is never on one GPU. self.model is what trains.
            check_shardable(config, self.precision)
            self.model = shard_model(model, device=self.device, precision=self.precision,
                                     cpu_offload=config.cpu_offload)
        else:
            self.model = model.to(self.device)  # the plain module: checkpoints, eval, sampling
        self.train_model: nn.Module = self.model
        if self.strategy == "ddp":
            # the gradients live in DDP's all-reduce buckets, not in a copy beside them
            self.train_model = DistributedDataParallel(self.model, gradient_as_bucket_view=True)
        if config.compile:
            self.train_model = torch.compile(self.train_model)
        self.optimizer = build_optimizer(
            config.optimizer, self.model, lr=config.lr, weight_decay=config.weight_decay,
            betas=(config.beta1, config.beta2), momentum=config.momentum,
            fused=self.device.type in ("cuda", "cpu"),  # one kernel per step: 6x faster on CPU
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.stream = task.train_stream(self.process.rank, self.process.world_size)
        self.records = RunRecords(run_dir)
        self.checkpoint_dir = run_dir / "checkpoints"  # layout: scratchgpt.run_dir
        self.show_progress = show_progress and self.process.is_main
        self.step = 0
        self.tokens = 0
        self.last_metrics: dict[str, float] = {}
        self.best: float | None = None  # the best value of task.best_metric so far

    # -- checkpoints ----------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "tokens": self.tokens,
            "best": self.best,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "data": self.stream.state_dict(),
            "rng_cpu": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _improves(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.task.higher_is_better else value < self.best

    def save(self, metrics: dict[str, float] | None) -> None:
        """Checkpoint this step; after an evaluation, ``metrics`` say whether it is the best
        (under FSDP every process has them, and writes its pieces)."""
        is_best = metrics is not None and self._improves(metrics[self.task.best_metric])
        if is_best:
            self.best = metrics[self.task.best_metric]
        val_loss = metrics["val_loss"] if metrics else None
        layout = {"world_size": self.process.world_size,  # what a resume must keep
                  "global_batch": self.config.global_batch(self.process.world_size)}
        if self.strategy == "fsdp":
            state = {key: value for key, value in self._state().items() if key != "optimizer"}
            save_sharded(self.checkpoint_dir, step=self.step, model=self.model,
                         optimizers=self.optimizer.optimizers, state=state, val_loss=val_loss,
                         keep_last=self.config.keep_last, is_best=is_best, layout=layout)
            return
        failed: CheckpointWriteError | None = None
        if self.process.is_main:  # one whole copy of the model: the first process writes it
            try:
                save_checkpoint(
                    self.checkpoint_dir, step=self.step, weights=unique_weights(self.model),
                    state=self._state(), val_loss=val_loss, keep_last=self.config.keep_last,
                    is_best=is_best, layout=layout,
                )
            except CheckpointWriteError as err:
                failed = err
        # every process stops on a failed write, saying so (else the others would wait at
        # the next collective until torchrun, or its timeout, ends them)
        if distributed.any_rank(failed is not None, self.process, self.device):
            raise failed or CheckpointWriteError("the first process could not write the "
                                                 "checkpoint: its error says why")

    def resume_latest(self) -> Path | None:
        """Continue from the run directory's newest checkpoint (see
        :func:`~scratchgpt.training.checkpoints.resume_checkpoint`) and return it; where there
        is none, start over: the records and ``best`` an earlier attempt left are removed."""
        checkpoint = resume_checkpoint(self.checkpoint_dir)
        if checkpoint is not None:
            self.resume(checkpoint)
        elif self.process.is_main:
            self.records.clear()
            shutil.rmtree(self.checkpoint_dir / BEST, ignore_errors=True)
        return checkpoint

    def resume(self, path: Path) -> None:
        """Continue from the checkpoint directory ``path`` exactly where it stopped."""
        if self.strategy == "fsdp":
            state = load_sharded(path, self.model, self.optimizer.optimizers)
        else:
            if is_sharded(path):
                raise CheckpointError(f"{path} was saved by a sharded run: resume it with "
                                      "--strategy fsdp")
            checkpoint = load_checkpoint(path)
            load_weights(self.model, checkpoint.weights, path)
            state = checkpoint.state
            self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.stream.load_state_dict(state["data"])
        torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self.step, self.tokens = state["step"], state["tokens"]
        self.best = state.get("best", state.get("best_val_loss"))  # the older name
        if self.process.is_main:
            self.records.rewind(self.step)

    # -- the loop -------------------------------------------------------------------------
    def _lr(self) -> float:
        c = self.config
        floor = c.lr if c.schedule == "constant" else c.min_lr
        return lr_at(self.step, max_lr=c.lr, min_lr=floor, warmup_steps=c.warmup_steps,
                     max_steps=c.max_steps)

    def train_step(self) -> torch.Tensor:
        """One optimizer step over ``grad_accum_steps`` micro-batches; returns the mean loss."""
        lr = self._lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        accum = self.config.grad_accum_steps
        batches = [tuple(t.to(self.device, non_blocking=True) for t in next(self.stream))
                   for _ in range(accum)]
        # Each micro-batch's loss is a mean over its own terms, and micro-batches and
        # processes can hold different numbers of them (masked prompts, padding). Weighed by
        # its share of all the step's terms, over every process (whose gradients are then
        # averaged), each adds what it adds to the mean over the whole global batch: the step
        # is the one a single process with that batch takes. Equal shares: 1/accum each.
        terms = torch.stack([torch.as_tensor(self.task.loss_terms(batch), device=self.device,
                                             dtype=torch.float32) for batch in batches])
        step_terms = distributed.sum_across_ranks(terms.sum(), self.process)
        shares = step_terms / (terms * self.process.world_size)  # 1 / the weight of each
        total = torch.zeros((), device=self.device)
        for micro, batch in enumerate(batches):
            last = micro == accum - 1
            with self._gradient_sync(last):
                with autocast(self.device, self.precision):
                    loss = self.task.loss(self.train_model, batch) / shares[micro]
                self.scaler.scale(loss).backward()
            total += loss.detach()
            self.tokens += batch[0].numel() * self.process.world_size
        if self.config.grad_clip > 0:
            for optimizer in self.optimizer.optimizers:
                self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        for optimizer in self.optimizer.optimizers:
            self.scaler.step(optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return total

    def _gradient_sync(self, sync: bool) -> AbstractContextManager[Any]:
        """Whether this micro-batch's backward averages the gradients across processes: only
        the last of an accumulated step needs to (the others add into the local gradients)."""
        if self.strategy == "ddp" and not sync:
            return self.train_model.no_sync()
        if self.strategy == "fsdp":
            set_gradient_sync(self.model, sync)
        return nullcontext()

    def _evaluate(self) -> dict[str, float] | None:
        """Evaluate and sample on rank 0 (under FSDP on every rank, as every forward pass
        needs them all); returns the metrics there (None on ranks that do not evaluate)."""
        if not (self.process.is_main or self.strategy == "fsdp"):
            return None
        self.model.eval()
        with torch.no_grad(), autocast(self.device, self.precision):
            metrics = self.task.evaluate(self.model)
            sample = self.task.sample(self.model)
        if self.strategy == "fsdp":  # the root keeps its weights whole after a forward pass
            self.model.reshard()  # type: ignore[operator]
        self.model.train()
        self.last_metrics = metrics
        if not self.process.is_main:
            return metrics
        self.records.log({"step": self.step, "tokens": self.tokens, **metrics, "lr": self._lr()})
        if sample is not None:
            self.records.sample(self.step, sample)
        if self.show_progress:
            figures = ", ".join(f"{name.replace('_', ' ')} {metrics[name]:.3f}"
                                for name in ("train_loss", "val_loss", *self.task.progress_metrics))
            tqdm.write(f"step {self.step}: {figures}" + (f"\n{_indent(sample)}" if sample else ""))
        return metrics

    def _progress_figures(self) -> dict[str, str]:
        """The task's chosen metrics from the last evaluation, for the progress bar."""
        return {name: f"{self.last_metrics[name]:.3f}" for name in self.task.progress_metrics
                if name in self.last_metrics}

    def _stop_requested(self, flag: list[bool]) -> bool:
        """Ctrl-C on any rank stops every rank at the same step."""
        return distributed.any_rank(flag[0], self.process, self.device)

    def fit(self) -> FitResult:
        """Train until ``max_steps`` or Ctrl-C; returns where it stopped."""
        config = self.config
        self.model.train()
        fresh = self.process.is_main and self.step == 0 and not self.records.metrics
        if distributed.any_rank(fresh, self.process, self.device):
            self._evaluate()  # the loss before training: about ln(vocab_size)
        bar = progress_bar(total=config.max_steps, initial=self.step, unit="step",
                           disable=not self.show_progress, dynamic_ncols=True)
        interrupted = False
        started, start_tokens = time.perf_counter(), self.tokens
        with _catch_sigint() as sigint, bar:
            while self.step < config.max_steps:
                loss = self.train_step()
                bar.update(1)
                if self.show_progress:  # tokens/s: the input tokens of every process
                    rate = (self.tokens - start_tokens) / (time.perf_counter() - started)
                    bar.set_postfix({"loss": f"{loss.item():.3f}", "lr": f"{self._lr():.2e}",
                                     "tok/s": f"{rate:,.0f}", **self._progress_figures()})
                done = self.step == config.max_steps
                if done or self.step % config.eval_every == 0:
                    self.save(self._evaluate())
                    distributed.barrier(self.process)
                if not done and self._stop_requested(sigint):
                    self.save(None)
                    interrupted = True
                    break
        return FitResult(self.step, self.tokens, interrupted, self.records.metrics)
