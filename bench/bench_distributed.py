"""Benchmark DDP against FSDP2 at N processes: memory per process and step time, predicted too.

Two ``torchrun`` launches of N processes (``--nproc``, 2) each, one per strategy, on the
``--preset`` shape (gpt2-medium, 355M weights; ``--layers`` fewer blocks where memory is
short), random weights (the same on every process), fp32, Gloo between CPUs or NCCL between
GPUs (``--device cuda``, one GPU per process). Each process builds the model and our
:class:`~scratchgpt.training.trainer.Trainer` around it, which wraps it as ``pretrain
--strategy ddp|fsdp`` does (``DistributedDataParallel``, or ``shard_model``: FSDP2's
``fully_shard`` on each transformer block and the root) and builds fused AdamW
(``build_optimizer``). The task is pretraining's (``LanguageModelingTask``) on random tokens,
``--batch-size`` (1) sequences of ``--seq-len`` (128) tokens per process.

Timed: ``Trainer.train_step`` whole (forward, loss, backward with the gradients' all-reduce or
reduce-scatter, ``clip_grad_norm_``, the AdamW step, ``zero_grad``), the median of
``--steps`` (5) after ``--warmup`` (2) untimed steps (the first allocates AdamW's state); the
slowest process's median is shown.

Measured per process (the most loaded process is shown):

- **state**: the bytes of the weights, gradients and AdamW state this process holds (summing
  the tensors' storages, a sharded ``DTensor``'s local piece), counted just after the first
  optimizer step, when all three exist (``zero_grad`` frees the gradients next);
- **activations**: the bytes autograd keeps for backward in one forward pass and loss
  (``saved_tensors_hooks``, weights and buffers excluded), before the model is wrapped;
- **peak**: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the peak resident memory
  (``VmHWM``, reset once the Trainer is built) above the resident memory after the imports
  and the process group, over all the steps. On CPU that is more than the tensors: glibc's
  malloc keeps much of what is freed for reuse (hundreds of MiB here), and the runtime's own
  buffers (Gloo's, the kernels') count. With ``MALLOC_MMAP_THRESHOLD_=131072`` in the
  environment, every tensor of 128 KiB or more is mapped on its own and unmapped when freed,
  and the CPU's peak follows the tensors as CUDA's does (steps may be slower).

Predicted, from the weights' shapes (a model built on the ``meta`` device: no memory) and
the bytes per weight each strategy keeps per process, fp32 and AdamW (:func:`predict`):

- **state**, DDP: the weights, gradients and two moments, 16 B per weight (and AdamW's step
  count, 4 B per tensor); FSDP at N processes: the same over N, each weight's rows split in N
  equal pieces (the last padded);
- **activations**: counted per token from the block's layers (:func:`saved_activations`);
- **peak**: the state and the activations, plus what comes and goes within a step. DDP:
  nothing more for its all-reduce (our Trainer passes ``gradient_as_bucket_view``: the
  gradients live in DDP's flat buckets, not in copies beside them). FSDP: the units it
  gathers whole, the root (embeddings, final norm, head: gathered for the whole forward and
  backward) with its gradient and the reduce-scatter's copy of it, and two blocks (the one
  computing, the next prefetched) with their gradients. Both: the gradient of the logits
  and, with tied embeddings, the embedding's gradient before it is added to the head's. All
  at once, which overstates (the activations are gone before the last gradients come), and
  tensors only. Every process also builds the whole model (4 B per weight) before it is
  wrapped: the peak is at least that.

The predictions are printed beside the measurements at the measured shape (the check), then
for every preset: which of them each strategy trains within ``--budget-gib`` (12) per process,
at the same batch, for DDP and for FSDP at ``--budget-procs`` processes.

    python bench/bench_distributed.py                     # gpt2-medium, 2 x (1 x 128), CPU
    python bench/bench_distributed.py --preset gpt2-small --layers 2   # a quick look
    python bench/bench_distributed.py --device cuda --batch-size 8 --seq-len 1024
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from memory import PeakMemory, optimizer_tensors, peak_kind, report, run_child, storage_bytes
from timing import median_seconds
from torch import nn

from scratchgpt.config import PRESETS, ModelConfig, get_preset
from scratchgpt.model import GPTModel
from scratchgpt.model.layers import TransformerBlock
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.distributed import init_distributed, shutdown
from scratchgpt.training.language_modeling import LanguageModelingTask, next_token_loss
from scratchgpt.training.trainer import Trainer

STRATEGIES = {"ddp": "DDP (DistributedDataParallel)", "fsdp": "FSDP2 (shard_model)"}
FP32 = 4  # bytes
GIB, MIB = 2**30, 2**20
TARGET = 0.6  # issue 24: FSDP's training state per process at most 0.6x DDP's


def shape(args: argparse.Namespace) -> ModelConfig:
    """The ``--preset``'s ModelConfig, with ``--layers`` blocks where given."""
    config = get_preset(args.preset)
    return config.replace(n_layers=args.layers) if args.layers else config


