"""What a run leaves behind for people: ``metrics.jsonl``, ``samples.txt`` and ``loss.png``.

``metrics.jsonl`` holds one JSON object per evaluation (``step``, ``tokens``, ``train_loss``,
``val_loss``, ``lr`` and any metric the task adds). When a run resumes from a checkpoint, lines
written after that checkpoint are dropped first, so the file always describes one history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scratchgpt.plots import plot_losses

METRICS = "metrics.jsonl"
SAMPLES = "samples.txt"
LOSS_PLOT = "loss.png"


class RunRecords:
    """Appends metrics and samples to a run directory and redraws the loss plot."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.metrics: list[dict[str, Any]] = []

    def rewind(self, step: int) -> None:
        """Keep only the history up to ``step`` (the checkpoint being resumed)."""
        path = self.run_dir / METRICS
        if path.exists():
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            self.metrics = [m for m in map(json.loads, lines) if m["step"] <= step]
            path.write_text("".join(json.dumps(m) + "\n" for m in self.metrics))

    def log(self, metrics: dict[str, Any]) -> None:
        self.metrics.append(metrics)
        with (self.run_dir / METRICS).open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        if {"train_loss", "val_loss"} <= metrics.keys():
            plot_losses(self.metrics, self.run_dir / LOSS_PLOT)

    def sample(self, step: int, text: str) -> None:
        with (self.run_dir / SAMPLES).open("a", encoding="utf-8") as f:
            f.write(f"--- step {step}\n{text}\n")
