"""Attention maps: which earlier tokens each token draws from, in every head of every layer.

In a causal transformer, every layer's every head turns each token (a *query*) into a
weighted average of the value vectors of the tokens up to it (the *keys*). The weights,
``softmax(q k^T / sqrt(head_dim))`` with the future masked, form a ``T x T`` matrix per head:
row ``q`` says how much token ``q`` draws from each key ``k``. Rows sum to 1; everything above
the diagonal is 0 because a language model predicting the next token may not look ahead.

:func:`attention_maps` runs a text through the model once and keeps those matrices *as the
model computes them* (:func:`~scratchgpt.model.attention.record_attention`, not a re-derivation);
:func:`plot_attention` draws them as heatmaps with the tokens on both axes. Typical patterns to
look for in a trained model: heads that look at the previous token, heads that look at the
first token (a "sink" for weight they do not need), heads that find the earlier copy of the
current word. A random model's heads attend almost uniformly.

Today's open models (Llama 3, Qwen3, Gemma 3) use *grouped-query attention*: fewer key/value
heads than query heads, each key/value head shared by a group of neighbouring query heads. The
maps are still one per *query* head (each has its own queries, so its own weights), and the
picture says which query heads share keys and values (:func:`head_label`): heads of one group
look at the same keys, so their patterns differ only by what their queries ask. Gemma 3's
*local* layers attend through a sliding window, each token to the latest few only; the picture
says each local layer's window and hatches what lies beyond it, as it hatches the future.

    model, tokenizer = load_model("gpt2-124M")
    maps = attention_maps(model, tokenizer, "Every effort moves you", layer=5, name="gpt2-124M")
    plot_attention(maps, "attention.png")

Long texts: a heatmap of more than :data:`MAX_TOKENS` tokens is unreadable, and the model sees
at most its ``context_length``. A longer text is cut to its first ``max_tokens`` tokens (at most
the context) and the picture says so. Nothing is lost for the tokens shown: attention is causal,
so later tokens cannot change the rows of earlier ones.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch

from scratchgpt.model import GPTModel
from scratchgpt.model.attention import record_attention
from scratchgpt.model.device import compute_device
from scratchgpt.tokenizers import Tokenizer
from scratchgpt.viz.tokens import visible_text

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = [
    "MAX_TOKENS",
    "AttentionMaps",
    "attention_maps",
    "grouping_text",
    "head_label",
    "plot_attention",
    "record_attention",
    "token_label",
]

MAX_TOKENS = 40
"""Longest text (in tokens) drawn by default: beyond it the tick labels no longer fit."""

def token_label(token: bytes) -> str:
    """How a token's bytes are shown on an axis: GPT-2's BPE glues a word to the space before
    it, so " the" (one token) and "the" (another) differ only by the space, drawn as "␣";
    newlines as "↵"; a token holding part of a multi-byte character (BPE works on bytes) as
    escapes such as "\\xe4"."""
    text = token.decode("utf-8", errors="backslashreplace")
    return visible_text(text) or "∅"


@dataclass
class AttentionMaps:
    """The attention weights of one text: ``weights[i, j]`` is the ``[T, T]`` matrix of layer
    ``layers[i]``, query head ``heads[j]``; row = query token, column = key token."""

    tokens: list[str]  # display labels, one per token (see token_label)
    token_ids: list[int]
    weights: np.ndarray  # [len(layers), len(heads), T, T], float32
    layers: list[int]
    heads: list[int]
    n_layers: int  # the model's, for titles ("layer 3 of 12")
    n_heads: int  # query heads
    n_kv_heads: int  # key/value heads: n_heads, or fewer (grouped-query attention)
    windows: list[int | None]  # each of ``layers``' sliding window; None: a global layer
    model_name: str
    total_tokens: int  # tokens in the whole text; more than len(tokens) if it was cut

    @property
    def truncated(self) -> bool:
        return self.total_tokens > len(self.tokens)


def head_label(head: int, n_heads: int, n_kv_heads: int) -> str:
    """Which query head ``head`` is and, under grouped-query attention, which query heads share
    its key/value head: ``query head 5 of 0-15 (kv head 1 of 0-3; shares keys/values with
    heads 4-7)``. Query head ``h`` uses key/value head ``h // (n_heads / n_kv_heads)``, as
    :class:`~scratchgpt.model.attention.MultiHeadAttention` (and transformers) repeat them.
    Plain multi-head attention: ``head 5 of 0-11``."""
    if n_kv_heads == n_heads:
        return f"head {head} of 0-{n_heads - 1}"
    group = n_heads // n_kv_heads
    kv = head // group
    if n_kv_heads == 1:
        shared = f"kv head 0, the only one: shared by all heads 0-{n_heads - 1}"
    else:
        shared = (f"kv head {kv} of 0-{n_kv_heads - 1}; shares keys/values with heads "
                  f"{kv * group}-{kv * group + group - 1}")
    return f"query head {head} of 0-{n_heads - 1} ({shared})"


def grouping_text(n_heads: int, n_kv_heads: int) -> str | None:
    """How the query heads share key/value heads, for a picture of several heads; None for
    plain multi-head attention (every head its own keys and values)."""
    if n_kv_heads == n_heads:
        return None
    if n_kv_heads == 1:
        return f"multi-query attention: all {n_heads} query heads share one key/value head"
    group = n_heads // n_kv_heads
    shared = [f"{kv * group}-{kv * group + group - 1} kv head {kv}" for kv in range(n_kv_heads)]
    shared[0] = f"heads 0-{group - 1} share kv head 0"
    if n_kv_heads > 3:  # the first two and the last say the rule
        shared = [*shared[:2], "...", shared[-1]]
    return (f"grouped-query attention: {n_heads} query heads, {n_kv_heads} key/value heads; "
            + ", ".join(shared))


def _number_ranges(numbers: list[int]) -> str:
    """``[0, 1, 2, 3, 4, 6]`` as ``0-4, 6``."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _window_texts(maps: AttentionMaps) -> list[str]:
    """One line per sliding window size among the shown layers: which layers use it."""
    texts = []
    for window in sorted({w for w in maps.windows if w is not None}):
        local = [layer for layer, w in zip(maps.layers, maps.windows, strict=True) if w == window]
        texts.append(f"local layer{'s' if len(local) > 1 else ''} {_number_ranges(local)}: a "
                     f"sliding window, each token sees only the latest {window} (itself included)")
    return texts


