"""Continuous batching: many concurrent requests decoded together, in one batch that changes
between steps.

A server could decode each request alone (one forward pass per token per request), or wait
for a group of requests and decode them together until the *last* one ends (static
batching: rows that finished early idle, and a request that arrives meanwhile waits for the
whole group). Continuous batching (Orca, Yu et al. 2022; vLLM) does neither. One background
thread owns the model and loops:

1. **admit**: waiting requests are prefilled together (their prompts left-padded to one
   length, one forward pass into a fresh KV cache), each samples its first token, and their
   cache rows join the running batch (:meth:`KVCache.append_rows`);
2. **retire**: rows that ended (an end-of-turn id, ``max_new_tokens``, a stop string, a reader
   that cancelled, or a failure) leave the batch and its cache (:meth:`KVCache.keep_rows`);
3. **decode**: one forward pass of ``[B, 1]``, each row's last token, through the shared
   cache gives every row its next-token logits. Each row samples with its own
   ``torch.Generator``, so its draws never depend on the other rows, and hands the text it
   completes to its reader.

Rows join and leave only *between* steps: a step is one tensor operation over the whole
batch, but in between the batch is just a list of rows and a cache with one row each, free to
be reshaped. The cache keeps each row's padding and positions, so a row computes what it
would alone: every stream's text is what :func:`~scratchgpt.generation.generate_text` gives
for the same request (up to floating-point rounding), however the batch around it changes.

Rules worth knowing:

* **Context**: a request needs ``len(prompt_ids) + max_new_tokens <= context_length``, or
  :meth:`Engine.submit` raises ``ValueError`` naming both lengths. (``generate_text`` would
  crop its window and go on; a row of a shared batch cannot be cropped without prefilling
  it again, so the engine refuses instead, and the server caps ``max_tokens`` to what fits.)
  Rows are right-aligned in the cache, and :meth:`KVCache.trim` drops the slots no row uses
  any more, so the cache never needs more slots than its longest row has tokens.
* **Memory**: the cache holds the slots the rows still need, not the whole context for every
  row: a prefill's cache has its longest prompt's slots, and on joining the batch it grows
  (:meth:`KVCache.reserve`) to the current length plus the most tokens any row may still add.
* **Text** follows ``generate_text``: UTF-8 decoded incrementally (a character split over
  tokens comes out whole), cut before the first stop string (text that could begin one is
  held back until it cannot). End-of-text and stop strings finish with ``"stop"``,
  ``max_new_tokens`` with ``"length"``. ``completion_tokens`` counts the tokens generated,
  end-of-text not included.
* **Log-probabilities**, when a request asks (``logprobs=k``): each generated token's
  log-probability under the *model's* distribution, ``log_softmax`` of its raw logits (before
  the repetition penalty, temperature, top-k and top-p reshape it for sampling), and the ``k``
  most likely tokens with theirs. Each delta carries those of the tokens its text covers;
  a request that does not ask costs nothing.
* **Seeds** are what ``torch.Generator.manual_seed`` takes: an int from ``-2**63`` to
  ``2**64 - 1`` (a negative one counts modulo ``2**64``); ``submit`` refuses others.
* **A failure stays in its row**. What a row does alone (seeding its generator, sampling,
  decoding its text) is guarded row by row: a row that fails gets the error on its own
  stream and is retired, and the batch goes on without it. Only shared work fails rows
  together: a prefill's forward pass fails its newcomers (the running batch never saw them),
  and a decoding step or the cache failing (out of memory, a bug) ends every row in flight,
  each stream with the error, never silently.
* **Capacity**: ``max_batch`` rows decode at once and ``max_queue`` more wait; beyond that
  ``submit`` raises :class:`QueueFull`. Deltas are queued for their readers without limit:
  a slow reader never holds up the batch.
* **Trade-off**: a newcomer's prefill runs between two steps, so a long prompt delays every
  row by one forward pass (servers split long prompts into chunks, "chunked prefill").
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from scratchgpt.generation import (
    check_sampling,
    last_logits,
    sample_next_token,
    stop_prefix_length,
)
from scratchgpt.model import GPTModel, KVCache
from scratchgpt.model.device import compute_device

if TYPE_CHECKING:
    from scratchgpt.tokenizers.base import Tokenizer


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate: the options of :func:`~scratchgpt.generation.generate_text`."""

    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float = 0.0  # 0 = greedy
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    seed: int | None = None  # None: a random seed
    stop: tuple[str, ...] = ()  # stop strings; generation also stops at the engine's stop ids
    logprobs: int | None = None  # None: none; k: each token's, and the k most likely tokens'


