"""What ``scratchgpt serve`` does with each field of a request, against a real server process:
a request that fails never ends the streams decoded beside it, numbers out of range are
refused where the request is read, known fields the server does not implement are refused by
name rather than ignored, and ``logprobs`` are the model's own, in OpenAI's two shapes.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from serve_runs import MESSAGES, Server

from scratchgpt.data.prompt_styles import get_prompt_style
from scratchgpt.generation import generate_text, generate_tokens
from scratchgpt.run_dir import load_run

openai = pytest.importorskip("openai")

LONG = 64  # tokens, chat_server's --max-tokens: a stream this long is still decoding while
# a few other requests come and go


@pytest.fixture(scope="module")
def server(chat_server: Server) -> Server:
    """The instruction-tuned run (context 160), the server the serving tests share."""
    return chat_server


@pytest.fixture(scope="module")
def name(instruct_run: tuple[Path, str]) -> str:
    return instruct_run[0].name


def events(response: http.client.HTTPResponse) -> Iterator[Any]:
    """The ``data:`` payloads of a server-sent event stream, parsed (``[DONE]`` as is), or the
    lines of an NDJSON one."""
    for raw in response:
        line = raw.decode().strip()
        if line.startswith("data: "):
            payload = line.removeprefix("data: ")
            yield payload if payload == "[DONE]" else json.loads(payload)
        elif line:
            yield json.loads(line)


def post(server: Server, path: str, body: dict[str, Any] | bytes) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection.request("POST", path, data, {"Content-Type": "application/json"})
    return connection.getresponse()


# -- a request that fails fails alone ----------------------------------------------------------
def test_a_failing_request_never_ends_the_streams_beside_it(server: Server, name: str,
                                                            instruct_run: tuple[Path, str]) -> None:
    """Three long streams decode; meanwhile requests come that fail: a seed of 2**64 (which
    torch's generator refuses), numbers that are not finite, and a temperature of 1e-300 that
    passes every check and fails in sampling (``logits / temperature`` overflows, softmax
    gives NaN). Each bad request gets its own error; each of the three streams still ends with
    its whole answer, its ``finish_reason`` and ``[DONE]``."""
    prompts = ["The list", "A tuple is", "To open a file"]
    started = [threading.Event() for _ in prompts]
    streams: list[list[Any]] = [[] for _ in prompts]
    ended_at = [0.0] * len(prompts)

    def read(i: int) -> None:
        response = post(server, "/v1/completions", {
            "model": name, "prompt": prompts[i], "max_tokens": LONG, "temperature": 0,
            "stream": True})
        for event in events(response):
            streams[i].append(event)
            started[i].set()
        ended_at[i] = time.monotonic()

    readers = [threading.Thread(target=read, args=(i,)) for i in range(len(prompts))]
    for reader in readers:
        reader.start()
    for event in started:
        assert event.wait(60)
    refused = [  # refused where the request is read: 400, naming the field
        ("seed", post(server, "/v1/completions", {"model": name, "prompt": "Hi",
                                                  "seed": 2**64})),
        ("repeat_penalty", post(server, "/api/chat", b'{"model": "%s", "messages": [{"role": '
                                b'"user", "content": "Hi"}], "options": {"repeat_penalty": '
                                b'1e999}}' % name.encode())),
        ("temperature", post(server, "/v1/chat/completions", b'{"model": "%s", "messages": '
                             b'[{"role": "user", "content": "Hi"}], "temperature": NaN}'
                             % name.encode())),
    ]
    refused = [(field, response.status, response.read()) for field, response in refused]
    # these fail in the engine, each on its own stream
    tiny = {"model": name, "prompt": "Hi", "max_tokens": 5, "temperature": 1e-300}
    streamed = post(server, "/v1/completions", {**tiny, "stream": True})
    streamed_events = list(events(streamed))
    whole = post(server, "/v1/completions", tiny)
    whole_answer = whole.read()
    ollama = list(events(post(server, "/api/generate", {
        "model": name, "prompt": "Hi", "raw": True, "options": {"temperature": 1e-300}})))
    bad_ones_done = time.monotonic()
    for reader in readers:
        reader.join(60)
    model, tokenizer = load_run(instruct_run[0])
    for prompt, stream in zip(prompts, streams, strict=True):
        assert stream[-1] == "[DONE]"
        chunks = stream[:-1]
        alone = "".join(generate_text(model, tokenizer, prompt, LONG))
        assert "".join(c["choices"][0]["text"] for c in chunks) == alone
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert min(ended_at) > bad_ones_done  # the three were decoding all along
    for field, status, body in refused:
        assert status == 400, body
        error = json.loads(body)["error"]
        assert field in (error if isinstance(error, str) else error["message"])
    # a stream: an error in OpenAI's shape, then [DONE]; whole: a 500; Ollama: an error line
    assert streamed.status == 200 and streamed_events[-1] == "[DONE]"
    assert streamed_events[-2]["error"]["type"] == "server_error"
    assert "generation failed" in streamed_events[-2]["error"]["message"]
    assert whole.status == 500
    assert json.loads(whole_answer)["error"]["type"] == "server_error"
    assert "generation failed" in ollama[-1]["error"]
    assert server.request("GET", "/health")[2]["active"] == 0


RANGES = [  # path, body, the field named
    pytest.param("/v1/chat/completions", {"seed": 2**64}, "seed", id="seed-2**64"),
    pytest.param("/v1/chat/completions", {"seed": -(2**63) - 1}, "seed", id="seed-below"),
    pytest.param("/v1/completions", {"seed": 2**70}, "seed", id="completions-seed"),
    pytest.param("/v1/chat/completions", b'"top_p": Infinity', "top_p", id="top-p-infinity"),
    pytest.param("/v1/completions", b'"temperature": -Infinity', "temperature",
                 id="temperature-minus-infinity"),
    pytest.param("/api/chat", {"options": {"seed": 2**64}}, "options.seed", id="ollama-seed"),
    pytest.param("/api/generate", b'"options": {"repeat_penalty": 1e999}',
                 "options.repeat_penalty", id="ollama-repeat-penalty-1e999"),
    pytest.param("/api/chat", b'"options": {"temperature": NaN}', "options.temperature",
                 id="ollama-temperature-nan"),
    pytest.param("/api/chat", b'"options": {"top_p": "inf"}', "options.top_p",
                 id="ollama-top-p-inf-string"),
]


def request_body(path: str, name: str, extra: dict[str, Any] | bytes) -> bytes:
    """A valid body for ``path`` with ``extra``'s fields (JSON text for what JSON cannot say,
    such as ``NaN``)."""
    body: dict[str, Any] = {"model": name, "stream": False, "max_tokens": 3}
    body.update({"prompt": "Hi"} if path.endswith(("completions", "generate"))
                and "chat" not in path else {"messages": MESSAGES})
    if isinstance(extra, dict):
        return json.dumps({**body, **extra}).encode()
    return json.dumps(body).encode()[:-1] + b", " + extra + b"}"


@pytest.mark.parametrize(("path", "extra", "field"), RANGES)
def test_numbers_out_of_range_are_refused_where_the_request_is_read(
        server: Server, name: str, path: str, extra: dict[str, Any] | bytes, field: str) -> None:
    status, _, answer = server.request("POST", path, request_body(path, name, extra))
    assert status == 400, answer
    if path.startswith("/api"):
        assert answer["error"].startswith(f"{field}: ")
    else:
        assert answer["error"]["param"] == field and field in answer["error"]["message"]


def test_seeds_at_either_end_of_the_range_are_taken(server: Server, name: str) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    for seed in (-(2**63), 2**64 - 1):
        answer = client.chat.completions.create(model=name, messages=MESSAGES, seed=seed,
                                                max_tokens=3, temperature=1.0)
        assert answer.choices[0].finish_reason in ("stop", "length")


# -- fields that would change what the answer means: refused, never ignored -------------------
REFUSED = [  # path, field, a value that asks for what this server does not do
    ("/v1/chat/completions", "tools", [{"type": "function", "function": {"name": "f"}}]),
    ("/v1/chat/completions", "tool_choice", "auto"),
    ("/v1/chat/completions", "functions", [{"name": "f", "parameters": {}}]),
    ("/v1/chat/completions", "function_call", "auto"),
    ("/v1/chat/completions", "response_format", {"type": "json_object"}),
    ("/v1/chat/completions", "modalities", ["text", "audio"]),
    ("/v1/chat/completions", "audio", {"voice": "alloy", "format": "wav"}),
    ("/v1/chat/completions", "web_search_options", {}),
    ("/v1/chat/completions", "n", 2),
    ("/v1/chat/completions", "logit_bias", {"50": 5}),
    ("/v1/chat/completions", "frequency_penalty", 0.5),
    ("/v1/chat/completions", "presence_penalty", -1),
    ("/v1/chat/completions", "top_logprobs", 2),  # without logprobs: true
    ("/v1/completions", "echo", True),
    ("/v1/completions", "best_of", 3),
    ("/v1/completions", "suffix", " the end"),
    ("/v1/completions", "logprobs", 6),  # OpenAI's most is 5
    ("/v1/completions", "logit_bias", {"50": -100}),
]


@pytest.mark.parametrize(("path", "field", "value"), REFUSED,
                         ids=[f"{path[4:].split('/')[0]}-{field}" for path, field, _ in REFUSED])
def test_fields_the_server_does_not_implement_are_refused_by_name(
        server: Server, name: str, path: str, field: str, value: Any) -> None:
    status, _, answer = server.request("POST", path, request_body(path, name, {field: value}))
    assert status == 400, answer
    assert answer["error"]["param"] == field
    assert answer["error"]["message"].startswith(f"{field}: ")


def test_harmless_values_and_unknown_fields_are_accepted(server: Server, name: str) -> None:
    """What clients send by default, or to say "nothing": never a refusal."""
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    answer = client.chat.completions.create(
        model=name, messages=MESSAGES, max_tokens=3, n=1, user="someone", frequency_penalty=0,
        presence_penalty=0, response_format={"type": "text"}, logit_bias={}, store=False,
        metadata={"k": "v"}, tools=[], tool_choice="none", modalities=["text"],
        stream_options=None, extra_body={"a_field_from_the_future": 1})
    assert answer.choices[0].message.content is not None
    completion = client.completions.create(model=name, prompt="Hi", max_tokens=3, echo=False,
                                           best_of=1, suffix="", user="someone")
    assert completion.choices[0].logprobs is None


# -- logprobs: the model's own ---------------------------------------------------------------
def model_logprobs(run_dir: Path, prompt: str, count: int) -> tuple[list[int], torch.Tensor]:
    """The greedy answer's first ``count`` token ids, and the log-softmax of one forward pass
    of our model over the prompt and them, at the place each was chosen."""
    model, tokenizer = load_run(run_dir)
    prompt_ids = tokenizer.encode_ordinary(prompt)
    answer = list(generate_tokens(model, prompt_ids, count, eos_id=tokenizer.eot_id))
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + answer]))[0]
    return answer, torch.log_softmax(logits, dim=-1)[len(prompt_ids) - 1 : -1]


def test_chat_logprobs_are_the_log_softmax_of_the_models_logits(
        server: Server, name: str, instruct_run: tuple[Path, str]) -> None:
    run_dir = instruct_run[0]
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    answer = client.chat.completions.create(model=name, messages=MESSAGES, max_tokens=20,
                                            temperature=0, logprobs=True, top_logprobs=3)
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens > 0
    prompt = get_prompt_style("chatml").render(MESSAGES)
    ids, expected = model_logprobs(run_dir, prompt, len(content))
    _, tokenizer = load_run(run_dir)
    for entry, token, row in zip(content, ids, expected, strict=True):
        assert bytes(entry.bytes) == tokenizer.decode_bytes([token])
        assert entry.token == bytes(entry.bytes).decode(errors="replace")
        assert entry.logprob == pytest.approx(float(row[token]), abs=1e-4)
        best = row.topk(3)
        assert [bytes(top.bytes) for top in entry.top_logprobs] == [
            tokenizer.decode_bytes([i]) for i in best.indices.tolist()]
        assert [top.logprob for top in entry.top_logprobs] == pytest.approx(
            best.values.tolist(), abs=1e-4)
    # streamed: the same entries, spread over the chunks that carry their text
    chunks = list(client.chat.completions.create(
        model=name, messages=MESSAGES, max_tokens=20, temperature=0, logprobs=True,
        top_logprobs=3, stream=True))
    streamed = [entry for chunk in chunks if chunk.choices and chunk.choices[0].logprobs
                for entry in chunk.choices[0].logprobs.content]
    assert [(e.token, e.bytes) for e in streamed] == [(e.token, e.bytes) for e in content]
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in content])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content
    # not asked: none, and no cost
    plain = client.chat.completions.create(model=name, messages=MESSAGES, max_tokens=5)
    assert plain.choices[0].logprobs is None


def test_completion_logprobs_in_the_legacy_shape_match_transformers(
        server: Server, name: str, instruct_run: tuple[Path, str], tmp_path: Path) -> None:
    """``/v1/completions`` with ``logprobs: 2``: tokens, their log-probabilities, per token a
    dict of the 2 most likely and the chosen one, and offsets in the text; the numbers agree
    with transformers' GPT2LMHeadModel on the exported weights, an implementation not ours."""
    transformers = pytest.importorskip("transformers")
    from scratchgpt.hub.export import export_hf

    run_dir = instruct_run[0]
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    answer = client.completions.create(model=name, prompt="The list", max_tokens=12,
                                       temperature=0, logprobs=2)
    logprobs = answer.choices[0].logprobs
    assert len(logprobs.tokens) == answer.usage.completion_tokens == 12
    assert "".join(logprobs.tokens) == answer.choices[0].text
    assert logprobs.text_offset == [sum(map(len, logprobs.tokens[:i])) for i in range(12)]
    for token, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs,
                                   logprobs.top_logprobs, strict=True):
        assert top[token] == logprob and 2 <= len(top) <= 3
        assert max(top.values()) >= logprob
    model, tokenizer = load_run(run_dir)
    export_hf(model, tokenizer, tmp_path / "hf")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    prompt_ids = tokenizer.encode_ordinary("The list")
    ids, _ = model_logprobs(run_dir, "The list", 12)
    with torch.no_grad():
        logits = hf(torch.tensor([prompt_ids + ids])).logits[0]
    expected = torch.log_softmax(logits, dim=-1)[len(prompt_ids) - 1 : -1]
    assert logprobs.token_logprobs == pytest.approx(
        expected[torch.arange(12), ids].tolist(), abs=1e-4)
    # streamed: the same tokens, the offsets counted on across the chunks
    chunks = list(client.completions.create(model=name, prompt="The list", max_tokens=12,
                                            temperature=0, logprobs=2, stream=True))
    pieces = [c.choices[0].logprobs for c in chunks if c.choices and c.choices[0].logprobs]
    assert sum((p.tokens for p in pieces), []) == logprobs.tokens
    assert sum((p.text_offset for p in pieces), []) == logprobs.text_offset
