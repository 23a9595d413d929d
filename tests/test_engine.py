"""The continuous-batching engine: every stream says what ``generate_text`` says for its request
alone, while requests join and leave one shared batch; cancelling, capacity, closing, asyncio
readers, and the KV cache's joining and trimming of rows."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import torch
from decoding_models import ByteTokenizer, script_model

from scratchgpt.config import ModelConfig
from scratchgpt.generation import generate_text, generate_tokens
from scratchgpt.model import GPTModel
from scratchgpt.serving.engine import (
    SEED_RANGE,
    Delta,
    Engine,
    GenerationFailed,
    GenerationRequest,
    QueueFull,
    Stream,
)
from scratchgpt.tokenizers.bpe_training import train_bpe

PARAGRAPH = (
    "Once upon a time, in a quiet village by the sea, there lived an old fisherman who told "
    "stories to the children every evening. The naïve café owner served crème brûlée, the sky "
    "was wide, and the stories never ended; they went on and on, like the waves on the shore."
)
CONTEXT = 64


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models on two busy cores: one intra-op thread is ten times faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(PARAGRAPH, 300, special_tokens=["<|endoftext|>"], progress=False)


def talkative_model(tokenizer, pos_encoding: str = "rope") -> GPTModel:
    """Random and untied, so that outputs vary; end-of-text made likelier, so that some
    requests end with it and others run to their length."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, context_length=CONTEXT, emb_dim=32,
                         n_heads=4, n_layers=2, tie_weights=False, pos_encoding=pos_encoding)
    model = GPTModel(config).eval()
    with torch.no_grad():
        model.out_head.weight[tokenizer.eot_id] *= 3
    return model


def alone(model: GPTModel, tokenizer, request: GenerationRequest) -> str:
    """What generate_text says for the request on its own."""
    return "".join(generate_text(
        model, tokenizer, request.prompt_ids, request.max_new_tokens,
        temperature=request.temperature, top_k=request.top_k, top_p=request.top_p,
        seed=request.seed, stop=request.stop, repetition_penalty=request.repetition_penalty))


def assert_near(got: torch.Tensor, expected: torch.Tensor) -> None:
    """As torch.testing.assert_close(atol=1e-5, rtol=0), without its first call's 1.5 s of
    imports."""
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max()


def text(deltas: list[Delta]) -> str:
    return "".join(delta.text for delta in deltas)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


