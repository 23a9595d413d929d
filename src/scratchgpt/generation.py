"""Text generation: run the model, pick a next token, append it, repeat.

Picking the next token from the logits of the last position:

* **greedy** (``temperature=0``): always the most likely token; deterministic.
* **temperature**: sample from ``softmax(logits / temperature)``; below 1 sharpens the
  distribution, above 1 flattens it.
* **top-k**: sample only among the ``k`` most likely tokens.
* **top-p** (nucleus): sample only among the most likely tokens whose probabilities add up
  to ``p``, so the candidate set shrinks when the model is confident.
* **repetition penalty** (CTRL, Keskar et al. 2019), applied to the logits before all of the
  above: every token already in the sequence is made less likely.

:func:`generate_tokens` streams token ids; :func:`generate_text` streams decoded text and
stops at stop strings. Both use the model's KV cache by default, so each new token costs
one position instead of re-running the whole sequence. :func:`generate_batch` and
:func:`generate_batch_text` continue many prompts at once: one forward pass per step serves
every row, and each row gets exactly the tokens it would get alone.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from scratchgpt.model import GPTModel, KVCache
from scratchgpt.model.device import compute_device

if TYPE_CHECKING:
    from scratchgpt.tokenizers.base import Tokenizer


def apply_repetition_penalty(
    logits: torch.Tensor, token_ids: torch.Tensor, penalty: float
) -> torch.Tensor:
    """CTRL's repetition penalty, as Hugging Face's ``RepetitionPenaltyLogitsProcessor``.

    For every id in ``token_ids`` (``[..., N]``, repeats allowed) the logit in ``logits``
    (``[..., vocab_size]``) is pushed down: divided by ``penalty`` if positive, multiplied by
    it if negative (dividing a negative logit would raise it). ``penalty > 1`` discourages
    repeating a token, ``< 1`` encourages it, ``1`` changes nothing.
    """
    scores = logits.gather(-1, token_ids)
    scores = torch.where(scores < 0, scores * penalty, scores / penalty)
    return logits.scatter(-1, token_ids, scores)


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    repetition_penalty: float = 1.0,
    previous_ids: Collection[int] = (),
) -> int:
    """Pick a token id from ``logits`` (``[vocab_size]``) by the rules in the module docstring.

    With ``temperature == 0`` the choice is greedy and ``top_k``/``top_p`` change nothing.
    ``previous_ids`` are the tokens already in the sequence, penalised by
    ``repetition_penalty``. Single and batched generation both pick every token here.
    """
    if repetition_penalty != 1.0 and previous_ids:
        ids = torch.tensor(list(previous_ids), device=logits.device)
        logits = apply_repetition_penalty(logits, ids, repetition_penalty)
    if temperature == 0.0:
        if logits.device.type == "cpu":  # torch's CPU argmax is unvectorised: numpy is ~20x faster
            return int(logits.float().numpy().argmax())
        return int(logits.argmax())
    # softmax ignores a shift: from the largest logit down, a tiny temperature sends the
    # others to -inf (not the largest to inf, and inf - inf to nan), near greedy as it should
    logits = logits.float()
    logits = (logits - logits.max()) / temperature
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


def check_sampling(
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    repetition_penalty: float = 1.0,
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
    if not 0.0 < repetition_penalty < math.inf:
        raise ValueError(f"repetition_penalty must be a finite number > 0 (1 = off, above 1 "
                         f"discourages repeats, such as 1.2), got {repetition_penalty}")


@dataclass(frozen=True)
class _Sampling:
    """The settings :func:`sample_next_token` takes besides the logits, bundled."""

    temperature: float
    top_k: int | None
    top_p: float | None
    repetition_penalty: float

    def pick(self, logits: torch.Tensor, generator: torch.Generator | None,
             previous_ids: Collection[int]) -> int:
        return sample_next_token(logits, self.temperature, self.top_k, self.top_p, generator,
                                 self.repetition_penalty, previous_ids)


def _generator(model: GPTModel, seed: int | None) -> torch.Generator | None:
    """A private random generator seeded with ``seed`` (None: use the global RNG)."""
    if seed is None:
        return None
    return torch.Generator(compute_device(model)).manual_seed(seed)


@torch.inference_mode()
def last_logits(
    model: GPTModel, rows: Sequence[Sequence[int]], kv_cache: KVCache | None
) -> torch.Tensor:
    """Logits ``[len(rows), vocab_size]`` after each row of ids (only the last position goes
    through the output layer).

    Rows of different lengths are *left*-padded (with id 0; padding is masked, so any id
    would do): every row then ends in the last column, which is where its logits are read
    and where its next token goes. Inference mode is entered per call, never held across a
    ``yield``: the caller's own code between two tokens runs with autograd as usual.
    """
    device = compute_device(model)
    longest = max(len(row) for row in rows)
    idx = torch.tensor([[0] * (longest - len(row)) + list(row) for row in rows], device=device)
    mask = None  # all rows as long: nothing to mask, the unpadded fast path
    if any(len(row) < longest for row in rows):
        mask = torch.tensor([[False] * (longest - len(row)) + [True] * len(row) for row in rows],
                            device=device)
    return model.out_head(model.hidden_states(idx, kv_cache, mask)[:, -1])


def generate_tokens(
    model: GPTModel,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | Collection[int] | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    repetition_penalty: float = 1.0,
) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` new token ids, one at a time, continuing ``prompt_ids``.

    * Stops early, without yielding it, when ``eos_id`` is generated (or any of them, when
      it is several: a chat model's end-of-turn ids).
    * ``seed`` makes sampling reproducible (a private ``torch.Generator``; the global RNG is
      untouched). Without it, sampling uses the global RNG.
    * The model only ever sees its last ``context_length`` tokens: a longer prompt is
      cropped from the left, and so is the sequence once generation fills the context.
    * With ``use_cache`` each new token is one forward step over one position. Once the
      context is full, the cropped window is re-run from an emptied cache (positions shift,
      so the cached keys are stale), exactly what the uncached path computes; both give the
      same tokens.
    * ``repetition_penalty`` counts every token of the prompt (before any cropping) and of
      the continuation so far.

    Runs in eval mode under ``torch.inference_mode()``; the model's train/eval mode is
    restored when the stream ends.
    """
    check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
    window = list(prompt_ids)[-model.config.context_length :]
    if not window:
        raise ValueError("prompt_ids is empty: the model needs at least one token to continue")
    sampling = _Sampling(temperature, top_k, top_p, repetition_penalty)
    # Arguments are checked above, at the call; the stream below runs on the first next().
    return _token_stream(model, window, set(prompt_ids), max_new_tokens, sampling, _ids(eos_id),
                         _generator(model, seed), use_cache)


