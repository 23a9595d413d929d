"""A stronger model as judge: each response scored against its reference (chapter 7 of the
book), and the machinery every judge run shares.

``scratchgpt evaluate judge`` reads a run's ``test-responses.json`` (``instruction``, ``input``,
``output``: the reference, ``response``: the model's answer; the book's ``model_response`` is
read too) and asks a judge model, for each entry, for a score:

* ``score`` mode, the book's prompt word for word: "Given the input `{format_input(entry)}` and
  correct output `{output}`, score the model response `{response}` on a scale from 0 to 100,
  where 100 is the best score. Respond with the integer number only.";
* ``rubric`` mode: the same material laid out under headings, and a 1-5 scale with one line
  saying what each score means (judges give steadier scores against a short rubric than on a
  bare 0-100 scale).

**Parsing** is strict about what counts and never guesses: the score is the first integer in
the answer that lies in the scale (``Score: 85/100`` gives 85; decimals and numbers glued to
words, such as ``llama3``, do not count). An answer without one gets one re-ask, in the same
conversation: "Answer with the integer number only." If that answer has none either, the
entry is **unscored**: kept, with both raw answers, and counted as such ("N scored of M"),
never a silent 0 and never dropped. The mean, median and 95% confidence interval are over
the scored entries. (An empty response is put to the judge like any other; the book's code
gave it 0 without asking.)

**Pairwise mode**, two runs' responses compared by asking the judge in both orders, is
:mod:`scratchgpt.evaluation.pairwise`; it runs on the machinery here: the two protocols, the
client with its retries, the parallel run, the record and resuming.

**The 95% confidence interval** is Student's t interval for the mean of the scored entries,
``mean ± t(0.975, n-1) · s / √n`` (``s`` the sample standard deviation; see
:mod:`scratchgpt.evaluation.confidence`); it is ``None`` below two scores. It says how much
the mean could move with another sample of test entries of the same kind, not how right the
judge is.

**Two protocols**, chosen from the URL unless ``protocol`` says: a path with a ``v1`` segment
(``https://api.openai.com/v1``, ``http://localhost:8000/v1/chat/completions``) is
OpenAI-compatible ``/v1/chat/completions``; anything else (``http://localhost:11434``, or
``.../api/chat``) is Ollama's ``/api/chat``, the book's judge (``llama3`` in Ollama). Both are
asked non-streaming at temperature 0 with a fixed seed (Ollama also gets ``num_ctx``). The API
key, when one is needed, comes from ``$SCRATCHGPT_JUDGE_API_KEY`` (both protocols), else, for
OpenAI's, ``$OPENAI_API_KEY``; it is never written to the output. Before judging, the judge is
asked for its models (``/api/tags`` or ``/v1/models``): an unreachable judge, a wrong key or,
on Ollama, a model that is not pulled is an error at once rather than M failed entries.

**Requests** run in parallel (``concurrency`` threads). Connection errors, timeouts, 5xx, 408
and 429 are retried with exponential back-off (``backoff`` seconds, doubled each time, at
most ``max_wait``; a ``Retry-After`` header is obeyed instead), at most ``attempts`` tries; then
the entry is **failed**, with the error, and the run goes on and says how many failed. Other
4xx answers fail the entry at once; 401, 403 and 404 stop the run (the key, the model or the
URL is wrong: every entry would fail the same way).

**The output file** (``RUN/eval/judge-<judge-model>.json`` by default) is an evaluation record
(:mod:`scratchgpt.evaluation.records`): the summary (``scored``, ``total``, ``mean``,
``median``, ``ci95``...), the judge's settings, and per entry its ``index``, ``instruction``,
``score`` (or null), ``status`` (``scored``, ``unscored``, ``failed``, or ``pending`` in an
interrupted run), the judge's raw ``answers`` and the ``error`` of a failed one. It is rewritten
whole (atomically) after every ``save_every`` judged entries (every one by default), so a run
stopped by Ctrl-C or a crash loses no judged entry: the same command again **resumes**, asking
only for the entries not yet scored or unscored (failed ones are tried again). Resuming checks
that the file was made by the same judge model and mode from the same responses (their
sha256), and refuses otherwise. A histogram of the scores is printed in the summary and drawn
beside the file (``.png``).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import queue
import random
import re
import statistics
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from scratchgpt.evaluation.confidence import mean_ci95
from scratchgpt.evaluation.judge_settings import OPENAI_KEY_ENV, SCALES, JudgeSettings
from scratchgpt.evaluation.responses import load_responses

REASK = "Answer with the integer number only."
PENDING, SCORED, UNSCORED, FAILED = "pending", "scored", "unscored", "failed"
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}  # and any other 5xx
FATAL_STATUS = {401: "the judge refused the API key", 403: "the judge refused the request",
                404: "the judge has no such model or route"}


class JudgeError(ValueError):
    """A judge run that cannot go on (or start): the message says why and what to do."""


# --- Prompts ------------------------------------------------------------------------------------


def format_input(entry: dict[str, Any]) -> str:
    """The book's ``format_input``: the Alpaca preamble, the instruction, and the input if any
    (without the ``### Response:`` heading)."""
    text = ("Below is an instruction that describes a task. "
            "Write a response that appropriately completes the request."
            f"\n\n### Instruction:\n{entry['instruction']}")
    return text + (f"\n\n### Input:\n{entry['input']}" if entry.get("input") else "")


def judge_prompt(entry: dict[str, Any], mode: str = "score") -> str:
    """What the judge is asked about one entry (``instruction``, ``input``, ``output``,
    ``response``): the book's 0-100 prompt, or the 1-5 rubric."""
    if mode == "score":
        return (f"Given the input `{format_input(entry)}` "
                f"and correct output `{entry['output']}`, "
                f"score the model response `{entry['response']}`"
                " on a scale from 0 to 100, where 100 is the best score. "
                "Respond with the integer number only.")
    if mode == "rubric":
        return (f"Grade a model's response to a task against the correct output.\n\n"
                f"Task:\n{format_input(entry)}\n\n"
                f"Correct output:\n{entry['output']}\n\n"
                f"Model response:\n{entry['response']}\n\n"
                "Score the model response from 1 to 5:\n"
                "5: correct and complete, as good as the correct output;\n"
                "4: correct, with small omissions or flaws;\n"
                "3: partly correct, or correct with clear flaws;\n"
                "2: mostly wrong, but on the task;\n"
                "1: wrong, off the task, or empty.\n"
                "Respond with the integer number only.")
    raise ValueError(f"unknown judge mode {mode!r} for one response: choose score (0-100) or "
                     "rubric (1-5) (pairwise_prompt asks about two)")


_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\w)")


