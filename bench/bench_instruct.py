"""What instruction tuning gained: the base model and the fine-tuned one, side by side.

Both answer every instruction of a ``scratchgpt finetune instruct`` run's held-back test split
(``RUN/split/test.jsonl``), in the run's prompt style, greedily; the answers are scored
against the references with ROUGE-L F1 and exact match (``scratchgpt.evaluation.rouge``).
The base model is the one the run started from (its ``[model] model``; a ``preset:NAME``
start is a random model with the run's tokenizer). Also timed, the median of ``--repeats``
alternating turns: answering the test split in batches (left padding, a mask, a KV cache per
row) against one prompt at a time.

    python bench/bench_instruct.py --run runs/assistant --show 3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from timing import median_seconds

from scratchgpt.config import get_preset
from scratchgpt.config_files import load_toml
from scratchgpt.data.instructions import load_instruction_splits, record_fields
from scratchgpt.data.prompt_styles import get_prompt_style
from scratchgpt.evaluation.rouge import response_scores
from scratchgpt.finetune.init_from import PRESET_PREFIX
from scratchgpt.finetune.instruction import respond
from scratchgpt.hub.models import load_model
from scratchgpt.model import GPTModel
from scratchgpt.run_dir import load_run, run_prompt_style


def base_model(run_dir: Path) -> GPTModel:
    """The model the run started from."""
    spec = load_toml(run_dir / "config.toml")["model"]["model"]
    if spec.startswith(PRESET_PREFIX):
        config = load_toml(run_dir / "config.toml")["resolved_model"]
        torch.manual_seed(0)
        return GPTModel(get_preset(spec.removeprefix(PRESET_PREFIX)).replace(
            vocab_size=config["vocab_size"])).eval()
    return load_model(spec)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True,
                        help="a run directory of `scratchgpt finetune instruct`")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--show", type=int, default=3, help="print this many answers")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    tuned, tokenizer = load_run(args.run)
    style = get_prompt_style(run_prompt_style(args.run) or "alpaca")
    records = load_instruction_splits(args.run / "split").test
    models = {"base": base_model(args.run), "fine-tuned": tuned}
    answers, seconds = {}, {}
    for name, model in models.items():
        start = time.perf_counter()
        answers[name] = respond(model, tokenizer, style, records,
                                max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
        seconds[name] = time.perf_counter() - start

    print(f"\n{args.run}: {len(records)} test instructions, prompt style {style.name}, "
          f"greedy, at most {args.max_new_tokens} new tokens; {torch.get_num_threads()} "
          "threads\n")
    print("| model | ROUGE-L F1 | exact match | answering time |")
    print("|---|---|---|---|")
    for name in models:
        scores = response_scores((record_fields(r)["output"], a)
                                 for r, a in zip(records, answers[name], strict=True))
        print(f"| {name} | {scores['rouge_l_f1']:.4f} | {scores['exact_match']:.4f} | "
              f"{seconds[name]:.1f} s |")

    subset = records[: args.batch_size]
    batched, alone = median_seconds(
        [lambda: respond(tuned, tokenizer, style, subset, max_new_tokens=args.max_new_tokens,
                         batch_size=args.batch_size),
         lambda: respond(tuned, tokenizer, style, subset, max_new_tokens=args.max_new_tokens,
                         batch_size=1)],
        repeats=args.repeats)
    print(f"\n{len(subset)} answers: batched {batched:.2f} s, one at a time {alone:.2f} s: "
          f"{alone / batched:.2f}x faster batched (median of {args.repeats})")

    for record, base, answer in list(zip(records, answers["base"], answers["fine-tuned"],
                                         strict=True))[: args.show]:
        fields = record_fields(record)
        print(f"\n**Instruction:** {fields['instruction']}"
              + (f"\n**Input:** {fields['input']}" if fields["input"] else "")
              + f"\n**Reference:** {fields['output']}\n**Base model:** {base}"
              f"\n**Fine-tuned:** {answer}")


if __name__ == "__main__":
    main()
