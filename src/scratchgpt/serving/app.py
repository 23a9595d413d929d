"""``scratchgpt serve``: a model behind OpenAI's HTTP API, for people and for programs.

The routes, on FastAPI:

* ``GET /health`` and ``GET /v1/models``;
* ``POST /v1/chat/completions``: the messages rendered in the run's prompt style (the text the
  model was fine-tuned on), continued until end-of-text, a stop string or ``max_tokens``;
* ``POST /v1/completions``: a raw prompt continued;
* ``POST /v1/classify`` (our own) for a classifier run: each text's label and probabilities;
* Ollama's ``GET /api/tags``, ``POST /api/chat`` and ``POST /api/generate``
  (:mod:`scratchgpt.serving.ollama`), on the same engine.

Both completion routes answer whole, or with ``"stream": true`` as server-sent events: one
``data: {chunk}`` line per piece of text (the first chunk of a chat carries the role), a last
chunk with the ``finish_reason``, the usage when ``stream_options.include_usage`` asks, then
``data: [DONE]``. Every request is decoded by one :class:`~scratchgpt.serving.engine.Engine`
shared by all: concurrent streams are decoded together, in one batch.

Safe by default: the server listens on 127.0.0.1 only, ``--api-key`` makes every ``/v1``
request carry ``Authorization: Bearer KEY`` (and every ``/api`` request: Ollama's routes),
browsers of other origins are refused unless ``--cors-origin`` names one, and request bodies
are capped. Errors come in OpenAI's shape, or in Ollama's (``{"error": "..."}``) under ``/api``.
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from scratchgpt.classify import Classifier
from scratchgpt.data.prompt_styles import PromptStyle
from scratchgpt.model import GPTModel
from scratchgpt.serving.engine import Delta, Engine, GenerationRequest, QueueFull, Stream
from scratchgpt.serving.schema import (
    ChatCompletionRequest,
    ClassifyRequest,
    CompletionRequest,
    Sampling,
    error_body,
    ollama_error_body,
)
from scratchgpt.tokenizers import Tokenizer

PAGE = Path(__file__).with_name("page.html")


@dataclass
class ServedModel:
    """What the server answers with: a language model (with its prompt style, or None for a
    base model) or a classifier, under the name clients ask for."""

    name: str
    tokenizer: Tokenizer
    language_model: GPTModel | None = None
    style: PromptStyle | None = None
    classifier: Classifier | None = None


@dataclass
class ServeSettings:
    """The server's limits and safety switches (``scratchgpt serve --help``)."""

    api_key: str | None = None
    max_tokens: int = 512  # the most new tokens one request may ask for
    max_concurrency: int = 32  # streams decoded together
    max_queue: int = 64  # requests waiting for a place; beyond: 429
    max_body_bytes: int = 1_000_000
    cors_origin: str | None = None


