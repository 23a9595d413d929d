"""Perplexity: ours against transformers' documented loop, and a pretrained model against an
n-gram baseline.

1. **Same weights, two implementations.** A GPT-2-shaped model with random weights (GPT-2's
   50,257-token vocabulary and initialisation, ``--layers``/``--emb``/``--context``) saved by
   transformers' ``save_pretrained`` and read by our ``load_model``. On the first ``--tokens``
   tokens of "The Verdict" (GPT-2's tokenizer, ``../shared/assets``), our
   ``sliding_window_nll`` against the loop of the transformers documentation's "Perplexity of
   fixed-length models" on ``GPT2LMHeadModel``, for disjoint windows and for a stride of half
   the window. Median seconds of ``--repeats`` alternating turns, the ratio, and the values:
   ours, the loop verbatim, and the loop with its token count corrected (with overlapping
   windows the verbatim loop weights each window one token short; see
   ``scratchgpt.evaluation.perplexity``).
2. **A pretrained model against n-grams.** A ``scratchgpt pretrain`` run (``--run DIR``, or one
   trained here: ``nano`` on the built-in corpus for ``--steps`` steps, about a minute and a
   half on two CPU cores); its validation split (the last ``val_fraction`` of the corpus's
   tokens, as the run cut it) is the held-out text. Interpolated Kneser-Ney n-grams
   (unigram, bigram, trigram) count the run's training split with the run's tokenizer; the
   model is scored with disjoint windows and with a stride of half its context. The same
   model, exported to Hugging Face's layout, goes through transformers' loop as a check.

Prints markdown tables.

    python bench/bench_perplexity.py                     # ~4 min: trains a nano run (~90 s)
    python bench/bench_perplexity.py --run runs/pretrain-20250101-120000
    python bench/bench_perplexity.py --quick              # ~2 min: fewer tokens and steps
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timing import median_seconds
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from scratchgpt.config_files import load_toml
from scratchgpt.data.corpus import load_corpus, tokenize_corpus, train_val_split
from scratchgpt.data.token_files import read_token_file
from scratchgpt.evaluation.ngram import KneserNeyLM
from scratchgpt.evaluation.perplexity import sliding_window_nll
from scratchgpt.hub.export import export_hf
from scratchgpt.hub.models import load_model
from scratchgpt.tokenizers import Tokenizer, load_gpt2_tokenizer, save_gpt2_files

ASSETS = Path(__file__).resolve().parent.parent.parent / "shared" / "assets"


def documented_loop(model: GPT2LMHeadModel, ids: list[int], max_length: int,
                    stride: int) -> tuple[float, float]:
    """transformers' documented loop; (perplexity as written, perplexity with the count of the
    targets the loss averages over)."""
    encodings = torch.tensor([ids])
    seq_len = encodings.size(1)
    nll_sum, n_tokens, exact_sum, exact_tokens = 0.0, 0, 0.0, 0
    prev_end_loc = 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = encodings[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            neg_log_likelihood = model(input_ids, labels=target_ids).loss.item()
        num_loss_tokens = (target_ids != -100).sum().item() - target_ids.size(0)
        nll_sum += neg_log_likelihood * num_loss_tokens
        n_tokens += num_loss_tokens
        counted = (target_ids[:, 1:] != -100).sum().item()
        if counted:  # a last window of one token: nothing scored (the loop divides 0 by 0)
            exact_sum += neg_log_likelihood * counted
            exact_tokens += counted
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return math.exp(nll_sum / n_tokens), math.exp(exact_sum / exact_tokens)


def compare_implementations(args: argparse.Namespace) -> None:
    tokenizer = load_gpt2_tokenizer(ASSETS / "gpt2-tokenizer")
    text = (ASSETS / "corpora" / "the-verdict.txt").read_text(encoding="utf-8")
    ids = tokenizer.encode(text)[: args.tokens]
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=args.layers, n_embd=args.emb, n_head=args.heads,
                                    n_positions=args.context, vocab_size=50257)).eval()
    with tempfile.TemporaryDirectory() as directory:
        hf.save_pretrained(directory)
        save_gpt2_files(tokenizer, directory)
        ours, _ = load_model(directory)
    print(f"\n## 1. Ours against transformers' documented loop\n\nGPT-2-shaped random model "
          f"({args.layers} layers, {args.emb} wide, context {args.context}, vocabulary 50,257), "
          f"\"The Verdict\" ({len(ids):,} GPT-2 tokens), {torch.get_num_threads()} threads, "
          f"median of {args.repeats}; ours batches {args.batch_size} windows\n")
    print("| stride | ours | transformers' loop | speed-up | ours: perplexity | loop verbatim "
          "| loop, count corrected | ours vs corrected |")
    print("|---|---|---|---|---|---|---|---|")
    results: dict[str, Any] = {}
    for stride in (args.context, args.context // 2):

        def run_ours(stride: int = stride) -> None:
            results["ours"] = sliding_window_nll(ours, ids, args.context, stride,
                                                 args.batch_size, progress=False)

        def run_loop(stride: int = stride) -> None:
            results["loop"] = documented_loop(hf, ids, args.context, stride)

        ours_s, loop_s = median_seconds([run_ours, run_loop], repeats=args.repeats, warmup=1)
        mine = results["ours"].perplexity
        verbatim, corrected = results["loop"]
        print(f"| {stride} | {ours_s:.2f} s | {loop_s:.2f} s | {loop_s / ours_s:.2f}x | "
              f"{mine:,.2f} | {verbatim:,.2f} | {corrected:,.2f} | "
              f"{abs(mine - corrected) / corrected:.1e} |")


def pretrain_run(args: argparse.Namespace, directory: Path) -> Path:
    run_dir = directory / "nano"
    command = [sys.executable, "-m", "scratchgpt.cli", "pretrain", "--out", str(run_dir),
               "--preset", "nano", "--tokenizer", "bpe:512", "--max-steps", str(args.steps),
               "--batch-size", "16", "--warmup-steps", "20", "--eval-every",
               str(max(1, args.steps // 3)), "--eval-batches", "4", "--sample-tokens", "10",
               "--workers", "1"]
    print("training:", " ".join(command[2:]), file=sys.stderr)
    subprocess.run(command, check=True, stdout=sys.stderr)
    return run_dir


def validation_split(run_dir: Path, tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """The run's training and validation tokens, cut as ``scratchgpt pretrain`` cut them."""
    tables = load_toml(run_dir / "config.toml")
    data = tables.get("data", {})
    corpus = load_corpus(data.get("data"), encoding_errors=data.get("encoding_errors", "strict"))
    tokens = read_token_file(tokenize_corpus(corpus, tokenizer, progress=False))
    context = tables["resolved_model"]["context_length"]
    return train_val_split(np.asarray(tokens), data.get("val_fraction", 0.1), context)


