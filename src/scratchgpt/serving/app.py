"""``scratchgpt serve``: a model behind OpenAI's HTTP API, for people and for programs.

The routes, on FastAPI:

* ``GET /health`` and ``GET /v1/models``;
* ``POST /v1/chat/completions``: the messages rendered in the model's prompt format (the run's
  prompt style, or a Hugging Face model's own chat template, given vLLM's
  ``chat_template_kwargs``), continued until an end-of-turn token, a stop string or
  ``max_tokens``;
* ``POST /v1/completions``: a raw prompt continued;
* ``POST /v1/classify`` (our own) for a classifier run: each text's label and probabilities;
* Ollama's ``GET /api/tags``, ``POST /api/chat`` and ``POST /api/generate``
  (:mod:`scratchgpt.serving.ollama`), on the same engine.

Both completion routes answer whole, or with ``"stream": true`` as server-sent events: one
``data: {chunk}`` line per piece of text (the first chunk of a chat carries the role), a last
chunk with the ``finish_reason``, the usage when ``stream_options.include_usage`` asks, then
``data: [DONE]``. Every request is decoded by one :class:`~scratchgpt.serving.engine.Engine`
shared by all: concurrent streams are decoded together, in one batch. A request the engine
fails ends alone: a stream with an error chunk in OpenAI's shape (``data: {"error": {...}}``)
before ``[DONE]``, a whole answer as a 500. ``logprobs`` come in OpenAI's two shapes: chat's
``{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}``, and the legacy
completions' ``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}``, each chunk of a
stream carrying its own tokens'. :mod:`~scratchgpt.serving.schema` says which fields are
honoured, refused or ignored.

Safe by default: the server listens on 127.0.0.1 only, ``--api-key`` makes every ``/v1``
request carry ``Authorization: Bearer KEY`` (and every ``/api`` request: Ollama's routes, and
``/openapi.json``), browsers of other origins are refused unless ``--cors-origin`` names one,
request bodies are capped as their bytes arrive (:class:`RequestGuard`), prompts are tokenized
off the event loop (one too long for the context is refused from its length alone), and
``/v1/classify`` takes a bounded number of texts, none empty. Errors come in OpenAI's shape, or
in Ollama's (``{"error": "..."}``) under ``/api``, FastAPI's own included.
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scratchgpt.classify import Classifier
from scratchgpt.data.chat_templates import ChatTemplate
from scratchgpt.data.prompt_format import PromptFormat
from scratchgpt.model import GPTModel
from scratchgpt.serving.engine import (
    Delta,
    Engine,
    GenerationFailed,
    GenerationRequest,
    QueueFull,
    Stream,
    TokenLogprob,
)
from scratchgpt.serving.schema import (
    ChatCompletionRequest,
    ClassifyRequest,
    CompletionRequest,
    Sampling,
    error_body,
    ollama_error_body,
)
from scratchgpt.tokenizers import BPETokenizer, CharTokenizer, Tokenizer

PAGE = Path(__file__).with_name("page.html")


@dataclass
class ServedModel:
    """What the server answers with: a language model (with its prompt format, and the ids
    that end its answers; None: the tokenizer's end-of-text) or a classifier, under the name
    clients ask for."""

    name: str
    tokenizer: Tokenizer
    language_model: GPTModel | None = None
    style: PromptFormat | None = None
    classifier: Classifier | None = None
    stop_ids: tuple[int, ...] | None = None


@dataclass
class ServeSettings:
    """The server's limits and safety switches (``scratchgpt serve --help``)."""

    api_key: str | None = None
    max_tokens: int = 512  # the most new tokens one request may ask for
    max_concurrency: int = 32  # streams decoded together
    max_queue: int = 64  # requests waiting for a place; beyond: 429
    max_body_bytes: int = 1_000_000  # counted as the body arrives; beyond: 413
    max_classify_inputs: int = 256  # texts one /v1/classify request may send
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


SENT_AS = "scratchgpt.sent_as"  # in a request's scope: the Content-Type of a body read as JSON


class RequestGuard:
    """What every request passes before any route runs (an ASGI middleware, so that it sees
    the body's bytes as they arrive):

    * the body cap, ``max_body_bytes``: a ``Content-Length`` over it is refused at once, and
      the bytes are counted as they arrive, since a chunked body states no length (and a
      stated one could lie): 413 as soon as the count passes the cap, and the connection is
      closed, so no route ever holds or tokenizes more;
    * the API key, when the server has one, on ``/v1``, ``/api`` and ``/openapi.json`` (which
      lists every route): ``Authorization: Bearer KEY``, the scheme in any case (RFC 7235),
      the key compared in constant time: else 401;
    * a body is read as JSON whatever its ``Content-Type`` says (``curl -d`` sends
      ``application/x-www-form-urlencoded``); the type it came with is kept in the scope under
      ``SENT_AS``, so that a body that is not JSON is told what it was sent as.
    """

    def __init__(self, app: ASGIApp, settings: ServeSettings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = Headers(scope=scope)
        try:
            self.check_length(headers.get("content-length"))
            self.check_key(path, headers.get("authorization", ""))
            body = await self.read_body(receive)
        except APIError as error:
            await error.response(path)(scope, receive, send)
            return
        if body is None:
            return  # the client went away before it finished sending
        if body and not _is_json(headers.get("content-type")):
            scope = {**scope, SENT_AS: headers.get("content-type", ""), "headers": [
                *(h for h in scope["headers"] if h[0] != b"content-type"),
                (b"content-type", b"application/json")]}
        delivered = False

        async def replay() -> Message:
            """The body, read already; then the client's messages (its disconnect)."""
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def check_length(self, length: str | None) -> None:
        if length is not None and length.isdigit() and int(length) > self.settings.max_body_bytes:
            raise self.too_large(f"request body of {int(length):,} bytes is over the limit of "
                                 f"{self.settings.max_body_bytes:,}")

    def check_key(self, path: str, authorization: str) -> None:
        key = self.settings.api_key
        if not key or not (path.startswith("/v1") or _is_ollama(path)
                           or path == "/openapi.json"):
            return
        scheme, _, given = authorization.partition(" ")
        # the header's own bytes (Starlette reads headers as latin-1) against the key's UTF-8
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode("latin-1"), key.encode()):
            raise APIError(401, "missing or wrong API key: send the header "
                                "'Authorization: Bearer KEY'", code="invalid_api_key",
                           kind="authentication_error")

    async def read_body(self, receive: Receive) -> bytes | None:
        """The whole body, its bytes counted as they arrive; None if the client went away."""
        pieces: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            piece = message.get("body", b"")
            size += len(piece)
            if size > self.settings.max_body_bytes:
                raise self.too_large(f"request body is over the limit of "
                                     f"{self.settings.max_body_bytes:,} bytes (read {size:,} "
                                     "before stopping)")
            pieces.append(piece)
            if not message.get("more_body", False):
                return b"".join(pieces)

    @staticmethod
    def too_large(message: str) -> APIError:
        """413; the connection is closed, rather than read to the end of what was sent."""
        return APIError(413, message, code="request_too_large", headers={"Connection": "close"})


def _is_json(content_type: str | None) -> bool:
    """``application/json``, or a ``+json`` type such as ``application/merge-patch+json``."""
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                           and media.endswith("+json"))