class APIError(Exception):
    """An error answer: in OpenAI's shape, or in Ollama's for the ``/api`` routes."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, kind: str = "invalid_request_error",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind, self.headers = kind, headers

    def response(self, path: str = "/v1") -> JSONResponse:
        body = (ollama_error_body(self.message) if _is_ollama(path)
                else error_body(self.message, self.kind, self.param, self.code))
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _is_ollama(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def create_app(served: ServedModel, settings: ServeSettings) -> FastAPI:
    """The FastAPI application; its engine starts and stops with it."""
    engine = None
    if served.language_model is not None:
        engine = Engine(served.language_model, served.tokenizer,
                        max_batch=settings.max_concurrency, max_queue=settings.max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if engine is not None:
            engine.start()
        yield
        if engine is not None:
            engine.close()

    app = FastAPI(title="scratchgpt", lifespan=lifespan, docs_url=None, redoc_url=None)
    if settings.cors_origin:
        app.add_middleware(CORSMiddleware, allow_origins=[settings.cors_origin],
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.middleware("http")
    async def guard(request: Request,
                    call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """The body cap, then the API key, before any route runs."""
        path = request.url.path
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return APIError(413, f"request body of {int(length):,} bytes is over the limit of "
                                 f"{settings.max_body_bytes:,}").response(path)
        if settings.api_key and (path.startswith("/v1") or _is_ollama(path)):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {settings.api_key}".encode()):
                return APIError(401, "missing or wrong API key: send the header "
                                     "'Authorization: Bearer KEY'", code="invalid_api_key",
                                kind="authentication_error").response(path)
        return await call_next(request)

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return error.response(request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        """A body that is not JSON, or a field of the wrong type or range: 400, naming it."""
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        message = (f"the body is not valid JSON: {first['msg']}" if first["type"] == "json_invalid"
                   else f"{where or 'body'}: {first['msg']}")
        return APIError(400, message, param=where or None).response(request.url.path)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Alive, and what the page needs: the model's name and kind, whether a key is asked."""
        return {"status": "ok", "model": served.name,
                "kind": "classifier" if served.classifier else "chat",
                "auth": bool(settings.api_key),
                "active": engine.active if engine else 0,
                "waiting": engine.waiting if engine else 0}

    @app.get("/")
    async def page() -> HTMLResponse:
        """The web page: a chat, or a box to classify a text (``page.html``)."""
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": served.name, "object": "model",
                                            "created": 0, "owned_by": "scratchgpt"}]}

    def language_model(body: Sampling, route: str) -> Engine:
        _check_model(served, body.model)
        if engine is None:
            raise APIError(400, f"{served.name} is a classifier: send texts to /v1/classify, "
                                f"not to {route}", param="model")
        return engine

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest) -> Response:
        chosen = language_model(body, "/v1/chat/completions")
        style = served.style
        assert style is not None  # a language model always has one (serve picks a default)
        messages = [message.model_dump() for message in body.messages]
        try:
            prompt = style.render(messages)
        except ValueError as err:
            raise APIError(400, f"messages: {err}", param="messages") from None
        limit = body.max_completion_tokens or body.max_tokens
        return await answer(chosen, body, prompt, limit, style.stop, chat=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest) -> Response:
        chosen = language_model(body, "/v1/completions")
        return await answer(chosen, body, body.prompt, body.max_tokens, (), chat=False)

    async def answer(chosen: Engine, body: Sampling, prompt: str, limit: int | None,
                     stop: tuple[str, ...], chat: bool) -> Response:
        """Generate for either route: whole, or streamed as server-sent events."""
        request = generation_request(served, settings, body, prompt, limit, stop,
                                     prompt_field="messages" if chat else "prompt")
        stream = submit_request(chosen, request)
        if body.stream:
            chunks = _chat_chunks if chat else _completion_chunks
            return _event_stream(chunks(served.name, stream, body))
        kind = "chat.completion" if chat else "text_completion"
        return JSONResponse(_whole(kind, served.name, await _collect(stream),
                                   len(request.prompt_ids)))

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest) -> dict[str, Any]:
        if body.model is not None:
            _check_model(served, body.model)
        if served.classifier is None:
            raise APIError(400, f"{served.name} is a language model, not a classifier: use "
                                "/v1/chat/completions", param="model")
        texts = [body.input] if isinstance(body.input, str) else body.input
        predictions = await run_in_threadpool(served.classifier.predict, texts)
        return {"object": "list", "model": served.name,
                "data": [{"index": i, "label": p.label, "probabilities": p.probabilities}
                         for i, p in enumerate(predictions)]}

    from scratchgpt.serving.ollama import add_ollama_routes  # it imports this module

    add_ollama_routes(app, served, settings, engine)
    return app


def _check_model(served: ServedModel, name: str) -> None:
    if name != served.name:
        raise APIError(404, f"the model {name!r} does not exist here; this server has "
                            f"{served.name!r} (GET /v1/models)", param="model",
                       code="model_not_found")