def _ids(eos_id: int | Collection[int] | None) -> frozenset[int]:
    """The end ids as a set: one id, several (a chat model's end-of-turn ids) or none."""
    return frozenset([eos_id] if isinstance(eos_id, int) else eos_id or ())


def _token_stream(
    model: GPTModel,
    window: list[int],
    seen: set[int],
    max_new_tokens: int,
    sampling: _Sampling,
    end_ids: frozenset[int],
    generator: torch.Generator | None,
    use_cache: bool,
) -> Iterator[int]:
    """The decoding loop of :func:`generate_tokens`; ``window`` is the (cropped) prompt and
    ``seen`` the ids in the sequence so far (for the repetition penalty)."""
    context_length = model.config.context_length
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            # Room for the whole answer, or the context when it fills: never more, as a
            # zeroed context-length cache can cost more than the decoding itself.
            need = min(context_length, len(window) + max_new_tokens)
            kv_cache = model.new_kv_cache(batch_size=1, max_len=need) if use_cache else None
        logits = last_logits(model, [window], kv_cache)[0]
        for step in range(max_new_tokens):
            token = sampling.pick(logits, generator, seen)
            if token in end_ids:
                return
            yield token
            if step + 1 == max_new_tokens:
                return
            window.append(token)
            seen.add(token)
            if kv_cache is not None and len(window) <= context_length:
                logits = last_logits(model, [[token]], kv_cache)[0]
            else:
                window = window[-context_length:]
                if kv_cache is not None:
                    kv_cache.reset()
                logits = last_logits(model, [window], kv_cache)[0]
    finally:
        model.train(was_training)


