"""Pictures that say more than numbers: loss curves, confusion matrices (later, attention maps)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import EngFormatter, LogFormatterSciNotation, LogLocator  # noqa: E402

_SPLITS = (("train", "-", "train"), ("val", "--", "validation"))  # field prefix, line, legend


def plot_losses(metrics: Sequence[dict[str, Any]], path: str | Path) -> None:
    """One run's curves, as its ``loss.png``: see :func:`plot_curves`."""
    plot_curves([("", metrics)], path)


def plot_curves(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: str | Path,
                x: str = "tokens") -> Figure:
    """Training curves of one or more runs, each ``(name, metrics)``, against ``x`` (a field of
    the metrics: ``tokens`` seen, or ``step``). One colour per run: train loss solid,
    validation loss dashed. Perplexity (exp loss) goes on the right when a language model is
    among the runs; classifiers (metrics with ``val_accuracy``) get a second panel, accuracy.
    The legend names the runs (a single run named ``""`` is left out). Returns the figure,
    closed, for its axes to be inspected."""
    classifiers = ["val_accuracy" in metrics[-1] for _, metrics in runs]
    fig, axes = plt.subplots(1, 2 if any(classifiers) else 1, squeeze=False,
                             figsize=(11 if any(classifiers) else 7, 4), layout="constrained")
    ax = axes[0, 0]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, ((name, metrics), classifier) in enumerate(zip(runs, classifiers, strict=True)):
        panels = [(ax, "loss"), (axes[0, 1], "accuracy")] if classifier else [(ax, "loss")]
        for panel, metric in panels:
            for split, style, _ in _SPLITS:
                points = [(m[x], m[f"{split}_{metric}"]) for m in metrics
                          if f"{split}_{metric}" in m]
                if points:
                    panel.plot(*zip(*points, strict=True), color=colours[index % len(colours)],
                               linestyle=style, label=f"{name} {split} {metric}".strip())
    key = [Line2D([], [], color=colours[i % len(colours)], linewidth=4, label=name)
           for i, (name, _) in enumerate(runs) if name]
    key += [Line2D([], [], color="grey" if key else colours[0], linestyle=style, label=label)
            for _, style, label in _SPLITS]
    ax.legend(handles=key, loc="upper right", fontsize="small")
    for panel, label in zip(axes[0], ("cross-entropy loss", "accuracy"), strict=False):
        panel.set_xlabel("tokens seen" if x == "tokens" else x)
        panel.set_ylabel(label)
        panel.grid(alpha=0.3)
        if x == "tokens":
            panel.xaxis.set_major_formatter(EngFormatter())  # 1.5M, not 1.5e6 in a corner
    if not all(classifiers):
        low, high = ax.get_ylim()
        perplexity = ax.secondary_yaxis(
            "right",
            functions=(lambda loss: np.exp(np.minimum(loss, 50)),
                       lambda ppl: np.log(np.maximum(ppl, 1e-9))),
        )
        perplexity.yaxis.set_major_locator(LogLocator(base=10))  # loss = ln(perplexity)
        perplexity.yaxis.set_major_formatter(LogFormatterSciNotation(base=10))
        perplexity.set_ylabel("perplexity" + (" (language models)" if any(classifiers) else ""))
        ax.set_ylim(low, high)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def plot_confusion(
    matrix: Sequence[Sequence[int]] | np.ndarray,
    labels: Sequence[str],
    path: str | Path,
    title: str | None = None,
) -> None:
    """The confusion matrix as a heatmap: true label down the side, predicted along the bottom;
    each cell shows its count and its share of the row (the recall on the diagonal). Colour
    follows that share, so a rare class reads as clearly as a common one."""
    counts = np.asarray(matrix, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    size = 2.0 + 1.0 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.0, size), layout="constrained")
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(len(labels)):
        for j in range(len(labels)):
            share = f"{100 * shares[i, j]:.1f}%" if totals[i, 0] else "-"  # a class never seen
            colour = "white" if shares[i, j] > 0.5 else "black"  # readable on dark and light
            ax.text(j, i, f"{counts[i, j]}\n{share}", ha="center", va="center", color=colour)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title or "confusion matrix: count and % of the true label")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true label")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_comparison(runs: Sequence[str], columns: Sequence[str],
                    values: dict[str, dict[str, float]], path: str | Path) -> None:
    """Runs compared: one panel per metric (each has its own scale), one bar per run, a
    missing figure left as a gap."""
    count = max(len(columns), 1)
    across = min(count, 3)
    down = -(-count // across)
    fig, axes = plt.subplots(down, across, figsize=(4.2 * across, 0.6 + 3.2 * down),
                             squeeze=False)
    names = [Path(run).name or run for run in runs]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, column in zip(axes.flat, columns, strict=False):
        heights = [values.get(run, {}).get(column, np.nan) for run in runs]
        bars = ax.bar(range(len(runs)), heights,
                      color=[colors[i % len(colors)] for i in range(len(runs))])
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_xticks(range(len(runs)), names, rotation=20, ha="right", fontsize=8)
        ax.set_title(column, fontsize=9)
        if np.nanmin(heights) >= 0:  # metrics here are never negative: bars stand on 0
            ax.set_ylim(0, np.nanmax(heights) * 1.15 or 1.0)  # all zero: a 0-1 axis
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(columns):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_score_histogram(
    bars: Sequence[tuple[str, int]],
    path: str | Path,
    title: str | None = None,
    note: str | None = None,
) -> None:
    """A histogram of scores given as ``(bin label, count)`` bars (an LLM judge's 0-100 scores
    in ten bins, or 1-5 rubric scores), each bar with its count on top; ``note`` (the mean,
    median and interval, say) is a second line of the title."""
    labels = [label for label, _ in bars]
    counts = [count for _, count in bars]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(bars) + 2.0), 4), layout="constrained")
    positions = np.arange(len(bars))
    drawn = ax.bar(positions, counts, color="tab:blue", width=0.8)
    ax.bar_label(drawn, labels=[str(c) if c else "" for c in counts], padding=2)
    ax.set_xticks(positions, labels)
    ax.set_xlabel("score")
    ax.set_ylabel("entries")
    ax.set_ylim(0, max([*counts, 1]) * 1.15)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title((title or "scores") + (f"\n{note}" if note else ""), fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)
