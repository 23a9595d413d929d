"""Ollama's API on ``scratchgpt serve``: ``/api/tags``, ``/api/chat`` and ``/api/generate``.

So that Ollama's own clients (the ``ollama`` Python package, Open WebUI, the book's chapter 7
judge code) can use our models, and so that ``scratchgpt evaluate judge`` is tested against a
real server over both of the protocols it speaks. The routes follow Ollama's ``docs/api.md``:

* ``GET /api/tags``: the one model served, as ``NAME:latest`` (Ollama's ``model:tag``); a
  request may name it ``NAME`` or ``NAME:latest``, and the answer echoes the name it was asked;
* ``POST /api/chat``: ``model``, ``messages`` (``[]`` "loads the model": an empty answer with
  ``done_reason`` ``load``, as Ollama does; a body without ``messages`` is refused), ``stream``,
  ``options``; the messages are rendered in the run's prompt style, as on
  ``/v1/chat/completions``;
* ``POST /api/generate``: ``prompt`` as one user message (after ``system``, if given) in the
  prompt style, or continued as it is with ``"raw": true`` (``system`` is then ignored, as in
  Ollama); an empty prompt loads the model.

Ollama **streams by default**: newline-delimited JSON (``application/x-ndjson``), one object per
piece of text with ``"done": false``, then a last one with ``"done": true``, the
``done_reason`` (``stop`` or ``length``) and the counts (``prompt_eval_count``, ``eval_count``)
and durations in nanoseconds. ``"stream": false`` answers with that last object holding the
whole text. A failure while streaming ends the stream with an ``{"error": ...}`` line.

``options`` honoured: ``temperature``, ``top_p``, ``top_k``, ``seed``, ``repeat_penalty``,
``num_predict`` (``-1``/``-2``/absent: up to the server's ``--max-tokens`` and what the context
leaves) and ``stop``, with Ollama's documented defaults (temperature 0.8, top_k 40, top_p 0.9;
``repeat_penalty`` 1, off, our models' own setting); the rest (``num_ctx``...) are ignored, since a
model's context is fixed. ``format``, ``tools``, ``images``, ``suffix`` and ``context`` are
refused with a message, never silently ignored.

Decoding is the server's: the same :class:`~scratchgpt.serving.engine.Engine`, request
limits (``generation_request``), 429 when full (``submit_request``) as ``/v1``, so at
temperature 0 ``/api/chat`` answers exactly what ``/v1/chat/completions`` does.

Errors come in Ollama's shape, ``{"error": "..."}``, with the same status codes as ``/v1``.
**API key**: when the server has ``--api-key``, it guards ``/api`` as it guards ``/v1`` (the
same ``Authorization: Bearer KEY`` header; ``ollama.Client(headers=...)`` sends it). Ollama
itself has no keys, so an Ollama client pointed at a keyed server must add the header.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import torch
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from scratchgpt.data.chat_templates import ChatTemplate
from scratchgpt.serving.app import (
    APIError,
    ServedModel,
    ServeSettings,
    generation_request,
    submit_request,
)
from scratchgpt.serving.engine import Delta, Engine, GenerationFailed, Stream
from scratchgpt.serving.schema import (
    OllamaChatRequest,
    OllamaGenerateRequest,
    OllamaRequest,
)

TAG = "latest"
_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def add_ollama_routes(app: FastAPI, served: ServedModel, settings: ServeSettings,
                      engine: Engine | None) -> None:
    """Add ``/api/tags``, ``/api/chat`` and ``/api/generate`` to the server's ``app``."""
    started = _now()
    digest: list[str] = []  # computed once, on the first /api/tags

    def model_entry() -> dict[str, Any]:
        module = served.language_model if served.language_model is not None else (
            served.classifier.model if served.classifier is not None else None)
        parameters = list(module.parameters()) if module is not None else []
        count = sum(p.numel() for p in parameters)
        size = sum(p.numel() * p.element_size() for p in parameters)
        if not digest:
            hasher = hashlib.sha256()
            for parameter in parameters:  # the weights' bytes, whatever their dtype
                flat = parameter.detach().cpu().contiguous().view(-1)
                hasher.update(flat.view(torch.uint8).numpy().tobytes())
            digest.append(hasher.hexdigest())
        kind = "classifier" if served.classifier is not None else "gpt"
        return {"name": f"{served.name}:{TAG}", "model": f"{served.name}:{TAG}",
                "modified_at": started, "size": size, "digest": digest[0],
                "details": {"parent_model": "", "format": "safetensors", "family": kind,
                            "families": [kind], "parameter_size": _parameter_size(count),
                            "quantization_level": _DTYPES.get(parameters[0].dtype, "")
                            if parameters else ""}}

    @app.get("/api/tags")
    async def tags() -> dict[str, Any]:
        return {"models": [await run_in_threadpool(model_entry)]}

    @app.get("/api/version")
    async def version() -> dict[str, Any]:
        """Some Ollama clients ask which Ollama they talk to before anything else."""
        return {"version": "0.0.0-scratchgpt"}

    def chosen_engine(body: OllamaRequest, route: str) -> Engine:
        if body.model not in (served.name, f"{served.name}:{TAG}"):
            raise APIError(404, f'model "{body.model}" not found: this server has '
                                f'"{served.name}" (GET /api/tags)', param="model")
        if engine is None:
            raise APIError(400, f"{served.name} is a classifier: send texts to /v1/classify, "
                                f"not to {route}", param="model")
        if body.format:
            raise APIError(400, "format (JSON mode, structured outputs) is not supported by "
                                "this server", param="format")
        return engine

    @app.post("/api/chat")
    async def chat(body: OllamaChatRequest) -> Response:
        chosen = chosen_engine(body, "/api/chat")
        if body.tools:
            raise APIError(400, "tools are not supported by this server", param="tools")
        if any(message.images for message in body.messages):
            raise APIError(400, "images are not supported: the model reads text only",
                           param="messages")
        if not body.messages:
            return _loaded(body, chat=True)
        style = served.style
        assert style is not None  # a language model always has one
        try:
            prompt = style.render([{"role": m.role, "content": m.content}
                                   for m in body.messages])
        except ValueError as err:
            raise APIError(400, f"messages: {err}", param="messages") from None
        return await answer(chosen, body, prompt, style.stop, chat=True,
                            special_tokens=isinstance(style, ChatTemplate))

    @app.post("/api/generate")
    async def generate(body: OllamaGenerateRequest) -> Response:
        chosen = chosen_engine(body, "/api/generate")
        for field in ("suffix", "images", "context"):
            if getattr(body, field):
                raise APIError(400, f"{field} is not supported by this server", param=field)
        if not body.prompt:
            return _loaded(body, chat=False)
        if body.raw:
            return await answer(chosen, body, body.prompt, (), chat=False)
        style = served.style
        assert style is not None
        messages = ([{"role": "system", "content": body.system}] if body.system else []) + [
            {"role": "user", "content": body.prompt}]
        return await answer(chosen, body, style.render(messages), style.stop, chat=False,
                            special_tokens=isinstance(style, ChatTemplate))

    async def answer(chosen: Engine, body: OllamaRequest, prompt: str,
                     stop: tuple[str, ...], chat: bool, special_tokens: bool = False) -> Response:
        """Generate for either route: one JSON object, or NDJSON pieces then the last one."""
        limit = body.options.num_predict
        if limit == 0:
            raise APIError(400, "options.num_predict is 0: ask for at least 1 token, or -1 for "
                                "as many as the server allows", param="options.num_predict")
        if limit is not None and limit > settings.max_tokens:
            raise APIError(400, f"options.num_predict is {limit}, over this server's limit of "
                                f"{settings.max_tokens}", param="options.num_predict")
        request = await generation_request(served, settings, body.sampling(), prompt,
                                           limit if limit and limit > 0 else None, stop,
                                           prompt_field="messages" if chat else "prompt",
                                           special_tokens=special_tokens)
        options = body.options
        request = replace(request, top_k=options.top_k or None,
                          repetition_penalty=options.repeat_penalty)
        began = time.perf_counter_ns()
        stream = submit_request(chosen, request)
        if body.stream:
            return StreamingResponse(_ndjson(body.model, stream, chat, began),
                                     media_type="application/x-ndjson")
        text, last, first_at = "", Delta(""), None
        try:
            async for delta in stream:
                first_at = first_at or time.perf_counter_ns()
                text += delta.text
                last = delta
        except GenerationFailed as error:
            raise APIError(500, str(error), kind="server_error") from None
        return JSONResponse(_final(body.model, chat, text, last, began, first_at))