def generation_request(served: ServedModel, settings: ServeSettings, body: Sampling,
                       prompt: str, max_tokens: int | None, style_stop: tuple[str, ...],
                       prompt_field: str) -> GenerationRequest:
    """The engine's request: the prompt's tokens and the sampling settings, within limits.

    A prompt that leaves no room in the model's context is refused with both lengths; one
    that leaves less room than ``max_tokens`` is answered with what fits (``finish_reason``
    ``length``), as OpenAI's API does.
    """
    asked = max_tokens or settings.max_tokens
    if asked > settings.max_tokens:
        raise APIError(400, f"max_tokens is {asked}, over this server's limit of "
                            f"{settings.max_tokens}", param="max_tokens")
    ids = served.tokenizer.encode_ordinary(prompt)
    assert served.language_model is not None
    context = served.language_model.config.context_length
    if len(ids) >= context:
        raise APIError(400, f"the prompt is {len(ids)} tokens; the model's context is "
                            f"{context}, and the answer needs at least one more",
                       param=prompt_field,
                       code="context_length_exceeded")
    return GenerationRequest(
        prompt_ids=ids, max_new_tokens=min(asked, context - len(ids)),
        temperature=body.temperature, top_p=body.top_p if body.top_p < 1.0 else None,
        seed=body.seed, stop=style_stop + body.stop_strings())


def submit_request(engine: Engine, request: GenerationRequest) -> Stream:
    """Queue ``request``; a full engine is OpenAI's 429 with ``Retry-After``."""
    try:
        return engine.submit(request)
    except QueueFull:
        raise APIError(429, "the server is at its limit of concurrent requests; retry soon",
                       kind="rate_limit_error", code="rate_limit_exceeded",
                       headers={"Retry-After": "1"}) from None


async def _collect(stream: Stream) -> Delta:
    """The whole answer as one delta (its text, reason and counts)."""
    text, last = "", Delta("")
    async for delta in stream:
        text += delta.text
        last = delta
    return Delta(text, last.finish_reason, last.prompt_tokens, last.completion_tokens)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _whole(kind: str, model: str, answer: Delta, prompt_tokens: int) -> dict[str, Any]:
    """A non-streamed response: ``chat.completion`` or ``text_completion``."""
    if kind == "chat.completion":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant",
                                                          "content": answer.text}}
        prefix = "chatcmpl"
    else:
        choice = {"index": 0, "text": answer.text, "logprobs": None}
        prefix = "cmpl"
    choice["finish_reason"] = answer.finish_reason
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()),
            "model": model, "choices": [choice],
            "usage": _usage(prompt_tokens, answer.completion_tokens)}


def _event_stream(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    """Server-sent events: ``data: {chunk}`` per chunk, then ``data: [DONE]``."""

    async def lines() -> AsyncIterator[str]:
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


async def _chunks(kind: str, model: str, stream: Stream, body: Sampling,
                  piece: Callable[[str, bool], dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """The chunks of a streamed answer; the stream is cancelled if the client goes away (the
    generator is closed), which frees its place in the batch at once."""
    head = {"id": f"{'chatcmpl' if kind == 'chat.completion.chunk' else 'cmpl'}-"
                  f"{uuid.uuid4().hex}", "object": kind, "created": int(time.time()),
            "model": model}
    try:
        yield {**head, "choices": [{"index": 0, **piece("", True), "finish_reason": None}]}
        last = Delta("")
        async for delta in stream:
            last = delta
            if delta.text:
                yield {**head, "choices": [{"index": 0, **piece(delta.text, False),
                                            "finish_reason": None}]}
        yield {**head, "choices": [{"index": 0, **piece("", False),
                                    "finish_reason": last.finish_reason}]}
        if body.stream_options and body.stream_options.include_usage:
            yield {**head, "choices": [],
                   "usage": _usage(last.prompt_tokens, last.completion_tokens)}
    finally:
        stream.cancel()


def _chat_chunks(model: str, stream: Stream, body: Sampling) -> AsyncIterator[dict[str, Any]]:
    def piece(text: str, first: bool) -> dict[str, Any]:
        return {"delta": {"role": "assistant", "content": ""} if first else
                ({"content": text} if text else {})}

    return _chunks("chat.completion.chunk", model, stream, body, piece)


def _completion_chunks(model: str, stream: Stream,
                       body: Sampling) -> AsyncIterator[dict[str, Any]]:
    def piece(text: str, first: bool) -> dict[str, Any]:
        return {"text": text, "logprobs": None}

    return _chunks("text_completion", model, stream, body, piece)
