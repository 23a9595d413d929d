"""``scratchgpt evaluate judge``'s library (:mod:`scratchgpt.evaluation.judge`).

Over real HTTP only: our own ``scratchgpt serve`` as the judge, over both of the protocols the
judge speaks (Ollama's ``/api/chat`` and OpenAI's ``/v1/chat/completions``), and, for what a
real judge does only sometimes, a scripted judge on 127.0.0.1 (``http.server`` in a thread)
that answers numbers, prose, 500, 429 with Retry-After, slowly, or not at all.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from open_model_dirs import FAMILIES, llama, write_model_dir
from serve_runs import Server, free_port

from scratchgpt.config import ModelConfig
from scratchgpt.evaluation.confidence import mean_ci95, t_quantile
from scratchgpt.evaluation.judge import (
    REASK,
    JudgeError,
    JudgeSettings,
    format_input,
    histogram,
    judge_prompt,
    judge_responses,
    parse_score,
    resolve_endpoint,
    score_bins,
    text_histogram,
)
from scratchgpt.evaluation.responses import ResponsesError
from scratchgpt.hub.export import export_hf
from scratchgpt.model import GPTModel
from scratchgpt.tokenizers.gpt2 import load_gpt2_tokenizer

# --- A scripted judge ---------------------------------------------------------------------------


@dataclass
class Reply:
    text: str = "50"
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    hang: threading.Event | None = None  # answer only once this is set


@dataclass
class Seen:
    """One request the scripted judge received."""

    method: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    entry: int | None
    at: float


class ScriptedJudge:
    """A judge on a loopback port: Ollama's ``/api/tags`` and ``/api/chat``, OpenAI's
    ``/v1/models`` and ``/v1/chat/completions``. The entry a request is about is the N of
    ``answer-N`` in its first message; each entry's replies are taken in turn, the last one
    repeated."""

    def __init__(self, script: dict[int, list[Reply]] | None = None,
                 models: tuple[str, ...] = ("judge:latest",), ollama: bool = True) -> None:
        self.script = script or {}
        self.models, self.ollama = models, ollama
        self.seen: list[Seen] = []
        self.calls: Counter[int | None] = Counter()
        self.lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                judge.record(self, {})
                if self.path == "/api/tags" and judge.ollama:
                    self.send(200, {"models": [{"name": m, "model": m} for m in judge.models]})
                elif self.path == "/v1/models":
                    self.send(200, {"object": "list", "data": [{"id": m.removesuffix(":latest")}
                                                               for m in judge.models]})
                else:
                    self.send(404, {"error": "404 page not found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                openai = self.path == "/v1/chat/completions"
                if not openai and not (self.path == "/api/chat" and judge.ollama):
                    self.send(404, {"error": "404 page not found"})
                    return
                reply = judge.reply(judge.record(self, body))
                if reply.hang is not None:
                    reply.hang.wait(60)
                time.sleep(reply.delay)
                if reply.status != 200:
                    self.send(reply.status, {"error": reply.text}, reply.headers)
                elif openai:
                    self.send(200, {"object": "chat.completion", "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": reply.text},
                         "finish_reason": "stop"}]})
                else:
                    self.send(200, {"model": body["model"], "done": True, "message": {
                        "role": "assistant", "content": reply.text}})

            def send(self, status: int, data: dict[str, Any],
                     headers: dict[str, str] | None = None) -> None:
                payload = json.dumps(data).encode()
                try:
                    self.send_response(status)
                    for key, value in {"Content-Type": "application/json",
                                       "Content-Length": str(len(payload)),
                                       **(headers or {})}.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up waiting
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def record(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> int | None:
        messages = body.get("messages") or [{"content": ""}]
        found = re.search(r"answer-(\d+)", messages[0]["content"])
        entry = int(found.group(1)) if found else None
        with self.lock:
            self.seen.append(Seen(handler.command, handler.path, body,
                                  {k.lower(): v for k, v in handler.headers.items()}, entry,
                                  time.monotonic()))
        return entry

    def reply(self, entry: int | None) -> Reply:
        with self.lock:
            replies = self.script.get(entry, [Reply()])  # type: ignore[arg-type]
            reply = replies[min(self.calls[entry], len(replies) - 1)]
            self.calls[entry] += 1
        return reply

    def chats(self, entry: int | None = None) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST"
                and (entry is None or s.entry == entry)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Any:
    judges: list[ScriptedJudge] = []

    def start(*args: Any, **kwargs: Any) -> ScriptedJudge:
        judges.append(ScriptedJudge(*args, **kwargs))
        return judges[-1]

    yield start
    for judge in judges:
        for replies in judge.script.values():
            for reply in replies:
                if reply.hang is not None:
                    reply.hang.set()
        judge.close()


def write_responses(path: Path, count: int) -> Path:
    entries = [{"instruction": f"Name number {i}.", "input": "in words" if i % 2 else "",
                "output": f"Number {i}.", "response": f"answer-{i}"} for i in range(count)]
    path.write_text(json.dumps(entries, indent=1), encoding="utf-8")
    return path


def fast(url: str, **changes: Any) -> JudgeSettings:
    """Settings for tests: short waits everywhere."""
    return replace(JudgeSettings(url=url, model="judge", concurrency=3, attempts=3, timeout=5,
                                 backoff=0.01, max_wait=5), **changes)


# --- The prompt, the parsing, the numbers -------------------------------------------------------


BOOK_ENTRY = {"instruction": "Rewrite the sentence using a simile.",
              "input": "The car is very fast.", "output": "The car is as fast as lightning.",
              "response": "The car is as fast as a bullet."}


def test_the_prompt_is_the_books() -> None:
    assert format_input(BOOK_ENTRY) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nRewrite the sentence using a simile."
        "\n\n### Input:\nThe car is very fast.")
    assert judge_prompt(BOOK_ENTRY) == (
        f"Given the input `{format_input(BOOK_ENTRY)}` and correct output `The car is as fast "
        "as lightning.`, score the model response `The car is as fast as a bullet.` on a "
        "scale from 0 to 100, where 100 is the best score. Respond with the integer number "
        "only.")
    assert "### Input" not in format_input({**BOOK_ENTRY, "input": ""})
    rubric = judge_prompt(BOOK_ENTRY, "rubric")
    assert "from 1 to 5" in rubric and "Respond with the integer number only." in rubric
    assert all(BOOK_ENTRY[k] in rubric for k in BOOK_ENTRY)


@pytest.mark.parametrize(("answer", "low", "high", "score"), [
    ("85", 0, 100, 85),
    ("Score: 72/100. Close to the reference.", 0, 100, 72),
    ("I would give it 150, no: 30", 0, 100, 30),  # the first *in range*
    ("85.0", 0, 100, 85),
    ("4.5, so 4", 1, 5, 4),  # a decimal is not an integer
    ("As llama3, the 5th judge, I say 2", 1, 5, 2),  # digits glued to letters do not count
    ("-3, or rather 3", 1, 5, 3),
    ("0", 1, 5, None),
    ("0", 0, 100, 0),
    ("The response is good.", 0, 100, None),
    ("", 0, 100, None),
])
def test_the_first_integer_in_range_is_the_score(answer: str, low: int, high: int,
                                                 score: int | None) -> None:
    assert parse_score(answer, low, high) == score


@pytest.mark.parametrize(("url", "protocol", "chat", "models"), [
    ("http://localhost:11434", "auto", "http://localhost:11434/api/chat",
     "http://localhost:11434/api/tags"),
    ("http://localhost:11434/api/chat", "auto", "http://localhost:11434/api/chat",
     "http://localhost:11434/api/tags"),
    ("http://h:1/api/", "auto", "http://h:1/api/chat", "http://h:1/api/tags"),
    ("https://api.openai.com/v1", "auto", "https://api.openai.com/v1/chat/completions",
     "https://api.openai.com/v1/models"),
    ("http://h:8000/v1/chat/completions", "auto", "http://h:8000/v1/chat/completions",
     "http://h:8000/v1/models"),
    ("http://h:8000", "openai", "http://h:8000/v1/chat/completions", "http://h:8000/v1/models"),
    ("http://h:8000/proxy/v1", "ollama", "http://h:8000/proxy/v1/api/chat",
     "http://h:8000/proxy/v1/api/tags"),
])
def test_the_protocol_and_endpoints_come_from_the_url(url: str, protocol: str, chat: str,
                                                      models: str) -> None:
    endpoint = resolve_endpoint(url, protocol)
    assert (endpoint.chat_url, endpoint.models_url) == (chat, models)
    assert endpoint.protocol == ("openai" if "/v1/chat" in chat else "ollama")


def test_the_interval_is_students_t() -> None:
    # by hand: 1..5 has mean 3, s = sqrt(2.5), t(0.975, 4) = 2.7764451...
    low, high = mean_ci95([1, 2, 3, 4, 5])
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)
    assert low == pytest.approx(3 - half, abs=1e-9) and high == pytest.approx(3 + half, abs=1e-9)
    assert mean_ci95([7]) is None and mean_ci95([]) is None
    assert mean_ci95([5, 5, 5]) == (5, 5)
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 7, 30, 109, 1000):
        assert t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-9)
    scores = [85, 72, 60, 90, 40, 30, 100, 0, 55]
    expected = stats.t.interval(0.95, len(scores) - 1, loc=statistics.fmean(scores),
                                scale=stats.sem(scores))
    assert mean_ci95(scores) == pytest.approx(expected, rel=1e-9)


def test_histogram_bins() -> None:
    assert score_bins(1, 5) == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]
    assert score_bins(0, 100)[0] == (0, 9) and score_bins(0, 100)[-1] == (90, 100)
    bars = histogram([0, 9, 10, 95, 100, 100], 0, 100)
    assert bars[0] == ("0-9", 2) and bars[1] == ("10-19", 1) and bars[-1] == ("90-100", 3)
    assert sum(count for _, count in bars) == 6
    text = text_histogram(bars, width=6)
    assert "90-100 | ###### 3" in text and "0-9 | #### 2" in text and "50-59 | " in text


# --- Against the scripted judge -----------------------------------------------------------------


def test_scores_prose_reasks_500_and_429_over_ollama(tmp_path: Path, scripted: Any) -> None:
    once = Reply(delay=0)
    judge = scripted({
        0: [Reply("85")],
        1: [Reply("Score: 72/100. The response is close to the reference.")],
        2: [Reply("The response is fine."), Reply("60")],  # a number on the re-ask
        3: [Reply("No idea."), Reply("Still no idea.")],  # unscored, both answers kept
        4: [Reply("overloaded", status=500), Reply("90")],
        5: [Reply("slow down", status=429, headers={"Retry-After": "1"}), Reply("40")],
        6: [once],
    })
    responses = write_responses(tmp_path / "test-responses.json", 7)
    result = judge_responses(responses, fast(judge.url, backoff=0.01), progress=False)

    assert [e.status for e in result.entries] == ["scored"] * 3 + ["unscored"] + ["scored"] * 3
    assert [e.score for e in result.entries] == [85, 72, 60, None, 90, 40, 50]
    assert result.entries[2].answers == ["The response is fine.", "60"]
    assert result.entries[3].answers == ["No idea.", "Still no idea."]
    assert result.entries[3].score is None and result.entries[3].error is None
    # what the judge was asked: the book's prompt, non-streamed, deterministic
    entries = json.loads(responses.read_text())
    first = judge.chats(0)[0].body
    assert first == {"model": "judge", "stream": False,
                     "options": {"seed": 123, "temperature": 0, "num_ctx": 4096},
                     "messages": [{"role": "user", "content": judge_prompt(entries[0])}]}
    reask = judge.chats(2)[1].body["messages"]
    assert reask[1:] == [{"role": "assistant", "content": "The response is fine."},
                         {"role": "user", "content": REASK}]
    assert [s.path for s in judge.seen if s.method == "GET"] == ["/api/tags"]
    # retried after 500; after 429 only once Retry-After's second had passed
    assert len(judge.chats(4)) == 2
    first_429, second_429 = judge.chats(5)
    assert second_429.at - first_429.at >= 0.95
    # the record: the contract's fields, every entry, the histogram drawn
    record = json.loads((tmp_path / "eval" / "judge-judge.json").read_text())
    scores = [85, 72, 60, 90, 40, 50]
    assert record["evaluation"] == "judge" and record["model"] == str(tmp_path)
    assert (record["scored"], record["total"], record["unscored"], record["failed"]) == \
        (6, 7, 1, 0)
    assert record["mean"] == pytest.approx(statistics.fmean(scores))
    assert record["median"] == statistics.median(scores)
    assert record["ci95"] == pytest.approx(list(mean_ci95(scores)))
    assert record["data"]["sha256"] and record["complete"] is True
    assert [e["status"] for e in record["entries"]][3] == "unscored"
    assert record["entries"][3]["answers"] == ["No idea.", "Still no idea."]
    assert record["judge"]["protocol"] == "ollama" and record["judge"]["mode"] == "score"
    assert result.png == tmp_path / "eval" / "judge-judge.png"
    assert result.png.read_bytes().startswith(b"\x89PNG")
    summary = result.summary()
    assert "6 scored of 7 (1 unscored, 0 failed)" in summary
    assert "mean 66.2, median 66" in summary and "95% CI" in summary
    assert "40-49 | " in summary and str(result.path) in summary


def test_openai_protocol_rubric_and_api_key(tmp_path: Path, scripted: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    judge = scripted({0: [Reply("4")], 1: [Reply("I'd say 5/5.")], 2: [Reply("7"), Reply("2")]},
                     ollama=False)
    monkeypatch.setenv("SCRATCHGPT_JUDGE_API_KEY", "k-123")
    monkeypatch.setenv("OPENAI_API_KEY", "not-this-one")
    responses = write_responses(tmp_path / "r.json", 3)
    out = tmp_path / "judged.json"
    result = judge_responses(responses, fast(judge.url + "/v1", mode="rubric", max_tokens=5),
                             out, progress=False)
    assert [e.score for e in result.entries] == [4, 5, 2]  # 7 is off the 1-5 scale: re-asked
    assert result.endpoint.protocol == "openai"
    request = judge.chats(0)[0]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer k-123"
    assert request.body["temperature"] == 0 and request.body["seed"] == 123
    assert request.body["max_tokens"] == 5 and "stream" not in request.body
    assert "from 1 to 5" in request.body["messages"][0]["content"]
    assert json.loads(out.read_text())["histogram"] == {"1": 0, "2": 1, "3": 0, "4": 1, "5": 1}
    # OPENAI_API_KEY when ours is not set; a key never lands in the record
    monkeypatch.delenv("SCRATCHGPT_JUDGE_API_KEY")
    out.unlink()
    judge_responses(responses, fast(judge.url + "/v1", mode="rubric"), out, progress=False,
                    plot=False)
    assert judge.chats()[-1].headers["authorization"] == "Bearer not-this-one"
    assert "not-this-one" not in out.read_text() and "k-123" not in out.read_text()


def test_a_slow_judge_fails_the_entry_and_the_rerun_asks_only_for_it(tmp_path: Path,
                                                                     scripted: Any) -> None:
    judge = scripted({1: [Reply("70", delay=1.5)]})
    responses = write_responses(tmp_path / "r.json", 3)
    settings = fast(judge.url, timeout=0.3, attempts=2)
    result = judge_responses(responses, settings, progress=False, plot=False)
    failed = result.entries[1]
    assert failed.status == "failed" and failed.score is None
    assert "within 0.3 s (after 2 attempts)" in failed.error
    assert [e.status for e in result.entries] == ["scored", "failed", "scored"]
    assert "2 scored of 3 (0 unscored, 1 failed)" in result.summary()
    assert "retry the failed entries" in result.summary()
    record = json.loads(result.path.read_text())
    assert record["failed"] == 1 and record["entries"][1]["error"] == failed.error
    # the judge is quick again: the same command asks for entry 1 only
    judge.script[1] = [Reply("70")]
    asked = len(judge.chats())
    again = judge_responses(responses, settings, progress=False, plot=False)
    assert [s.entry for s in judge.chats()[asked:]] == [1]
    assert again.resumed == 2 and [e.score for e in again.entries] == [50, 70, 50]


def test_a_refusal_fails_its_entry_at_once(tmp_path: Path, scripted: Any) -> None:
    judge = scripted({0: [Reply("the prompt is too long", status=400)]})
    result = judge_responses(write_responses(tmp_path / "r.json", 2), fast(judge.url),
                             progress=False, plot=False)
    assert result.entries[0].status == "failed" and len(judge.chats(0)) == 1
    assert "HTTP 400" in result.entries[0].error and "too long" in result.entries[0].error
    assert result.entries[1].status == "scored"


def test_an_unreachable_judge_is_one_clear_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens
    start = time.monotonic()
    with pytest.raises(JudgeError, match=r"not answering.*cannot reach.*after 2 attempts"
                                         r".*ollama serve"):
        judge_responses(write_responses(tmp_path / "r.json", 2), fast(url, attempts=2),
                        progress=False)
    assert time.monotonic() - start < 5


def test_a_model_ollama_lacks_or_a_server_without_ollamas_api(tmp_path: Path,
                                                              scripted: Any) -> None:
    responses = write_responses(tmp_path / "r.json", 2)
    judge = scripted(models=("llama3:latest", "mistral:latest"))
    with pytest.raises(JudgeError, match=r"'llama3.1' is not in Ollama.*llama3:latest, "
                                         r"mistral:latest.*ollama pull llama3.1"):
        judge_responses(responses, fast(judge.url, model="llama3.1"), progress=False)
    assert judge.chats() == []
    plain = scripted(ollama=False)
    with pytest.raises(JudgeError, match="no Ollama API.*--protocol openai"):
        judge_responses(responses, fast(plain.url), progress=False)


@pytest.mark.parametrize(("content", "message"), [
    ('[{"instruction": "a", "output": "b", "response": "c"}, {"instruction": "a", '
     '"output": "b"}]', r"entry 1 \(counting from 0\) has no field 'response'"),
    ('[{"instruction": "a", "output": "b", "response": ["c"]}]',
     r"entry 0 \(counting from 0\): field 'response' is a list, not a string"),
    ('[{"output": "b", "response": "c"}]', r"entry 0 .* has no field 'instruction'"),
    ('["just text"]', r"entry 0 .* is a str, not an object"),
    ("[]", "holds no entries"),
    ('{"instruction": "a", "output": "b"', "not valid JSON"),
    ('{"instruction": "a", "output": "b"}', "expected a JSON list"),
    (b'[{"instruction": "caf\xe9"}]', "not UTF-8"),
])
def test_a_bad_responses_file_is_named_with_the_entry_and_field(tmp_path: Path, content: str,
                                                                message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ResponsesError, match=re.escape(str(path)) + ".*" + message):
        judge_responses(path, fast("http://127.0.0.1:9"), progress=False)
    with pytest.raises(ResponsesError, match="no such responses file"):
        judge_responses(tmp_path / "absent.json", fast("http://127.0.0.1:9"), progress=False)


def test_the_books_model_response_field_is_read(tmp_path: Path, scripted: Any) -> None:
    judge = scripted({0: [Reply("77")]})
    path = tmp_path / "book.json"
    path.write_text(json.dumps([{"instruction": "x", "input": "", "output": "y",
                                 "model_response": "answer-0"}]), encoding="utf-8")
    result = judge_responses(path, fast(judge.url), progress=False, plot=False)
    assert result.entries[0].score == 77


def test_resuming_checks_the_file_was_made_the_same_way(tmp_path: Path, scripted: Any) -> None:
    judge = scripted()
    responses = write_responses(tmp_path / "r.json", 2)
    judge_responses(responses, fast(judge.url), progress=False, plot=False)
    asked = len(judge.chats())
    done = judge_responses(responses, fast(judge.url), progress=False, plot=False)
    assert len(judge.chats()) == asked and done.resumed == 2  # nothing asked again
    with pytest.raises(JudgeError, match=r"another judge run: mode 'score' \(now 'rubric'\)"):
        judge_responses(responses, fast(judge.url, mode="rubric"), progress=False)
    write_responses(responses, 3)
    with pytest.raises(JudgeError, match=r"responses sha256 '[0-9a-f]+' \(now '[0-9a-f]+'\)"
                                         r".*Delete it"):
        judge_responses(responses, fast(judge.url), progress=False)
    (tmp_path / "eval" / "judge-judge.json").write_text("{half a fi", encoding="utf-8")
    with pytest.raises(JudgeError, match="cannot resume from .*not a judge record"):
        judge_responses(responses, fast(judge.url), progress=False)


_CHILD = """
import sys
from scratchgpt.evaluation.judge import JudgeSettings, judge_responses
settings = JudgeSettings(url=sys.argv[2], model="judge", concurrency=1, timeout=60,
                         backoff=0.01)
