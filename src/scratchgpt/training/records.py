"""What a run leaves behind for people: ``metrics.jsonl``, ``samples.txt`` and ``loss.png``.

``metrics.jsonl`` holds one JSON object per evaluation (``step``, ``tokens``, ``train_loss``,
``val_loss``, ``lr`` and any metric the task adds); ``samples.txt`` a ``--- step N`` line and
the text sampled at that evaluation. When a run resumes from a checkpoint, what was written
after that checkpoint is dropped first, so the files always describe one history. A process
killed in the middle of a write leaves a torn last line; resuming drops it, with a note.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from scratchgpt.plots import plot_losses

METRICS = "metrics.jsonl"
SAMPLES = "samples.txt"
LOSS_PLOT = "loss.png"
_SAMPLE_HEADER = re.compile(r"^--- step (\d+)$", re.MULTILINE)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records in a ``metrics.jsonl``. A last line cut short by a kill is dropped with a
    note on stderr; any other line that is not a JSON object is an error naming the line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    metrics = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines) and not path.read_bytes().endswith(b"\n"):
                print(f"note: {path} line {number} was cut short (the run was killed while "
                      "writing it); dropped it", file=sys.stderr)
                continue
            raise ValueError(f"{path} line {number}: not valid JSON ({err.msg}); fix or delete "
                             "the line") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise ValueError(f"{path} line {number}: expected an object with a whole-number "
                             '"step"; fix or delete the line')
        metrics.append(record)
    return metrics


class RunRecords:
    """Appends metrics and samples to a run directory and redraws the loss plot."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.metrics: list[dict[str, Any]] = []

    def rewind(self, step: int) -> None:
        """Keep only the history up to ``step`` (the checkpoint being resumed)."""
        path = self.run_dir / METRICS
        if path.exists():
            self.metrics = [m for m in read_metrics(path) if m["step"] <= step]
            path.write_text("".join(json.dumps(m) + "\n" for m in self.metrics), encoding="utf-8")
        samples = self.run_dir / SAMPLES
        if samples.exists():
            text = samples.read_text(encoding="utf-8")
            later = next((m.start() for m in _SAMPLE_HEADER.finditer(text)
                          if int(m.group(1)) > step), len(text))
            samples.write_text(text[:later], encoding="utf-8")
        if self.metrics:
            self._plot()
        else:
            (self.run_dir / LOSS_PLOT).unlink(missing_ok=True)

    def clear(self) -> None:
        """Start the history over (a run that restarts from step 0)."""
        self.metrics = []
        for name in (METRICS, SAMPLES, LOSS_PLOT):
            (self.run_dir / name).unlink(missing_ok=True)

    def log(self, metrics: dict[str, Any]) -> None:
        self.metrics.append(metrics)
        with (self.run_dir / METRICS).open("a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")
        self._plot()

    def _plot(self) -> None:
        if {"train_loss", "val_loss"} <= self.metrics[-1].keys():
            plot_losses(self.metrics, self.run_dir / LOSS_PLOT)

    def sample(self, step: int, text: str) -> None:
        with (self.run_dir / SAMPLES).open("a", encoding="utf-8") as f:
            f.write(f"--- step {step}\n{text}\n")