def parse_score(answer: str, low: int, high: int) -> int | None:
    """The first integer in ``answer`` within ``[low, high]``, or None. ``85.0`` counts as 85;
    ``4.5``, negative numbers and digits glued to letters (``llama3``, ``5th``) do not."""
    for match in _NUMBER.finditer(answer):
        whole, _, fraction = match.group().partition(".")
        if fraction.strip("0"):
            continue
        value = int(whole)
        if low <= value <= high:
            return value
    return None


def score_bins(low: int, high: int) -> list[tuple[int, int]]:
    """The histogram's bins, inclusive: one per score on a short scale (1-5), else ten of
    equal width (0-9, ..., 90-100: the last takes the top score)."""
    if high - low < 10:
        return [(s, s) for s in range(low, high + 1)]
    width = (high - low + 1) // 10
    edges = [low + i * width for i in range(10)]
    return [(start, edges[i + 1] - 1 if i < 9 else high) for i, start in enumerate(edges)]


def histogram(scores: Sequence[int], low: int, high: int) -> list[tuple[str, int]]:
    """``(label, count)`` per bin of :func:`score_bins`."""
    bins = score_bins(low, high)
    return [(str(a) if a == b else f"{a}-{b}", sum(a <= s <= b for s in scores))
            for a, b in bins]


def text_histogram(bars: Sequence[tuple[str, int]], width: int = 40) -> str:
    """Bars of ``#`` for a terminal, longest ``width`` wide, each with its count."""
    most = max((count for _, count in bars), default=0)
    pad = max((len(label) for label, _ in bars), default=0)
    return "\n".join(f"  {label:>{pad}} | {'#' * round(width * count / most) if most else ''}"
                     f"{' ' if count else ''}{count}" for label, count in bars)


# --- Results (the settings: judge_settings.JudgeSettings) ---------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Where the judge is asked: its protocol, chat URL and model-list URL."""

    protocol: str
    chat_url: str
    models_url: str