judge_responses(sys.argv[1], settings, sys.argv[3], progress=True, plot=False)
"""


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "crash"])
def test_an_interrupted_run_loses_no_judged_entry_and_resumes(tmp_path: Path, scripted: Any,
                                                              how: signal.Signals) -> None:
    """A run stopped while the judge hangs on entry 3 has 0-2 saved; run again, it asks for
    3, 4 and 5 only."""
    hang = threading.Event()
    judge = scripted({i: [Reply(str(10 * i), hang=hang)] for i in range(3, 6)})
    responses = write_responses(tmp_path / "r.json", 6)
    out = tmp_path / "judged.json"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(responses), judge.url,
                              str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 60
        while not (judge.chats(3) and out.exists()
                   and json.loads(out.read_text())["scored"] == 3):
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()
            time.sleep(0.05)
        child.send_signal(how)
        _, stderr = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode != 0
    if how == signal.SIGINT:
        assert "interrupted: 3 of 6 entries judged" in stderr and "KeyboardInterrupt" in stderr
    record = json.loads(out.read_text())
    assert [e["status"] for e in record["entries"]] == ["scored"] * 3 + ["pending"] * 3
    assert record["complete"] is False and record["scored"] == 3
    hang.set()
    asked = len(judge.chats())
    result = judge_responses(responses, fast(judge.url), out, progress=False, plot=False)
    assert sorted(s.entry for s in judge.chats()[asked:]) == [3, 4, 5]
    assert result.resumed == 3 and [e.score for e in result.entries] == [50, 50, 50, 30, 40, 50]
    assert json.loads(out.read_text())["complete"] is True


# --- Our own server as the judge ----------------------------------------------------------------


@pytest.fixture(scope="module")
def judge_server(shared_assets: Path, instruct_cache: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``scratchgpt serve`` of a tiny random GPT-2-shaped model (GPT-2's tokenizer) with room
    for the book's judge prompt (about 270 tokens; ``chat_server``'s model has a context of
    160)."""
    torch.manual_seed(0)
    model = GPTModel(ModelConfig(vocab_size=50257, context_length=512, emb_dim=32, n_heads=2,
                                 n_layers=2))
    directory = tmp_path_factory.mktemp("judge-models") / "judge-model"
    export_hf(model, load_gpt2_tokenizer(shared_assets / "gpt2-tokenizer"), directory)
    server = Server(directory, instruct_cache, "--max-tokens", "8")
    yield server, directory.name
    server.stop()


