"""The HTTP layer of ``scratchgpt serve`` against what clients really send: a body sent in
chunks past the cap, a prompt that takes seconds to tokenize, keys in any case, bodies that
are not JSON or not sent as JSON, empty texts to classify, and SIGTERM.

Each test drives a real server process on a loopback port, with raw sockets where a client
library would hide the case (chunked bodies, the order in which answers arrive).
"""

from __future__ import annotations

import json
import select
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pretrain_runs import pretrain_here, write_corpus
from serve_runs import MESSAGES, Server

from scratchgpt.cli import main
from scratchgpt.tokenizers import WordTokenizer

KEY = "s3cret"
MAX_BODY = 21_000_000  # room for the 20 MB prompt below


@pytest.fixture(scope="module")
def word_run(instruct_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base model (2 steps of pretraining) whose tokenizer is a word tokenizer: a token of
    it has no bound in characters (an unknown word of any length is one ``<|unk|>``), so the
    server cannot refuse a long prompt from its length and encodes all of it."""
    root = tmp_path_factory.mktemp("words")
    corpus = write_corpus(root / "corpus.txt", chars=20_000)
    tokenizer = root / "words.json"
    WordTokenizer.from_texts(corpus.read_text(encoding="utf-8")).save(tokenizer)
    run_dir = root / "run"
    done = pretrain_here(corpus, run_dir, instruct_cache, "--tokenizer", str(tokenizer),
                         "--max-steps", "2", "--eval-every", "2")
    assert done.returncode == 0, done.stderr
    return run_dir


@pytest.fixture(scope="module")
def server(word_run: Path, instruct_cache: Path) -> Iterator[Server]:
    """The word-tokenizer model behind an API key, with a body cap raised to 21 MB."""
    running = Server(word_run, instruct_cache, "--api-key", KEY, "--max-body-bytes",
                     str(MAX_BODY))
    yield running
    running.stop()


def keyed(authorization: str = f"Bearer {KEY}") -> dict[str, str]:
    return {"Authorization": authorization}


def read_response(connection: socket.socket) -> bytes:
    """One whole HTTP response: its head, then as many bytes as its Content-Length says (a
    server that closes a connection it did not read to the end resets it after answering)."""
    response = b""
    while True:
        head, _, body = response.partition(b"\r\n\r\n")
        lengths = [line for line in head.lower().split(b"\r\n")
                   if line.startswith(b"content-length:")]
        if lengths and len(body) >= int(lengths[0].split(b":")[1]):
            return response
        piece = connection.recv(65536)
        if not piece:
            return response
        response += piece


def test_a_chunked_body_over_the_cap_is_refused_as_it_arrives(server: Server) -> None:
    """A chunked body states no length: the bytes are counted, and the answer is 413 at the
    cap, while the client is still sending (it would send three times the cap)."""
    chunk = b"a" * 65536
    total = 3 * MAX_BODY
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as connection:
        connection.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                           b"Authorization: Bearer " + KEY.encode() + b"\r\n"
                           b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                           b"\r\n")
        try:
            while sent < total and not select.select([connection], [], [], 0)[0]:
                connection.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            if sent == total:
                connection.sendall(b"0\r\n\r\n")  # the body's end: a server that read it all
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection after its answer
        response = read_response(connection)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), response[:300]
    assert sent < total  # answered before the body ended
    error = json.loads(body)["error"]
    assert f"over the limit of {MAX_BODY:,} bytes" in error["message"]
    assert error["code"] == "request_too_large"
    assert server.request("GET", "/health")[0] == 200


def test_health_answers_while_a_long_prompt_is_tokenized(server: Server,
                                                         word_run: Path) -> None:
    """A 20 MB prompt takes seconds to tokenize: off the event loop, so that /health (and
    every stream) answers in the meantime, before the long request is answered."""
    body = json.dumps({"model": word_run.name, "prompt": "the " * 5_000_000,
                       "max_tokens": 1}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as long_request:
        long_request.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                             b"Authorization: Bearer " + KEY.encode() + b"\r\n"
                             b"Content-Type: application/json\r\n"
                             + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.5)  # the server reads and parses the body, and starts tokenizing it
        with socket.create_connection(("127.0.0.1", server.port), timeout=120) as health:
            health.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_response(health).startswith(b"HTTP/1.1 200")
        answered_first = select.select([long_request], [], [], 0)[0]
        response = read_response(long_request)
    assert not answered_first, "/health waited for the long prompt to be tokenized"
    assert response.startswith(b"HTTP/1.1 400")
    error = json.loads(response.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "context_length_exceeded" and "5,000,000 tokens" in error["message"]


def test_a_prompt_too_long_for_the_context_is_refused_before_it_is_tokenized(
        chat_server: Server, instruct_run: tuple[Path, str]) -> None:
    """A byte-level BPE token stands for a bounded number of characters: a prompt longer
    than the context times that bound cannot fit, and is refused from its length alone."""
    body = json.dumps({"model": instruct_run[0].name, "prompt": "word " * 180_000}).encode()
    code, _, answer = chat_server.request("POST", "/v1/completions", body)
    assert code == 400
    error = answer["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"
    assert "the prompt is 900,000 characters, so at least" in error["message"]
    assert "context is 160" in error["message"]


def test_openapi_json_needs_the_key(server: Server) -> None:
    """``/openapi.json`` lists every route and schema: not for anyone who asks."""
    code, _, answer = server.request("GET", "/openapi.json")
    assert code == 401 and answer["error"]["code"] == "invalid_api_key"
    code, _, schema = server.request("GET", "/openapi.json", headers=keyed())
    assert code == 200 and "/v1/chat/completions" in schema["paths"]
    assert server.request("GET", "/health")[0] == 200  # open, as is the page


@pytest.mark.parametrize(("authorization", "status"), [
    (f"bearer {KEY}", 200), (f"BEARER {KEY}", 200), (f"Bearer  {KEY}", 200),
    (f"Basic {KEY}", 401), ("Bearer wrong", 401), (KEY, 401), ("Bearer", 401),
])
def test_the_bearer_scheme_is_read_in_any_case(server: Server, authorization: str,
                                               status: int) -> None:
    """RFC 7235: an authentication scheme's name is case-insensitive."""
    assert server.request("GET", "/v1/models", headers=keyed(authorization))[0] == status
    assert server.request("GET", "/api/tags", headers=keyed(authorization))[0] == status


def test_a_json_body_is_read_as_json_whatever_its_content_type(server: Server,
                                                               word_run: Path) -> None:
    """``curl -d`` sends ``application/x-www-form-urlencoded``: the body is JSON all the same."""
    body = json.dumps({"model": word_run.name, "prompt": "the", "max_tokens": 2}).encode()
    for content_type in ("application/x-www-form-urlencoded", "text/plain"):
        code, _, answer = server.request("POST", "/v1/completions", body,
                                         headers={**keyed(), "Content-Type": content_type})
        assert code == 200 and answer["object"] == "text_completion"


UNREADABLE = [  # path, body, content type, what the message says
    pytest.param("/v1/completions", b"model=words&prompt=hi", "application/x-www-form-urlencoded",
                 ["not valid JSON", "sent as Content-Type: application/x-www-form-urlencoded",
                  "send JSON, with Content-Type: application/json"], id="form-fields"),
    pytest.param("/v1/completions", b'{"model": "words", "prompt": "\xff\xfe"}',
                 "application/json", ["not valid UTF-8", "0xff"], id="invalid-utf8"),
    pytest.param("/v1/chat/completions", b"[" * 100_000, "application/json",
                 ["nested too deeply"], id="nested-100000-deep"),
    pytest.param("/v1/completions", b"{", "application/json", ["not valid JSON"],
                 id="malformed"),
]


@pytest.mark.parametrize(("path", "body", "content_type", "says"), UNREADABLE)
def test_a_body_that_cannot_be_read_says_why_in_openai_shape(
        server: Server, path: str, body: bytes, content_type: str, says: list[str]) -> None:
    code, _, answer = server.request("POST", path, body,
                                     headers={**keyed(), "Content-Type": content_type})
    assert code == 400
    assert answer["error"]["type"] == "invalid_request_error"
    for words in says:
        assert words in answer["error"]["message"]
    # the same body under /api: in Ollama's shape
    code, _, answer = server.request("POST", "/api/generate", body,
                                     headers={**keyed(), "Content-Type": content_type})
    assert code == 400 and isinstance(answer["error"], str)
    assert says[0] in answer["error"]


def test_an_unknown_route_is_answered_in_openai_shape(server: Server) -> None:
    code, _, answer = server.request("GET", "/v1/nothing", headers=keyed())
    assert code == 404 and "/v1/nothing" in answer["error"]["message"]
    code, headers, answer = server.request("POST", "/health", b"{}")
    assert code == 405 and "POST" in answer["error"]["message"] and "GET" in headers["allow"]


@pytest.mark.parametrize(("given", "param"), [
    (["Lunch at 1?", "hello", ""], "input[2]"),
    (["  \n\t "], "input[0]"),
    ("", "input"),
])
def test_an_empty_text_is_not_classified(classifier_server: Server, given: str | list[str],
                                         param: str) -> None:
    code, _, answer = classifier_server.request("POST", "/v1/classify",
                                                json.dumps({"input": given}).encode())
    assert code == 400 and answer["error"]["param"] == param
    assert answer["error"]["message"].startswith(f"{param} is ")


def test_classify_takes_at_most_256_texts(classifier_server: Server) -> None:
    code, _, answer = classifier_server.request(
        "POST", "/v1/classify", json.dumps({"input": ["Lunch at 1?"] * 257}).encode())
    assert code == 400 and answer["error"]["param"] == "input"
    assert "257 texts, over this server's limit of 256" in answer["error"]["message"]
    code, _, answer = classifier_server.request(
        "POST", "/v1/classify", json.dumps({"input": ["Lunch at 1?"] * 256}).encode())
    assert code == 200 and len(answer["data"]) == 256


def test_sigterm_stops_the_server_cleanly(word_run: Path, instruct_cache: Path) -> None:
    """``kill PID`` (SIGTERM) is how a service manager stops a server: the server says that
    it stopped and exits 0, after answering (here with --threads 1)."""
    running = Server(word_run, instruct_cache, "--threads", "1")
    code, _, answer = running.request("POST", "/v1/chat/completions", json.dumps(
        {"model": word_run.name, "messages": MESSAGES, "max_tokens": 3}).encode())
    assert code == 200 and answer["choices"][0]["finish_reason"] in ("stop", "length")
    running.process.send_signal(signal.SIGTERM)
    _, stderr = running.process.communicate(timeout=60)
    assert running.process.returncode == 0, stderr
    assert f"stopped serving {word_run.name}" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("flag", ["--threads", "--max-classify-inputs", "--max-body-bytes"])
def test_serve_refuses_a_limit_of_zero(flag: str, word_run: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", str(word_run), flag, "0"]) == 2
    assert f"{flag} cannot be 0" in capsys.readouterr().err