def resolve_endpoint(url: str, protocol: str = "auto") -> Endpoint:
    """The judge's endpoints from its URL (see the module docstring); ``protocol`` other than
    ``auto`` overrides what the URL suggests."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if protocol == "auto":
        protocol = "openai" if "v1" in path.split("/") else "ollama"

    def at(p: str) -> str:
        return urlunsplit((parts.scheme, parts.netloc, p, "", ""))

    if protocol == "ollama":
        for ending in ("/api/chat", "/api"):
            if path.endswith(ending):
                path = path[: -len(ending)]
                break
        return Endpoint("ollama", at(path + "/api/chat"), at(path + "/api/tags"))
    if path.endswith("/chat/completions"):
        path = path[: -len("/chat/completions")]
    elif "v1" not in path.split("/"):
        path += "/v1"
    return Endpoint("openai", at(path + "/chat/completions"), at(path + "/models"))


@dataclass
class JudgedEntry:
    """One entry's verdict: its score (None unless scored), the judge's raw answers (the
    re-ask's too) and the error of a failed one."""

    index: int
    instruction: str
    score: int | None = None
    status: str = PENDING
    answers: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def done(self) -> bool:
        """Judged for good: scored or unscored (failed and pending ones are asked again)."""
        return self.status in (SCORED, UNSCORED)


class EntryLike(Protocol):
    """What a judge run needs of an entry (a dataclass: :class:`JudgedEntry`, or pairwise's
    ``PairedEntry``): where it is, how it went, and whether it is done."""

    __dataclass_fields__: ClassVar[dict[str, Any]]  # _resume replaces its fields
    index: int
    status: str
    error: str | None

    @property
    def done(self) -> bool: ...


Entry = TypeVar("Entry", bound=EntryLike)


@dataclass
class Judging(Generic[Entry]):
    """What every judge run holds: its entries, the fingerprint of the responses (``data``) and
    where its record goes (``path``, in the run directory of ``responses_path``)."""

    settings: JudgeSettings
    endpoint: Endpoint
    responses_path: Path
    entries: list[Entry]
    path: Path
    data: dict[str, Any]  # records.data_fingerprint of the responses file(s)
    command: str | None = None  # the command line recorded (default: this process's)
    resumed: int = 0  # entries taken from an earlier run's file
    complete: bool = False  # every entry judged for good or failed (none pending)
    record: dict[str, Any] | None = None  # what the output file holds, as last written

    def count(self, status: str) -> int:
        return sum(entry.status == status for entry in self.entries)

    def tally(self) -> dict[str, int]:
        """The counts the progress bar shows, in order."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def judge_settings(self) -> dict[str, Any]:
        """The judge, as the record names it (never its API key)."""
        settings, endpoint = self.settings, self.endpoint
        return {"model": settings.model, "url": settings.url, "protocol": endpoint.protocol,
                "endpoint": endpoint.chat_url, "mode": settings.mode, "temperature": 0,
                "seed": settings.seed,
                "num_ctx": settings.num_ctx if endpoint.protocol == "ollama" else None,
                "max_tokens": settings.max_tokens}

    def save(self) -> None:
        """Write the record, whole, to :attr:`path`."""
        from scratchgpt.evaluation.records import make_record, write_record

        self.complete = all(e.done or e.status == FAILED for e in self.entries)
        self.record = make_record("judge", self.responses_path.parent, self.to_dict(),
                                  data=self.data, command=self.command)
        write_record(self.path.parent, self.path.stem, self.record)

    def _counts_line(self, done: str, not_done: str) -> str:
        """``N judged of M (K unjudged, F failed)``, with the entries not asked yet."""
        parts = [f"{self.count(not_done)} {not_done}", f"{self.count(FAILED)} failed"]
        if self.count(PENDING):
            parts.append(f"{self.count(PENDING)} not judged yet")
        return f"{self.count(done)} {done} of {len(self.entries)} ({', '.join(parts)})"

    def _failures(self) -> list[str]:
        """The commonest errors of failed entries, and what to do about them."""
        errors = Counter(e.error for e in self.entries if e.status == FAILED and e.error)
        lines = [f"failed ({count}): {error}" for error, count in errors.most_common(3)]
        if self.count(FAILED):
            lines.append("run the same command again to retry the failed entries")
        return lines


@dataclass
class JudgeResult(Judging[JudgedEntry]):
    """A judge run of a score mode: every entry, and where its record and histogram went."""

    png: Path | None = None

    @property
    def scores(self) -> list[int]:
        return [e.score for e in self.entries if e.status == SCORED and e.score is not None]

    def tally(self) -> dict[str, int]:
        return {"scored": self.count(SCORED), "unscored": self.count(UNSCORED),
                "failed": self.count(FAILED)}

    def to_dict(self) -> dict[str, Any]:
        """The result's fields (the record's, without the keys the record adds itself):
        ``scored``, ``total``, ``mean``, ``median``, ``ci95`` first, then the counts, the
        histogram, the judge's settings and every entry."""
        scores = self.scores
        ci = mean_ci95(scores)
        low, high = self.settings.scale
        return {
            "scored": len(scores), "total": len(self.entries),
            "mean": statistics.fmean(scores) if scores else None,
            "median": statistics.median(scores) if scores else None,
            "ci95": list(ci) if ci else None,
            "ci_method": "student-t",
            "unscored": self.count(UNSCORED), "failed": self.count(FAILED),
            "pending": self.count(PENDING), "complete": self.complete,
            "scale": [low, high],
            "histogram": dict(histogram(scores, low, high)),
            "judge": self.judge_settings(),
            "responses": str(self.responses_path),
            "png": str(self.png) if self.png else None,
            "entries": [asdict(entry) for entry in self.entries],
        }

    def summary(self) -> str:
        """What a person reads: counts, mean, median, the interval, a histogram, the files."""
        scores, settings = self.scores, self.settings
        low, high = settings.scale
        lines = [f"judge {settings.model} ({self.endpoint.protocol}, {settings.mode} "
                 f"{low}-{high}) on {self.responses_path}",
                 self._counts_line(SCORED, UNSCORED)]
        if scores:
            ci = mean_ci95(scores)
            interval = (f", 95% CI {ci[0]:.1f} to {ci[1]:.1f} (t interval)" if ci
                        else ", no interval from one score")
            lines.append(f"mean {statistics.fmean(scores):.1f}, median "
                         f"{statistics.median(scores):g}{interval}")
            lines.append(text_histogram(histogram(scores, low, high)))
        lines += self._failures()
        lines.append(f"written: {self.path}" + (f", {self.png}" if self.png else ""))
        return "\n".join(lines)