ENTRIES = [{"instruction": "Name a fruit.", "input": "", "output": "An apple.",
            "response": "A pear."},
           {"instruction": "Add.", "input": "2+2", "output": "4", "response": "5"},
           {"instruction": "Say hi.", "input": "", "output": "Hi.", "response": ""}]


def test_our_served_model_judges_over_both_protocols(judge_server: tuple[Server, str],
                                                     tmp_path: Path) -> None:
    """The tiny model answers gibberish: whatever it says, each entry is scored from the first
    integer in range of its answers, or unscored after exactly one re-ask, never failed; both
    protocols get the same answers (temperature 0, one engine)."""
    server, name = judge_server
    responses = tmp_path / "test-responses.json"
    responses.write_text(json.dumps(ENTRIES), encoding="utf-8")
    answers = {}
    for protocol, url in (("ollama", server.url), ("openai", server.url + "/v1")):
        settings = JudgeSettings(url=url, model=name, max_tokens=4, concurrency=2, attempts=2,
                                 backoff=0.01, timeout=60)
        result = judge_responses(responses, settings, tmp_path / f"{protocol}.json",
                                 progress=False, plot=protocol == "ollama")
        assert result.endpoint.protocol == protocol
        assert result.count("failed") == 0, [e.error for e in result.entries]
        for entry in result.entries:
            parsed = [parse_score(a, 0, 100) for a in entry.answers]
            if entry.status == "scored":
                assert entry.score == parsed[-1] is not None and parsed[:-1] in ([], [None])
            else:
                assert entry.status == "unscored" and entry.score is None
                assert len(entry.answers) == 2 and parsed == [None, None]
        scored = result.count("scored")
        assert f"{scored} scored of 3 ({3 - scored} unscored, 0 failed)" in result.summary()
        record = json.loads(result.path.read_text())
        assert (record["scored"], record["total"]) == (scored, 3)
        answers[protocol] = [e.answers for e in result.entries]
    assert answers["ollama"] == answers["openai"]
    assert all(answers["ollama"])  # every entry was answered
    assert (tmp_path / "ollama.png").read_bytes().startswith(b"\x89PNG")


