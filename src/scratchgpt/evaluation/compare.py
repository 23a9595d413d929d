"""Compare runs: every evaluation each run has, in one table.

Each ``scratchgpt evaluate`` leaves a record in ``RUN/eval/`` (:mod:`.records`), and a
fine-tuning leaves its test metrics in ``RUN/eval.json``. :func:`compare_runs` reads them all
and keeps each evaluation's headline numbers: a column is an evaluation record's name and a
metric (``mmlu-5shot accuracy``), a row a run, and a run that lacks an evaluation shows a
gap. Two runs' figures sit in one column only when they came from records of the same name;
the records' data fingerprints say whether the data was really the same, and a column whose
runs saw different data is flagged.

Runs of different families (GPT-2, Llama 3, Qwen3, Gemma 3) compare in one table, with one
caution: perplexity is per *token*, and their tokenizers cut the same text into different
numbers of tokens (a larger vocabulary, fewer and less predictable tokens). A perplexity column
whose runs counted different numbers of tokens in the same text is flagged "(different
tokenizers)" and has no best: its figures are not of one unit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scratchgpt.evaluation.records import read_records

FINETUNE_FILE = "eval.json"  # a fine-tuning's own test metrics, beside its config.toml
# The numbers a person compares runs by, per evaluation; dotted names reach into a dict.
HEADLINES: dict[str, tuple[str, ...]] = {
    "mmlu": ("accuracy", "macro"),
    "perplexity": ("perplexity",),
    "judge": ("mean", "ci95", "scored", "win_rate"),  # win_rate: --mode pairwise
    "classify": ("accuracy", "f1.macro"),
    "finetune": ("rouge_l_f1", "exact_match", "accuracy", "f1.macro", "reward_accuracy",
                 "reward_margin"),
}
LOWER_IS_BETTER = {"perplexity"}


@dataclass
class Comparison:
    """Runs by columns: ``values[run][column]``; ``columns`` in first-seen order."""

    runs: list[str]
    columns: list[str] = field(default_factory=list)
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    mixed_data: set[str] = field(default_factory=set)  # columns whose runs saw different data
    mixed_tokenizers: set[str] = field(default_factory=set)  # per-token figures, unlike tokens

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "columns": self.columns, "values": self.values,
                "mixed_data": sorted(self.mixed_data),
                "mixed_tokenizers": sorted(self.mixed_tokenizers)}

    def table(self) -> str:
        """The table as aligned text: runs down, columns across (best per column starred)."""
        if not self.columns:
            return ("no evaluations found in " + ", ".join(self.runs)
                    + ": run `scratchgpt evaluate ...` on them first")
        header = ["run", *(c + (" (mixed data)" if c in self.mixed_data else "")
                           + (" (different tokenizers)" if c in self.mixed_tokenizers else "")
                           for c in self.columns)]
        best = {column: self._best(column) for column in self.columns}
        rows = [[run, *(_cell(self.values[run].get(column), best[column] == run)
                        for column in self.columns)] for run in self.runs]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                           for i, cell in enumerate(row)) for row in [header, *rows]]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(lines) + "\n(* best in its column)"

    def _best(self, column: str) -> str | None:
        """The run with the best figure in ``column`` (None when fewer than two runs have one,
        for counts and intervals, where "best" means nothing, and for figures per token of
        different tokenizers)."""
        metric = column.rsplit(" ", 1)[-1]
        scored = {run: v[column] for run, v in self.values.items() if column in v}
        if len(scored) < 2 or metric in ("scored", "ci95") or column in self.mixed_tokenizers:
            return None
        pick = min if metric in LOWER_IS_BETTER else max
        return pick(scored, key=scored.__getitem__)


def compare_runs(runs: Sequence[str | Path]) -> Comparison:
    """Read every run's evaluations (``eval/*.json`` and ``eval.json``) into one table."""
    comparison = Comparison(runs=[str(run) for run in runs])
    fingerprints: dict[str, set[str]] = {}
    token_counts: dict[str, set[int]] = {}  # a perplexity column's counts of the text's tokens
    for run in runs:
        run_dir = Path(run)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"{run_dir} is not a directory: give run directories (or "
                                    "downloaded models' directories) that were evaluated")
        row = comparison.values.setdefault(str(run), {})
        for name, record in _evaluations(run_dir).items():
            kind = record.get("evaluation", name)
            for metric in HEADLINES.get(kind, ()):
                value = _lookup(record, metric)
                if value is None:
                    continue
                column = f"{name} {metric}"
                if column not in comparison.columns:
                    comparison.columns.append(column)
                row[column] = value
                data = record.get("data")
                if isinstance(data, dict) and "sha256" in data:
                    fingerprints.setdefault(column, set()).add(data["sha256"])
                if kind == "perplexity" and _is_number(record.get("text_tokens")):
                    token_counts.setdefault(column, set()).add(record["text_tokens"])
    comparison.mixed_data = {column for column, seen in fingerprints.items() if len(seen) > 1}
    comparison.mixed_tokenizers = {column for column, seen in token_counts.items()
                                   if len(seen) > 1} - comparison.mixed_data
    return comparison


def _evaluations(run_dir: Path) -> dict[str, dict[str, Any]]:
    """A run's records by name, its fine-tuning's ``eval.json`` as ``finetune``."""
    records = read_records(run_dir)
    finetune = run_dir / FINETUNE_FILE
    if finetune.is_file():
        try:
            metrics = json.loads(finetune.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{finetune}: not a JSON file ({error})") from error
        if isinstance(metrics, dict):
            records = {"finetune": {"evaluation": "finetune", **metrics}, **records}
    return records


def _lookup(record: dict[str, Any], metric: str) -> float | None:
    """``record[a][b]`` for ``metric`` "a.b", if it is a number."""
    value: Any = record
    for key in metric.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if isinstance(value, list) and len(value) == 2:  # an interval: its half-width
        low, high = value
        return (high - low) / 2 if _is_number(low) and _is_number(high) else None
    return float(value) if _is_number(value) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: float | None, best: bool) -> str:
    if value is None:
        return "-"
    text = f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4f}"
    return text + ("*" if best else " ")
