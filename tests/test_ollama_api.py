"""Ollama's API on ``scratchgpt serve`` (``/api/tags``, ``/api/chat``, ``/api/generate``), spoken
to over plain HTTP and by Ollama's own Python client, against the real server process of
``conftest.chat_server``: answers equal what ``/v1`` gives for the same request, streams are
newline-delimited JSON, and bad requests are refused in Ollama's error shape while the server
keeps serving.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from serve_runs import MESSAGES, Server

TEXT = "text for the model to go on with"


def post_lines(server: Server, path: str, body: dict[str, Any],
               headers: dict[str, str] | None = None) -> tuple[int, str, list[dict[str, Any]]]:
    """Status, content type and the JSON objects of a response, one per line."""
    request = urllib.request.Request(server.url + path, data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json",
                                                             **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, kind, data = response.status, response.headers["content-type"], \
                response.read()
    except urllib.error.HTTPError as error:
        status, kind, data = error.code, error.headers["content-type"], error.read()
    return status, kind, [json.loads(line) for line in data.decode().splitlines() if line]


def post(server: Server, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, _, data = server.request("POST", path, json.dumps(body).encode())
    return status, data


def test_tags_list_the_served_model(chat_server: Server, instruct_run: tuple[Path, str]) -> None:
    status, _, answer = chat_server.request("GET", "/api/tags")
    assert status == 200
    (model,) = answer["models"]
    assert model["name"] == model["model"] == f"{instruct_run[0].name}:latest"
    assert model["size"] > 0 and len(model["digest"]) == 64
    assert model["details"]["family"] == "gpt" and model["details"]["parameter_size"]
    assert model["modified_at"].endswith("Z")
    assert model["details"]["quantization_level"] == "F32"
    assert chat_server.request("GET", "/api/version")[2]["version"]


def test_chat_is_the_same_answer_as_v1(chat_server: Server,
                                       instruct_run: tuple[Path, str]) -> None:
    name = instruct_run[0].name
    _, v1 = post(chat_server, "/v1/chat/completions", {
        "model": name, "messages": MESSAGES, "temperature": 0, "max_tokens": 12})
    for asked in (name, f"{name}:latest"):  # Ollama's model:tag, the tag optional
        status, answer = post(chat_server, "/api/chat", {
            "model": asked, "messages": MESSAGES, "stream": False,
            "options": {"temperature": 0, "num_predict": 12, "num_ctx": 4096}})
        assert status == 200
        assert answer["model"] == asked and answer["done"] is True
        assert answer["message"] == {"role": "assistant",
                                     "content": v1["choices"][0]["message"]["content"]}
        assert answer["done_reason"] == v1["choices"][0]["finish_reason"]
        assert answer["prompt_eval_count"] == v1["usage"]["prompt_tokens"]
        assert answer["eval_count"] == v1["usage"]["completion_tokens"]
        assert answer["total_duration"] >= answer["eval_duration"] >= 0
        assert answer["created_at"].endswith("Z")


def test_chat_streams_newline_delimited_json_by_default(chat_server: Server,
                                                        instruct_run: tuple[Path, str]) -> None:
    body = {"model": instruct_run[0].name, "messages": MESSAGES,
            "options": {"temperature": 0, "num_predict": 12}}  # no "stream": Ollama streams
    status, kind, lines = post_lines(chat_server, "/api/chat", body)
    assert status == 200 and kind.startswith("application/x-ndjson")
    *pieces, last = lines
    assert pieces and all(p["done"] is False and p["message"]["role"] == "assistant"
                          for p in pieces)
    assert last["done"] is True and last["message"]["content"] == ""
    whole = post(chat_server, "/api/chat", {**body, "stream": False})[1]
    assert "".join(p["message"]["content"] for p in pieces) == whole["message"]["content"]
    assert last["eval_count"] == whole["eval_count"] > 0
    assert last["done_reason"] == whole["done_reason"]


def test_seeded_sampling_repeats(chat_server: Server, instruct_run: tuple[Path, str]) -> None:
    body = {"model": instruct_run[0].name, "messages": MESSAGES, "stream": False,
            "options": {"temperature": 1.0, "seed": 7, "num_predict": 10}}
    answers = [post(chat_server, "/api/chat", body)[1]["message"]["content"] for _ in range(2)]
    assert answers[0] == answers[1]


def test_generate_renders_the_prompt_or_continues_it_raw(chat_server: Server,
                                                         instruct_run: tuple[Path, str]) -> None:
    name = instruct_run[0].name
    options = {"temperature": 0, "num_predict": 8}
    # the prompt as one user message, after the system message, in the run's prompt style
    system = "You are terse."
    chat = post(chat_server, "/api/chat", {
        "model": name, "stream": False, "options": options,
        "messages": [{"role": "system", "content": system}, *MESSAGES]})[1]
    status, generated = post(chat_server, "/api/generate", {
        "model": name, "prompt": MESSAGES[0]["content"], "system": system, "stream": False,
        "options": options})
    assert status == 200 and generated["done"] is True
    assert generated["response"] == chat["message"]["content"]
    assert generated["prompt_eval_count"] == chat["prompt_eval_count"]
    # raw: the text continued as it is, as /v1/completions does
    v1 = post(chat_server, "/v1/completions", {"model": name, "prompt": TEXT, "max_tokens": 8,
                                                "temperature": 0})[1]
    raw = {"model": name, "prompt": TEXT, "raw": True, "system": "ignored", "options": options}
    assert post(chat_server, "/api/generate", {**raw, "stream": False})[1]["response"] == \
        v1["choices"][0]["text"]
    status, kind, lines = post_lines(chat_server, "/api/generate", raw)  # streamed
    assert status == 200 and kind.startswith("application/x-ndjson")
    assert "".join(line["response"] for line in lines) == v1["choices"][0]["text"]
    assert [line["done"] for line in lines][-1] is True
    assert lines[-1]["eval_count"] == v1["usage"]["completion_tokens"]


def test_an_empty_chat_or_prompt_loads_the_model(chat_server: Server,
                                                 instruct_run: tuple[Path, str]) -> None:
    name = instruct_run[0].name
    status, answer = post(chat_server, "/api/chat", {"model": name, "messages": []})
    assert status == 200
    assert answer["done"] is True and answer["done_reason"] == "load"
    assert answer["message"] == {"role": "assistant", "content": ""}
    answer = post(chat_server, "/api/generate", {"model": name, "keep_alive": 0})[1]
    assert answer["response"] == "" and answer["done_reason"] == "unload"


CHAT = b'"messages": [{"role": "user", "content": "hi"}]'
BAD_REQUESTS = [  # path, body, status, what the message names
    pytest.param("/api/chat", b"{not json", 400, "not valid JSON", id="malformed-json"),
    pytest.param("/api/chat", b'{"model": "M"}', 400, "messages", id="no-messages"),
    pytest.param("/api/chat", b'{"model": "M", "messages": "hi"}', 400, "messages",
                 id="messages-not-a-list"),
    pytest.param("/api/chat", b'{"model": "M", "messages": [{"role": "robot", "content": "x"}]}',
                 400, "role", id="unknown-role"),
    pytest.param("/api/chat", b'{"model": "nope", ' + CHAT + b"}", 404, "nope",
                 id="unknown-model"),
    pytest.param("/api/generate", b'{"model": "nope:7b", "prompt": "x"}', 404, "nope:7b",
                 id="unknown-model-generate"),
    pytest.param("/api/chat", b'{"model": "M", ' + CHAT + b', "options": {"temperature": -1}}',
                 400, "temperature", id="negative-temperature"),
    pytest.param("/api/chat", b'{"model": "M", ' + CHAT + b', "options": {"num_predict": 100000}}',
                 400, "num_predict", id="num-predict-over-limit"),
    pytest.param("/api/chat", b'{"model": "M", ' + CHAT + b', "options": {"num_predict": 0}}',
                 400, "num_predict", id="num-predict-zero"),
    pytest.param("/api/chat", b'{"model": "M", ' + CHAT + b', "format": "json"}', 400, "format",
                 id="json-format"),
    pytest.param("/api/chat", b'{"model": "M", ' + CHAT + b', "tools": [{"type": "function"}]}',
                 400, "tools", id="tools"),
    pytest.param("/api/generate", b'{"model": "M", "prompt": "x", "suffix": "y"}', 400,
                 "suffix", id="suffix"),
    pytest.param("/api/generate", b'{"model": "M", "prompt": "' + b"word " * 400 + b'"}', 400,
                 "context", id="prompt-too-long"),
]


@pytest.mark.parametrize(("path", "body", "status", "named"), BAD_REQUESTS)
def test_bad_requests_are_refused_in_ollamas_shape(chat_server: Server,
                                                   instruct_run: tuple[Path, str], path: str,
                                                   body: bytes, status: int, named: str) -> None:
    body = body.replace(b'"M"', json.dumps(instruct_run[0].name).encode())
    code, _, answer = chat_server.request("POST", path, body)
    assert code == status
    assert list(answer) == ["error"] and named in answer["error"]
    assert chat_server.request("GET", "/api/tags")[0] == 200  # still serving


def test_a_classifier_is_listed_but_cannot_chat(classifier_run: Path,
                                                classifier_server: Server) -> None:
    server = classifier_server
    (model,) = server.request("GET", "/api/tags")[2]["models"]
    assert model["name"] == f"{classifier_run.name}:latest"
    assert model["details"]["family"] == "classifier"
    for path, body in (("/api/chat", {"messages": MESSAGES}), ("/api/generate", {"prompt": "x"})):
        code, answer = post(server, path, {"model": classifier_run.name, **body})
        assert code == 400 and "is a classifier" in answer["error"]
    assert server.request("GET", "/health")[0] == 200


def test_the_ollama_client(chat_server: Server, instruct_run: tuple[Path, str]) -> None:
    """Ollama's own Python package: list, chat (whole and streamed), generate, an error."""
    ollama = pytest.importorskip("ollama")
    name = instruct_run[0].name
    client = ollama.Client(host=chat_server.url)
    assert [m.model for m in client.list().models] == [f"{name}:latest"]
    options = {"temperature": 0, "num_predict": 10}
    whole = client.chat(model=name, messages=MESSAGES, options=options)
    v1 = post(chat_server, "/v1/chat/completions", {
        "model": name, "messages": MESSAGES, "temperature": 0, "max_tokens": 10})[1]
    assert whole.message.content == v1["choices"][0]["message"]["content"]
    assert whole.done and whole.eval_count == v1["usage"]["completion_tokens"]
    parts = list(client.chat(model=f"{name}:latest", messages=MESSAGES, options=options,
                             stream=True))
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert parts[-1].done and parts[-1].done_reason == whole.done_reason
    generated = client.generate(model=name, prompt=MESSAGES[0]["content"], options=options)
    assert generated.response == whole.message.content
    with pytest.raises(ollama.ResponseError) as refused:
        client.chat(model="llama3", messages=MESSAGES)
    assert refused.value.status_code == 404 and "llama3" in refused.value.error


def test_the_api_key_guards_api_too(instruct_run: tuple[Path, str], instruct_cache: Path) -> None:
    server = Server(instruct_run[0], instruct_cache, "--api-key", "s3cret")
    try:
        name = instruct_run[0].name
        code, _, answer = server.request("GET", "/api/tags")
        assert code == 401 and "API key" in answer["error"] and list(answer) == ["error"]
        code, _, answer = server.request("POST", "/api/chat", json.dumps(
            {"model": name, "messages": MESSAGES}).encode(),
            headers={"Authorization": "Bearer wrong"})
        assert code == 401
        status, _, lines = post_lines(server, "/api/chat", {
            "model": name, "messages": MESSAGES, "options": {"num_predict": 4}},
            headers={"Authorization": "Bearer s3cret"})
        assert status == 200 and lines[-1]["done"] is True
        ollama = pytest.importorskip("ollama")
        keyed = ollama.Client(host=server.url, headers={"Authorization": "Bearer s3cret"})
        assert [m.model for m in keyed.list().models] == [f"{name}:latest"]
    finally:
        server.stop()
