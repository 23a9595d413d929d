"""Pretraining throughput and model FLOPs utilisation (MFU), beside transformers, in one run.

1. **This machine's matrix-product rate**: the best median FLOP/s of square products
   (1024, 2048, 4096) in the training precision: the ceiling MFU is measured against.
2. **Training steps** of the real pretraining loop (``Trainer.train_step``: forward, loss,
   backward, gradient clipping, fused AdamW) on random tokens, for our ``GPTModel`` and for
   Hugging Face's ``GPT2LMHeadModel`` with the same weights in the same ``Trainer``. Steps
   alternate between the two, so drifting machine load hits both alike.

MFU = tokens/s x training FLOPs per token (``scratchgpt.model.summary.training_flops_per_token``)
/ the measured matrix-product rate. Each number is the median of ``--repeats`` (5).

    python bench/bench_training.py                        # gpt2-small shape, CPU, fp32
    python bench/bench_training.py --device cuda --batch 16 --seq-len 1024 \\
        --precision bf16 --compile                         # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_model import twin_models
from timing import median_seconds
from torch import nn
from transformers.utils import logging as hf_logging

from scratchgpt.config import get_preset
from scratchgpt.model.summary import training_flops_per_token
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.language_modeling import LanguageModelingTask
from scratchgpt.training.trainer import Trainer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(device: torch.device, dtype: torch.dtype, repeats: int) -> tuple[float, int]:
    """The best (over sizes) median FLOP/s of ``a @ b`` for square matrices, and that size."""
    best = (0.0, 0)
    for n in (1024, 2048, 4096):
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        times = []
        for i in range(repeats + 2):  # two warm-up products
            synchronize(device)
            start = time.perf_counter()
            a @ b
            synchronize(device)
            if i >= 2:
                times.append(time.perf_counter() - start)
        best = max(best, (2 * n**3 / statistics.median(times), n))
    return best


class LogitsOnly(nn.Module):
    """``GPT2LMHeadModel`` returning a logits tensor, as the Trainer's loss expects."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.hf(idx).logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpt2-small")
    parser.add_argument("--batch", type=int, default=4, help="sequences per step")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=list(DTYPES), default="fp32")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    device = torch.device(args.device)

    peak, size = matmul_flops(device, DTYPES[args.precision], args.repeats)
    config = get_preset(args.preset)
    ours, hf = twin_models(config)
    flops_per_token = training_flops_per_token(ours, args.seq_len)
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, 64 * args.batch *
                                               (args.seq_len + 1))
    train_config = TrainConfig(
        max_steps=10**6, batch_size=args.batch, warmup_steps=0, lr=1e-4, min_lr=1e-4,
        device=args.device, precision=args.precision, compile=args.compile,
    )
    trainers = []
    with tempfile.TemporaryDirectory() as run_dir:
        for model in (ours, LogitsOnly(hf)):
            task = LanguageModelingTask(tokens, tokens, context_length=args.seq_len,
                                        batch_size=args.batch, seed=0)
            trainers.append(Trainer(model, task, train_config, Path(run_dir),
                                    show_progress=False))

        def step(trainer: Trainer) -> None:
            trainer.train_step().item()  # .item() waits for the device

        seconds = median_seconds([lambda t=t: step(t) for t in trainers], args.repeats,
                                 args.warmup)

    batch_tokens = args.batch * args.seq_len
    print(f"torch {torch.__version__}, {args.device} ({torch.get_num_threads()} threads), "
          f"{args.precision}{', compiled' if args.compile else ''}; {args.preset} shape, "
          f"batch {args.batch} x {args.seq_len} tokens; median of {args.repeats} after "
          f"{args.warmup} warm-up\n")
    print(f"matrix-product rate ({args.precision}, {size}x{size}): {peak / 1e9:,.1f} GFLOP/s; "
          f"training FLOPs per token: {flops_per_token / 1e9:.3f} GFLOP\n")
    print("| training step | tokens/s | achieved GFLOP/s | MFU |")
    print("|---|---:|---:|---:|")
    rates = []
    for name, s in zip(("scratchgpt Trainer + GPTModel", "scratchgpt Trainer + "
                        "transformers GPT2LMHeadModel"), seconds, strict=True):
        rate = batch_tokens / s
        rates.append(rate)
        achieved = rate * flops_per_token
        print(f"| {name} | {rate:,.1f} | {achieved / 1e9:,.1f} | {achieved / peak:.1%} |")
    print(f"\nratio scratchgpt / transformers: {rates[0] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