# torch.Generator.manual_seed takes a 64-bit seed, signed or not: -2**63 to 2**64 - 1.
SEED_RANGE = (-(2**63), 2**64 - 1)


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token, its log-probability under the model, and the most likely tokens
    (id, log-probability), most likely first."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Delta:
    """A piece of a stream: new text, and on the last piece why generation ended."""

    text: str  # new text (may be "")
    finish_reason: str | None = None  # "stop" or "length" on the last delta, else None
    prompt_tokens: int = 0
    completion_tokens: int = 0  # so far
    logprobs: tuple[TokenLogprob, ...] = ()  # the tokens this text covers, if the request asked


class QueueFull(Exception):
    """Every place is taken: ``max_batch`` requests decoding and ``max_queue`` waiting."""


class GenerationFailed(RuntimeError):
    """The engine could not finish a request: raised to its stream's reader, from the cause."""


class _TextCut:
    """The text rules of ``generate_text``, fed one token at a time: bytes decoded as UTF-8
    incrementally, text cut before the first stop string, a possible start of one held back."""

    def __init__(self, tokenizer: Tokenizer, stop: tuple[str, ...]) -> None:
        self._tokenizer = tokenizer
        self._stop = [s for s in stop if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # decoded, not yet shown: it could be the start of a stop string
        self.stopped = False  # a stop string appeared: nothing more comes out

    def add(self, token: int) -> str:
        """The text that ``token`` makes ready to show."""
        return self._push(self._decoder.decode(self._tokenizer.decode_bytes([token])))

    def finish(self) -> str:
        """The rest at the end of generation: held-back text, an unfinished character."""
        text = self._push(self._decoder.decode(b"", final=True))
        return text if self.stopped else text + self._pending

    def _push(self, piece: str) -> str:
        self._pending += piece
        hits = [i for i in (self._pending.find(s) for s in self._stop) if i >= 0]
        if hits:
            self.stopped = True
            return self._pending[: min(hits)]
        ready = len(self._pending) - stop_prefix_length(self._pending, self._stop)
        text, self._pending = self._pending[:ready], self._pending[ready:]
        return text


class Stream:
    """One request's deltas, handed from the engine's thread to whoever reads them.

    Read it once, either way: ``for delta in stream`` blocks a plain thread until each delta
    comes; ``async for delta in stream`` awaits them in an asyncio event loop (the engine's
    thread wakes the loop with ``call_soon_threadsafe``). The last delta carries the
    ``finish_reason``. A stream that was cancelled, or whose engine was closed, simply ends
    (no delta with a ``finish_reason``); a failure of this request in the engine's thread is
    raised to the reader as :class:`GenerationFailed`. Leaving the loop early cancels the
    request.
    """

    def __init__(self, request: GenerationRequest, on_cancel: Callable[[Stream], None]) -> None:
        self.request = request
        self.cancelled = False
        self._on_cancel = on_cancel
        # A delta, None (the stream ended without a finish) or the engine's error.
        self._items: queue.SimpleQueue[Delta | Exception | None] = queue.SimpleQueue()
        # While an asyncio reader reads: its loop, and the event that wakes it.
        self._reader: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def cancel(self) -> None:
        """The reader went away: the engine drops the request (from the queue at once, from
        the batch at its next step) and the stream ends. Harmless once it has finished."""
        if not self.cancelled:
            self.cancelled = True
            self._on_cancel(self)
            self._put(None)

    def __iter__(self) -> Iterator[Delta]:
        finished = False
        try:
            while (delta := self._unpack(self._items.get())) is not None:
                finished = delta.finish_reason is not None
                yield delta
                if finished:
                    return
        finally:
            if not finished:  # the reader left early: free the row
                self.cancel()

    def __aiter__(self) -> AsyncIterator[Delta]:
        return self._async_deltas()

    async def _async_deltas(self) -> AsyncIterator[Delta]:
        ready = asyncio.Event()
        self._reader = (asyncio.get_running_loop(), ready)
        finished = False
        try:
            while not finished:
                ready.clear()  # before looking, so that a delta put after the look wakes us
                try:
                    item = self._items.get_nowait()
                except queue.Empty:
                    await ready.wait()
                    continue
                delta = self._unpack(item)
                if delta is None:
                    return
                finished = delta.finish_reason is not None
                yield delta
        finally:
            self._reader = None
            if not finished:
                self.cancel()

    def _put(self, item: Delta | Exception | None, wake: bool = True) -> None:
        """Hand ``item`` to the reader (from any thread); ``wake=False`` leaves waking an
        asyncio reader to :func:`wake_readers`."""
        self._items.put(item)
        if wake:
            wake_readers([self])

    @staticmethod
    def _unpack(item: Delta | Exception | None) -> Delta | None:
        if isinstance(item, Exception):
            raise GenerationFailed(f"generation failed: {item!r}") from item
        return item


def wake_readers(streams: list[Stream]) -> None:
    """Wake the asyncio readers of ``streams`` (from any thread): one call into each event
    loop for all of its readers, not one per stream, so that a decoding step of 32 rows
    wakes the server's loop once rather than 32 times."""
    events: dict[asyncio.AbstractEventLoop, list[asyncio.Event]] = {}
    for stream in streams:
        if (reader := stream._reader) is not None:
            events.setdefault(reader[0], []).append(reader[1])
    for loop, ready in events.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads
            loop.call_soon_threadsafe(_set_all, ready)


def _set_all(events: list[asyncio.Event]) -> None:
    for event in events:
        event.set()


@dataclass
class _Row:
    """A request in the batch: its stream, its own RNG, and what it has said so far."""

    stream: Stream
    generator: torch.Generator
    text: _TextCut
    seen: set[int]  # every token id so far, for the repetition penalty
    last_token: int = -1  # the newest token, which the next step feeds to the model
    completion_tokens: int = 0
    finished: bool = False  # finished or failed: it leaves the batch at the next retire
    logprobs: list[TokenLogprob] = field(default_factory=list)  # not yet in a delta

    @property
    def remaining(self) -> int:
        """Tokens this row may still feed to the model (its last sampled token is never fed)."""
        return self.stream.request.max_new_tokens - self.completion_tokens

    def take(self, logits: torch.Tensor, end_ids: Collection[int]) -> None:
        """Sample the next token from ``logits`` (``[vocab_size]``) and hand the text it
        completes to the stream; end-of-text, a stop string or ``max_new_tokens`` finish."""
        request = self.stream.request
        token = sample_next_token(logits, request.temperature, request.top_k, request.top_p,
                                  self.generator, request.repetition_penalty, self.seen)
        if request.logprobs is not None and token not in end_ids:
            self.logprobs.append(token_logprob(logits, token, request.logprobs))
        if token in end_ids:
            self._send(self.text.finish(), "stop")
            return
        self.completion_tokens += 1
        self.seen.add(token)
        self.last_token = token
        text = self.text.add(token)
        if self.text.stopped:
            self._send(text, "stop")
        elif self.completion_tokens == request.max_new_tokens:
            self._send(text + self.text.finish(), "length")
        elif text:
            self._send(text, None)

    def fail(self, error: Exception) -> None:
        """This row's own work failed: its stream ends with ``error``, and it is retired."""
        self.finished = True
        self.stream._put(error, wake=False)

    def _send(self, text: str, finish_reason: str | None) -> None:
        self.finished = finish_reason is not None
        self.stream._put(Delta(text, finish_reason, len(self.stream.request.prompt_ids),
                               self.completion_tokens, tuple(self.logprobs)),
                         wake=False)  # the engine wakes them
        self.logprobs.clear()


def token_logprob(logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
    """``token``'s log-probability under the model's distribution, ``log_softmax`` of the raw
    ``logits`` (``[vocab_size]``), and the ``top`` most likely tokens with theirs."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    best = torch.topk(logprobs, top)
    return TokenLogprob(token, float(logprobs[token]),
                        tuple(zip(best.indices.tolist(), best.values.tolist(), strict=True)))


class Engine:
    """Decodes every submitted request in one shared batch, on a background thread.

    ``submit`` queues a request and returns its :class:`Stream`; ``start`` starts the thread
    (requests submitted before wait for it) and ``close`` stops it, ending the streams still
    pending. ``active`` counts the requests being decoded, ``waiting`` those queued. The
    engine owns the model while it runs (in eval mode): do not use it elsewhere meanwhile.
    """

    def __init__(self, model: GPTModel, tokenizer: Tokenizer, *, max_batch: int = 32,
                 max_queue: int = 64, stop_ids: Collection[int] | None = None) -> None:
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"max_batch must be 1 or more and max_queue 0 or more, got "
                             f"{max_batch} and {max_queue}")
        self.model = model
        self.tokenizer = tokenizer
        # The ids that end an answer (a chat model's end-of-turn ids); None: end-of-text.
        eot = tokenizer.eot_id
        self.stop_ids = frozenset(stop_ids if stop_ids is not None
                                  else [] if eot is None else [eot])
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._thread: threading.Thread | None = None
        self._lock = threading.Condition()  # guards the next three fields; notified on news
        self._waiting: deque[Stream] = deque()
        self._active = 0  # requests taken from the queue and not yet retired
        self._closed = False
        # Owned by the decoding thread: the batch's rows, in the cache's row order.
        self._rows: list[_Row] = []
        self._cache: KVCache | None = None  # None while no row is active

    @property
    def active(self) -> int:
        """Requests being decoded (at most ``max_batch``)."""
        return self._active

    @property
    def waiting(self) -> int:
        """Requests queued for a place in the batch."""
        return len(self._waiting)

    def start(self) -> None:
        """Start the decoding thread."""
        if self._thread is not None:
            raise RuntimeError("the engine was already started")
        self.model.eval()
        self._thread = threading.Thread(target=self._run, name="scratchgpt-engine", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the decoding thread (after the step in progress) and end every pending stream;
        later submissions are refused."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            ended = [*self._waiting, *(row.stream for row in self._rows)]
            self._waiting.clear()
            self._rows, self._cache, self._active = [], None, 0
        for stream in ended:
            stream._put(None)

    def submit(self, request: GenerationRequest) -> Stream:
        """Queue ``request``; its deltas come through the returned stream.

        Raises ``ValueError`` for a request that cannot run: an empty prompt, ids outside the
        vocabulary, sampling options that ``generate_text`` refuses, a seed outside
        :data:`SEED_RANGE`, ``logprobs`` below 0 or above the vocabulary's size, or
        ``len(prompt_ids) + max_new_tokens > context_length``. Raises :class:`QueueFull` when
        ``max_batch`` requests are decoding and ``max_queue`` wait, and ``RuntimeError`` once
        the engine is closed.
        """
        self._check(request)
        stream = Stream(request, self._cancel)
        if request.max_new_tokens == 0:  # nothing to generate: finished already
            stream._put(Delta("", "length", len(request.prompt_ids), 0))
            return stream
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine is closed")
            if self._active + len(self._waiting) >= self.max_batch + self.max_queue:
                raise QueueFull(f"{self._active} requests are decoding and "
                                f"{len(self._waiting)} waiting, the most this engine takes")
            self._waiting.append(stream)
            self._lock.notify()
        return stream

    def _check(self, request: GenerationRequest) -> None:
        """Raise ``ValueError`` unless ``request`` can run (the rules are in :meth:`submit`)."""
        config = self.model.config
        prompt_length = len(request.prompt_ids)
        if not prompt_length:
            raise ValueError("prompt_ids is empty: the model needs at least one token to "
                             "continue")
        if not all(0 <= token < config.vocab_size for token in request.prompt_ids):
            raise ValueError(f"prompt_ids holds ids outside the model's vocabulary, 0 to "
                             f"{config.vocab_size - 1}")
        check_sampling(request.max_new_tokens, request.temperature, request.top_k,
                       request.top_p, request.repetition_penalty)
        if request.seed is not None and not SEED_RANGE[0] <= request.seed <= SEED_RANGE[1]:
            raise ValueError(f"seed must be an integer from {SEED_RANGE[0]} to {SEED_RANGE[1]} "
                             f"(64 bits, what torch.Generator.manual_seed takes), got "
                             f"{request.seed}")
        if request.logprobs is not None and not 0 <= request.logprobs <= config.vocab_size:
            raise ValueError(f"logprobs must be from 0 to the vocabulary's {config.vocab_size} "
                             f"tokens, got {request.logprobs}")
        if prompt_length + request.max_new_tokens > config.context_length:
            raise ValueError(f"the prompt's {prompt_length} tokens plus max_new_tokens="
                             f"{request.max_new_tokens} exceed the model's context_length "
                             f"{config.context_length}")

    def _cancel(self, stream: Stream) -> None:
        """A waiting request leaves the queue at once; an active one is retired by the
        decoding thread at its next step (it sees ``stream.cancelled``)."""
        with self._lock, contextlib.suppress(ValueError):  # ValueError: not waiting
            self._waiting.remove(stream)

    # -- the decoding thread ---------------------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode():  # the cache's tensors are made, and stay, in this mode
            while (newcomers := self._admit()) is not None:
                try:
                    if newcomers:
                        self._prefill(newcomers)
                    self._retire()
                    if self._rows:
                        self._step()
                        self._retire()
                except Exception as error:  # the shared step or the cache failed (out of
                    # memory, a bug): every request in flight ends with it; the engine serves on
                    in_flight = [*newcomers, *(row.stream for row in self._rows)]
                    self._fail(list(dict.fromkeys(in_flight)), error)
                    self._rows, self._cache = [], None
                    self._retire()

    def _admit(self) -> list[Stream] | None:
        """Wait until there is work, then take as many waiting requests as the batch has room
        for (maybe none); None once the engine is closed."""
        with self._lock:
            while not (self._closed or self._rows or self._waiting):
                self._lock.wait()
            if self._closed:
                return None
            count = min(self.max_batch - self._active, len(self._waiting))
            self._active += count
            return [self._waiting.popleft() for _ in range(count)]

    def _prefill(self, streams: list[Stream]) -> None:
        """Run the newcomers' prompts in one forward pass, sample their first tokens, and
        join their cache rows to the batch. A newcomer whose row cannot be made fails alone;
        if their forward pass fails, they fail together and the running batch goes on."""
        rows = []
        for stream in streams:
            try:
                rows.append(self._new_row(stream))
            except Exception as error:  # its generator refused the seed, say
                self._fail([stream], error)
        if not rows:
            return
        prompts = [row.stream.request.prompt_ids for row in rows]
        try:
            cache = self.model.new_kv_cache(batch_size=len(rows),
                                            max_len=max(map(len, prompts)))
            logits = last_logits(self.model, prompts, cache)
        except Exception as error:  # no memory for these prompts, say
            self._fail([row.stream for row in rows], error)
            return
        self._take(rows, logits)
        if self._cache is None:
            self._cache = cache
        else:
            self._cache.append_rows(cache)
        self._rows += rows
        # Room for what the rows may still generate: each step stores one token per row.
        self._cache.reserve(self._cache.length + max(row.remaining for row in self._rows))

    def _new_row(self, stream: Stream) -> _Row:
        """A newcomer's row: its own generator, seeded, and its text rules."""
        generator = torch.Generator(compute_device(self.model))
        if stream.request.seed is None:
            generator.seed()  # a random seed of its own
        else:
            generator.manual_seed(stream.request.seed)
        text = _TextCut(self.tokenizer, stream.request.stop)
        return _Row(stream, generator, text, set(stream.request.prompt_ids))

    def _step(self) -> None:
        """One decoding step: every row's newest token through the shared cache, then each
        row's next token."""
        logits = last_logits(self.model, [[row.last_token] for row in self._rows], self._cache)
        self._take(self._rows, logits)

    def _take(self, rows: list[_Row], logits: torch.Tensor) -> None:
        """Each row samples its next token from its logits and hands on its text, then their
        readers are woken. A row whose own work fails (its sampling, its text) ends alone."""
        for row, row_logits in zip(rows, logits, strict=True):
            try:
                row.take(row_logits, self.stop_ids)
            except Exception as error:
                row.fail(error)
        wake_readers([row.stream for row in rows])

    def _retire(self) -> None:
        """Rows that finished, failed or were cancelled leave the batch and its cache. The
        active count becomes the rows left, which also forgets newcomers that failed before
        they joined."""
        keep = [i for i, row in enumerate(self._rows)
                if not (row.finished or row.stream.cancelled)]
        if len(keep) < len(self._rows):
            if keep and self._cache is not None:
                self._cache.keep_rows(keep)
                self._cache.trim()  # the rows that left may have been the longest
            else:
                self._cache = None
            self._rows = [self._rows[i] for i in keep]
        with self._lock:
            self._active = len(self._rows)

    @staticmethod
    def _fail(streams: list[Stream], error: Exception) -> None:
        """End each of ``streams`` with ``error``."""
        for stream in streams:
            stream._put(error, wake=False)
        wake_readers(streams)
