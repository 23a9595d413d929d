"""Pictures that say more than numbers: loss curves (and, later, attention maps)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import LogFormatterSciNotation, LogLocator  # noqa: E402


def plot_losses(metrics: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Train and validation loss against tokens seen, with perplexity (exp loss) on the right."""
    tokens = [m["tokens"] for m in metrics]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(tokens, [m["train_loss"] for m in metrics], label="train loss")
    ax.plot(tokens, [m["val_loss"] for m in metrics], linestyle="--", label="validation loss")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy loss")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    low, high = ax.get_ylim()
    perplexity = ax.secondary_yaxis(
        "right",
        functions=(lambda loss: np.exp(np.minimum(loss, 50)),
                   lambda ppl: np.log(np.maximum(ppl, 1e-9))),
    )
    perplexity.yaxis.set_major_locator(LogLocator(base=10))  # loss = ln(perplexity)
    perplexity.yaxis.set_major_formatter(LogFormatterSciNotation(base=10))
    perplexity.set_ylabel("perplexity")
    ax.set_ylim(low, high)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