# --- Talking to the judge -----------------------------------------------------------------------


class _Retryable(Exception):
    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait  # what Retry-After asked, if it did


class Failed(Exception):
    """The entry cannot be judged (after its attempts, or a refusal not worth repeating)."""


class _Fatal(Exception):
    """No entry can be judged: the run stops."""


class _Stopped(Exception):
    """The run is being interrupted."""


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _error_text(body: bytes) -> str:
    """The message of an error answer: Ollama's ``{"error": "..."}``, OpenAI's
    ``{"error": {"message": ...}}``, or the start of the text."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text[:200]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    return str(error) if error else text[:200]


class JudgeClient:
    """One judge over HTTP (urllib, one connection per request, safe across threads)."""

    def __init__(self, settings: JudgeSettings, endpoint: Endpoint,
                 stop: threading.Event | None = None) -> None:
        self.settings, self.endpoint = settings, endpoint
        self.stop = stop or threading.Event()
        key = os.environ.get(settings.api_key_env) or (
            os.environ.get(OPENAI_KEY_ENV) if endpoint.protocol == "openai" else None)
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"

    def _once(self, url: str, payload: dict[str, Any] | None) -> Any:
        """One request and its JSON answer; transient trouble raises :class:`_Retryable`."""
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(url, data=data, headers=self.headers,
                                         method="POST" if data is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as err:
            message = f"HTTP {err.code} from {url}: {_error_text(err.read())}"
            if err.code in RETRYABLE_STATUS or err.code >= 500:
                raise _Retryable(message, _retry_after(err.headers.get("Retry-After"))) \
                    from None
            if err.code in FATAL_STATUS:
                raise _Fatal(f"{FATAL_STATUS[err.code]}: {message}") from None
            raise Failed(message) from None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, TimeoutError):
                raise _Retryable(f"no answer from {url} within {self.settings.timeout:g} s") \
                    from None
            raise _Retryable(f"cannot reach {url}: {reason}") from None
        except TimeoutError:
            raise _Retryable(f"no answer from {url} within {self.settings.timeout:g} s") \
                from None
        except (ConnectionError, http.client.HTTPException, OSError) as err:
            raise _Retryable(f"the connection to {url} failed: {err!r}") from None
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            raise Failed(f"the answer from {url} is not JSON: "
                         f"{body[:120].decode('utf-8', errors='replace')!r}") from None

    def call(self, url: str, payload: dict[str, Any] | None = None) -> Any:
        """:meth:`_once`, retried with back-off; :class:`Failed` after the last attempt."""
        settings = self.settings
        for attempt in range(1, settings.attempts + 1):
            if self.stop.is_set():
                raise _Stopped
            try:
                return self._once(url, payload)
            except _Retryable as err:
                if attempt == settings.attempts:
                    raise Failed(f"{err} (after {attempt} attempts)") from None
                wait = err.wait if err.wait is not None else (
                    settings.backoff * 2 ** (attempt - 1) * random.uniform(1.0, 1.1))
                if self.stop.wait(min(wait, settings.max_wait)):
                    raise _Stopped from None
        raise AssertionError("unreachable")

    def chat(self, messages: list[dict[str, str]]) -> str:
        """The judge's answer to a conversation, non-streamed, at temperature 0."""
        settings = self.settings
        if self.endpoint.protocol == "ollama":
            options: dict[str, Any] = {"seed": settings.seed, "temperature": 0}
            if settings.num_ctx:
                options["num_ctx"] = settings.num_ctx
            if settings.max_tokens:
                options["num_predict"] = settings.max_tokens
            payload = {"model": settings.model, "messages": messages, "stream": False,
                       "options": options}
        else:
            payload = {"model": settings.model, "messages": messages, "temperature": 0,
                       "seed": settings.seed}
            if settings.max_tokens:
                payload["max_tokens"] = settings.max_tokens
        answer = self.call(self.endpoint.chat_url, payload)
        try:
            content = (answer["message"]["content"] if self.endpoint.protocol == "ollama"
                       else answer["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise Failed(f"unexpected answer from {self.endpoint.chat_url}: "
                         f"{json.dumps(answer)[:200]}") from None
        return content if isinstance(content, str) else ""

    def check(self) -> None:
        """Ask for the judge's models first: an unreachable judge, a refused key or (on Ollama)
        a model that is not there is one clear error rather than every entry failing."""
        settings, endpoint = self.settings, self.endpoint
        try:
            answer = self.call(endpoint.models_url)
        except Failed as err:
            raise JudgeError(f"the judge at {settings.url} is not answering: {err}. "
                             + ("Is Ollama running (`ollama serve`)?"
                                if endpoint.protocol == "ollama" else "Is the server up?")
                             ) from None
        except _Fatal as err:
            if endpoint.protocol == "ollama" and "HTTP 404" in str(err):
                raise JudgeError(f"{settings.url} has no Ollama API ({endpoint.models_url} "
                                 "answered 404): for an OpenAI-compatible server use "
                                 "--protocol openai or a URL ending in /v1") from None
            if endpoint.protocol == "openai" and "HTTP 404" in str(err):
                return  # not every OpenAI-compatible server lists its models
            raise JudgeError(f"{err}" + (f" (set ${settings.api_key_env}"
                                         + (f" or ${OPENAI_KEY_ENV}" if endpoint.protocol ==
                                            "openai" else "") + ")"
                                         if "401" in str(err) else "")) from None
        if endpoint.protocol == "ollama":
            names = {m.get("name") for m in answer.get("models", []) if isinstance(m, dict)} | {
                m.get("model") for m in answer.get("models", []) if isinstance(m, dict)}
            names.discard(None)
            if settings.model not in names and f"{settings.model}:latest" not in names:
                raise JudgeError(f"the judge model {settings.model!r} is not in Ollama at "
                                 f"{settings.url} (it has: {', '.join(sorted(names)) or 'none'})"
                                 f"; get it with `ollama pull {settings.model}`")


def ask(client: JudgeClient, prompt: str, parse: Callable[[str], Any], reask: str,
         answers: list[str]) -> Any:
    """Ask the judge ``prompt`` and ``parse`` its answer; an answer ``parse`` finds nothing in
    (None) is asked once more in the same conversation (``reask``). Each raw answer is added to
    ``answers``; returns what was parsed, or None."""
    messages = [{"role": "user", "content": prompt}]
    for _ in range(2):
        answer = client.chat(messages)
        answers.append(answer)
        parsed = parse(answer)
        if parsed is not None:
            return parsed
        messages = [*messages, {"role": "assistant", "content": answer},
                    {"role": "user", "content": reask}]
    return None


def judge_entry(client: JudgeClient, entry: dict[str, str], index: int) -> JudgedEntry:
    """Ask the judge about one entry; one re-ask when its answer holds no score."""
    settings = client.settings
    low, high = settings.scale
    judged = JudgedEntry(index, entry["instruction"])
    try:
        judged.score = ask(client, judge_prompt(entry, settings.mode),
                           lambda answer: parse_score(answer, low, high), REASK, judged.answers)
        judged.status = SCORED if judged.score is not None else UNSCORED
    except Failed as err:
        judged.status, judged.score, judged.error = FAILED, None, str(err)
    return judged


# --- The run ------------------------------------------------------------------------------------


def default_out(responses_path: Path, judge_model: str) -> Path:
    """``eval/judge-<judge model>.json`` beside the responses (in their run directory)."""
    from scratchgpt.evaluation.records import EVAL_DIR, record_name

    name = record_name("judge", judge_model)
    return responses_path.parent / EVAL_DIR / f"{name}.json"


def _resume(out: Path, settings: JudgeSettings, sha256: str,
            entries: list[Entry]) -> list[Entry]:
    """The finished entries of an earlier run's file, after checking it judged the same;
    ``entries`` are the fresh ones, which the others replace."""
    try:
        record = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise JudgeError(f"cannot resume from {out}: it is not a judge record ({err}); "
                         "delete it or pass another --out") from None
    if not isinstance(record, dict) or record.get("evaluation") != "judge":
        raise JudgeError(f"cannot resume from {out}: it is not a judge record; delete it or "
                         "pass another --out")
    previous = record.get("judge") or {}
    was = {"judge model": previous.get("model"), "mode": previous.get("mode"),
           "responses sha256": (record.get("data") or {}).get("sha256")}
    now = {"judge model": settings.model, "mode": settings.mode, "responses sha256": sha256}
    differ = [f"{k} {was[k]!r} (now {now[k]!r})" for k in now if was[k] != now[k]]
    if differ or len(record.get("entries", [])) != len(entries):
        differ = differ or [f"{len(record.get('entries', []))} entries (now {len(entries)})"]
        raise JudgeError(f"{out} holds another judge run: {'; '.join(differ)}. Delete it to "
                         "start afresh, or pass another --out")
    judged = []
    for item, entry in zip(record["entries"], entries, strict=True):
        outcome = {f.name for f in fields(entry)} - {"index", "instruction"}
        known = replace(entry, **{k: v for k, v in item.items() if k in outcome})
        judged.append(known if known.done else entry)
    return judged


def output_path(out_path: str | Path | None, default: Path) -> Path:
    """Where a judge run keeps its record: ``out_path``, else ``default``; a .json file."""
    out = Path(out_path) if out_path is not None else default
    if out.suffix != ".json":
        raise JudgeError(f"the judge's output must be a .json file, got {out}")
    return out


def judge_responses(responses_path: str | Path, settings: JudgeSettings,
                    out_path: str | Path | None = None, *, progress: bool = True,
                    command: str | None = None, plot: bool = True) -> JudgeResult:
    """Judge every entry of ``responses_path`` (see the module docstring), resuming from
    ``out_path`` (default :func:`default_out`) if an earlier run left it; the record is kept
    there, the histogram beside it (``.png``, unless ``plot`` is false). On Ctrl-C the judged
    entries are saved and ``KeyboardInterrupt`` goes on up."""
    from scratchgpt.evaluation.records import data_fingerprint

    if settings.mode not in SCALES:
        raise JudgeError(f"judge mode {settings.mode!r} compares two responses files: use "
                         "judge_pairwise")
    responses_path = Path(responses_path)
    entries = load_responses(responses_path)
    out = output_path(out_path, default_out(responses_path, settings.model))
    result = JudgeResult(settings, resolve_endpoint(settings.url, settings.protocol),
                         responses_path, [JudgedEntry(i, e["instruction"])
                                          for i, e in enumerate(entries)],
                         out, data_fingerprint(responses_path), command)
    judge(result, lambda client, i: judge_entry(client, entries[i], i), progress)
    if plot:
        result.png = out.with_suffix(".png")
        _plot(result)
        result.save()
    return result


def judge(result: Judging[Entry], judge_one: Callable[[JudgeClient, int], Entry],
          progress: bool) -> None:
    """Take what an earlier run left in ``result.path``, then ask the judge about every entry
    not judged for good yet (``judge_one``, on :func:`_run`'s threads), and save the record."""

    def say(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    if result.path.exists():
        result.entries = _resume(result.path, result.settings, result.data["sha256"],
                                 result.entries)
        result.resumed = sum(e.done for e in result.entries)
    todo = [e.index for e in result.entries if not e.done]
    if result.resumed:
        say(f"resuming {result.path}: {result.resumed} of {len(result.entries)} entries "
            f"already judged, {len(todo)} to go")
    if todo:
        stop = threading.Event()
        client = JudgeClient(result.settings, result.endpoint, stop)
        client.check()
        _run(client, judge_one, todo, result, stop, progress, say)
    result.save()


def _run(client: JudgeClient, judge_one: Callable[[JudgeClient, int], Entry], todo: list[int],
         result: Judging[Entry], stop: threading.Event, progress: bool,
         say: Callable[[str], None]) -> None:
    """Judge the ``todo`` entries (``judge_one``) on daemon threads (an interrupted run does
    not wait for a hung request), recording each as it comes and saving every ``save_every``."""
    from scratchgpt.progress import progress_bar

    tasks: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in todo:
        tasks.put(index)
    done: queue.SimpleQueue[Entry | BaseException] = queue.SimpleQueue()

    def work() -> None:
        while not stop.is_set():
            try:
                index = tasks.get_nowait()
            except queue.Empty:
                return
            try:
                done.put(judge_one(client, index))
            except _Stopped:
                return
            except BaseException as err:  # _Fatal, or a bug: the main thread raises it
                done.put(err)
                return

    workers = [threading.Thread(target=work, daemon=True, name=f"judge-{i}")
               for i in range(min(client.settings.concurrency, len(todo)))]
    bar = progress_bar(total=len(result.entries), initial=result.resumed, desc="judging",
                       unit="entry", disable=not progress, file=sys.stderr)
    unsaved = 0
    try:
        for worker in workers:
            worker.start()
        remaining = len(todo)
        while remaining:
            try:
                item = done.get(timeout=0.2)
            except queue.Empty:
                if not any(w.is_alive() for w in workers) and done.empty():
                    raise RuntimeError("the judge's threads ended with entries left") from None
                continue
            if isinstance(item, _Fatal):
                raise JudgeError(str(item))
            if isinstance(item, BaseException):
                raise item
            result.entries[item.index] = item
            remaining -= 1
            unsaved += 1
            bar.set_postfix(result.tally(), refresh=False)
            bar.update(1)
            if unsaved >= client.settings.save_every:
                result.save()
                unsaved = 0
    except KeyboardInterrupt:
        stop.set()
        result.save()
        bar.close()
        judged = sum(e.done for e in result.entries)
        say(f"interrupted: {judged} of {len(result.entries)} entries judged, saved in "
            f"{result.path}; run the same command again to go on")
        raise
    except BaseException:
        stop.set()
        result.save()
        raise
    finally:
        stop.set()
        bar.close()


def _plot(result: JudgeResult) -> None:
    from scratchgpt.plots import plot_score_histogram

    low, high = result.settings.scale
    scores = result.scores
    ci = mean_ci95(scores)
    title = (f"judge {result.settings.model} ({result.settings.mode} {low}-{high}): "
             f"{len(scores)} scored of {len(result.entries)}")
    note = (f"mean {statistics.fmean(scores):.1f}, median {statistics.median(scores):g}"
            + (f", 95% CI {ci[0]:.1f}-{ci[1]:.1f}" if ci else "") if scores
            else "no entry scored")
    assert result.png is not None
    plot_score_histogram(histogram(scores, low, high), result.png, title=title, note=note)