def generate_batch(
    model: GPTModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | Collection[int] | None = None,
    seed: int | Sequence[int] | None = None,
    repetition_penalty: float = 1.0,
    should_stop: Callable[[list[int]], bool] | None = None,
) -> list[list[int]]:
    """Continue every prompt at once; return each one's new token ids (``eos_id`` left out).

    Row ``i`` gets the tokens of ``generate_tokens(model, prompts[i], ...)`` with the same
    settings and its own seed (the arithmetic differs only in rounding), but all rows share
    each forward pass:

    * **Prefill**: the prompts are left-padded to one length and run in a single forward
      with an attention mask; left, so that every row's last token is in the last column
      and one new token per row can be appended to all rows at once. Positions count only
      real tokens, so padding changes nothing for a row.
    * **Decode**: one token per row per step, through the KV cache, which remembers each
      row's padding and next position. That per-row state is also what a server's
      continuous batching builds on: rows join and leave while the others keep their cache.
    * A row **retires** when it samples ``eos_id`` (or any of them; not kept), reaches
      ``max_new_tokens``, or ``should_stop(its new tokens so far)`` returns True (the last
      token is kept; the list is the live one: read it, do not change it). Retired rows
      leave the batch (:meth:`KVCache.keep_rows`); the loop ends when every row has retired.
    * ``seed``: one per row, or one int that seeds every row alike (each row has its own
      ``torch.Generator``, so the draws of one row never depend on the others). None: the
      global RNG, drawn from row after row.
    * **Context**: as in :func:`generate_tokens`, a row sees its last ``context_length``
      tokens. Rows share the cache's slots, as many as the longest row has tokens; when the
      next token would not fit, every row's window is cropped to its last
      ``context_length`` tokens and prefilled again into the emptied cache.

    Bad arguments or an empty prompt raise ``ValueError``; no prompts give ``[]``.
    """
    check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
    seeds = [seed] * len(prompts) if seed is None or isinstance(seed, int) else list(seed)
    if len(seeds) != len(prompts):
        raise ValueError(f"seed must be an int or one per prompt: got {len(seeds)} seeds for "
                         f"{len(prompts)} prompts")
    context_length = model.config.context_length
    rows = [
        _Row(list(prompt)[-context_length:], set(prompt), [], _generator(model, row_seed))
        for prompt, row_seed in zip(prompts, seeds, strict=True)
    ]
    for i, row in enumerate(rows):
        if not row.window:
            raise ValueError(f"prompts[{i}] is empty: the model needs at least one token to "
                             "continue")
    outputs = [row.new_tokens for row in rows]  # filled in place, in the prompts' order
    if not rows or max_new_tokens == 0:
        return outputs
    sampling = _Sampling(temperature, top_k, top_p, repetition_penalty)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():  # the cache's tensors are made, and stay, in this mode
            _decode_batch(model, rows, max_new_tokens, sampling, _ids(eos_id), should_stop)
    finally:
        model.train(was_training)
    return outputs


@dataclass
class _Row:
    """One sequence of a batch: what the model sees, what it has said, its own RNG."""

    window: list[int]  # the tokens the model sees (cropped to the context on re-prefill)
    seen: set[int]  # every token id so far, for the repetition penalty
    new_tokens: list[int]  # the continuation, which generate_batch returns
    generator: torch.Generator | None


def _decode_batch(
    model: GPTModel,
    rows: list[_Row],
    max_new_tokens: int,
    sampling: _Sampling,
    end_ids: frozenset[int],
    should_stop: Callable[[list[int]], bool] | None,
) -> None:
    """The decoding loop of :func:`generate_batch`: ``rows`` are the active rows, in the
    cache's batch order; each is filled in place until it retires."""
    context_length = model.config.context_length
    need = min(context_length, max(len(row.window) for row in rows) + max_new_tokens)
    kv_cache = model.new_kv_cache(batch_size=len(rows), max_len=need)  # as in _token_stream
    logits = last_logits(model, [row.window for row in rows], kv_cache)
    while True:
        keep = []
        for i, row in enumerate(rows):
            token = sampling.pick(logits[i], row.generator, row.seen)
            if token in end_ids:
                continue
            row.new_tokens.append(token)
            row.window.append(token)
            row.seen.add(token)
            if len(row.new_tokens) < max_new_tokens and not (
                should_stop is not None and should_stop(row.new_tokens)
            ):
                keep.append(i)
        if not keep:
            return
        if len(keep) < len(rows):  # retired rows leave the batch and its cache
            kv_cache.keep_rows(keep)
            rows = [rows[i] for i in keep]
        if kv_cache.length < context_length:  # room for one more slot: one step
            logits = last_logits(model, [row.window[-1:] for row in rows], kv_cache)
        else:  # the longest row fills the context: crop every window, prefill again
            for row in rows:
                row.window = row.window[-context_length:]
            kv_cache.reset()
            logits = last_logits(model, [row.window for row in rows], kv_cache)


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
        ready = len(pending) - stop_prefix_length(pending, stop)
        if ready:
            yield pending[:ready]
            pending = pending[ready:]
    if pending:
        yield pending