def create_app(served: ServedModel, settings: ServeSettings) -> FastAPI:
    """The FastAPI application; its engine starts and stops with it."""
    engine = None
    if served.language_model is not None:
        engine = Engine(served.language_model, served.tokenizer,
                        max_batch=settings.max_concurrency, max_queue=settings.max_queue,
                        stop_ids=served.stop_ids)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if engine is not None:
            engine.start()
        yield
        if engine is not None:
            engine.close()

    # /openapi.json lists every route and schema: RequestGuard asks for the key there too
    app = FastAPI(title="scratchgpt", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json")
    app.add_middleware(RequestGuard, settings=settings)
    if settings.cors_origin:  # added last, so outermost: its headers are on guard's refusals
        app.add_middleware(CORSMiddleware, allow_origins=[settings.cors_origin],
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return error.response(request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        """A body that is not JSON, or a field of the wrong type or range: 400, naming it."""
        first = error.errors()[0]
        if first["type"] == "json_invalid":
            position = first["loc"][-1]
            message = (f"the body is not valid JSON: {first.get('ctx', {}).get('error', '')} "
                       f"at character {position}{_sent_as(request)}")
            return APIError(400, message).response(request.url.path)
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        return APIError(400, f"{where or 'body'}: {first['msg']}",
                        param=where or None).response(request.url.path)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        """Starlette's and FastAPI's own refusals (no such route, a method not allowed, a
        body it could not parse) in our shapes, saying what is wrong."""
        message = str(error.detail)
        if error.__cause__ is not None and error.status_code == 400:  # the body's JSON
            message = _unreadable(error.__cause__) + _sent_as(request)
        elif error.status_code == 404:
            message = f"there is no {request.method} {request.url.path} on this server"
        elif error.status_code == 405:
            message = f"{request.url.path} does not answer {request.method}"
        return APIError(error.status_code, message,
                        headers=dict(error.headers or {})).response(request.url.path)

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
        kwargs = body.chat_template_kwargs or {}
        if kwargs and not isinstance(style, ChatTemplate):
            raise APIError(400, f"chat_template_kwargs: {served.name} has no chat template "
                                f"(its prompt format is the prompt style {style.name}), so "
                                "there is nothing to pass them to; leave chat_template_kwargs "
                                "out", param="chat_template_kwargs")
        reserved = sorted(set(kwargs) & {"messages", "add_generation_prompt", "tools",
                                         "documents"})
        if reserved:
            raise APIError(400, f"chat_template_kwargs: {', '.join(reserved)} cannot be set "
                                "there (the request itself says them); leave them out",
                           param="chat_template_kwargs")
        try:
            prompt = style.render(messages, **kwargs)
        except ValueError as err:
            raise APIError(400, f"messages: {err}", param="messages") from None
        limit = body.max_completion_tokens or body.max_tokens
        return await answer(chosen, body, prompt, limit, style.stop, chat=True,
                            special_tokens=isinstance(style, ChatTemplate))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest) -> Response:
        chosen = language_model(body, "/v1/completions")
        return await answer(chosen, body, body.prompt, body.max_tokens, (), chat=False)

    async def answer(chosen: Engine, body: Sampling, prompt: str, limit: int | None,
                     stop: tuple[str, ...], chat: bool, special_tokens: bool = False) -> Response:
        """Generate for either route: whole, or streamed as server-sent events."""
        request = await generation_request(served, settings, body, prompt, limit, stop,
                                           prompt_field="messages" if chat else "prompt",
                                           special_tokens=special_tokens)
        stream = submit_request(chosen, request)
        tokenizer = served.tokenizer if request.logprobs is not None else None
        if body.stream:
            chunks = _chat_chunks if chat else _completion_chunks
            return _event_stream(chunks(served.name, stream, body, tokenizer))
        kind = "chat.completion" if chat else "text_completion"
        return JSONResponse(_whole(kind, served.name, await _collect(stream),
                                   len(request.prompt_ids), tokenizer))

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest) -> dict[str, Any]:
        if body.model is not None:
            _check_model(served, body.model)
        if served.classifier is None:
            raise APIError(400, f"{served.name} is a language model, not a classifier: use "
                                "/v1/chat/completions", param="model")
        texts = [body.input] if isinstance(body.input, str) else body.input
        _check_texts(texts, settings.max_classify_inputs, one=isinstance(body.input, str))
        predictions = await run_in_threadpool(served.classifier.predict, texts)
        return {"object": "list", "model": served.name,
                "data": [{"index": i, "label": p.label, "probabilities": p.probabilities}
                         for i, p in enumerate(predictions)]}

    from scratchgpt.serving.ollama import add_ollama_routes  # it imports this module

    add_ollama_routes(app, served, settings, engine)
    return app


def _unreadable(cause: BaseException) -> str:
    """What kept FastAPI from reading a body as JSON."""
    if isinstance(cause, UnicodeDecodeError):
        return (f"the body is not valid UTF-8: byte 0x{cause.object[cause.start]:02x} at "
                f"position {cause.start}; send JSON in UTF-8")
    if isinstance(cause, RecursionError):
        return "the body's JSON is nested too deeply to read"
    return f"the body could not be read as JSON: {cause}"


def _sent_as(request: Request) -> str:
    """For a body that is not JSON and was not sent as JSON: the type it came with."""
    if SENT_AS not in request.scope:
        return ""
    sent_as = request.scope[SENT_AS]
    how = f"as Content-Type: {sent_as}" if sent_as else "without a Content-Type"
    return f" (it was sent {how}: send JSON, with Content-Type: application/json)"


def _check_model(served: ServedModel, name: str) -> None:
    if name != served.name:
        raise APIError(404, f"the model {name!r} does not exist here; this server has "
                            f"{served.name!r} (GET /v1/models)", param="model",
                       code="model_not_found")


async def generation_request(served: ServedModel, settings: ServeSettings, body: Sampling,
                             prompt: str, max_tokens: int | None, style_stop: tuple[str, ...],
                             prompt_field: str, special_tokens: bool = False
                             ) -> GenerationRequest:
    """The engine's request: the prompt's tokens and the sampling settings, within limits.
    With ``special_tokens`` (a chat template's prompt) special tokens in the prompt's text are
    read as themselves.

    A prompt that leaves no room in the model's context is refused with both lengths; one
    that leaves less room than ``max_tokens`` is answered with what fits (``finish_reason``
    ``length``), as OpenAI's API does.
    """
    asked = max_tokens or settings.max_tokens
    if asked > settings.max_tokens:
        raise APIError(400, f"max_tokens is {asked}, over this server's limit of "
                            f"{settings.max_tokens}", param="max_tokens")
    assert served.language_model is not None
    context = served.language_model.config.context_length
    ids = await prompt_ids(served.tokenizer, prompt, context, prompt_field, special_tokens)
    return GenerationRequest(
        prompt_ids=ids, max_new_tokens=min(asked, context - len(ids)),
        temperature=body.temperature, top_p=body.top_p if body.top_p < 1.0 else None,
        seed=body.seed, stop=style_stop + body.stop_strings(), logprobs=body.logprob_count())


async def prompt_ids(tokenizer: Tokenizer, prompt: str, context: int,
                     prompt_field: str, special_tokens: bool = False) -> list[int]:
    """The prompt's token ids, encoded off the event loop (a long prompt takes seconds, while
    the loop serves every other request). A prompt that cannot fit in the ``context`` is
    refused from its length in characters before any of it is encoded: a token stands for at
    most :func:`most_chars_per_token` characters, so a prompt longer than ``context - 1``
    times that is more tokens than the context holds with one more for the answer.

    A plain prompt is one whole text, framed as the model's tokenizer frames one (Llama 3's
    and Gemma 3's BOS first, as transformers' tokenizers do); a chat template's prompt
    (``special_tokens``) writes its own."""
    most = most_chars_per_token(tokenizer)
    if most is not None and len(prompt) > (context - 1) * most:
        raise APIError(400, f"the prompt is {len(prompt):,} characters, so at least "
                            f"{-(-len(prompt) // most):,} tokens; the model's context is "
                            f"{context}, and the answer needs at least one more",
                       param=prompt_field, code="context_length_exceeded")
    try:
        ids = await run_in_threadpool(
            (lambda text: tokenizer.encode(text, allowed_special="all")) if special_tokens
            else (lambda text: tokenizer.post_process(tokenizer.encode_ordinary(text))), prompt)
    except ValueError as err:  # a character tokenizer's unknown character
        raise APIError(400, f"{prompt_field}: {err}", param=prompt_field) from None
    if len(ids) >= context:
        raise APIError(400, f"the prompt is {len(ids):,} tokens; the model's context is "
                            f"{context}, and the answer needs at least one more",
                       param=prompt_field, code="context_length_exceeded")
    return ids


@cache
def most_chars_per_token(tokenizer: Tokenizer) -> int | None:
    """The most characters of text one token can stand for, or None where there is no bound.

    A byte-level BPE token stands for its bytes, at most those of the longest token, and a
    character is at least one byte (128 for GPT-2); a character tokenizer's token for one;
    a word tokenizer's ``<|unk|>`` for an unknown word of any length: no bound.
    """
    if isinstance(tokenizer, BPETokenizer):
        return max(len(token) for token in tokenizer.ranks)
    if isinstance(tokenizer, CharTokenizer):
        return 1
    return None


def _check_texts(texts: list[str], limit: int, one: bool) -> None:
    """``/v1/classify``'s texts: at most ``limit`` (each costs a forward pass on the server),
    and none empty, since an empty text has nothing to label (``input[3]``, or ``input``)."""
    if len(texts) > limit:
        raise APIError(400, f"input has {len(texts):,} texts, over this server's limit of "
                            f"{limit:,} per request: send them in several requests",
                       param="input")
    if not texts:
        raise APIError(400, "input is an empty list: send at least one text", param="input")
    for index, text in enumerate(texts):
        if not text.strip():
            where = "input" if one else f"input[{index}]"
            raise APIError(400, f"{where} is {'empty' if not text else 'only whitespace'}: "
                                "there is nothing to classify; send some text", param=where)


def submit_request(engine: Engine, request: GenerationRequest) -> Stream:
    """Queue ``request``; one the engine refuses is a 400 with its reason, and a full engine
    is OpenAI's 429 with ``Retry-After``."""
    try:
        return engine.submit(request)
    except ValueError as err:  # what the schema let through and the engine cannot run
        raise APIError(400, str(err)) from None
    except QueueFull:
        raise APIError(429, "the server is at its limit of concurrent requests; retry soon",
                       kind="rate_limit_error", code="rate_limit_exceeded",
                       headers={"Retry-After": "1"}) from None


async def _collect(stream: Stream) -> Delta:
    """The whole answer as one delta (its text, reason, counts and log-probabilities); a
    request the engine failed is a 500."""
    text, last, logprobs = "", Delta(""), []
    try:
        async for delta in stream:
            text += delta.text
            logprobs += delta.logprobs
            last = delta
    except GenerationFailed as error:
        raise APIError(500, str(error), kind="server_error") from None
    return Delta(text, last.finish_reason, last.prompt_tokens, last.completion_tokens,
                 tuple(logprobs))


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _whole(kind: str, model: str, answer: Delta, prompt_tokens: int,
           tokenizer: Tokenizer | None) -> dict[str, Any]:
    """A non-streamed response: ``chat.completion`` or ``text_completion``; with the
    log-probabilities when ``tokenizer`` is given to spell their tokens."""
    if kind == "chat.completion":
        choice: dict[str, Any] = {
            "index": 0, "message": {"role": "assistant", "content": answer.text},
            "logprobs": None if tokenizer is None else _chat_logprobs(tokenizer,
                                                                      answer.logprobs)}
        prefix = "chatcmpl"
    else:
        choice = {"index": 0, "text": answer.text,
                  "logprobs": None if tokenizer is None else _completion_logprobs(
                      tokenizer, answer.logprobs)}
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


# A chunk's choice, less its index and finish_reason: from its text, whether it is the
# first, and the log-probabilities of the tokens it covers.
_Piece = Callable[[str, bool, tuple[TokenLogprob, ...]], dict[str, Any]]


async def _chunks(kind: str, model: str, stream: Stream, body: Sampling,
                  piece: _Piece) -> AsyncIterator[dict[str, Any]]:
    """The chunks of a streamed answer; the stream is cancelled if the client goes away (the
    generator is closed), which frees its place in the batch at once. If the engine fails
    the request, the last chunk is an error in OpenAI's shape (``[DONE]`` still follows)."""
    head = {"id": f"{'chatcmpl' if kind == 'chat.completion.chunk' else 'cmpl'}-"
                  f"{uuid.uuid4().hex}", "object": kind, "created": int(time.time()),
            "model": model}
    try:
        yield {**head, "choices": [{"index": 0, **piece("", True, ()), "finish_reason": None}]}
        last = Delta("")
        async for delta in stream:
            last = delta
            if delta.text or delta.logprobs:
                yield {**head, "choices": [{"index": 0,
                                            **piece(delta.text, False, delta.logprobs),
                                            "finish_reason": None}]}
        yield {**head, "choices": [{"index": 0, **piece("", False, ()),
                                    "finish_reason": last.finish_reason}]}
        if body.stream_options and body.stream_options.include_usage:
            yield {**head, "choices": [],
                   "usage": _usage(last.prompt_tokens, last.completion_tokens)}
    except GenerationFailed as error:
        yield error_body(str(error), "server_error")
    finally:
        stream.cancel()


def _chat_chunks(model: str, stream: Stream, body: Sampling,
                 tokenizer: Tokenizer | None) -> AsyncIterator[dict[str, Any]]:
    """``chat.completion.chunk``s; with each piece's log-probabilities when ``tokenizer``
    is given to spell their tokens."""
    def piece(text: str, first: bool, logprobs: tuple[TokenLogprob, ...]) -> dict[str, Any]:
        delta = ({"role": "assistant", "content": ""} if first else
                 {"content": text} if text or logprobs else {})
        if tokenizer is None or not logprobs:
            return {"delta": delta, "logprobs": None}
        return {"delta": delta, "logprobs": _chat_logprobs(tokenizer, logprobs)}

    return _chunks("chat.completion.chunk", model, stream, body, piece)


def _completion_chunks(model: str, stream: Stream, body: Sampling,
                       tokenizer: Tokenizer | None) -> AsyncIterator[dict[str, Any]]:
    """``text_completion`` chunks; with each piece's log-probabilities when ``tokenizer`` is
    given, their ``text_offset`` counted from the start of the whole answer."""
    offset = 0

    def piece(text: str, first: bool, logprobs: tuple[TokenLogprob, ...]) -> dict[str, Any]:
        nonlocal offset
        if tokenizer is None or not logprobs:
            return {"text": text, "logprobs": None}
        formatted = _completion_logprobs(tokenizer, logprobs, offset)
        offset += sum(len(token) for token in formatted["tokens"])
        return {"text": text, "logprobs": formatted}

    return _chunks("text_completion", model, stream, body, piece)


def _token(tokenizer: Tokenizer, token: int) -> tuple[str, list[int]]:
    """A token as OpenAI spells it: its text (a piece of a character shows as U+FFFD) and its
    UTF-8 bytes."""
    raw = tokenizer.decode_bytes([token])
    return raw.decode("utf-8", errors="replace"), list(raw)


def _chat_logprobs(tokenizer: Tokenizer,
                   logprobs: tuple[TokenLogprob, ...]) -> dict[str, Any]:
    """Chat's ``logprobs``: ``content``, one entry per token (its text, log-probability,
    bytes and ``top_logprobs``, the most likely tokens at its place, most likely first)."""
    def entry(token: int, logprob: float) -> dict[str, Any]:
        text, raw = _token(tokenizer, token)
        return {"token": text, "logprob": logprob, "bytes": raw}

    return {"content": [{**entry(item.token, item.logprob),
                         "top_logprobs": [entry(token, logprob) for token, logprob in item.top]}
                        for item in logprobs], "refusal": None}


def _completion_logprobs(tokenizer: Tokenizer, logprobs: tuple[TokenLogprob, ...],
                         offset: int = 0) -> dict[str, Any]:
    """Legacy completions' ``logprobs``: the tokens' texts and log-probabilities, per token a
    dict of the most likely tokens and the chosen one (so up to ``logprobs + 1`` entries, as
    OpenAI's), and each token's character offset in the answer (after ``offset``)."""
    tokens = [_token(tokenizer, item.token)[0] for item in logprobs]
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    return {"tokens": tokens, "token_logprobs": [item.logprob for item in logprobs],
            "top_logprobs": [{_token(tokenizer, token)[0]: logprob
                              for token, logprob in (*item.top, (item.token, item.logprob))}
                             for item in logprobs],
            "text_offset": offsets}