# -- the memory model ----------------------------------------------------------------------

@dataclass(frozen=True)
class Weights:
    """What the memory model needs of a model's weights (each tensor once, tied ones too)."""

    shapes: list[torch.Size]  # of every weight tensor
    root: int  # weights outside the transformer blocks (FSDP's root unit)
    block: int  # weights of the largest block

    @property
    def count(self) -> int:
        return sum(math.prod(s) for s in self.shapes)


def weights_of(config: ModelConfig) -> Weights:
    """The weights of a GPTModel of ``config``, built on the meta device (shapes, no data)."""
    with torch.device("meta"):
        model = GPTModel(config)
    blocks = [m for m in model.modules() if isinstance(m, TransformerBlock)]
    in_blocks = {id(p) for block in blocks for p in block.parameters()}
    params = list(model.parameters())
    return Weights([p.shape for p in params],
                   sum(p.numel() for p in params if id(p) not in in_blocks),
                   max(sum(p.numel() for p in block.parameters()) for block in blocks))


def saved_activations(config: ModelConfig, tokens: int) -> int:
    """Bytes autograd keeps for backward for ``tokens`` tokens (fp32, no dropout), counted
    from the layers: each keeps the inputs its gradient needs, and an input another layer
    already keeps is not kept twice. Per token and block, in numbers:

    - each norm its output (the next layer's input), and an RMSNorm also its normalised
      input; a post-norm (Gemma) its input too;
    - attention: the q, k, v projection's output, the attention output (``out_proj``'s
      input); with rotary positions the rotated q and k; with qk-norm also their normalised
      copies (the kernel keeps only a log-sum-exp per head besides: no T x T scores);
    - the residual stream after attention and after the block;
    - the feed-forward: its expansion and the activation's output (2 x hidden); a gated one
      gate and up, the activation's output and their product (4 x hidden).

    Outside the blocks: the embeddings' sum, the final norm and the log-softmax (vocab wide).
    """
    d, hidden = config.emb_dim, config.ffn_dim
    q, kv = config.n_heads * config.head_dim, config.kv_heads * config.head_dim
    norm = 1 if config.norm == "layernorm" else 2
    attention = (q + 2 * kv) + q
    if config.pos_encoding == "rope":
        attention += q + kv
    if config.qk_norm:
        attention += q + kv
    feed_forward = (2 if config.ffn == "gelu" else 4) * hidden
    block = config.norms_per_block * norm * d + 2 * d + attention + feed_forward
    outside = d + norm * d + config.vocab_size
    return FP32 * tokens * (config.n_layers * block + outside)


@dataclass(frozen=True)
class Footprint:
    """Predicted bytes of one process (the most loaded one) during training."""

    weights: int
    gradients: int
    optimizer: int
    activations: int  # kept for backward
    passing: int  # within a step: FSDP's gathered units; the logits' gradient
    build: int  # the whole model, built before it is wrapped

    @property
    def state(self) -> int:
        return self.weights + self.gradients + self.optimizer

    @property
    def peak(self) -> int:
        """An upper bound: everything at once (the activations are gone by the time the
        last gradients arrive, and the gathered units come and go)."""
        return max(self.build, self.state + self.activations + self.passing)


