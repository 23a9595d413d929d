"""Training curves of several runs on one figure: did the loss fall, and which run learned most?

Each run directory's ``metrics.jsonl`` (one record per evaluation, see ``docs/formats.md``) is
drawn by :func:`scratchgpt.plots.plot_curves`, the function that draws every run's own
``loss.png``, so the two pictures agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from scratchgpt.plots import plot_curves
from scratchgpt.training.records import METRICS, read_metrics

X_AXES = ("tokens", "step")


def plot_runs(run_dirs: Sequence[str | Path], path: str | Path, x: str = "tokens") -> Figure:
    """Loss curves of ``run_dirs`` on one figure, written to ``path`` (a PNG, or any format
    matplotlib knows by the suffix); returns the figure.

    One colour per run, train solid and validation dashed, named in the legend by their
    directory; perplexity on the right axis for language models; a second panel of accuracy
    when a classifier is among them. Runs of any kind mix: pretraining, classification and
    instruction fine-tuning.

    The x axis is, by default, the tokens each run has seen itself (all processes together),
    counted from its own start: a fine-tuning run begins at 0, not where its base model
    stopped. Tokens measure the work done whatever the batch size and context length, so
    runs with different settings compare fairly; ``x="step"`` counts optimizer steps instead.
    """
    if x not in X_AXES:
        raise ValueError(f"x must be one of {X_AXES}, not {x!r}")
    if not run_dirs:
        raise ValueError("no run directories to plot")
    names = [Path(run).resolve().name for run in run_dirs]
    if len(set(names)) < len(names):  # runs/a/best and runs/b/best: name them in full
        names = [str(run) for run in run_dirs]
    runs = [(name, _read_run(Path(run), x)) for name, run in zip(names, run_dirs, strict=True)]
    return plot_curves(runs, path, x)


def _read_run(run_dir: Path, x: str) -> list[dict[str, Any]]:
    """The evaluations in ``run_dir/metrics.jsonl`` that have ``x`` and a loss; an error naming
    the directory when there are none."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    if not (run_dir / METRICS).is_file():
        raise FileNotFoundError(f"{run_dir} has no {METRICS}: not a run directory, or a run that "
                                "has not finished its first evaluation yet")
    records = [m for m in read_metrics(run_dir / METRICS)
               if x in m and ("train_loss" in m or "val_loss" in m)]
    if not records:
        raise ValueError(f"{run_dir}/{METRICS} holds no evaluation with {x!r} and a loss yet; "
                         "wait for the run's first evaluation")
    return records