class Gate:
    """Holds the engine before each forward pass of ``model`` until the test lets it through.
    ``shapes`` are the input shapes of the passes that came to the gate, the last one held."""

    def __init__(self, model: GPTModel) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self._allowed = 0
        self._changed = threading.Condition()
        model.tok_emb.register_forward_pre_hook(self._hold)

    def _hold(self, module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        with self._changed:
            self.shapes.append(tuple(args[0].shape))
            self._changed.wait_for(lambda: len(self.shapes) <= self._allowed)

    def allow(self, passes: int) -> None:
        with self._changed:
            self._allowed += passes
            self._changed.notify_all()

    def open(self) -> None:
        self.allow(1_000_000)


@contextlib.contextmanager
def running(engine: Engine, gate: Gate | None = None) -> Iterator[Engine]:
    """``engine`` started, then closed (its gate opened first, or close would wait forever)."""
    engine.start()
    try:
        yield engine
    finally:
        if gate is not None:
            gate.open()
        engine.close()


def varied_requests(model: GPTModel, tokenizer, count: int) -> list[GenerationRequest]:
    """Prompts of 2 to 24 tokens from the paragraph, 1 to 40 new tokens, greedy and seeded
    sampling, and every third request with a stop string taken from its own continuation."""
    rng = random.Random(1)
    ids = tokenizer.encode(PARAGRAPH)
    requests = []
    for i in range(count):
        length = rng.randint(2, 24)
        start = rng.randrange(len(ids) - length)
        sampled = i % 2 == 1
        request = GenerationRequest(
            ids[start : start + length], rng.randint(1, 40),
            temperature=rng.choice([0.7, 1.0, 1.3]) if sampled else 0.0,
            top_k=rng.choice([None, 20]), top_p=rng.choice([None, 0.9]),
            repetition_penalty=rng.choice([1.0, 1.3]), seed=100 + i)
        continuation = alone(model, tokenizer, request) if i % 3 == 2 else ""
        if len(continuation) >= 8:
            request = GenerationRequest(**{**request.__dict__,
                                           "stop": (continuation[4:6], "never said")})
        requests.append(request)
    return requests


# -- the key property ------------------------------------------------------------------------
@pytest.mark.parametrize("pos_encoding", ["rope", "learned"])
def test_streams_equal_generate_text_while_rows_join_and_leave(tokenizer,
                                                               pos_encoding: str) -> None:
    model = talkative_model(tokenizer, pos_encoding)
    requests = varied_requests(model, tokenizer, 32)
    expected = [alone(model, tokenizer, request) for request in requests]
    shapes: list[tuple[int, ...]] = []
    model.tok_emb.register_forward_hook(lambda module, args, out: shapes.append(args[0].shape))
    with running(Engine(model, tokenizer, max_batch=12, max_queue=32)) as engine:
        streams: list[Stream] = []
        for wave in range(8):  # four at a time, each wave after the engine has run a pass
            passes = len(shapes)
            streams += [engine.submit(request) for request in requests[4 * wave : 4 * wave + 4]]
            wait_until(lambda passes=passes: len(shapes) > passes)
        answers = [list(stream) for stream in streams]
        wait_until(lambda: engine.active == 0)
    decode_sizes = {shape[0] for shape in shapes if shape[1] == 1}  # before generate_tokens
    assert len(decode_sizes) > 5 and max(decode_sizes) == 12  # the batch grew and shrank

    assert [text(deltas) for deltas in answers] == expected
    reasons = set()
    for request, deltas in zip(requests, answers, strict=True):
        *middle, last = deltas
        assert all(delta.finish_reason is None and delta.text for delta in middle)
        assert all(delta.prompt_tokens == len(request.prompt_ids) for delta in deltas)
        counts = [delta.completion_tokens for delta in deltas]
        assert counts == sorted(counts) and 0 <= counts[-1] <= request.max_new_tokens
        if last.finish_reason == "length":
            assert last.completion_tokens == request.max_new_tokens
            reasons.add("length")
            continue
        tokens = list(generate_tokens(
            model, request.prompt_ids, request.max_new_tokens, request.temperature,
            request.top_k, request.top_p, tokenizer.eot_id, request.seed,
            repetition_penalty=request.repetition_penalty))
        if not request.stop:  # ended by end-of-text, which is not counted
            assert last.finish_reason == "stop" and last.completion_tokens == len(tokens)
            assert len(tokens) < request.max_new_tokens
            reasons.add("eot")
        else:  # cut by the stop string: the tokens up to the one that completed it
            assert last.finish_reason == "stop" and 1 <= last.completion_tokens <= len(tokens)
            reasons.add("stop string")
    assert reasons == {"length", "eot", "stop string"}


def test_one_batch_serves_concurrent_requests(tokenizer) -> None:
    """Eight requests decoded together: one forward pass per step for all of them."""
    model = talkative_model(tokenizer)
    prompt = tokenizer.encode("the old fisherman")
    requests = [GenerationRequest(prompt[: 2 + i % 3], 30, temperature=1.0, seed=i)
                for i in range(8)]
    shapes: list[tuple[int, ...]] = []
    model.tok_emb.register_forward_hook(lambda module, args, out: shapes.append(args[0].shape))
    engine = Engine(model, tokenizer)
    streams = [engine.submit(request) for request in requests]  # queued before the start
    with running(engine):
        answers = [list(stream) for stream in streams]
    assert shapes[0] == (8, 4)  # one prefill for all, left-padded to the longest prompt
    decode_passes = len(shapes) - 1
    generated = sum(deltas[-1].completion_tokens for deltas in answers)
    assert decode_passes < 30 and generated > 4 * decode_passes
    assert [text(deltas) for deltas in answers] == [alone(model, tokenizer, r) for r in requests]


# -- text rules, finish reasons and counts, on a model that spells out a known text ----------
def test_text_rules_finish_reasons_and_counts() -> None:
    """Token i is followed by i + 1: bytes of "Héllo, wörld! 世界 ok", then end-of-text."""
    model, tokenizer = script_model(), ByteTokenizer()
    requests = {
        "eot": GenerationRequest([18], 7),  # the last byte of 世, then "界 ok" and eot
        "eot first": GenerationRequest([24], 3),
        "length": GenerationRequest([14], 4),  # " " then 世, whole
        "split character": GenerationRequest([14], 3),  # 世 lacks its last byte
        "held back": GenerationRequest([0], 7, stop=("llo",)),  # "l", "ll" could begin it
        "stop over tokens": GenerationRequest([2, 3], 6, stop=("o, w", "x")),
        "nothing": GenerationRequest([3], 0),
    }
    with running(Engine(model, tokenizer)) as engine:
        answers = {name: list(engine.submit(request)) for name, request in requests.items()}
    assert answers == {
        "eot": [Delta("界", None, 1, 3), Delta(" ", None, 1, 4), Delta("o", None, 1, 5),
                Delta("k", None, 1, 6), Delta("", "stop", 1, 6)],
        "eot first": [Delta("", "stop", 1, 0)],
        "length": [Delta(" ", None, 1, 1), Delta("世", "length", 1, 4)],
        "split character": [Delta(" ", None, 1, 1), Delta("\ufffd", "length", 1, 3)],
        "held back": [Delta("é", None, 1, 2), Delta("", "stop", 1, 5)],
        "stop over tokens": [Delta("l", None, 2, 1), Delta("", "stop", 2, 5)],
        "nothing": [Delta("", "length", 1, 0)],
    }
    for name, request in requests.items():
        assert text(answers[name]) == alone(model, tokenizer, request), name


def test_requests_that_cannot_run_are_refused_at_submit(tokenizer) -> None:
    engine = Engine(talkative_model(tokenizer), tokenizer)
    with pytest.raises(ValueError, match=r"^the prompt's 60 tokens plus max_new_tokens=5 "
                                         r"exceed the model's context_length 64$"):
        engine.submit(GenerationRequest([1] * 60, 5))
    engine.submit(GenerationRequest([1] * 60, 4))  # exactly fits
    with pytest.raises(ValueError, match="^prompt_ids is empty"):
        engine.submit(GenerationRequest([], 5))
    with pytest.raises(ValueError, match=r"outside the model's vocabulary, 0 to 299$"):
        engine.submit(GenerationRequest([300], 5))
    with pytest.raises(ValueError, match="^temperature must be"):
        engine.submit(GenerationRequest([1], 5, temperature=-1.0))
    with pytest.raises(ValueError, match="^top_p must be"):
        engine.submit(GenerationRequest([1], 5, top_p=0.0))
    for seed in (SEED_RANGE[0] - 1, SEED_RANGE[1] + 1):
        with pytest.raises(ValueError, match=rf"^seed must be an integer from .*, got {seed}$"):
            engine.submit(GenerationRequest([1], 5, seed=seed))
    for logprobs in (-1, 301):
        with pytest.raises(ValueError, match="^logprobs must be from 0 to the vocabulary's 300"):
            engine.submit(GenerationRequest([1], 5, logprobs=logprobs))
    engine.close()


def test_seed_range_is_what_torch_generators_take() -> None:
    """SEED_RANGE, which submit and the server's schema check, is exactly what
    ``torch.Generator.manual_seed`` takes: one beyond either end overflows."""
    low, high = SEED_RANGE
    for seed in (low, -1, 0, high):
        torch.Generator().manual_seed(seed)
    for seed in (low - 1, high + 1):
        with pytest.raises(ValueError, match="Overflow"):
            torch.Generator().manual_seed(seed)


# -- cancelling, capacity, closing ----------------------------------------------------------
def test_cancel_retires_the_row_and_the_others_go_on(tokenizer) -> None:
    model = talkative_model(tokenizer)
    prompt = tokenizer.encode("the waves on the shore")
    requests = [GenerationRequest(prompt[:n], 40, temperature=1.0, seed=n) for n in (3, 4, 5)]
    engine, gate = Engine(model, tokenizer), Gate(model)
    streams = [engine.submit(request) for request in requests]  # prefilled together
    with running(engine, gate):
        gate.allow(3)  # the prefill and two steps
        wait_until(lambda: len(gate.shapes) == 4)  # the third step is held
        assert engine.active == 3
        streams[1].cancel()
        gate.allow(1)  # the third step runs, then the cancelled row leaves
        wait_until(lambda: len(gate.shapes) == 5)
        assert engine.active == 2
        assert gate.shapes == [(3, 5), (3, 1), (3, 1), (3, 1), (2, 1)]
        gate.open()
        kept = [list(streams[i]) for i in (0, 2)]
    assert [text(deltas) for deltas in kept] == [alone(model, tokenizer, requests[i])
                                                 for i in (0, 2)]
    cancelled = list(streams[1])  # what came before the cancel, then the end
    assert all(delta.finish_reason is None for delta in cancelled)
    assert alone(model, tokenizer, requests[1]).startswith(text(cancelled))


def test_a_reader_that_leaves_cancels_and_a_waiting_request_leaves_at_once(tokenizer) -> None:
    model = talkative_model(tokenizer)
    request = GenerationRequest(tokenizer.encode("the sea"), 40, temperature=1.0, seed=3)
    engine, gate = Engine(model, tokenizer, max_batch=1), Gate(model)
    with running(engine, gate):
        first, second = engine.submit(request), engine.submit(request)
        wait_until(lambda: engine.active == 1 and engine.waiting == 1)
        second.cancel()
        assert engine.waiting == 0 and list(second) == []
        gate.open()
        for _delta in first:
            break  # the reader leaves
        assert first.cancelled
        wait_until(lambda: engine.active == 0)


def test_queue_full_and_close_ends_waiting_streams(tokenizer) -> None:
    engine = Engine(talkative_model(tokenizer), tokenizer, max_batch=2, max_queue=1)
    request = GenerationRequest([1, 2], 5)
    streams = [engine.submit(request) for _ in range(3)]  # not started: all wait
    assert (engine.active, engine.waiting) == (0, 3)
    with pytest.raises(QueueFull):
        engine.submit(request)
    streams.pop().cancel()  # frees a place
    streams.append(engine.submit(request))
    engine.close()
    assert [list(stream) for stream in streams] == [[], [], []]
    assert engine.waiting == 0
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(request)


def test_close_ends_active_streams(tokenizer) -> None:
    model = talkative_model(tokenizer)
    engine, gate = Engine(model, tokenizer), Gate(model)
    streams = [engine.submit(GenerationRequest([5, 6, 7], 50, temperature=1.0, seed=s))
               for s in range(2)]
    engine.start()
    gate.allow(3)
    wait_until(lambda: len(gate.shapes) == 4)
    threading.Timer(0.05, gate.open).start()  # then the step under way ends
    engine.close()
    for stream in streams:
        assert all(delta.finish_reason is None for delta in list(stream))
    assert engine.active == 0


def test_a_failure_ends_the_streams_in_flight_and_the_engine_serves_on(tokenizer) -> None:
    model = talkative_model(tokenizer)
    passes = []

    def fail_the_third_pass(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        passes.append(args[0].shape)
        if len(passes) == 3:
            raise RuntimeError("out of memory, say")

    model.tok_emb.register_forward_pre_hook(fail_the_third_pass)
    engine = Engine(model, tokenizer)
    streams = [engine.submit(GenerationRequest([5, 6, 7], 20, temperature=1.0, seed=s))
               for s in range(2)]
    with running(engine):
        for stream in streams:
            with pytest.raises(RuntimeError, match=r"^generation failed: RuntimeError\('out"):
                list(stream)
        request = GenerationRequest([5, 6], 10)
        assert text(list(engine.submit(request))) == alone(model, tokenizer, request)
        wait_until(lambda: engine.active == 0)


def test_a_row_that_fails_ends_alone_and_the_batch_goes_on(tokenizer) -> None:
    """A request whose own sampling fails ends alone, with the error on its stream: here a
    temperature so small that ``logits / temperature`` overflows to infinity, so that softmax
    gives NaN and ``torch.multinomial`` raises. It joins the batch in one prefill with a good
    newcomer while three rows decode; the four others finish as they would alone."""
    model = talkative_model(tokenizer)
    prompt = tokenizer.encode("the waves on the shore")
    early = [GenerationRequest(prompt[:n], 30, temperature=1.0, seed=n) for n in (3, 4, 5)]
    failing = GenerationRequest(prompt[:2], 30, temperature=1e-300)
    newcomer = GenerationRequest(prompt[:6], 30, temperature=1.0, seed=1)
    engine, gate = Engine(model, tokenizer), Gate(model)
    streams = [engine.submit(request) for request in early]
    with running(engine, gate):
        gate.allow(3)  # the prefill and two steps
        wait_until(lambda: len(gate.shapes) == 4)  # the third step is held
        late = [engine.submit(failing), engine.submit(newcomer)]
        gate.open()
        answers = [list(stream) for stream in (*streams, late[1])]
        with pytest.raises(GenerationFailed, match="^generation failed: RuntimeError.*nan"):
            list(late[0])
        wait_until(lambda: engine.active == 0)
    assert [text(deltas) for deltas in answers] == [
        alone(model, tokenizer, request) for request in (*early, newcomer)]
    assert [deltas[-1].finish_reason for deltas in answers] == ["length"] * 4
    joined = gate.shapes.index((2, 6))  # the two newcomers' prefill...
    assert gate.shapes[joined + 1] == (4, 1)  # ...and the next step, without the failed row


def test_a_failed_prefill_fails_its_newcomers_and_the_batch_goes_on(tokenizer) -> None:
    """The newcomers' forward pass is theirs alone: when it fails (out of memory for a long
    prompt, say), they end with the error and the rows already decoding never notice."""
    model = talkative_model(tokenizer)
    prompt = tokenizer.encode("the waves on the shore")
    early = [GenerationRequest(prompt[:n], 30, temperature=1.0, seed=n) for n in (3, 4)]
    engine, gate = Engine(model, tokenizer), Gate(model)

    def fail_a_prefill_of_seven(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if args[0].shape[1] == 7:
            raise RuntimeError("out of memory, say")

    model.tok_emb.register_forward_pre_hook(fail_a_prefill_of_seven)
    streams = [engine.submit(request) for request in early]
    with running(engine, gate):
        gate.allow(2)  # the prefill and a step
        wait_until(lambda: len(gate.shapes) == 3)
        newcomers = [engine.submit(GenerationRequest(prompt[:7], 10)) for _ in range(2)]
        gate.open()
        for stream in newcomers:
            with pytest.raises(GenerationFailed, match=r"^generation failed: RuntimeError\('out"):
                list(stream)
        answers = [list(stream) for stream in streams]
        wait_until(lambda: engine.active == 0)
    assert [text(deltas) for deltas in answers] == [alone(model, tokenizer, r) for r in early]


def test_logprobs_are_the_models_own_distribution(tokenizer) -> None:
    """Asked for, each token's log-probability and the most likely tokens' are
    ``log_softmax`` of the model's logits at its place, as one forward pass over the prompt
    and answer gives them, whatever the sampling settings; each delta carries the tokens its
    text covers; a request that does not ask gets none."""
    model = talkative_model(tokenizer)
    ids = tokenizer.encode(PARAGRAPH)
    requests = [
        GenerationRequest(ids[:5], 20, logprobs=3),
        GenerationRequest(ids[10:19], 25, temperature=1.3, top_k=20, top_p=0.9,
                          repetition_penalty=1.3, seed=5, logprobs=0),
        GenerationRequest(ids[30:33], 20, temperature=1.0, seed=2),
    ]
    with running(Engine(model, tokenizer)) as engine:
        streams = [engine.submit(request) for request in requests]  # decoded together
        answers = [list(stream) for stream in streams]
    assert [text(deltas) for deltas in answers] == [alone(model, tokenizer, r) for r in requests]
    assert all(delta.logprobs == () for delta in answers[2])
    for request, deltas in zip(requests[:2], answers[:2], strict=True):
        for delta in deltas:  # every piece of text comes with the tokens that made it
            assert delta.logprobs or not delta.text
        entries = [entry for delta in deltas for entry in delta.logprobs]
        tokens = [entry.token for entry in entries]
        assert len(tokens) == deltas[-1].completion_tokens > 0
        assert tokenizer.decode_bytes(tokens).decode(errors="replace") == text(deltas)
        with torch.no_grad():
            full = torch.log_softmax(model(torch.tensor([request.prompt_ids + tokens]))[0], -1)
        expected = full[len(request.prompt_ids) - 1 : -1]  # the place each token was chosen
        assert_near(torch.tensor([entry.logprob for entry in entries]),
                    expected[torch.arange(len(tokens)), tokens])
        best = expected.topk(request.logprobs or 1)
        for entry, indices, values in zip(entries, best.indices, best.values, strict=True):
            assert [token for token, _ in entry.top] == indices[: request.logprobs].tolist()
            assert_near(torch.tensor([lp for _, lp in entry.top]),
                        values[: request.logprobs])


# -- asyncio readers --------------------------------------------------------------------------
def test_async_readers_in_one_event_loop(tokenizer) -> None:
    model = talkative_model(tokenizer)
    requests = varied_requests(model, tokenizer, 6)

    async def read(stream: Stream) -> list[Delta]:
        return [delta async for delta in stream]

    async def read_one_and_leave(stream: Stream) -> None:
        async with contextlib.aclosing(aiter(stream)) as deltas:
            async for _delta in deltas:
                break

    async def serve(engine: Engine) -> list[list[Delta]]:
        leaving = engine.submit(GenerationRequest([5, 6], 60, temperature=1.0, seed=1))
        answers = await asyncio.gather(*(read(engine.submit(r)) for r in requests),
                                       read_one_and_leave(leaving))
        assert leaving.cancelled
        return answers[:-1]

    with running(Engine(model, tokenizer)) as engine:
        answers = asyncio.run(serve(engine))
        wait_until(lambda: engine.active == 0)
    assert [text(deltas) for deltas in answers] == [alone(model, tokenizer, r) for r in requests]
    assert all(deltas[-1].finish_reason in ("stop", "length") for deltas in answers)


# -- the KV cache's part: joining rows, trimming slots --------------------------------------
@pytest.mark.parametrize("sized", [False, True], ids=["whole-context", "sized-to-need"])
def test_kv_cache_append_rows_and_trim_keep_each_row_as_alone(tokenizer, sized: bool) -> None:
    model = talkative_model(tokenizer)
    prompts = [[5, 17, 42, 8, 99, 3, 4], [3, 9], [7, 7, 1, 30]]

    def logits(rows: list[list[int]], cache) -> torch.Tensor:
        return model(torch.tensor(rows), cache)[:, -1]

    with torch.no_grad():
        # Sized to need (as the engine does): 7 slots, then 4 for the newcomers, grown later.
        cache = model.new_kv_cache(batch_size=1, max_len=7 if sized else None)
        logits([prompts[0]], cache)  # a batch of one, no padding yet
        newcomers = model.new_kv_cache(batch_size=2, max_len=4 if sized else None)
        idx = torch.tensor([[0, 0] + prompts[1], prompts[2]])
        model(idx, newcomers, torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]))
        cache.append_rows(newcomers)  # 7 slots and 4: the newcomers shift right
        assert (cache.batch_size, cache.length) == (3, 7)
        cache.reserve(9)  # two more tokens each
        assert cache.max_len == (9 if sized else model.config.context_length)
        assert cache.real[:, :7].sum(dim=1).tolist() == [7, 2, 4]
        got = logits([[11], [12], [13]], cache)
        cache.keep_rows([1, 2])  # the longest row leaves
        cache.trim()
        assert cache.length == 5 and cache.real[:, :5].sum(dim=1).tolist() == [3, 5]
        later = logits([[14], [15]], cache)
        for row, (prompt, new) in enumerate(zip(prompts, [[11], [12, 14], [13, 15]],
                                                strict=True)):
            full = model(torch.tensor([prompt + new]))[0]
            assert_near(got[row], full[len(prompt)])
            if row:
                assert_near(later[row - 1], full[-1])