def _stop_list(stop: str | Sequence[str]) -> list[str]:
    """One stop string or several, as a list without empty ones."""
    return [s for s in ([stop] if isinstance(stop, str) else stop) if s]


def stop_prefix_length(text: str, stop: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that begins some stop string (0 if none)."""
    longest = max((len(s) for s in stop), default=0)
    for n in range(min(len(text), longest - 1), 0, -1):
        if any(s.startswith(text[-n:]) for s in stop):
            return n
    return 0


def generate_text(
    model: GPTModel,
    tokenizer: Tokenizer,
    prompt: str | Sequence[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: str | Sequence[str] = (),
    use_cache: bool = True,
    repetition_penalty: float = 1.0,
    stop_ids: Collection[int] | None = None,
) -> Iterator[str]:
    """Yield the continuation of ``prompt`` (text, or token ids already encoded) as text
    pieces, as they are generated. A text prompt is framed as the tokenizer frames one whole
    text (:meth:`~scratchgpt.tokenizers.base.Tokenizer.post_process`: Llama 3's BOS first).

    Generation ends at any of ``stop_ids`` (not yielded; None: the tokenizer's end-of-text
    token; a chat model passes all its end-of-turn ids), after ``max_new_tokens`` tokens,
    or at the first of the ``stop`` strings (not yielded; it may span several tokens).
    Multi-byte characters split across tokens come out whole. A prompt longer than the
    context is cropped from the left; see :func:`generate_tokens` for the sampling options.
    Bad arguments raise ``ValueError`` here, at the call, not at the first ``next()``.
    """
    if not prompt:
        raise ValueError("prompt is empty: give the model some text to continue")
    stops = _stop_list(stop)
    tokens = generate_tokens(  # checks the arguments now; generates on the first next()
        model,
        tokenizer.post_process(tokenizer.encode(prompt)) if isinstance(prompt, str) else prompt,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_id=tokenizer.eot_id if stop_ids is None else stop_ids,
        seed=seed,
        use_cache=use_cache,
        repetition_penalty=repetition_penalty,
    )
    pieces = _cut_at_stop(_decode_utf8(tokenizer, tokens), stops)
    return (piece for piece in pieces if piece)


def generate_batch_text(
    model: GPTModel,
    tokenizer: Tokenizer,
    prompts: Sequence[str | Sequence[int]],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | Sequence[int] | None = None,
    repetition_penalty: float = 1.0,
    stop: str | Sequence[str] = (),
    stop_ids: Collection[int] | None = None,
) -> list[str]:
    """The continuation of every prompt, generated together by :func:`generate_batch`.

    A prompt is text, framed as :func:`generate_text` frames it, or token ids already encoded.
    Each text is what ``"".join(generate_text(...))`` gives for its prompt alone: it ends at
    any of ``stop_ids`` (None: the tokenizer's end-of-text token), after ``max_new_tokens``
    tokens, or just before the
    first of the ``stop`` strings. A row stops generating as soon as a stop string appears
    in the decoded end of its tokens. The tokens are decoded together, so characters whose
    UTF-8 bytes span several tokens come out whole. No prompts give ``[]``; an empty prompt
    raises ``ValueError``.
    """
    for i, prompt in enumerate(prompts):
        if not prompt:
            raise ValueError(f"prompts[{i}] is empty: give the model some text to continue")
    stops = _stop_list(stop)
    # A stop string first appears when its last byte arrives, and each token has at least one
    # byte: the last len(stop in bytes) tokens hold it whole.
    tail = max((len(s.encode()) for s in stops), default=0)

    def hits_stop(tokens: list[int]) -> bool:
        text = tokenizer.decode_bytes(tokens[-tail:]).decode(errors="replace")
        return any(s in text for s in stops)

    rows = generate_batch(
        model,
        [tokenizer.post_process(tokenizer.encode(prompt)) if isinstance(prompt, str)
         else list(prompt) for prompt in prompts],
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_id=tokenizer.eot_id if stop_ids is None else stop_ids,
        seed=seed,
        repetition_penalty=repetition_penalty,
        should_stop=hits_stop if stops else None,
    )
    texts = [tokenizer.decode_bytes(row).decode(errors="replace") for row in rows]
    return [_cut_text(text, stops) for text in texts]


def _cut_text(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the earliest stop string in it (all of it if there is none)."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(hits)] if hits else text
