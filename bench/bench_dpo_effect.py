"""What DPO changed: a ``scratchgpt finetune dpo`` run's starting model and its tuned one, side by
side on the run's held-back test pairs.

DPO's own figures (``eval.json``: reward accuracy and margin) measure the tuned model *against*
its start, so before training they are zero by definition. This asks each model on its own
which answer of a pair it finds likelier: the share of test pairs whose chosen answer gets the
higher log-probability (summed over the answer's tokens, as DPO scores it, and per token, which
a longer answer cannot win by length alone), and the mean gap. It then reads the answers both
models gave to the test prompts (``start-responses.json``, ``test-responses.json``): how many
changed, their mean length, and a few of them beside the chosen and the rejected answer.

    python bench/bench_dpo_effect.py --run runs/polite --show 5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from scratchgpt.config_files import load_toml
from scratchgpt.data.instruction_batches import IGNORE_INDEX
from scratchgpt.data.preference_batches import PreferenceExamples
from scratchgpt.data.preferences import load_preference_splits
from scratchgpt.data.prompt_styles import get_prompt_style
from scratchgpt.finetune.preference import starting_model
from scratchgpt.hub.models import model_prompt_format
from scratchgpt.model import GPTModel
from scratchgpt.run_dir import load_run
from scratchgpt.training.dpo import answer_log_probs


@torch.no_grad()
def preferences(model: GPTModel, examples: PreferenceExamples) -> dict[str, float]:
    """How often ``model`` finds the chosen answer likelier than the rejected one."""
    total, per_token, gaps = [], [], []
    for indices in torch.arange(len(examples)).split(16):
        inputs, targets = examples.batch(indices)
        log_probs = answer_log_probs(model(inputs), targets)
        lengths = (targets != IGNORE_INDEX).sum(dim=1)
        half = len(indices)
        chosen, rejected = log_probs[:half], log_probs[half:]
        total.append(chosen > rejected)
        per_token.append(chosen / lengths[:half] > rejected / lengths[half:])
        gaps.append(chosen - rejected)
    return {"chosen likelier": torch.cat(total).float().mean().item(),
            "chosen likelier per token": torch.cat(per_token).float().mean().item(),
            "mean log-prob gap": torch.cat(gaps).mean().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True,
                        help="a run directory of `scratchgpt finetune dpo`")
    parser.add_argument("--show", type=int, default=5, help="print this many answers")
    args = parser.parse_args()

    config = load_toml(args.run / "config.toml")
    tuned, tokenizer = load_run(args.run)
    start = starting_model(config["model"]["model"], args.run, config["train"]["seed"])
    style = model_prompt_format(args.run) or get_prompt_style("alpaca")
    pairs = load_preference_splits(args.run / "split").test
    examples = PreferenceExamples(pairs, tokenizer, style, tuned.config.context_length)
    answers = {name: json.loads((args.run / f"{name}-responses.json").read_text("utf-8"))
               for name in ("start", "test")}
    print(f"{args.run}: {len(examples)} test pairs; beta {config['model']['beta']}, lr "
          f"{config['train']['lr']:g}, {config['train']['max_steps']} steps\n")
    print("| model | chosen likelier (sum) | per token | mean log-prob gap | mean answer "
          "length (words) |")
    print("|---|---:|---:|---:|---:|")
    for label, model, name in (("starting model", start, "start"), ("after DPO", tuned, "test")):
        figures = preferences(model.eval(), examples)
        words = sum(len(a["response"].split()) for a in answers[name]) / len(answers[name])
        print(f"| {label} | {figures['chosen likelier']:.3f} | "
              f"{figures['chosen likelier per token']:.3f} | "
              f"{figures['mean log-prob gap']:+.2f} | {words:.1f} |")
    changed = sum(a["response"] != b["response"]
                  for a, b in zip(answers["start"], answers["test"], strict=True))
    print(f"\n{changed} of {len(answers['test'])} greedy answers changed\n")
    print("| instruction | chosen | rejected | starting model | after DPO |")
    print("|---|---|---|---|---|")
    for before, after in list(zip(answers["start"], answers["test"], strict=True))[:args.show]:
        prompt = before["instruction"] + (f" *{before['input']}*" if before["input"] else "")
        cells = [prompt, before["output"], before["rejected"], before["response"],
                 after["response"]]
        print("| " + " | ".join(" ".join(cell.split()).replace("|", "\\|") for cell in cells)
              + " |")


if __name__ == "__main__":
    main()