def _check_index(kind: str, index: int | None, count: int) -> list[int]:
    """``[index]``, or all of ``range(count)`` for None; an error naming the valid range."""
    if index is None:
        return list(range(count))
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise ValueError(f"{kind} {index!r} is out of range: this model has {count} "
                         f"{kind}s, numbered 0 to {count - 1}")
    return [index]


def attention_maps(
    model: GPTModel,
    tokenizer: Tokenizer,
    text: str,
    layer: int | None = None,
    head: int | None = None,
    *,
    max_tokens: int = MAX_TOKENS,
    name: str | None = None,
) -> AttentionMaps:
    """Run ``text`` through ``model`` once and keep the attention weights of ``layer`` (None:
    every layer) and query head ``head`` (None: every head), numbered from 0.

    The text is encoded as the model's tokenizer frames a text (with its BOS first, for Llama
    3 and Gemma 3: the token many heads rest their weight on) and cut to its first
    ``max_tokens`` tokens (and to the model's context); special tokens such as
    ``<|endoftext|>`` are read as such. The model runs in eval mode (no dropout on the
    weights) without gradients, and is put back in the mode it was in.
    """
    if not isinstance(model, GPTModel):
        raise TypeError(f"attention maps need a GPTModel (a language model), got "
                        f"{type(model).__name__}")
    config = model.config
    layers = _check_index("layer", layer, config.n_layers)
    heads = _check_index("head", head, config.n_heads)
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if not text:
        raise ValueError("the text is empty: attention needs at least one token")
    ids = tokenizer.post_process(tokenizer.encode(text, allowed_special="all"))
    if not ids:
        raise ValueError(f"the text {text!r} encodes to no tokens")
    shown = ids[: min(max_tokens, config.context_length)]

    device = compute_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), record_attention(model) as recorded:
            model(torch.tensor([shown], device=device))
    finally:
        model.train(was_training)
    # recorded[i]: layer i's [1, H, T, T], one map per query head; keep the chosen ones.
    weights = torch.stack([recorded[i][0, heads] for i in layers])
    return AttentionMaps(
        tokens=[token_label(tokenizer.decode_bytes([i])) for i in shown],
        token_ids=shown,
        weights=weights.float().cpu().numpy(),
        layers=layers,
        heads=heads,
        n_layers=config.n_layers,
        n_heads=config.n_heads,
        n_kv_heads=config.kv_heads,
        windows=[model.blocks[i].att.sliding_window for i in layers],
        model_name=name or "the model",
        total_tokens=len(ids),
    )