def compare_with_ngrams(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.run or pretrain_run(args, Path(scratch))
        model, tokenizer = load_model(run_dir)
        train, val = validation_split(run_dir, tokenizer)
        context = model.config.context_length
        rows = []
        for order, name in ((1, "unigram"), (2, "bigram"), (3, "trigram")):
            start = time.perf_counter()
            lm = KneserNeyLM(tokenizer.vocab_size, order).fit(train)
            value = lm.perplexity(val)
            rows.append((f"{name}, Kneser-Ney (D=0.75)", "-", value, len(val) - 1,
                         time.perf_counter() - start))
        for stride in (context, context // 2):
            start = time.perf_counter()
            result = sliding_window_nll(model, val, context, stride, batch_size=16,
                                        progress=False)
            rows.append((f"{run_dir.name} ({model.num_parameters():,} parameters)",
                         str(stride), result.perplexity, result.tokens,
                         time.perf_counter() - start))
        check_ids = val[: args.check_tokens].tolist()
        mine = sliding_window_nll(model, check_ids, context, context // 2,
                                  progress=False).perplexity
        with tempfile.TemporaryDirectory() as exported:
            export_hf(model, tokenizer, exported)
            hf = GPT2LMHeadModel.from_pretrained(exported).eval()
            verbatim, corrected = documented_loop(hf, check_ids, context, context // 2)
        metrics = (run_dir / "metrics.jsonl").read_text().splitlines()
        print(f"\n## 2. Pretrained model against n-grams\n\nrun {run_dir}: held-out = its "
              f"validation split, {len(val):,} tokens (vocabulary {tokenizer.vocab_size:,}); "
              f"n-grams count its {len(train):,} training tokens\n")
        print("| model | stride | perplexity | tokens scored | seconds |")
        print("|---|---|---|---|---|")
        for name, stride_text, value, tokens, seconds in rows:
            print(f"| {name} | {stride_text} | {value:,.2f} | {tokens:,} | {seconds:.1f} |")
        print(f"\nthe run's last logged line: {metrics[-1] if metrics else '(none)'}")
        print(f"check on the first {len(check_ids):,} held-out tokens, stride {context // 2}: "
              f"ours {mine:.4f}, transformers' loop on the exported model {verbatim:.4f} "
              f"verbatim, {corrected:.4f} count corrected "
              f"(ours vs corrected: {abs(mine - corrected) / corrected:.1e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a pretrain run directory (default: train one)")
    parser.add_argument("--steps", type=int, default=300, help="steps of the run trained here")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--emb", type=int, default=128)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=2048,
                        help="tokens of The Verdict scored in part 1")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--check-tokens", type=int, default=4000,
                        help="held-out tokens for the transformers check of part 2")
    parser.add_argument("--quick", action="store_true",
                        help="smaller: 1,024 tokens, 3 repeats, 150 steps")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.repeats, args.steps = 1024, 3, 150
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    compare_implementations(args)
    compare_with_ngrams(args)


if __name__ == "__main__":
    main()