def predict(strategy: str, weights: Weights, config: ModelConfig, tokens: int,
            processes: int) -> Footprint:
    """The footprint of one process training ``weights`` under ``strategy`` with AdamW."""
    pieces = processes if strategy == "fsdp" else 1
    # FSDP splits each weight's rows in equal pieces (the last padded): process 0's is fullest.
    local = sum(math.ceil(s[0] / pieces) * math.prod(s[1:]) for s in weights.shapes)
    steps = FP32 * len(weights.shapes)  # AdamW's step count: a number per weight tensor
    # DDP: the gradients are views into its all-reduce buckets, no copy. FSDP: the root,
    # gathered for the whole step (weights, gradient, the reduce-scatter's copy), and two
    # blocks (computing, prefetched) with their gradients.
    passing = 0 if strategy == "ddp" else FP32 * (3 * weights.root + 4 * weights.block)
    if config.tie_weights:  # the embedding's gradient, until it is added to the head's
        passing += FP32 * config.vocab_size * config.emb_dim
    passing += 2 * FP32 * tokens * config.vocab_size  # the log-softmax's and logits' gradients
    return Footprint(FP32 * local, FP32 * local, 2 * FP32 * local + steps,
                     saved_activations(config, tokens), passing, FP32 * weights.count)


# -- one process of a torchrun launch ------------------------------------------------------

