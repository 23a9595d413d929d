"""Perplexity of a language model on a text, with a sliding window (Hugging Face's method).

Perplexity is the exponentiated mean negative log-likelihood of the text's tokens,
``exp(-1/t * sum_i log p(x_i | x_<i))``: how many tokens the model is, on average, as unsure
between as if it picked uniformly among them. A model sees at most ``context_length`` tokens,
so a long text is scored window by window, exactly as the transformers documentation's
"Perplexity of fixed-length models" does it:

* windows of ``context_length`` tokens start every ``stride`` tokens (0, stride, 2 stride, ...)
  and the last one ends at the end of the text (it may be shorter);
* each window scores only the tokens that the previous window did not (the others are its
  context: Hugging Face gives them the target -100), so every token is scored once, with at
  least ``context_length - stride`` tokens before it, where the text has them;
* a window's first token has nothing before it inside the window and is not scored: with
  ``stride == context_length`` (disjoint windows) one token per window goes unscored
  (transformers issue #30975), with ``stride < context_length`` only the text's first token;
* the negative log-likelihoods are summed over the scored tokens, and
  ``perplexity = exp(total_nll / scored_tokens)``.

A text is tokenized as the model's own tokenizer does it for transformers
(``tokenizer(text)``): Llama 3 and Gemma 3 put their BOS token first, which is never scored
itself but is the context the text's first token is scored in.

A smaller stride gives each token more context (a lower, truer perplexity) for more compute:
``context_length / stride`` forward passes per ``context_length`` tokens.

One difference from the documentation's loop, where its arithmetic is off by one: the loop
(since transformers PR #34387) weights each window's mean loss by its count of valid targets
minus one, as the label shift drops the window's first target. That holds for the first
window and for disjoint windows; but an overlapping window's first target is already -100, so
the shift drops nothing, the loss averages over all its valid targets, and the loop weights it
as one token fewer (with ``stride=1``, as zero tokens). Here every scored token counts once.
On disjoint windows the two agree to float precision; with overlap the loop's figure is off
by 1e-5 to 1e-3 relative at strides of a quarter to a half of the window, and by far more
at tiny strides (``tests/test_perplexity.py`` checks against the loop verbatim on disjoint
windows, and with its count corrected on overlapping ones). A window left with nothing to
score (a last window of one token, when ``stride == context_length`` and the text is one token
longer than a multiple of it) is skipped, where the loop would divide 0 by 0.

Windows of equal length (all but perhaps the last) go through the model ``batch_size`` at a
time, and only the scored positions go through the output layer, in chunks: with a 50,257
token vocabulary the logits are the big tensor. The logits go to float32 before the loss, so
a model loaded in bf16 or fp16 (``--dtype``) still computes and sums its losses in float32.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.data.corpus import encode_text, read_text_file
from scratchgpt.model.device import compute_device
from scratchgpt.progress import progress_bar
from scratchgpt.tokenizers import Tokenizer

DEFAULT_BATCH_SIZE = 4  # windows per forward pass
LOGIT_ROWS = 1024  # scored positions per call of the output layer (1024 x 50,257 floats: 200 MB)


@dataclass(frozen=True)
class Window:
    """Tokens ``ids[begin:end]`` go into the model; ``ids[first_target:end]`` are scored."""

    begin: int
    end: int
    first_target: int

    @property
    def scored(self) -> int:
        return self.end - self.first_target


@dataclass(frozen=True)
class PerplexityResult:
    """A perplexity and how it was measured. ``nll`` is the mean negative log-likelihood per
    scored token, in nats (``perplexity == exp(nll)``; ``nll / ln 2`` is bits per token)."""

    perplexity: float
    nll: float
    tokens: int  # tokens scored
    text_tokens: int  # tokens in the text
    windows: int
    context_length: int
    stride: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sliding_windows(num_tokens: int, context_length: int, stride: int) -> list[Window]:
    """The windows over a text of ``num_tokens`` tokens, as Hugging Face's loop makes them
    (see the module's docstring); windows with nothing to score are left out."""
    check_window(context_length, stride)
    windows = []
    prev_end = 0
    for begin in range(0, num_tokens, stride):
        end = min(begin + context_length, num_tokens)
        # Hugging Face: trg_len = end - prev_end targets, at the window's end; the window's
        # first token is never a target (the label shift), whatever trg_len says.
        window = Window(begin, end, first_target=max(prev_end, begin + 1))
        if window.scored > 0:
            windows.append(window)
        prev_end = end
        if end == num_tokens:
            break
    return windows


def check_window(context_length: int, stride: int) -> None:
    if context_length < 2:
        raise ValueError(f"context length must be at least 2 tokens (one of context, one "
                         f"scored), got {context_length}")
    if not 1 <= stride <= context_length:
        why = ("windows further apart than the context would skip tokens" if stride > 0
               else "the window must move")
        raise ValueError(f"stride must be between 1 and the context length ({context_length}), "
                         f"got {stride}: {why}")


def sliding_window_nll(
    model: nn.Module,
    ids: torch.Tensor | np.ndarray | list[int],
    context_length: int | None = None,
    stride: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    progress: bool = True,
    source: str = "the text",
) -> PerplexityResult:
    """The perplexity of ``model`` on the token ids ``ids`` (1-D, or ``[1, n]``; a tensor, a
    numpy array or a list).

    ``context_length``: the window, by default the model's ``config.context_length``.
    ``stride``: the step between windows, by default half the window (as the transformers
    documentation's example: 512 of GPT-2's 1024); ``stride == context_length`` scores disjoint
    windows. ``batch_size``: windows per forward pass. ``source`` names the text in errors.

    ``model`` is a :class:`~scratchgpt.model.GPTModel` or any module that maps ``[B, T]`` ids
    to logits ``[B, T, V]`` (or an output with ``.logits``); it is put in eval mode.
    """
    ids = _as_ids(ids, source)
    model_context = _model_context(model)
    if context_length is None:
        if model_context is None:
            raise ValueError("the model has no config.context_length: pass context_length")
        context_length = model_context
    elif model_context is not None and context_length > model_context:
        raise ValueError(f"context length {context_length} exceeds the model's "
                         f"{model_context}; pass --context {model_context} or less")
    if stride is None:
        stride = max(1, context_length // 2)
    check_window(context_length, stride)
    num_tokens = len(ids)
    if num_tokens < context_length:
        advice = (f"pass a shorter context (--context {num_tokens} or less) or a longer text"
                  if num_tokens >= 2 else "a text of at least 2 tokens is needed")
        raise ValueError(f"{source} has {num_tokens} tokens, fewer than one window of "
                         f"{context_length} (the context length); {advice}")
    vocab_size = _vocab_size(model)
    if vocab_size is not None and int(ids.max()) >= vocab_size:
        raise ValueError(f"{source}: token id {int(ids.max())} is outside the model's "
                         f"vocabulary of {vocab_size}; the tokenizer does not belong to the model")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")

    windows = sliding_windows(num_tokens, context_length, stride)
    device = compute_device(model)
    ids = ids.to(device)
    model.eval()
    total_nll, scored = 0.0, 0
    bar = progress_bar(total=len(windows), desc="perplexity", unit="window", disable=not progress)
    try:
        with torch.inference_mode():
            for batch in _batches(windows, batch_size):
                total_nll += _batch_nll(model, ids, batch)
                scored += sum(window.scored for window in batch)
                bar.update(len(batch))
    finally:
        bar.close()
    nll = total_nll / scored
    return PerplexityResult(perplexity=math.exp(nll), nll=nll, tokens=scored,
                            text_tokens=num_tokens, windows=len(windows),
                            context_length=context_length, stride=stride)


def file_perplexity(
    model: nn.Module,
    tokenizer: Tokenizer,
    path: str | Path,
    context_length: int | None = None,
    stride: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    encoding_errors: str = "strict",
    allowed_special: str | frozenset[str] | set[str] = frozenset(),
    progress: bool = True,
) -> PerplexityResult:
    """The perplexity of ``model`` on the UTF-8 text file ``path``, tokenized by ``tokenizer``
    as one text, as transformers' tokenizer would (Llama 3's and Gemma 3's BOS first: the
    context of the text's first token; see :func:`sliding_window_nll` for the other
    arguments). ``encoding_errors="replace"`` reads bytes that are not UTF-8 as U+FFFD;
    ``allowed_special="all"`` encodes special tokens spelled in the text (``<|endoftext|>``)
    as themselves."""
    text = read_text_file(path, encoding_errors)
    if not text.strip():
        raise ValueError(f"{path} is empty: there is no text to score")
    ids = tokenizer.post_process(encode_text(
        tokenizer, text, source=str(path), allowed_special=allowed_special, progress=progress))
    return sliding_window_nll(model, ids, context_length, stride, batch_size,
                              progress=progress, source=str(path))


# -- helpers -------------------------------------------------------------------------------------
def _as_ids(ids: torch.Tensor | np.ndarray | list[int], source: str) -> torch.Tensor:
    if isinstance(ids, np.ndarray):  # a copy: a token file's memory map is read-only
        ids = np.array(ids, dtype=np.int64)
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.dim() == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.dim() != 1:
        raise ValueError(f"{source}: expected a 1-D sequence of token ids, got shape "
                         f"{tuple(ids.shape)}")
    if len(ids) and int(ids.min()) < 0:
        raise ValueError(f"{source}: token ids must not be negative, got {int(ids.min())}")
    return ids


def _model_context(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "context_length", None)


def _vocab_size(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "vocab_size", None)


def _batches(windows: list[Window], batch_size: int) -> list[list[Window]]:
    """Consecutive windows of one length, at most ``batch_size`` together."""
    batches: list[list[Window]] = []
    for window in windows:
        last = batches[-1] if batches else None
        length = window.end - window.begin
        if last and len(last) < batch_size and last[0].end - last[0].begin == length:
            last.append(window)
        else:
            batches.append([window])
    return batches


def _batch_nll(model: nn.Module, ids: torch.Tensor, batch: list[Window]) -> float:
    """Sum of the negative log-likelihoods of the scored tokens of a batch of equal windows."""
    x = torch.stack([ids[w.begin:w.end] for w in batch])  # [B, L]
    rows = [slice(w.first_target - w.begin - 1, w.end - w.begin - 1) for w in batch]
    targets = torch.cat([x[r, s.start + 1:s.stop + 1] for r, s in enumerate(rows)])
    hidden_states = getattr(model, "hidden_states", None)
    out_head = getattr(model, "out_head", None)
    if callable(hidden_states) and isinstance(out_head, nn.Module):
        # Logits only where a token is scored: position t predicts token t + 1.
        hidden = hidden_states(x)
        scoring = torch.cat([hidden[r, s] for r, s in enumerate(rows)])  # [N, emb_dim]
        total = 0.0
        for start in range(0, len(scoring), LOGIT_ROWS):
            logits = out_head(scoring[start:start + LOGIT_ROWS]).float()
            total += F.cross_entropy(logits, targets[start:start + LOGIT_ROWS],
                                     reduction="sum").item()
        return total
    output = model(x)
    logits = getattr(output, "logits", output)
    scoring = torch.cat([logits[r, s] for r, s in enumerate(rows)]).float()
    return F.cross_entropy(scoring, targets, reduction="sum").item()