@pytest.fixture(scope="module")
def llama_judge(instruct_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``scratchgpt serve`` of a small random Llama 3 directory (its own chat template), with
    a context of 1,024 for the book's judge prompt in its small vocabulary."""
    directory = tmp_path_factory.mktemp("judge-models") / "llama-judge"
    write_model_dir(directory, replace(FAMILIES["llama"], config=lambda vocab: llama(vocab, 1024)))
    server = Server(directory, instruct_cache, "--max-tokens", "8")
    yield server, directory
    server.stop()


def test_a_served_open_model_judges_as_transformers_answers(llama_judge: tuple[Server, Path],
                                                             tmp_path: Path) -> None:
    """Llama 3 served as the judge: each answer, to the book's prompt and to the re-ask after
    it, is transformers' greedy continuation of the conversation in the model's template."""
    server, directory = llama_judge
    responses = tmp_path / "test-responses.json"
    responses.write_text(json.dumps(ENTRIES[:2]), encoding="utf-8")
    settings = JudgeSettings(url=server.url + "/v1", model=directory.name, max_tokens=4,
                             attempts=2, backoff=0.01, timeout=60)
    result = judge_responses(responses, settings, progress=False, plot=False)
    assert result.count("failed") == 0, [e.error for e in result.entries]
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    eos = json.loads((directory / "generation_config.json").read_text())["eos_token_id"]

    def answer(messages: list[dict[str, str]]) -> str:
        prompt = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False,
                                               add_generation_prompt=True)
        with torch.no_grad():
            out = hf.generate(torch.tensor([prompt]), max_new_tokens=4, do_sample=False,
                              eos_token_id=eos, pad_token_id=eos[0])[0, len(prompt):].tolist()
        return tokenizer.decode(out[: next((i for i, t in enumerate(out) if t in eos), None)])

    for entry, judged in zip(ENTRIES[:2], result.entries, strict=True):
        asked = [{"role": "user", "content": judge_prompt(entry)}]
        assert judged.answers[0] == answer(asked)
        if judged.status == "unscored":  # gibberish has no score: asked once more
            assert judged.answers[1] == answer([*asked, {"role": "assistant",
                                                         "content": judged.answers[0]},
                                                {"role": "user", "content": REASK}])
    assert len({judged.answers[0] for judged in result.entries}) == 2  # the prompt matters


