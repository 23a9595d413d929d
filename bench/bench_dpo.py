"""Benchmark one DPO training step against TRL's ``DPOTrainer``.

One step of full-weight DPO at the gpt2-small shape (124M weights; ``--layers`` fewer blocks)
on B random preference pairs, each a prompt of ``--prompt-len`` tokens answered two ways in
``--answer-len`` tokens (the same ids on both sides), beta 0.1, sigmoid loss, fp32. A step
is ``zero_grad(set_to_none=True)`` (first, so that the gradients are still there to be
counted after it), then:

1. ours: :class:`~scratchgpt.finetune.preference.DPOTask`'s ``loss`` on the batch of
   :func:`~scratchgpt.data.preference_batches.collate_pairs` (2B rows, the chosen then the
   rejected, targets only on the answers): the policy's forward, the frozen reference's
   forward without gradients (:class:`~scratchgpt.finetune.preference.Reference` around a copy
   of the starting model, as ``finetune dpo --train all`` builds it), the DPO loss; then
   backward and the AdamW step (``build_optimizer``, fused, as our ``Trainer`` builds it);
2. TRL 1.16: ``DPOTrainer.training_step`` (its concatenated forward of the chosen and rejected
   rows, the ``ref_model``'s forward without gradients, the loss, backward) on the batch its
   ``DataCollatorForPreference`` makes of the same pairs, then the step of the AdamW its
   ``create_optimizer`` builds (``optim="adamw_torch_fused"``). ``GPT2LMHeadModel`` holds our
   weights; ``ref_model`` is a frozen copy of it.

Alike on both sides: AdamW's learning rate, betas, epsilon and weight decay (our ``finetune
dpo`` defaults; checked before timing), decay on the same tensors (matrices and embeddings),
fused; no dropout; no gradient clipping (both trainers clip in their loops, outside what is
timed here); no gradient checkpointing (TRL's default turns it on, trading time for memory:
off here, as ours has none). Not alike, by design of each:

- TRL's step also computes and records metrics ours does not (entropy, mean logits, top-1
  accuracy of the chosen answers, rewards, margins, log-probabilities: a dozen ``.item()``
  calls, each a device sync on CUDA); ours computes the rewards and leaves them;
- TRL's fused LM head never holds the ``[2B, T, vocab]`` logits: it projects in tiles of
  32,768 words and recomputes each tile in backward (one more head-sized matmul); on CPU it
  scores every position, on CUDA (Triton) the answers' only. Ours materializes the logits,
  then takes the answers' log-softmax;
- TRL runs the backbone on all T tokens of a row, ours on the T - 1 that have a next token.

Before timing, a check: both sides' loss on the same batch, at the first step (policy =
reference: log 2) and after one AdamW step each (the policy has moved from the reference).

Both run in one process and take turns every repeat, so drifting machine load hits them
alike; the time is the median of ``--repeats`` (5) after ``--warmup`` (1, at least 1) untimed
steps (the first allocates the gradients and the optimizer state). Weights are random: no
download.

Memory, per side, in a fresh process holding only that side, over two training steps:

- **tensors**: the bytes of the policy's weights, gradients and AdamW state and the
  reference's weights (shared storage once);
- **peak**: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the peak resident memory
  (``VmHWM``, reset after the models are built) above the resident memory after the imports.

Prints a markdown table with the ratios ours / TRL (below 1: ours is faster or smaller).

    python bench/bench_dpo.py                           # gpt2-small, 2 pairs x (64 + 64), CPU
    python bench/bench_dpo.py --device cuda --batch-size 8 --prompt-len 256 --answer-len 256
"""

from __future__ import annotations

import argparse
import copy
import gc
import string
import sys
import tempfile
import warnings
from typing import Any

import torch
from bench_model import twin_models
from datasets import Dataset, disable_progress_bars
from memory import PeakMemory, peak_kind, report, run_child, tensor_bytes
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging
from trl import DPOConfig, DPOTrainer