def _panel_title(maps: AttentionMaps, i: int, j: int) -> str:
    """A panel's title: its layer and head, the head's kv head under grouped-query attention
    (with a single kv head, multi-query, the picture's title says all share it) and the layer's
    window if it is local."""
    title = f"layer {maps.layers[i]} · head {maps.heads[j]}"
    if 1 < maps.n_kv_heads < maps.n_heads:
        title += f" · kv {maps.heads[j] // (maps.n_heads // maps.n_kv_heads)}"
    if maps.windows[i] is not None:
        title += f" · window {maps.windows[i]}"
    return title


def _hidden_cells(T: int, window: int | None) -> np.ndarray:
    """``[T, T]``, True where query ``q`` may not look at key ``k``: the future, and with a
    sliding window the keys ``window`` or more tokens back."""
    q, k = np.arange(T)[:, None], np.arange(T)[None, :]
    hidden = k > q
    return hidden | (k <= q - window) if window is not None else hidden


def _columns(maps: AttentionMaps, panels: int) -> int:
    """Columns of a grid of ``panels`` panels: near square; for one layer's heads under
    grouped-query attention, a whole number of kv groups per row, so no group wraps."""
    cols = math.ceil(math.sqrt(panels))
    group = maps.n_heads // maps.n_kv_heads
    if len(maps.layers) == 1 and len(maps.heads) == maps.n_heads and 1 < group < maps.n_heads:
        cols = group * math.ceil(cols / group)
    return cols


def _title(maps: AttentionMaps, width: int) -> str:
    """What the picture shows, wrapped to ``width`` characters."""
    if len(maps.layers) == 1:
        where = f"layer {maps.layers[0]} of 0-{maps.n_layers - 1}"
    else:
        where = f"all {maps.n_layers} layers (rows)"
    grouping = None
    if len(maps.heads) == 1:
        which = head_label(maps.heads[0], maps.n_heads, maps.n_kv_heads)
    else:
        which = f"all {maps.n_heads} heads" + (" (columns)" if len(maps.layers) > 1 else "")
        grouping = grouping_text(maps.n_heads, maps.n_kv_heads)
    windows = _window_texts(maps)
    hidden = ("hatched: masked (the future; on local layers, beyond the window)" if windows
              else "hatched: the future, masked")
    parts = [f"Attention in {maps.model_name}: {where}, {which}",
             *([grouping] if grouping else []), *windows,
             "row: the query token (who looks)", "column: the key token (looked at)", hidden]
    if maps.truncated:
        parts += [f"only the first {len(maps.tokens)} of {maps.total_tokens} tokens",
                  "later ones cannot change these rows: attention is causal"]
    lines = [parts[0]]  # then the rest, " · "-joined, a line break between parts where one fits
    for part in parts[1:]:
        if len(lines) > 1 and len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += " · " + part
        else:
            lines.append(part)
    return "\n".join(textwrap.fill(line, width) for line in lines)  # a part too long: broken


