"""Token and position embeddings, drawn: the pictures of the book's chapter 2, for any model.

A GPT's first layer is a lookup table, ``model.tok_emb``: token id -> a vector of ``emb_dim``
numbers. Nothing tells the model which tokens are alike; pretraining moves tokens that turn up
in similar contexts to vectors that point in similar directions, so in GPT-2 " apple" ends up
near " banana" and far from " king". This module lets you see that:

* :func:`word_vectors` looks words up; :func:`plot_word_map` draws them on a 2-D map (PCA,
  or t-SNE when scikit-learn is installed);
* :func:`nearest_tokens` lists the tokens whose vectors point most nearly the same way
  (cosine similarity) across the whole vocabulary;
* :func:`position_similarity` and :func:`plot_position_similarity` compare the position
  vectors with each other: a learned table (GPT-2) or the fixed sinusoidal one. Rotary
  positions (RoPE) have no such table: they turn queries and keys inside attention instead.

**Leading space.** Byte-level BPE (GPT-2's, and the ones ``scratchgpt`` trains) keeps the space
before a word inside the word's token: " apple" (GPT-2 id 17180) and "apple" (18040) are
different tokens with vectors of their own. In running text almost every word follows a space,
so its spaced token is the common, well-trained one, and the classic words are single tokens
with it (" banana") but split without it ("ban" + "ana"). Words are therefore looked up with a
leading space by default; ``leading_space=False`` looks up the bare spelling, as at the start of
a text or inside a longer word.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from scratchgpt.model.gpt import GPTModel  # noqa: E402
from scratchgpt.model.positional import (  # noqa: E402
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
)
from scratchgpt.tokenizers.base import UNKNOWN, Tokenizer  # noqa: E402

MapMethod = Literal["pca", "tsne"]
METHODS: tuple[str, ...] = ("pca", "tsne")
ROTARY_HAS_NO_TABLE = (
    "this model uses rotary position embedding (RoPE): it rotates every query and key inside "
    "attention by an angle proportional to the token's position, instead of adding a position "
    "vector to the token, so there is no table of position vectors to compare"
)


@dataclass(frozen=True)
class WordVectors:
    """Words and their embeddings: ``vectors[i]`` is the mean of the vectors of the tokens
    ``words[i]`` splits into (``token_ids[i]``, spelt ``tokens[i]``); one token, its vector."""

    words: tuple[str, ...]
    vectors: np.ndarray  # [len(words), emb_dim], float64
    token_ids: tuple[tuple[int, ...], ...]
    tokens: tuple[tuple[str, ...], ...]
    leading_space: bool

    def is_split(self, index: int) -> bool:
        """Whether word ``index`` is several tokens (and so drawn at their mean)."""
        return len(self.token_ids[index]) > 1

    def split(self, index: int) -> str:
        """How word ``index`` was made: ``blueberry = ' blue' + 'berry' (mean of 2)``."""
        pieces = " + ".join(repr(token) for token in self.tokens[index])
        count = len(self.tokens[index])
        return f"{self.words[index]} = {pieces}" + (f" (mean of {count})" if count > 1 else "")


def token_table(model: GPTModel) -> np.ndarray:
    """The token embedding matrix ``[vocab_size, emb_dim]`` as float64 (row ``i``: token
    ``i``'s vector; with tied weights also the output layer's row for it)."""
    return model.tok_emb.weight.detach().to("cpu", torch.float64).numpy()


def word_vectors(
    model: GPTModel, tokenizer: Tokenizer, words: Sequence[str], leading_space: bool = True
) -> WordVectors:
    """Each word's token embedding; a word of several tokens gets the mean of their vectors.

    Surrounding whitespace of a word is dropped; ``leading_space`` alone decides whether it is
    looked up as " word" (the default, as in running text) or "word" (see the module notes).
    """
    if not words:
        raise ValueError("no words given: name at least one")
    cleaned = [word.strip() for word in words]
    for word, given in zip(cleaned, words, strict=True):
        if not word:
            raise ValueError(f"empty word {given!r}: every word needs at least one character")
    repeated = sorted({word for word in cleaned if cleaned.count(word) > 1})
    if repeated:
        raise ValueError(f"words given more than once: {', '.join(repeated)}")
    table = token_table(model)
    unknown = tokenizer.special_tokens.get(UNKNOWN)
    ids_per_word = []
    for word in cleaned:
        ids = tokenizer.encode_ordinary(" " + word if leading_space else word)
        if unknown in ids:
            raise ValueError(f"{word!r} is not in the tokenizer's vocabulary (it encodes to "
                             f"{UNKNOWN})")
        if max(ids) >= len(table):
            raise ValueError(f"{word!r} encodes to token id {max(ids)}, but the model has only "
                             f"{len(table)} token vectors: the tokenizer is not this model's")
        ids_per_word.append(tuple(ids))
    return WordVectors(
        words=tuple(cleaned),
        vectors=np.stack([table[list(ids)].mean(axis=0) for ids in ids_per_word]),
        token_ids=tuple(ids_per_word),
        tokens=tuple(tuple(tokenizer.decode([i]) for i in ids) for ids in ids_per_word),
        leading_space=leading_space,
    )


def cosine_similarities(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``cos(row, vector) = row . vector / (|row| |vector|)`` for every row: 1 for the same
    direction, 0 for perpendicular, -1 for opposite; the vectors' lengths do not count."""
    norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(vector)
    return matrix @ vector / np.maximum(norms, 1e-12)


