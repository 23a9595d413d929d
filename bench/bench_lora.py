"""Benchmark one LoRA training step against Hugging Face's peft, and full fine-tuning beside it.

Four variants of one training step (forward, cross-entropy, backward, fused AdamW step) on
random tokens, at the ``--preset`` shape (gpt2-small, 124M weights; or an open family's
published shape, ``qwen3-0.6b``, with transformers' model of that family and peft on its q, k,
v, o, gate, up and down projections, ``--layers`` fewer blocks where memory is short):

1. ours, full fine-tuning: ``GPTModel``, every weight trains;
2. ours, LoRA: ``apply_lora`` (rank 8, alpha 16 on every projection: GPT-2's ``qkv``, ``o``,
   ``up``, ``down``; a family's ``q``, ``k``, ``v``, ``o``, ``gate``, ``up``, ``down``, one
   adapter per projection as peft puts them), only the adapters train;
3. transformers, full fine-tuning: ``GPT2LMHeadModel`` with the same weights;
4. peft LoRA: ``get_peft_model`` on that ``GPT2LMHeadModel``, ``LoraConfig(r=8,
   lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)``: the
   same four layers per block (GPT-2's ``c_proj`` is both the attention and the MLP output).

All four run in one process and take turns every repeat, so drifting machine load hits them
alike; the time is the median of ``--repeats`` (5) after ``--warmup`` (1, at least 1) untimed
steps (the first allocates the gradients and the optimizer state). Weights are random: no
download.

Memory, per variant, in a fresh process holding only that variant, over two training steps:

- **tensors**: the bytes of the weights, gradients and AdamW state (counted by summing the
  tensors, shared storage once), which is what training must keep;
- **peak**: on CUDA ``torch.cuda.max_memory_allocated`` (weights, gradients, optimizer state
  and activations); on CPU the peak resident memory (``VmHWM``, reset after the model is
  built) above the resident memory after the imports: the same things plus what the
  allocator keeps.

Prints a markdown table with the ratios ours / peer (below 1: ours is faster or smaller).

    python bench/bench_lora.py                          # gpt2-small, batch 2 x 128, CPU
    python bench/bench_lora.py --device cuda --batch-size 8 --seq-len 1024
"""

from __future__ import annotations

import argparse
import gc
import sys
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from memory import PeakMemory, peak_kind, report, run_child, tensor_bytes
from torch import nn

# peft asks transformers 5 a question by its deprecated name; not ours to fix.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing`", category=FutureWarning)

VARIANTS = {  # key -> label
    "ours-full": "ours, full fine-tuning",
    "hf-full": "transformers (GPT2LMHeadModel or the family's), full fine-tuning",
    "ours-lora": "ours, LoRA (apply_lora)",
    "peft-lora": "transformers + peft LoRA",
}
PAIRS = {"full": ("ours-full", "hf-full"), "lora": ("ours-lora", "peft-lora")}
PEFT_TARGETS = ["c_attn", "c_proj", "c_fc"]  # c_proj: attn.c_proj and mlp.c_proj
# Llama 3, Qwen3, Gemma 3: the same projections, q/k/v and gate/up apart (ours: parts of one).
PEFT_OPEN_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                     "down_proj"]


def shape(args: argparse.Namespace) -> object:
    """The ``--preset``'s ModelConfig, with ``--layers`` blocks where given (a published
    shape's width in fewer blocks, for a box without the memory for four copies)."""
    from scratchgpt.config import get_preset

    config = get_preset(args.preset)
    return config.replace(n_layers=args.layers) if args.layers else config


def build(variant: str, args: argparse.Namespace) -> tuple[nn.Module, Callable]:
    """The model for ``variant`` on ``args.device`` and a function: token ids -> logits.

    Ours and transformers' get the same weights (``bench_model.twin_models``, seeded), so
    all four start from the same loss.
    """
    from bench_model import twin_models
    from peft import LoraConfig, get_peft_model

    from scratchgpt.model import apply_lora

    ours, hf = twin_models(shape(args))
    ours_config = ours.config
    if variant.startswith("ours"):
        del hf
        if variant == "ours-lora":
            apply_lora(ours, args.rank, args.alpha)
        return ours.to(args.device).train(), ours
    del ours
    if variant == "peft-lora":
        gpt2 = ours_config.pos_encoding != "rope"
        config = LoraConfig(r=args.rank, lora_alpha=args.alpha,
                            target_modules=PEFT_TARGETS if gpt2 else PEFT_OPEN_TARGETS,
                            lora_dropout=0.0, fan_in_fan_out=gpt2, bias="none")
        hf = get_peft_model(hf, config)
    hf = hf.to(args.device).train()
    return hf, lambda ids: hf(input_ids=ids, use_cache=False).logits