def _loaded(body: OllamaRequest, chat: bool) -> JSONResponse:
    """Ollama's answer to an empty chat or prompt: the model is loaded (ours always is)."""
    reason = "unload" if body.keep_alive in (0, "0", "0s", "0m") else "load"
    answer: dict[str, Any] = {"model": body.model, "created_at": _now()}
    answer.update({"message": {"role": "assistant", "content": ""}} if chat else
                  {"response": ""})
    answer.update(done=True, done_reason=reason)
    return JSONResponse(answer)


async def _ndjson(model: str, stream: Stream, chat: bool,
                  began: int) -> AsyncIterator[str]:
    """The streamed answer, one JSON object a line; the stream is cancelled if the client
    goes away (the generator is closed), which frees its place in the batch at once."""
    first_at = None
    last = Delta("")
    try:
        async for delta in stream:
            first_at = first_at or time.perf_counter_ns()
            last = delta
            if delta.text:
                yield _line({"model": model, "created_at": _now(),
                             **_text(chat, delta.text), "done": False})
        yield _line(_final(model, chat, "", last, began, first_at))
    except Exception as error:  # GenerationFailed, say: end with it, in Ollama's way
        yield _line({"error": str(error)})
    finally:
        stream.cancel()


def _final(model: str, chat: bool, text: str, last: Delta, began: int,
           first_at: int | None) -> dict[str, Any]:
    """The last object of an answer: the text (whole, or "" after a stream), why it ended,
    and the counts and durations (ns) Ollama reports."""
    now = time.perf_counter_ns()
    first_at = first_at or now
    return {"model": model, "created_at": _now(), **_text(chat, text), "done": True,
            "done_reason": last.finish_reason or "stop", "total_duration": now - began,
            "load_duration": 0, "prompt_eval_count": last.prompt_tokens,
            "prompt_eval_duration": first_at - began, "eval_count": last.completion_tokens,
            "eval_duration": now - first_at}


def _text(chat: bool, text: str) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": text}} if chat else {"response": text}


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _parameter_size(count: int) -> str:
    """Ollama's way of saying how big: ``124M``, ``1.5B``."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g}{unit}"
    return str(count)