def nearest_tokens(
    model: GPTModel,
    tokenizer: Tokenizer,
    word: str,
    k: int = 10,
    leading_space: bool = True,
) -> list[tuple[str, float]]:
    """The ``k`` tokens whose embeddings are most cosine-similar to ``word``'s (its mean vector,
    if it is several tokens), best first, as ``(token text, similarity)``; the word's own
    tokens are left out. Only the tokenizer's ids are searched: a model's vocabulary may be
    padded with rows no text ever uses."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    found = word_vectors(model, tokenizer, [word], leading_space)
    table = token_table(model)[: tokenizer.vocab_size]
    similarity = cosine_similarities(table, found.vectors[0])
    own = sorted(set(found.token_ids[0]))
    similarity[own] = -np.inf
    best = np.argsort(-similarity, kind="stable")[: min(k, len(table) - len(own))]
    return [(tokenizer.decode([int(i)]), float(similarity[i])) for i in best]


def format_neighbours(word: str, neighbours: Sequence[tuple[str, float]],
                      leading_space: bool = True) -> str:
    """:func:`nearest_tokens`' answer as lines for a terminal; token texts are quoted, so a
    leading space (or a newline) shows."""
    looked_up = repr(" " + word.strip() if leading_space else word.strip())
    lines = [f"tokens nearest to {looked_up} by cosine similarity of their embeddings:"]
    lines += [f"  {rank:>3}. {similarity:+.4f}  {text!r}"
              for rank, (text, similarity) in enumerate(neighbours, start=1)]
    return "\n".join(lines)


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Principal component analysis down to two dimensions, with numpy's SVD.

    Centre the points (subtract their mean), factor ``centred = U S V^T``: the rows of ``V^T``
    are the directions of greatest spread, in order, and ``S_k^2`` is the spread along
    direction ``k``. The map's coordinates are the projections onto the first two,
    ``centred @ V^T[:2].T``. Returns them ``[n, 2]`` and the share of the total variance each
    axis shows ``[2]``. Each axis's sign is arbitrary; it is chosen so that the coordinate of
    largest size is positive, so a map does not flip between runs.
    """
    points = np.asarray(vectors, dtype=np.float64)
    if len(points) < 2:
        raise ValueError(f"a map needs at least two points, got {len(points)}")
    centred = points - points.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    total = float(np.sum(singular**2))
    if total == 0.0:
        raise ValueError("all the vectors are the same: there is no spread to map")
    coords = centred @ components[:2].T
    signs = np.sign(coords[np.abs(coords).argmax(axis=0), [0, 1]])
    return coords * np.where(signs == 0, 1.0, signs), singular[:2] ** 2 / total