def trainer(model: nn.Module, forward: Callable, args: argparse.Namespace
            ) -> tuple[Callable[[], float], torch.optim.Optimizer]:
    """One training step on a fixed random batch, as a function returning the loss."""
    device = torch.device(args.device)
    vocab = shape(args).vocab_size
    tokens = torch.randint(0, vocab, (args.batch_size, args.seq_len + 1),
                           generator=torch.Generator().manual_seed(1)).to(device)
    ids, targets = tokens[:, :-1], tokens[:, 1:]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=1e-4, fused=True)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        logits = forward(ids)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        optimizer.step()
        return loss.item()  # waits for the device

    return step, optimizer


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def measure_memory(variant: str, args: argparse.Namespace) -> None:
    """Child process: build one variant, run two steps, report its memory."""
    import bench_model  # noqa: F401  (the imports build() makes, before the baseline)
    import peft  # noqa: F401
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    memory = PeakMemory(torch.device(args.device))
    model, forward = build(variant, args)
    step, optimizer = trainer(model, forward, args)
    memory.reset()
    for _ in range(2):
        step()
    report({"tensors": tensor_bytes(model, optimizer), "peak": memory.peak()})


def child_memory(variant: str, argv: list[str]) -> dict[str, int]:
    return run_child(__file__, [*argv, "--child", variant])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpt2-small", help="the model's shape "
                        "(gpt2-small, ..., qwen3-0.6b, llama-3.2-1b, gemma-3-270m)")
    parser.add_argument("--layers", type=int, default=None, help="blocks, if not the preset's")
    parser.add_argument("--batch-size", type=int, default=2, help="sequences per step")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank")
    parser.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory processes")
    parser.add_argument("--pair", choices=["both", *PAIRS], default="both",
                        help="time one pair alone (full: ours and transformers' full "
                             "fine-tuning; lora: ours and peft), so that the other pair's models "
                             "do not share the machine's memory")
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        measure_memory(args.child, args)
        return

    from timing import median_seconds
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    device = torch.device(args.device)
    variants = [v for pair, members in PAIRS.items() if args.pair in ("both", pair)
                for v in members]
    steps, params, first_loss = {}, {}, {}
    for variant in variants:
        model, forward = build(variant, args)
        steps[variant], _ = trainer(model, forward, args)
        params[variant] = trainable_parameters(model)
    for variant, step in steps.items():  # also the first warm-up step
        first_loss[variant] = step()
    seconds = dict(zip(steps, median_seconds(list(steps.values()), args.repeats,
                                             max(args.warmup - 1, 0)), strict=True))
    memory = {}
    if not args.no_memory:
        argv = sys.argv[1:]
        del steps, model, forward  # free this process's models before the children start
        gc.collect()
        memory = {variant: child_memory(variant, argv) for variant in variants}

    threads = f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else ""
    blocks = f" in {args.layers} blocks" if args.layers else ""
    print(f"torch {torch.__version__}, {args.device}{threads}, fp32; {args.preset} shape{blocks}, "
          f"batch "
          f"{args.batch_size} x {args.seq_len} tokens; LoRA rank {args.rank}, alpha "
          f"{args.alpha:g}; median of {args.repeats} after {args.warmup} warm-up step(s)")
    losses = ", ".join(f"{v} {loss:.4f}" for v, loss in first_loss.items())
    print(f"first-step losses (same weights, adapters start at zero): {losses}")
    if memory:
        print(f"memory: fresh process per variant, two steps; peak = {peak_kind(device)}")
    print()
    mib = 2**20
    print("| variant | trainable weights | step (ms) | weights + grads + AdamW (MiB) "
          "| peak (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for ours, peer in (PAIRS[pair] for pair in PAIRS if args.pair in ("both", pair)):
        for variant in (ours, peer):
            mem = memory.get(variant, {})
            tensors = f"{mem['tensors'] / mib:,.0f}" if mem else "-"
            peak = f"{mem['peak'] / mib:,.0f}" if mem else "-"
            print(f"| {VARIANTS[variant]} | {params[variant]:,} | {seconds[variant] * 1e3:,.0f} "
                  f"| {tensors} | {peak} |")
        ratios = [f"{params[ours] / params[peer]:.2f}x",
                  f"**{seconds[ours] / seconds[peer]:.2f}x**"]
        if memory:
            ratios += [f"{memory[ours][key] / memory[peer][key]:.2f}x"
                       for key in ("tensors", "peak")]
        else:
            ratios += ["", ""]
        print(f"| ours / {'transformers' if peer == 'hf-full' else 'peft'} | "
              + " | ".join(ratios) + " |")
    if args.pair == "both":
        lora_speedup = seconds["ours-full"] / seconds["ours-lora"]
        print(f"\nLoRA step vs full fine-tuning step: ours {lora_speedup:.2f}x faster, peft "
              f"{seconds['hf-full'] / seconds['peft-lora']:.2f}x faster than transformers full")


if __name__ == "__main__":
    main()