from scratchgpt.config import ModelConfig, get_preset
from scratchgpt.data.instructions import InstructionRecord
from scratchgpt.data.preference_batches import PreferenceExamples, collate_pairs
from scratchgpt.data.preferences import PreferenceRecord
from scratchgpt.data.prompt_styles import get_prompt_style
from scratchgpt.finetune.config import DPO_TRAIN_DEFAULTS
from scratchgpt.finetune.preference import DPOTask, Reference
from scratchgpt.tokenizers import ENDOFTEXT, CharTokenizer
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.optimizers import build_optimizer

VARIANTS = {"ours": "ours (DPOTask.loss, fused AdamW)",
            "trl": "TRL DPOTrainer (GPT2LMHeadModel, fused AdamW)"}
BETA = 0.1
# Our `finetune dpo` defaults: lr 5e-6, weight decay 0.01, betas (0.9, 0.95); TRL gets the same.
TRAIN = TrainConfig(lr=DPO_TRAIN_DEFAULTS["lr"], weight_decay=DPO_TRAIN_DEFAULTS["weight_decay"])

# TRL's DPOConfig sets transformers' `gradient_checkpointing` by its old name; not ours to fix.
warnings.filterwarnings("ignore", message="`gradient_checkpointing` is deprecated",
                        category=FutureWarning)


def shape(args: argparse.Namespace) -> ModelConfig:
    config = get_preset("gpt2-small")
    return config.replace(n_layers=args.layers) if args.layers else config


def pairs(args: argparse.Namespace) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """B random pairs, seeded: prompts, chosen answers, rejected answers (token ids)."""
    vocab, b = shape(args).vocab_size, args.batch_size
    generator = torch.Generator().manual_seed(1)

    def ids(length: int) -> list[list[int]]:
        return torch.randint(0, vocab, (b, length), generator=generator).tolist()

    return ids(args.prompt_len), ids(args.answer_len), ids(args.answer_len)


def dpo_task(reference: Reference, batch_size: int, context_length: int) -> DPOTask:
    """Our DPO task around ``reference``: its ``loss`` is the step's. It also holds training and
    validation pairs for its evaluations (one pair, in a character tokenizer), which no step
    reads: a step's batch is given to ``loss``."""
    style = get_prompt_style("alpaca")
    tokenizer = CharTokenizer.from_texts(string.printable, [ENDOFTEXT])
    record = PreferenceRecord(InstructionRecord("Say yes.", "", "Yes."),
                              InstructionRecord("Say yes.", "", "No."))
    examples = PreferenceExamples([record], tokenizer, style, context_length)
    return DPOTask(examples, examples, reference, beta=BETA, label_smoothing=0.0,
                   precompute=False, batch_size=batch_size, eval_examples=1, seed=0,
                   tokenizer=tokenizer, style=style, stop_ids=None, sample_pairs=[],
                   max_new_tokens=1)


