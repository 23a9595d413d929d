"""``scratchgpt serve`` as a real uvicorn process on a loopback port, spoken to by the official
``openai`` client and by plain HTTP.

The models are the tiny instruction-tuned run of ``conftest.instruct_run`` and a tiny
classifier; answers are checked to be exactly what the library generates for the same
prompt, and every bad request to be refused in OpenAI's error shape while the server keeps
serving.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from serve_runs import MESSAGES, Server, expected_answer

from scratchgpt.classify import Classifier
from scratchgpt.data.prompt_styles import get_prompt_style
from scratchgpt.generation import generate_text
from scratchgpt.run_dir import load_run

openai = pytest.importorskip("openai")

@pytest.fixture(scope="module")
def client(chat_server: Server) -> Any:
    return openai.OpenAI(base_url=chat_server.url + "/v1", api_key="unused")


def test_models_and_health(chat_server: Server, client: Any,
                           instruct_run: tuple[Path, str]) -> None:
    name = instruct_run[0].name
    assert [m.id for m in client.models.list()] == [name]
    assert chat_server.request("GET", "/health")[2]["status"] == "ok"
    assert "prompt style chatml" in chat_server.announcement


def test_chat_completion_is_the_models_answer(client: Any,
                                              instruct_run: tuple[Path, str]) -> None:
    run_dir = instruct_run[0]
    answer = client.chat.completions.create(model=run_dir.name, messages=MESSAGES,
                                            temperature=0, max_tokens=12)
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == expected_answer(run_dir, 12, MESSAGES)
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage.completion_tokens <= 12 and answer.usage.prompt_tokens > 0


def test_streamed_chat_is_the_same_answer_in_pieces(client: Any,
                                                    instruct_run: tuple[Path, str]) -> None:
    run_dir = instruct_run[0]
    chunks = list(client.chat.completions.create(
        model=run_dir.name, messages=MESSAGES, temperature=0, max_completion_tokens=12,
        stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_answer(run_dir, 12, MESSAGES)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


def test_completions_continue_a_raw_prompt(client: Any, instruct_run: tuple[Path, str]) -> None:
    run_dir = instruct_run[0]
    model, tokenizer = load_run(run_dir)
    expected = "".join(generate_text(model, tokenizer, "The list", 8))
    answer = client.completions.create(model=run_dir.name, prompt="The list", max_tokens=8,
                                       temperature=0)
    assert answer.choices[0].text == expected
    streamed = client.completions.create(model=run_dir.name, prompt="The list", max_tokens=8,
                                         temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == expected


def test_seeded_sampling_repeats(client: Any, instruct_run: tuple[Path, str]) -> None:
    name = instruct_run[0].name
    answers = [client.chat.completions.create(model=name, messages=MESSAGES, temperature=1.0,
                                              seed=7, max_tokens=10).choices[0].message.content
               for _ in range(2)]
    assert answers[0] == answers[1]


BAD_REQUESTS = [  # body, status, what the message names
    pytest.param(b"{not json", 400, "not valid JSON", id="malformed-json"),
    pytest.param(b'{"model": "M"}', 400, "messages", id="no-messages"),
    pytest.param(b'{"model": "M", "messages": "hi"}', 400, "messages", id="wrong-type"),
    pytest.param(b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], '
                 b'"temperature": -1}', 400, "temperature", id="negative-temperature"),
    pytest.param(b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], '
                 b'"top_p": 1.5}', 400, "top_p", id="top-p"),
    pytest.param(b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], '
                 b'"max_tokens": 0}', 400, "max_tokens", id="max-tokens-zero"),
    pytest.param(b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], '
                 b'"max_tokens": 100000}', 400, "max_tokens", id="max-tokens-over-limit"),
    pytest.param(b'{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}', 404,
                 "nope", id="unknown-model"),
    pytest.param(b'{"model": "M", "messages": [{"role": "user", "content": "' + b"word " * 400
                 + b'"}]}', 400, "context", id="prompt-too-long"),
    pytest.param(b'{"model": "M", "input": "hi"}', 400, "not a classifier", id="classify-chat"),
]


@pytest.mark.parametrize(("body", "status", "named"), BAD_REQUESTS)
def test_bad_requests_are_refused_and_the_server_keeps_serving(
        chat_server: Server, instruct_run: tuple[Path, str], body: bytes, status: int,
        named: str) -> None:
    body = body.replace(b'"M"', json.dumps(instruct_run[0].name).encode())
    path = "/v1/classify" if b'"input"' in body else "/v1/chat/completions"
    code, _, answer = chat_server.request("POST", path, body)
    assert code == status
    assert named in answer["error"]["message"] and answer["error"]["type"]
    assert chat_server.request("GET", "/health")[0] == 200


def test_a_body_of_many_megabytes_is_refused(chat_server: Server) -> None:
    """Refused from its stated size, before it is read: the client may still be sending."""
    with socket.create_connection(("127.0.0.1", chat_server.port)) as connection:
        connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Type: application/json\r\nContent-Length: 30000000\r\n"
                           b"\r\n" + b" " * 65536)
        response = b""
        while b"}}" not in response:  # the status line, then the JSON error
            piece = connection.recv(4096)
            if not piece:
                break
            response += piece
    assert response.startswith(b"HTTP/1.1 413")
    assert b"over the limit" in response
    assert chat_server.request("GET", "/health")[0] == 200


def test_a_client_that_disconnects_frees_its_place(chat_server: Server,
                                                   instruct_run: tuple[Path, str]) -> None:
    body = json.dumps({"model": instruct_run[0].name, "messages": MESSAGES, "stream": True,
                       "max_tokens": 64}).encode()
    with socket.create_connection(("127.0.0.1", chat_server.port)) as connection:
        connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Type: application/json\r\n"
                           + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert connection.recv(100).startswith(b"HTTP/1.1 200")
    for _ in range(100):  # the row is retired at the next step
        if chat_server.request("GET", "/health")[2]["active"] == 0:
            break
        time.sleep(0.05)
    assert chat_server.request("GET", "/health")[2]["active"] == 0


def test_an_api_key_is_required_when_set(instruct_run: tuple[Path, str],
                                         instruct_cache: Path) -> None:
    server = Server(instruct_run[0], instruct_cache, "--api-key", "s3cret", "--cors-origin",
                    "http://example.org")
    try:
        name = instruct_run[0].name
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.url + "/v1", api_key="wrong").models.list()
        code, _, answer = server.request("GET", "/v1/models")
        assert code == 401 and answer["error"]["code"] == "invalid_api_key"
        keyed = openai.OpenAI(base_url=server.url + "/v1", api_key="s3cret")
        assert [m.id for m in keyed.models.list()] == [name]
        assert server.request("GET", "/health")[0] == 200  # not under /v1
        # --cors-origin lets that origin's pages call the API, and no other
        _, headers, _ = server.request("GET", "/health", headers={"Origin": "http://example.org"})
        assert headers["access-control-allow-origin"] == "http://example.org"
        _, headers, _ = server.request("GET", "/health", headers={"Origin": "http://evil.test"})
        assert "access-control-allow-origin" not in headers
    finally:
        server.stop()


def test_no_cross_origin_access_by_default(chat_server: Server) -> None:
    _, headers, _ = chat_server.request("GET", "/health", headers={"Origin": "http://evil.test"})
    assert "access-control-allow-origin" not in headers


def test_32_simultaneous_streams_each_equal_the_same_request_alone(
        chat_server: Server, client: Any, instruct_run: tuple[Path, str]) -> None:
    """Continuous batching through HTTP: 32 clients stream at once (different questions,
    lengths and seeds); each gets exactly what its request gives alone."""
    from concurrent.futures import ThreadPoolExecutor

    run_dir = instruct_run[0]
    model, tokenizer = load_run(run_dir)
    style = get_prompt_style("chatml")
    requests = [([{"role": "user", "content": f"Tell me about {word}."}], seed, 4 + seed % 13)
                for seed, word in enumerate(["rivers", "cats", "a song", "rain"] * 8)]

    def stream(request: tuple[list[dict[str, str]], int, int]) -> str:
        messages, seed, max_tokens = request
        chunks = client.chat.completions.create(
            model=run_dir.name, messages=messages, temperature=0.9, top_p=0.95, seed=seed,
            max_tokens=max_tokens, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(stream, requests))
    for (messages, seed, max_tokens), answer in zip(requests, answers, strict=True):
        prompt = tokenizer.encode_ordinary(style.render(messages))
        alone = "".join(generate_text(model, tokenizer, prompt, max_tokens, temperature=0.9,
                                      top_p=0.95, seed=seed, stop=style.stop))
        assert answer == alone
    assert chat_server.request("GET", "/health")[2]["active"] == 0


def test_a_classifier_is_served_at_v1_classify(classifier_run: Path,
                                              classifier_server: Server) -> None:
    texts = ["WINNER! You have won a prize. Call 09061701461 now", "Lunch at 1?", "ok"]
    expected = Classifier.from_run(classifier_run).predict(texts)
    server = classifier_server
    assert "(classifier)" in server.announcement
    code, _, answer = server.request("POST", "/v1/classify", json.dumps(
        {"model": classifier_run.name, "input": texts}).encode())
    assert code == 200
    assert [(d["label"], d["probabilities"]) for d in answer["data"]] == [
        (p.label, pytest.approx(p.probabilities)) for p in expected]
    one = server.request("POST", "/v1/classify", b'{"input": "hello"}')[2]["data"]
    assert len(one) == 1
    # the other way round: a chat request to a classifier
    code, _, answer = server.request("POST", "/v1/chat/completions", json.dumps(
        {"model": classifier_run.name, "messages": MESSAGES}).encode())
    assert code == 400 and "is a classifier" in answer["error"]["message"]
    assert server.request("GET", "/health")[2]["kind"] == "classifier"


def test_a_full_server_answers_429_with_retry_after(instruct_run: tuple[Path, str],
                                                   instruct_cache: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    server = Server(instruct_run[0], instruct_cache, "--max-concurrency", "1", "--max-queue",
                    "0")
    body = json.dumps({"model": instruct_run[0].name, "messages": MESSAGES,
                       "max_tokens": 64}).encode()
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(
                lambda _: server.request("POST", "/v1/chat/completions", body), range(8)))
        codes = sorted(code for code, _, _ in answers)
        assert codes[0] == 200 and codes[-1] == 429, codes
        for code, headers, answer in answers:
            if code == 429:
                assert headers["retry-after"] == "1"
                assert answer["error"]["type"] == "rate_limit_error"
        assert server.request("GET", "/health")[0] == 200
    finally:
        server.stop()