def tsne_2d(vectors: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float]:
    """t-SNE (scikit-learn's) down to two dimensions, with cosine distances, and the perplexity
    used: about how many neighbours each point keeps close, which must be below the number of
    points, so a short word list gets a small one: ``min(30, max(1, (n - 1) / 3))``."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise ImportError("t-SNE needs scikit-learn, which is not installed: "
                          "pip install scikit-learn, or draw the map with PCA") from None
    points = np.asarray(vectors, dtype=np.float64)
    if len(points) < 2:
        raise ValueError(f"a map needs at least two points, got {len(points)}")
    perplexity = min(30.0, max(1.0, (len(points) - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca",
                method="exact", random_state=seed)  # exact gradients: a word list is short
    return tsne.fit_transform(points), perplexity


def word_map_figure(vectors: WordVectors, method: MapMethod = "pca",
                    title: str | None = None) -> Figure:
    """The words as labelled points on a 2-D map of their embeddings (see :func:`plot_word_map`).
    """
    if method not in METHODS:
        raise ValueError(f"unknown map method {method!r}; choose one of: {', '.join(METHODS)}")
    emb_dim = vectors.vectors.shape[1]
    fig, ax = plt.subplots(figsize=(8, 6.5), layout="constrained")
    if method == "pca":
        coords, explained = pca_2d(vectors.vectors)
        ax.set_xlabel(f"PC 1 ({100 * explained[0]:.1f}% of the variance)")
        ax.set_ylabel(f"PC 2 ({100 * explained[1]:.1f}% of the variance)")
        ax.axhline(0, color="0.8", linewidth=0.8, zorder=0)  # the origin is the words' mean
        ax.axvline(0, color="0.8", linewidth=0.8, zorder=0)
        how = f"PCA of the {emb_dim}-dim vectors"
    else:
        coords, perplexity = tsne_2d(vectors.vectors)
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        how = (f"t-SNE of the {emb_dim}-dim vectors (cosine, perplexity {perplexity:.3g})\n"
               "neighbours stay near; distances between groups mean little")
    split = np.array([vectors.is_split(i) for i in range(len(vectors.words))])
    for mask, marker, colour, label in [
        (~split, "o", "tab:blue", "one token"),
        (split, "^", "tab:orange", "several tokens: drawn at their mean"),
    ]:
        if mask.any():
            ax.scatter(coords[mask, 0], coords[mask, 1], marker=marker, s=50, color=colour,
                       label=label)
    for (x, y), word in zip(coords, vectors.words, strict=True):
        ax.annotate(word, (x, y), xytext=(5, 4), textcoords="offset points", fontsize=10)
    if split.any():
        ax.legend(loc="best", fontsize=8)
        notes = "; ".join(vectors.split(i) for i in np.flatnonzero(split))
        fig.supxlabel(textwrap.fill("▲ several tokens: " + notes, width=140), fontsize=8,
                      x=0.01, ha="left")
    ax.margins(0.12)  # room for the labels
    ax.grid(alpha=0.3)
    spelling = ('each word looked up with a leading space, " word", as in running text'
                if vectors.leading_space else 'each word looked up as "word", no leading space')
    ax.set_title(f"{title or 'token embeddings'}: {len(vectors.words)} words, {how}\n{spelling}",
                 fontsize=10)
    return fig


def plot_word_map(vectors: WordVectors, path: str | Path, method: MapMethod = "pca",
                  title: str | None = None) -> Path:
    """Write the word map to ``path`` (PNG) and return it. ``method="pca"`` keeps the two
    directions of greatest spread, so straight-line distances on the map are faithful as far as
    two axes can be (each axis says how much of the spread it shows); ``"tsne"`` bends the
    space to keep each word's nearest neighbours close, which separates groups better but
    makes distances between groups meaningless. Words of several tokens are drawn as triangles
    at the mean of their tokens, and a footnote says how each one split; a mean of vectors that
    point different ways is shorter than they are, so such words drift towards the middle."""
    fig = word_map_figure(vectors, method, title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def position_table(model: GPTModel) -> torch.Tensor:
    """The vectors added to the tokens at each position ``[context_length, emb_dim]``: the
    learned table's weights or the fixed sinusoidal table. Rotary models have none."""
    if isinstance(model.pos_emb, LearnedPositionalEmbedding):
        return model.pos_emb.weight.detach()
    if isinstance(model.pos_emb, SinusoidalPositionalEncoding):
        return model.pos_emb.table
    raise ValueError(ROTARY_HAS_NO_TABLE)


def position_similarity(model: GPTModel, max_positions: int | None = None) -> np.ndarray:
    """Cosine similarity of every pair of position vectors, ``[P, P]`` for the first ``P``
    positions (all ``context_length`` by default): entry ``[i, j]`` says how alike the vectors
    added at positions ``i`` and ``j`` are. The diagonal is 1. For the sinusoidal table an entry
    depends only on the distance ``i - j``; a learned table shows what training made of it."""
    if max_positions is not None and max_positions < 1:
        raise ValueError(f"max_positions must be at least 1, got {max_positions}")
    table = position_table(model)[:max_positions].to("cpu", torch.float64).numpy()
    unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def position_similarity_figure(model: GPTModel, max_positions: int | None = None,
                               title: str | None = None) -> Figure:
    """The matrix of :func:`position_similarity` as a heatmap (see
    :func:`plot_position_similarity`)."""
    similarity = position_similarity(model, max_positions)
    kind = ("learned position embeddings (pos_emb.weight)"
            if isinstance(model.pos_emb, LearnedPositionalEmbedding)
            else "sinusoidal position encodings (fixed, not learned)")
    fig, ax = plt.subplots(figsize=(7, 6), layout="constrained")
    image = ax.imshow(similarity, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
    ax.set_xlabel("position")
    ax.set_ylabel("position")
    ax.set_title(f"{title or 'position vectors'}: cosine similarity of the\n{kind}, "
                 f"{len(similarity)} positions", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.85, label="cosine similarity")
    return fig


def plot_position_similarity(model: GPTModel, path: str | Path,
                             max_positions: int | None = None, title: str | None = None) -> Path:
    """Write the position-similarity heatmap to ``path`` (PNG) and return it: positions down the
    side and along the bottom, red where two positions' vectors point the same way, blue where
    opposite. A band along the diagonal means nearby positions look alike to the model."""
    fig = position_similarity_figure(model, max_positions, title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