def build_ours(args: argparse.Namespace) -> dict[str, Any]:
    """Our side: the step, the loss without a step (for the check), and the policy, the
    reference and the optimizer (for the memory count)."""
    device = torch.device(args.device)
    policy, hf = twin_models(shape(args))
    del hf
    policy = policy.to(device).train()
    frozen = copy.deepcopy(policy)  # finetune dpo --train all: the start, kept frozen
    reference = Reference(policy, frozen)
    task = dpo_task(reference, args.batch_size, policy.config.context_length)
    optimizer = build_optimizer("adamw", policy, lr=TRAIN.lr, weight_decay=TRAIN.weight_decay,
                                betas=(TRAIN.beta1, TRAIN.beta2), fused=True)
    prompts, chosen, rejected = pairs(args)
    prompt_seen, answer_learned = [False] * args.prompt_len, [True] * args.answer_len
    batch = tuple(t.to(device) for t in collate_pairs(
        [p + c for p, c in zip(prompts, chosen, strict=True)],
        [prompt_seen + answer_learned] * args.batch_size,
        [p + r for p, r in zip(prompts, rejected, strict=True)],
        [prompt_seen + answer_learned] * args.batch_size, pad_id=0))

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)  # first: the gradients stay to be counted
        loss = task.loss(policy, batch)
        loss.backward()
        optimizer.step()
        return loss.item()  # waits for the device

    def loss() -> float:
        with torch.no_grad():
            return task.loss(policy, batch).item()

    return {"step": step, "loss": loss, "policy": policy, "reference": frozen,
            "optimizer": optimizer.optimizers[0]}


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A four-word tokenizer: ``DPOTrainer`` wants one (for its pad token and to tokenize its
    dataset), though the timed batch is made of ids."""
    vocab = {ENDOFTEXT: 0, "a": 1, "b": 2, "c": 3}
    rust = RustTokenizer(models.WordLevel(vocab, unk_token=ENDOFTEXT))
    rust.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=rust, eos_token=ENDOFTEXT)


def build_trl(args: argparse.Namespace, output_dir: str) -> dict[str, Any]:
    """TRL's side, as :func:`build_ours` gives ours: ``DPOTrainer`` on a GPT2LMHeadModel with
    our weights, stepping on its batch of the same pairs."""
    device = torch.device(args.device)
    ours, hf = twin_models(shape(args))
    del ours
    hf = hf.to(device)
    ref_model = copy.deepcopy(hf).eval().requires_grad_(False)
    config = DPOConfig(
        output_dir=output_dir, report_to="none", save_strategy="no", disable_tqdm=True,
        use_cpu=device.type == "cpu", bf16=False, fp16=False, gradient_checkpointing=False,
        per_device_train_batch_size=args.batch_size, max_length=None,
        beta=BETA, loss_type=["sigmoid"], precompute_ref_log_probs=False,
        optim="adamw_torch_fused", learning_rate=TRAIN.lr, weight_decay=TRAIN.weight_decay,
        adam_beta1=TRAIN.beta1, adam_beta2=TRAIN.beta2)
    dataset = Dataset.from_dict({"prompt": ["a"], "chosen": [" b"], "rejected": [" c"]})
    trainer = DPOTrainer(hf, ref_model=ref_model, args=config, train_dataset=dataset,
                         processing_class=tiny_tokenizer())
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train's loop, not run here
    prompts, chosen, rejected = pairs(args)
    batch = trainer.data_collator([
        {"prompt_ids": p, "chosen_ids": c, "rejected_ids": r}
        for p, c, r in zip(prompts, chosen, rejected, strict=True)])
    batch = {key: t.to(device) for key, t in batch.items()}
    model, optimizer = trainer.model, trainer.optimizer

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = trainer.training_step(model, batch)  # forward, reference, loss, backward
        optimizer.step()
        return loss.item()

    def loss() -> float:
        with torch.no_grad():
            return trainer.compute_loss(model, batch).item()

    return {"step": step, "loss": loss, "policy": model, "reference": ref_model,
            "optimizer": optimizer}


def adamw_settings(optimizer: torch.optim.Optimizer) -> list[tuple[Any, ...]]:
    """Each parameter group's weights and AdamW settings: what both sides must share."""
    keys = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "fused")
    return [(type(optimizer).__name__, sum(p.numel() for p in group["params"]),
             *(group[key] for key in keys)) for group in optimizer.param_groups]


def held_bytes(side: dict[str, Any]) -> int:
    """The policy's weights, gradients and AdamW state, and the reference's weights."""
    reference = sum(p.numel() * p.element_size() for p in side["reference"].parameters())
    return tensor_bytes(side["policy"], side["optimizer"]) + reference


def build(variant: str, args: argparse.Namespace, output_dir: str) -> dict[str, Any]:
    return build_ours(args) if variant == "ours" else build_trl(args, output_dir)


def measure_memory(variant: str, args: argparse.Namespace) -> None:
    """Child process: build one side, run two steps, report its memory."""
    memory = PeakMemory(torch.device(args.device))
    with tempfile.TemporaryDirectory() as output_dir:
        side = build(variant, args, output_dir)
        memory.reset()
        for _ in range(2):
            side["step"]()
        report({"tensors": held_bytes(side), "peak": memory.peak()})


