"""OpenAI's request and error shapes, as pydantic models: what ``/v1/chat/completions``,
``/v1/completions`` and our ``/v1/classify`` accept.

Clients (the ``openai`` package, Open WebUI, LangChain) send these fields; the ones we do not
use (``n`` above 1 aside) are accepted and ignored, as OpenAI-compatible servers do, so a
client's defaults never fail a request. Ranges follow OpenAI's documentation: ``temperature``
in [0, 2] (0: greedy), ``top_p`` in (0, 1].
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str


class StreamOptions(BaseModel):
    include_usage: bool = False


class Sampling(BaseModel):
    """The decoding fields both completion endpoints share."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1

    def stop_strings(self) -> tuple[str, ...]:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return tuple(s for s in stop if s)


class ChatCompletionRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(Sampling):
    prompt: str = Field(min_length=1)
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    input: str | list[str]


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# --- Ollama's API (``/api/chat``, ``/api/generate``): scratchgpt.serving.ollama -----------------


class OllamaOptions(BaseModel):
    """The Modelfile parameters we honour, with Ollama's documented defaults (temperature 0.8,
    top_k 40, top_p 0.9). ``repeat_penalty`` defaults to 1 (off): our models' "Modelfile" sets
    none. Others (``num_ctx``, ``num_thread``, ``mirostat``...) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    temperature: float = Field(0.8, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    top_k: int = Field(40, ge=0)  # 0: off
    repeat_penalty: float = Field(1.0, gt=0.0)
    seed: int | None = None
    num_predict: int | None = Field(None, ge=-2)  # -1: no limit (the server's), -2: fill context
    stop: str | list[str] | None = None

    def stop_strings(self) -> tuple[str, ...]:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return tuple(s for s in stop if s)


class OllamaMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str = ""
    images: list[str] | None = None


class OllamaRequest(BaseModel):
    """The fields ``/api/chat`` and ``/api/generate`` share. Ollama streams unless told not to."""

    model_config = ConfigDict(extra="ignore")

    model: str
    stream: bool = True
    options: OllamaOptions = Field(default_factory=OllamaOptions)
    format: str | dict[str, Any] | None = None
    keep_alive: str | float | None = None

    def sampling(self) -> Sampling:
        """The same request in OpenAI's terms, for the decoding path both APIs share."""
        options = self.options
        return Sampling(model=self.model, temperature=options.temperature, top_p=options.top_p,
                        seed=options.seed, stop=list(options.stop_strings()),
                        stream=self.stream)


class OllamaChatRequest(OllamaRequest):
    messages: list[OllamaMessage]  # required here; [] loads the model, as in Ollama
    tools: list[dict[str, Any]] | None = None


class OllamaGenerateRequest(OllamaRequest):
    prompt: str = ""  # "" (or none) loads the model, as in Ollama
    system: str | None = None
    raw: bool = False
    suffix: str | None = None
    images: list[str] | None = None
    context: list[int] | None = None  # deprecated in Ollama: refused here


def ollama_error_body(message: str) -> dict[str, Any]:
    """Ollama's error shape: ``{"error": "..."}``."""
    return {"error": message}