def measured_activations(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> int:
    """Bytes autograd keeps for backward in one forward pass and loss of ``batch``, weights
    and buffers (the rotary tables) excluded; the graph is dropped, nothing is trained."""
    held = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    saved: dict[int, int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in held:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        next_token_loss(model, batch)
    return sum(saved.values())


def child(strategy: str, args: argparse.Namespace) -> None:
    """One process: train ``--warmup`` + ``--steps`` steps under ``strategy``, report."""
    import torch.distributed.fsdp  # noqa: F401  (shard_model imports it late; before the baseline)

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    process = init_distributed(args.device, strategy=strategy)
    device = (torch.device("cuda", process.local_rank) if args.device == "cuda"
              else torch.device(args.device))
    memory = PeakMemory(device)
    config = shape(args)
    torch.manual_seed(0)  # the same weights on every process (FSDP2 does not broadcast them)
    model = GPTModel(config).to(device)
    windows = 8 * process.world_size * args.batch_size  # enough for every process's batches
    tokens = np.random.default_rng(process.rank).integers(
        0, config.vocab_size, windows * args.seq_len + 1)
    task = LanguageModelingTask(tokens, tokens[:2 * args.seq_len + 1],
                                context_length=args.seq_len, batch_size=args.batch_size,
                                eval_batches=1, seed=0)
    activations = measured_activations(model, tuple(
        t.to(device) for t in task.train_windows.batch(list(range(args.batch_size)))))
    train = TrainConfig(max_steps=10**6, batch_size=args.batch_size, warmup_steps=0, lr=1e-4,
                        min_lr=1e-4, device=args.device, precision="fp32", strategy=strategy)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(model, task, train, Path(run_dir), process=process,
                          show_progress=False)
        held: dict[str, int] = {}

        def count(optimizer: torch.optim.Optimizer, *_: object) -> None:
            """After the optimizer step, before ``zero_grad``: all of the state exists."""
            if not held:
                params = list(trainer.model.parameters())
                held.update(weights=storage_bytes(params),
                            gradients=storage_bytes(p.grad for p in params if p.grad is not None),
                            optimizer=storage_bytes(optimizer_tensors(optimizer)))

        for optimizer in trainer.optimizer.optimizers:
            optimizer.register_step_post_hook(count)
        losses: list[float] = []
        memory.reset()
        seconds = median_seconds([lambda: losses.append(trainer.train_step().item())],
                                 args.steps, args.warmup)[0]
        peak = memory.peak()
    report({"rank": process.rank, **held, "activations": activations, "peak": peak,
            "seconds": seconds, "losses": losses})
    shutdown(process)


# -- the parent: launch, gather, print -----------------------------------------------------

def torchrun(processes: int) -> list[str]:
    return ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]


def most(reports: list[dict], key: str) -> int | float:
    return max(r[key] for r in reports)


def fits(footprint: Footprint, budget: float) -> str:
    verdict = "fits" if footprint.peak <= budget else "no"
    return f"{footprint.peak / GIB:,.1f} {verdict}"


def print_measured(args: argparse.Namespace, reports: dict[str, list[dict]],
                   predicted: dict[str, Footprint]) -> None:
    print("| strategy | state per process (MiB) | predicted (MiB) | peak (MiB) "
          "| predicted peak (MiB) | step (ms) |")
    print("|---|---:|---:|---:|---:|---:|")
    state = {s: max(r["weights"] + r["gradients"] + r["optimizer"] for r in reps)
             for s, reps in reports.items()}
    peak = {s: most(reps, "peak") for s, reps in reports.items()}
    seconds = {s: most(reps, "seconds") for s, reps in reports.items()}
    for strategy, label in STRATEGIES.items():
        print(f"| {label} | {state[strategy] / MIB:,.0f} | {predicted[strategy].state / MIB:,.0f} "
              f"| {peak[strategy] / MIB:,.0f} | {predicted[strategy].peak / MIB:,.0f} "
              f"| {seconds[strategy] * 1e3:,.0f} |")
    ratio = state["fsdp"] / state["ddp"]
    print(f"| FSDP / DDP | **{ratio:.2f}x** "
          f"| {predicted['fsdp'].state / predicted['ddp'].state:.2f}x "
          f"| {peak['fsdp'] / peak['ddp']:.2f}x "
          f"| {predicted['fsdp'].peak / predicted['ddp'].peak:.2f}x "
          f"| {seconds['fsdp'] / seconds['ddp']:.2f}x |")
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"\nFSDP's training state per process is {ratio:.2f}x DDP's at {args.nproc} processes "
          f"(target: at most {TARGET}x): {verdict}.")
    firsts = ", ".join(f"{s.upper()} {reps[0]['losses'][0]:.6f} -> {reps[0]['losses'][-1]:.6f}"
                       for s, reps in reports.items())
    print(f"losses of process 0, first and last step (same weights and data): {firsts}")

    print("\nThe check: predicted against measured, per process (the most loaded), MiB\n")
    print("| | DDP predicted | DDP measured | FSDP predicted | FSDP measured |")
    print("|---|---:|---:|---:|---:|")
    rows = {"weights": "weights", "gradients": "gradients", "optimizer": "AdamW state",
            "activations": "activations (kept for backward)"}
    for key, label in rows.items():
        cells = []
        for strategy in STRATEGIES:
            cells += [f"{getattr(predicted[strategy], key) / MIB:,.1f}",
                      f"{most(reports[strategy], key) / MIB:,.1f}"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    cells = []
    for strategy in STRATEGIES:
        cells += [f"{predicted[strategy].state / MIB:,.1f}", f"{state[strategy] / MIB:,.1f}"]
    print("| **state** | " + " | ".join(cells) + " |")
    cells = []
    for strategy in STRATEGIES:
        cells += [f"{predicted[strategy].peak / MIB:,.1f}", f"{peak[strategy] / MIB:,.1f}"]
    print("| peak (predicted: tensors only, all at once) | " + " | ".join(cells) + " |")
    print("\nstate, measured - predicted: " + ", ".join(
        f"{s.upper()} {state[s] - predicted[s].state:+,} B" for s in STRATEGIES))


def print_budget(args: argparse.Namespace) -> None:
    budget = args.budget_gib * GIB
    procs = args.budget_procs or sorted({args.nproc, 8})
    print(f"\nWithin {args.budget_gib:g} GiB per process, at {args.batch_size} x {args.seq_len} "
          "tokens per process (fewer where the context is shorter), fp32, AdamW: the predicted "
          "peak per process (GiB)\n")
    print("| preset | weights | DDP | " + " | ".join(f"FSDP x{n}" for n in procs) + " |")
    print("|---|---:|---:|" + "---:|" * len(procs))
    largest: dict[str, tuple[int, str]] = {}
    for name, config in PRESETS.items():
        weights = weights_of(config)
        tokens = args.batch_size * min(args.seq_len, config.context_length)
        columns = {"DDP": predict("ddp", weights, config, tokens, 1)}
        columns |= {f"FSDP x{n}": predict("fsdp", weights, config, tokens, n) for n in procs}
        for column, footprint in columns.items():
            if footprint.peak <= budget:
                largest[column] = max(largest.get(column, (0, "")), (weights.count, name))
        print(f"| {name} | {weights.count / 1e6:,.0f}M | "
              + " | ".join(fits(f, budget) for f in columns.values()) + " |")
    print("\nThe largest preset each trains within the budget: " + "; ".join(
        f"{column} {name} ({count / 1e6:,.0f}M)" for column, (count, name) in largest.items()))


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpt2-medium", help="the model's shape "
                        f"({', '.join(PRESETS)})")
    parser.add_argument("--layers", type=positive, default=None, help="blocks, if not the preset's")
    parser.add_argument("--nproc", type=positive, default=2, help="processes per strategy")
    parser.add_argument("--batch-size", type=positive, default=1, help="sequences per process")
    parser.add_argument("--seq-len", type=positive, default=128, help="tokens per sequence")
    parser.add_argument("--steps", type=positive, default=5, help="timed steps")
    parser.add_argument("--warmup", type=positive, default=2,
                        help="untimed steps first (the first allocates AdamW's state, and the "
                             "state is counted there)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cpu (Gloo) or cuda (NCCL, a GPU per process)")
    parser.add_argument("--threads", type=positive, default=1, help="torch CPU threads per process")
    parser.add_argument("--budget-gib", type=float, default=12.0,
                        help="memory per process for the table of presets")
    parser.add_argument("--budget-procs", type=positive, nargs="+", default=None,
                        help="FSDP's processes in that table (default: --nproc and 8)")
    parser.add_argument("--child", choices=list(STRATEGIES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.nproc < 2:
        parser.error("--nproc must be at least 2: one process has nothing to share")
    if args.child:
        child(args.child, args)
        return

    config = shape(args)
    if args.seq_len > config.context_length:
        parser.error(f"--seq-len {args.seq_len} exceeds {args.preset}'s context of "
                     f"{config.context_length} tokens")
    reports = {strategy: run_child(__file__, [*sys.argv[1:], "--child", strategy],
                                   launcher=torchrun(args.nproc))
               for strategy in STRATEGIES}
    weights = weights_of(config)
    tokens = args.batch_size * args.seq_len
    predicted = {s: predict(s, weights, config, tokens, args.nproc) for s in STRATEGIES}

    device = torch.device(args.device)
    link = "NCCL, a GPU per process" if args.device == "cuda" else (
        f"Gloo, {args.threads} thread(s) per process")
    blocks = f" in {args.layers} blocks" if args.layers else ""
    print(f"torch {torch.__version__}, {args.device} ({link}), fp32; {args.preset} shape{blocks} "
          f"({weights.count:,} weights); {args.nproc} processes x batch {args.batch_size} x "
          f"{args.seq_len} tokens; step = Trainer.train_step, median of {args.steps} after "
          f"{args.warmup} warm-up (the slowest process's)")
    malloc = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    print(f"state = weights + gradients + AdamW state held by a process; peak = "
          f"{peak_kind(device)}, over the steps"
          + (f" (MALLOC_MMAP_THRESHOLD_={malloc})" if malloc and args.device == "cpu" else "")
          + "\n")
    print_measured(args, reports, predicted)
    print_budget(args)


if __name__ == "__main__":
    main()