def child_memory(variant: str, argv: list[str]) -> dict[str, int]:
    return run_child(__file__, [*argv, "--child", variant])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=None, help="blocks, if not gpt2-small's 12")
    parser.add_argument("--batch-size", type=int, default=2, help="preference pairs per step")
    parser.add_argument("--prompt-len", type=int, default=64, help="prompt tokens per pair")
    parser.add_argument("--answer-len", type=int, default=64, help="tokens per answer")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (with one GPU visible: "
                        "DPOTrainer refuses several in one process)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory processes")
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    disable_progress_bars()
    if args.child:
        measure_memory(args.child, args)
        return

    from timing import median_seconds

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as output_dir:
        sides = {variant: build(variant, args, output_dir) for variant in VARIANTS}
        settings = {variant: adamw_settings(side["optimizer"]) for variant, side in sides.items()}
        if settings["ours"] != settings["trl"]:
            raise SystemExit(f"AdamW differs: ours {settings['ours']}, TRL {settings['trl']}")
        first = {variant: side["step"]() for variant, side in sides.items()}  # 1st warm-up
        moved = {variant: side["loss"]() for variant, side in sides.items()}
        seconds = dict(zip(sides, median_seconds([side["step"] for side in sides.values()],
                                                 args.repeats, max(args.warmup - 1, 0)),
                           strict=True))
        params = {variant: sum(p.numel() for p in side["policy"].parameters())
                  for variant, side in sides.items()}
    memory = {}
    if not args.no_memory:
        del sides  # free this process's models before the children start
        gc.collect()
        memory = {variant: child_memory(variant, sys.argv[1:]) for variant in VARIANTS}

    threads = f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else ""
    blocks = f" in {args.layers} blocks" if args.layers else ""
    seq = args.prompt_len + args.answer_len
    print(f"torch {torch.__version__}, trl {sys.modules['trl'].__version__}, {args.device}"
          f"{threads}, fp32; gpt2-small shape{blocks}; {args.batch_size} pairs x (prompt "
          f"{args.prompt_len} + answer {args.answer_len} = {seq} tokens), beta {BETA}, sigmoid; "
          f"median of {args.repeats} after {args.warmup} warm-up step(s)")
    _, weights, lr, betas, eps, decay, *_ = settings["ours"][0]
    print(f"AdamW alike on both sides: lr {lr:g}, betas {betas}, eps {eps:g}, weight decay "
          f"{decay:g} on {weights:,} weights, 0 on the other {settings['ours'][1][1]:,}, fused")
    print(f"loss check, first step (policy = reference, log 2): ours {first['ours']:.6f}, TRL "
          f"{first['trl']:.6f}, |diff| {abs(first['ours'] - first['trl']):.2e}")
    print(f"loss check, after one step each: ours {moved['ours']:.6f}, TRL {moved['trl']:.6f}, "
          f"|diff| {abs(moved['ours'] - moved['trl']):.2e}")
    if memory:
        print(f"memory: fresh process per side, two steps; peak = {peak_kind(device)}")
    print()
    mib = 2**20
    print("| DPO step | policy weights | step (ms) | policy + grads + AdamW + reference (MiB) "
          "| peak (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for variant, label in VARIANTS.items():
        mem = memory.get(variant, {})
        tensors = f"{mem['tensors'] / mib:,.0f}" if mem else "-"
        peak = f"{mem['peak'] / mib:,.0f}" if mem else "-"
        print(f"| {label} | {params[variant]:,} | {seconds[variant] * 1e3:,.0f} | {tensors} "
              f"| {peak} |")
    ratios = [f"**{seconds['ours'] / seconds['trl']:.2f}x**"]
    ratios += ([f"{memory['ours'][key] / memory['trl'][key]:.2f}x" for key in ("tensors", "peak")]
               if memory else ["", ""])
    print("| ours / TRL | | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
