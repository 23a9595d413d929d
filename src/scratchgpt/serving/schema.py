"""OpenAI's request and error shapes, as pydantic models: what ``/v1/chat/completions``,
``/v1/completions`` and our ``/v1/classify`` accept.

Clients (the ``openai`` package, Open WebUI, LangChain) send many fields. Three kinds:

* **Honoured**: ``model``, ``messages``/``prompt``, ``max_tokens`` (``max_completion_tokens``),
  ``temperature`` in [0, 2] (0: greedy), ``top_p`` in (0, 1], ``stop``, ``seed``, ``stream``,
  ``stream_options``, and ``logprobs``: on chat ``logprobs: true`` with ``top_logprobs`` 0 to
  20, on ``/v1/completions`` ``logprobs`` 0 to 5 (OpenAI's two shapes, see ``app.py``); and
  vLLM's ``chat_template_kwargs``, an object of extra names for the model's chat template
  (refused where the model has a prompt style instead).
* **Refused** with a 400 that names the field, when set to anything but the value that asks
  for nothing: the known fields that would change what the answer means, which this server
  does not do (:data:`NOT_SUPPORTED` says each one's harmless values and why). Ignoring them
  would hand back an answer to a question the client did not ask: ``tools``/``functions``
  expect a function call, ``response_format`` expects JSON, ``n``/``best_of`` expect several
  choices, ``echo``/``suffix`` change the text returned, ``logit_bias`` and the frequency and
  presence penalties change the sampling, ``modalities``/``audio`` expect sound,
  ``web_search_options`` expects a search.
* **Ignored**: every other field (``user``, ``metadata``, ``store``, ``service_tier``,
  ``parallel_tool_calls``...), which does not change the answer, so that a client's defaults
  never fail a request.

Numbers must be finite (``NaN``, ``Infinity`` and ``1e999``, which JSON parsers read as
infinity, are refused), and ``seed`` a 64-bit integer, what ``torch.Generator.manual_seed``
takes (:data:`~scratchgpt.serving.engine.SEED_RANGE`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from scratchgpt.serving.engine import SEED_RANGE

# Every request model: unknown fields ignored, numbers finite.
_REQUEST = ConfigDict(extra="ignore", allow_inf_nan=False)
_SEED = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])

# Known fields this server does not implement and that would change the answer's meaning:
# the values that ask for nothing (accepted), and why any other is refused.
NOT_SUPPORTED: dict[str, tuple[tuple[Any, ...], str]] = {
    "n": ((None, 1), "this server returns one choice per request: send n=1 (or leave it "
                     "out) and repeat the request for more"),
    "best_of": ((None, 1), "this server returns one choice per request and does not rank "
                           "several: leave best_of out"),
    "logit_bias": ((None, {}), "logit_bias is not supported: leave it out"),
    "frequency_penalty": ((None, 0), "frequency_penalty is not supported: leave it out or "
                                     "send 0"),
    "presence_penalty": ((None, 0), "presence_penalty is not supported: leave it out or "
                                    "send 0"),
    "tools": ((None, []), "tools (function calling) are not supported: the model only "
                          "writes text"),
    "tool_choice": ((None, "none"), "tools (function calling) are not supported: the model "
                                    "only writes text"),
    "functions": ((None, []), "functions (function calling) are not supported: the model "
                              "only writes text"),
    "function_call": ((None, "none"), "functions (function calling) are not supported: the "
                                      "model only writes text"),
    "response_format": ((None, {"type": "text"}), "JSON mode and structured outputs are not "
                                                  "supported: leave response_format out or "
                                                  'send {"type": "text"}'),
    "modalities": ((None, ["text"]), 'the model only writes text: leave modalities out or '
                                     'send ["text"]'),
    "audio": ((None,), "the model only writes text: leave audio out"),
    "web_search_options": ((None,), "web search is not supported: leave it out"),
    "echo": ((None, False), "echo is not supported: the answer never repeats the prompt"),
    "suffix": ((None, ""), "suffix (text to insert before) is not supported: leave it out"),
}


def _refuse_unless_harmless(value: Any, info: ValidationInfo) -> Any:
    """A field of :data:`NOT_SUPPORTED` passes only with a value that asks for nothing."""
    harmless, why = NOT_SUPPORTED[info.field_name or ""]
    if value not in harmless:
        raise PydanticCustomError("not_supported", "{why}", {"why": why})
    return value


class ChatMessage(BaseModel):
    model_config = _REQUEST

    role: Literal["system", "user", "assistant"]
    content: str


class StreamOptions(BaseModel):
    include_usage: bool = False


class Sampling(BaseModel):
    """The decoding fields both completion endpoints share."""

    model_config = _REQUEST

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = _SEED
    stream: bool = False
    stream_options: StreamOptions | None = None
    # refused unless harmless (NOT_SUPPORTED)
    n: Any = None
    logit_bias: Any = None
    frequency_penalty: Any = None
    presence_penalty: Any = None

    _not_supported = field_validator("n", "logit_bias", "frequency_penalty",
                                     "presence_penalty")(_refuse_unless_harmless)

    def stop_strings(self) -> tuple[str, ...]:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return tuple(s for s in stop if s)

    def logprob_count(self) -> int | None:
        """How many most likely tokens to report beside each generated token's own
        log-probability; None: no log-probabilities."""
        return None


class ChatCompletionRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    # vLLM's: extra names for the model's chat template (Qwen3's {"enable_thinking": false})
    chat_template_kwargs: dict[str, Any] | None = None
    # refused unless harmless (NOT_SUPPORTED)
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    response_format: Any = None
    modalities: Any = None
    audio: Any = None
    web_search_options: Any = None

    _chat_not_supported = field_validator(
        "tools", "tool_choice", "functions", "function_call", "response_format", "modalities",
        "audio", "web_search_options")(_refuse_unless_harmless)

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise PydanticCustomError("needs_logprobs", "top_logprobs needs logprobs: true")
        return value

    def logprob_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(Sampling):
    prompt: str = Field(min_length=1)
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions
    logprobs: int | None = Field(None, ge=0, le=5)
    # refused unless harmless (NOT_SUPPORTED)
    echo: Any = None
    best_of: Any = None
    suffix: Any = None

    _completion_not_supported = field_validator("echo", "best_of",
                                                "suffix")(_refuse_unless_harmless)

    def logprob_count(self) -> int | None:
        return self.logprobs


class ClassifyRequest(BaseModel):
    model_config = _REQUEST

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

    model_config = _REQUEST

    temperature: float = Field(0.8, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    top_k: int = Field(40, ge=0)  # 0: off
    repeat_penalty: float = Field(1.0, gt=0.0)
    seed: int | None = _SEED
    num_predict: int | None = Field(None, ge=-2)  # -1: no limit (the server's), -2: fill context
    stop: str | list[str] | None = None

    def stop_strings(self) -> tuple[str, ...]:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return tuple(s for s in stop if s)


class OllamaMessage(BaseModel):
    model_config = _REQUEST

    role: Literal["system", "user", "assistant"]
    content: str = ""
    images: list[str] | None = None


class OllamaRequest(BaseModel):
    """The fields ``/api/chat`` and ``/api/generate`` share. Ollama streams unless told not to."""

    model_config = _REQUEST

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