def test_a_judge_whose_context_is_too_short_fails_each_entry_clearly(
        chat_server: Server, instruct_run: tuple[Path, str], tmp_path: Path) -> None:
    """The instruction-tuned test model's context (160) cannot hold the book's prompt: our
    server refuses each request (400), and the run completes saying so."""
    responses = tmp_path / "test-responses.json"
    responses.write_text(json.dumps(ENTRIES), encoding="utf-8")
    settings = JudgeSettings(url=chat_server.url, model=instruct_run[0].name, attempts=2,
                             backoff=0.01, timeout=60)
    result = judge_responses(responses, settings, progress=False, plot=False)
    assert [e.status for e in result.entries] == ["failed"] * 3
    assert all("HTTP 400" in e.error and "context is 160" in e.error for e in result.entries)
    assert "0 scored of 3 (0 unscored, 3 failed)" in result.summary()
    assert json.loads(result.path.read_text())["mean"] is None


def test_evaluate_judge_command_prints_the_contracts_fields(tmp_path: Path, scripted: Any,
                                                            capsys: Any) -> None:
    from scratchgpt.cli import main

    judge = scripted({0: [Reply("80")], 1: [Reply("60")], 2: [Reply("no idea"), Reply("none")]})
    run = tmp_path / "run"
    run.mkdir()
    responses = write_responses(run / "test-responses.json", 3)
    assert main(["evaluate", "judge", "--responses", str(responses), "--judge-url", judge.url,
                 "--judge-model", "judge", "--attempts", "2", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["evaluation"], record["scored"], record["total"]) == ("judge", 2, 3)
    assert (record["mean"], record["median"]) == (70, 70) and len(record["ci95"]) == 2
    assert json.loads((run / "eval" / "judge-judge.json").read_text()) == record
