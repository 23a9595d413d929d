"""How a judge run is set up (:class:`JudgeSettings`), apart from :mod:`.judge`, which talks
HTTP: ``scratchgpt evaluate judge --help`` shows these defaults without importing the HTTP
and TLS modules."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

SCALES = {"score": (0, 100), "rubric": (1, 5)}  # the modes that score one response
MODES = (*SCALES, "pairwise")  # pairwise: which of two responses is better
PROTOCOLS = ("auto", "ollama", "openai")
API_KEY_ENV = "SCRATCHGPT_JUDGE_API_KEY"
OPENAI_KEY_ENV = "OPENAI_API_KEY"


@dataclass(frozen=True)
class JudgeSettings:
    """Who judges and how. Times are in seconds; ``attempts`` counts the first try."""

    url: str
    model: str
    protocol: str = "auto"  # auto (from the URL), ollama, openai
    mode: str = "score"  # score (0-100, the book's prompt), rubric (1-5) or pairwise (A/B)
    concurrency: int = 4
    attempts: int = 5
    timeout: float = 120.0  # per request (each socket wait)
    backoff: float = 1.0  # the first wait before a retry, doubled each time
    max_wait: float = 60.0  # no wait longer, Retry-After included
    seed: int = 123
    num_ctx: int | None = 4096  # Ollama's context window for the judge (its default is short)
    max_tokens: int | None = None  # a cap on the judge's answer; None: the server's default
    api_key_env: str = API_KEY_ENV
    save_every: int = 1  # rewrite the output after this many judged entries

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown judge protocol {self.protocol!r}: choose one of "
                             f"{', '.join(PROTOCOLS)}")
        if self.mode not in MODES:
            raise ValueError(f"unknown judge mode {self.mode!r}: choose score (0-100), "
                             "rubric (1-5) or pairwise (which of two responses is better)")
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"the judge URL must start with http:// or https://, got "
                             f"{self.url!r}")
        for name in ("concurrency", "attempts", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be 1 or more, got {getattr(self, name)}")
        if not self.timeout > 0 or self.backoff < 0 or self.max_wait < 0:
            raise ValueError("timeout must be > 0, and backoff and max_wait >= 0")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be 1 or more, got {self.max_tokens}")

    @property
    def scale(self) -> tuple[int, int]:
        """The lowest and highest score of a score mode (pairwise mode has none)."""
        if self.mode not in SCALES:
            raise ValueError(f"judge mode {self.mode!r} gives verdicts, not scores")
        return SCALES[self.mode]