def plot_attention(
    maps: AttentionMaps,
    path: str | Path,
    *,
    cmap: str = "viridis",
    annotate: bool | None = None,
) -> Figure:
    """Draw ``maps`` as heatmaps into ``path`` (PNG, SVG, PDF: by its suffix) and return the
    (closed) figure, one axes per panel plus the colour bar.

    One layer: a grid of its heads (under grouped-query attention, each row whole kv groups).
    All layers: one row per layer, one column per head. One head: one large panel. Query
    tokens label the rows, key tokens the columns (on the outer panels of a grid). Panel
    titles give each head's kv head and each local layer's window; the picture's title says
    which query heads share keys and values. Cells above the diagonal (and, on a local layer,
    beyond its window) are hatched grey, not drawn as 0: there the weight is not small, it does
    not exist (a token may not attend to later ones, nor past its window). All panels
    share one colour scale, 0 to 1, so heads can be compared. ``annotate`` writes each weight
    in its cell (default: for a single panel of at most 16 tokens).
    """
    n_layers, n_heads, T, _ = maps.weights.shape
    panels = [(i, j) for i in range(n_layers) for j in range(n_heads)]
    grid = n_layers > 1 and n_heads > 1  # layers x heads
    if grid:
        rows, cols = n_layers, n_heads
        places = panels
    else:  # a near-square grid of heads (or of layers), filled row by row
        cols = _columns(maps, len(panels))
        rows = math.ceil(len(panels) / cols)
        places = [divmod(slot, cols) for slot in range(len(panels))]
    single = len(panels) == 1
    if annotate is None:
        annotate = single and T <= 16
    # Panel size grows with the number of tokens so that the labels fit, within limits.
    if single:
        side = min(max(2.5 + 0.17 * T, 4.0), 10.0)
    elif grid:
        side = min(max(1.0 + 0.07 * T, 2.0), 3.6)
    else:
        side = min(max(1.2 + 0.1 * T, 2.4), 5.5)
    fontsize = min(10.0, max(3.0, 0.75 * (side - 0.6) * 72 / T))
    width, height = cols * side + 1.6, rows * side + 1.4
    dpi = min(120.0, 4800 / max(width, height))  # the whole grid of gpt2-xl still opens

    fig, axes = plt.subplots(rows, cols, figsize=(width, height), dpi=dpi, squeeze=False,
                             layout="constrained")
    colours = plt.get_cmap(cmap).with_extremes(bad=(0, 0, 0, 0))  # masked: see-through
    image = None
    for (i, j), (r, c) in zip(panels, places, strict=True):
        ax = axes[r, c]
        matrix = maps.weights[i, j]
        hidden = _hidden_cells(T, maps.windows[i])
        image = ax.imshow(np.ma.masked_array(matrix, hidden), cmap=colours, vmin=0.0, vmax=1.0,
                          interpolation="nearest")
        ax.patch.set_facecolor("#e6e6e6")
        ax.patch.set_hatch("////")
        ax.patch.set_edgecolor("#a0a0a0")
        ax.set_title(_panel_title(maps, i, j), fontsize=max(fontsize, 7))
        ax.set_xticks(range(T))
        ax.set_yticks(range(T))
        left, bottom = c == 0, (r + 1, c) not in places  # label only the outer panels
        ax.set_xticklabels(maps.tokens if bottom else [], rotation=90, fontsize=fontsize)
        ax.set_yticklabels(maps.tokens if left else [], fontsize=fontsize)
        ax.tick_params(axis="x", length=2 if bottom else 0)
        ax.tick_params(axis="y", length=2 if left else 0)
        if bottom:
            ax.set_xlabel("key (looked at)", fontsize=max(fontsize, 7))
        if left:
            ax.set_ylabel("query (looking)", fontsize=max(fontsize, 7))
        if annotate:
            for q, k in zip(*np.nonzero(~hidden), strict=True):
                value = matrix[q, k]
                ax.text(k, q, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if value > 0.6 else "white")
    for slot in range(len(panels), rows * cols):
        axes.flat[slot].remove()
    fig.colorbar(image, ax=list(fig.axes), shrink=0.9 if rows == 1 else min(0.9, 4 / rows),
                 label="attention weight (each row sums to 1)")
    fig.suptitle(_title(maps, width=int(width * 11)), fontsize=10)
    fig.savefig(path)
    plt.close(fig)
    return fig
