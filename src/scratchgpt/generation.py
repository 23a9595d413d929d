"""Text generation: run the model, pick a next token, append it, repeat.

Picking the next token from the logits of the last position:

* **greedy** (``temperature=0``): always the most likely token; deterministic.
* **temperature**: sample from ``softmax(logits / temperature)``; below 1 sharpens the
  distribution, above 1 flattens it.
* **top-k**: sample only among the ``k`` most likely tokens.
* **top-p** (nucleus): sample only among the most likely tokens whose probabilities add up
  to ``p``, so the candidate set shrinks when the model is confident.

:func:`generate_tokens` streams token ids; :func:`generate_text` streams decoded text and
stops at stop strings. Both use the model's KV cache by default, so each new token costs
one position instead of re-running the whole sequence.
"""

from __future__ import annotations

import codecs
import math
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch

from scratchgpt.model import GPTModel, KVCache

if TYPE_CHECKING:
    from scratchgpt.tokenizers.base import Tokenizer


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Pick a token id from ``logits`` (``[vocab_size]``) by the rules in the module docstring.

    With ``temperature == 0`` the choice is greedy and ``top_k``/``top_p`` change nothing.
    """
    if temperature == 0.0:
        if logits.device.type == "cpu":  # torch's CPU argmax is unvectorised: numpy is ~20x faster
            return int(logits.float().numpy().argmax())
        return int(logits.argmax())
    logits = logits.float() / temperature
    if top_k is not None:
        kth_largest = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the more likely ones already reach top_p (the first always stays).
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, num_samples=1, generator=generator))


def _check_sampling(
    max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None
) -> None:
    """Refuse settings that have no meaning; ``nan`` fails every comparison, so ranges are
    written as what is allowed."""
    if not max_new_tokens >= 0:
        raise ValueError(f"max_new_tokens must be 0 or more, got {max_new_tokens}")
    if not 0.0 <= temperature < math.inf:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy, 1 = the "
                         f"model's own distribution), got {temperature}")
    if top_k is not None and not top_k >= 1:
        raise ValueError(f"top_k must be 1 or more (1 = greedy), got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be a number in (0, 1], such as 0.9, got {top_p}")


# CPU copies of output weights, transposed for decoding: {layer: (weight, version, copy)}.
_TRANSPOSED_HEADS: weakref.WeakKeyDictionary[
    torch.nn.Module, tuple[torch.Tensor, int, torch.Tensor]
] = weakref.WeakKeyDictionary()


def _head_for_decoding(model: GPTModel) -> torch.Tensor:
    """The output layer's weights as ``[emb_dim, vocab_size]``: logits are ``hidden @ this``.

    Each new token multiplies one vector by the ``[vocab_size, emb_dim]`` output matrix, the
    largest read of the step (154 MB for gpt2-small). On the CPU, PyTorch's matrix-vector
    kernel is several times slower over ``nn.Linear``'s ``[out, in]`` layout than over a
    contiguous ``[in, out]`` copy (``bench/bench_model.py``: micro from 200 to 470 tokens/s), so
    there we keep such a copy, made again only when the weights change (every in-place update,
    an optimizer step for one, bumps a tensor's version counter). Elsewhere, a view suffices.
    """
    weight = model.out_head.weight
    if weight.device.type != "cpu":
        return weight.T
    cached = _TRANSPOSED_HEADS.get(model.out_head)
    if cached is None or cached[0] is not weight or cached[1] != weight._version:
        cached = (weight, weight._version, weight.detach().T.contiguous())
        _TRANSPOSED_HEADS[model.out_head] = cached
    return cached[2]


@torch.inference_mode()
def _last_logits(model: GPTModel, ids: list[int], kv_cache: KVCache | None) -> torch.Tensor:
    """Logits ``[vocab_size]`` after ``ids`` (only the last position goes through the output
    layer).

    Inference mode is entered per call, never held across a ``yield``: the caller's own code
    between two tokens runs with autograd as usual.
    """
    idx = torch.tensor([ids], device=model.tok_emb.weight.device)
    return model.hidden_states(idx, kv_cache)[0, -1] @ _head_for_decoding(model)


def generate_tokens(
    model: GPTModel,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    seed: int | None = None,
    use_cache: bool = True,
) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` new token ids, one at a time, continuing ``prompt_ids``.

    * Stops early, without yielding it, when ``eos_id`` is generated.
    * ``seed`` makes sampling reproducible (a private ``torch.Generator``; the global RNG is
      untouched). Without it, sampling uses the global RNG.
    * The model only ever sees its last ``context_length`` tokens: a longer prompt is
      cropped from the left, and so is the sequence once generation fills the context.
    * With ``use_cache`` each new token is one forward step over one position. Once the
      context is full, the cropped window is re-run from an emptied cache (positions shift,
      so the cached keys are stale), exactly what the uncached path computes; both give the
      same tokens.

    Runs in eval mode under ``torch.inference_mode()``; the model's train/eval mode is
    restored when the stream ends.
    """
    _check_sampling(max_new_tokens, temperature, top_k, top_p)
    window = list(prompt_ids)[-model.config.context_length :]
    if not window:
        raise ValueError("prompt_ids is empty: the model needs at least one token to continue")
    generator = None
    if seed is not None:
        generator = torch.Generator(model.tok_emb.weight.device).manual_seed(seed)
    # Arguments are checked above, at the call; the stream below runs on the first next().
    return _token_stream(model, window, max_new_tokens, temperature, top_k, top_p, eos_id,
                         generator, use_cache)


def _token_stream(
    model: GPTModel,
    window: list[int],
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    eos_id: int | None,
    generator: torch.Generator | None,
    use_cache: bool,
) -> Iterator[int]:
    """The decoding loop of :func:`generate_tokens`; ``window`` is the (cropped) prompt."""
    context_length = model.config.context_length
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            kv_cache = model.new_kv_cache(batch_size=1) if use_cache else None
        logits = _last_logits(model, window, kv_cache)
        for step in range(max_new_tokens):
            token = sample_next_token(logits, temperature, top_k, top_p, generator)
            if token == eos_id:
                return
            yield token
            if step + 1 == max_new_tokens:
                return
            window.append(token)
            if kv_cache is not None and len(window) <= context_length:
                logits = _last_logits(model, [token], kv_cache)
            else:
                window = window[-context_length:]
                if kv_cache is not None:
                    kv_cache.reset()
                logits = _last_logits(model, window, kv_cache)
    finally:
        model.train(was_training)


def _decode_utf8(tokenizer: Tokenizer, tokens: Iterable[int]) -> Iterator[str]:
    """Text for a token stream, piece by piece. A character whose UTF-8 bytes are spread over
    several tokens is held back until its last byte arrives."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for token in tokens:
        yield decoder.decode(tokenizer.decode_bytes([token]))
    yield decoder.decode(b"", final=True)


def _cut_at_stop(pieces: Iterable[str], stop: Sequence[str]) -> Iterator[str]:
    """Pass text pieces through, ending just before the first stop string, which may span
    pieces. Text that could be the start of a stop string is held back until it cannot."""
    pending = ""
    for piece in pieces:
        pending += piece
        hits = [i for i in (pending.find(s) for s in stop) if i >= 0]
        if hits:
            if min(hits) > 0:
                yield pending[: min(hits)]
            return
        ready = len(pending) - _stop_prefix_length(pending, stop)
        if ready:
            yield pending[:ready]
            pending = pending[ready:]
    if pending:
        yield pending


def _stop_prefix_length(text: str, stop: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that begins some stop string (0 if none)."""
    longest = max((len(s) for s in stop), default=0)
    for n in range(min(len(text), longest - 1), 0, -1):
        if any(s.startswith(text[-n:]) for s in stop):
            return n
    return 0


def generate_text(
    model: GPTModel,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: str | Sequence[str] = (),
    use_cache: bool = True,
) -> Iterator[str]:
    """Yield the continuation of ``prompt`` as text pieces, as they are generated.

    Generation ends at the tokenizer's end-of-text token, after ``max_new_tokens`` tokens,
    or at the first of the ``stop`` strings (not yielded; it may span several tokens).
    Multi-byte characters split across tokens come out whole. A prompt longer than the
    context is cropped from the left; see :func:`generate_tokens` for the sampling options.
    Bad arguments raise ``ValueError`` here, at the call, not at the first ``next()``.
    """
    if not prompt:
        raise ValueError("prompt is empty: give the model some text to continue")
    stops = [s for s in ([stop] if isinstance(stop, str) else stop) if s]
    tokens = generate_tokens(  # checks the arguments now; generates on the first next()
        model,
        tokenizer.encode(prompt),
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_id=tokenizer.eot_id,
        seed=seed,
        use_cache=use_cache,
    )
    pieces = _cut_at_stop(_decode_utf8(tokenizer, tokens), stops)
    return (piece for piece in pieces if piece)
