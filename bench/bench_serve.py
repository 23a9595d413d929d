"""Serving concurrent streams: ``scratchgpt serve`` against a minimal transformers server.

For each model shape (random weights: speed does not depend on training) a ``GPTModel`` is
built from the preset with GPT-2's tokenizer (``../shared/assets/gpt2-tokenizer``) and written
by ``export_hf`` as a Hugging Face GPT-2 directory. Two servers load that same directory, each
in its own process on a loopback port:

* **ours**: ``scratchgpt serve --model DIR`` (continuous batching: every stream is decoded in
  one shared batch by the engine's thread);
* **peer**: the typical simple deployment, written here (``--serve-peer``): a FastAPI app
  served by uvicorn, whose ``/v1/completions`` runs ``GPT2LMHeadModel.generate`` in a thread
  per request with a ``TextIteratorStreamer`` and streams its text as OpenAI's server-sent
  events. ``--peer threads`` (the default) lets concurrent requests generate in concurrent
  threads; ``--peer lock`` generates one request at a time. (``transformers serve``, which
  batches, needs the network for its model registry and cannot run offline here.)

A point is N clients, each sending one streaming ``/v1/completions`` request at the same time
(fixed prompt, ``max_tokens``, temperature 0, ``stream_options.include_usage``), on raw
asyncio sockets so that the client costs the shared CPU little. Measured: the time to first
token (from sending the request to the first chunk with text; median over the clients) and
the aggregate tokens/s (the completion tokens the usage chunks report, over the time from the
first request sent to the last stream ended). The servers take turns every repeat, never
loaded at the same time; each figure is the median of ``--repeats`` after one warm-up request.
Prints a markdown table and the issue's targets (at 8 clients: ours >= 3x our 1-client
tokens/s and >= 2x the peer's).

    python bench/bench_serve.py                                   # micro and gpt2-small
    python bench/bench_serve.py --shapes micro --clients 1 8 32 --tokens micro=96 --repeats 7
    python bench/bench_serve.py --peer lock                       # peer serves one at a time
    python bench/bench_serve.py --threads 1                       # steadier on a busy machine
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request  # at module level: FastAPI resolves the annotations here
from fastapi.responses import StreamingResponse

ASSETS = Path(__file__).resolve().parent.parent.parent / "shared" / "assets"
PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time, in a land far away,"
DEFAULT_TOKENS = {"micro": 64, "gpt2-small": 16}  # new tokens per request
SERVERS = ("ours", "peer")


# -- the peer: a minimal transformers server ---------------------------------------------------
def peer_app(directory: str, one_at_a_time: bool) -> FastAPI:
    """A FastAPI app streaming ``GPT2LMHeadModel.generate`` through a ``TextIteratorStreamer``,
    in OpenAI's ``/v1/completions`` shape (text chunks, a finish chunk, the usage, ``[DONE]``).
    """
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel, TextIteratorStreamer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = GPT2LMHeadModel.from_pretrained(directory).eval()
    lock = threading.Lock() if one_at_a_time else None
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/completions")
    async def completions(request: Request) -> StreamingResponse:
        body = await request.json()
        inputs = tokenizer(body["prompt"], return_tensors="pt")
        prompt_tokens = inputs["input_ids"].shape[1]
        temperature = float(body.get("temperature", 1.0))
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        generated: list[int] = []

        def run() -> None:
            settings = {"do_sample": temperature > 0, **({"temperature": temperature}
                                                         if temperature > 0 else {})}
            with torch.inference_mode():
                if lock is not None:
                    lock.acquire()
                try:
                    output = model.generate(**inputs, streamer=streamer,
                                            max_new_tokens=body.get("max_tokens", 16),
                                            pad_token_id=tokenizer.eos_token_id, **settings)
                finally:
                    if lock is not None:
                        lock.release()
            new = output[0, prompt_tokens:].tolist()
            generated.extend(new[:-1] if new and new[-1] == tokenizer.eos_token_id else new)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        head = {"id": f"cmpl-{time.time_ns()}", "object": "text_completion",
                "created": int(time.time()), "model": body["model"]}

        def chunk(text: str, finish: str | None) -> str:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            return f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"

        def events() -> Iterator[str]:  # starlette iterates it in its thread pool
            for text in streamer:
                if text:
                    yield chunk(text, None)
            thread.join()
            finish = "length" if len(generated) >= body.get("max_tokens", 16) else "stop"
            yield chunk("", finish)
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(generated),
                         "total_tokens": prompt_tokens + len(generated)}
                yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def run_peer(directory: str, port: int, one_at_a_time: bool) -> None:
    import uvicorn

    uvicorn.run(peer_app(directory, one_at_a_time), host="127.0.0.1", port=port,
                log_level="warning")


# -- server processes --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """A server in its own process, ready once ``GET /health`` answers."""

    def __init__(self, command: list[str], port: int, log: Path, threads: int | None) -> None:
        self.port, self.log = port, log
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1"}
        if threads:  # PyTorch's intra-op threads (its default: one per core)
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        with log.open("w") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{command} exited:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{command} did not answer in 180 s:\n{log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- the clients -------------------------------------------------------------------------------
@dataclass
class Result:
    """One stream: seconds to the first text chunk, completion tokens, seconds to the end,
    and the text."""

    first: float
    tokens: int
    end: float
    text: str


async def stream_completion(port: int, body: bytes, start: float) -> Result:
    """One streaming request over a raw HTTP/1.1 connection, its chunked body parsed as
    server-sent events; times are seconds after ``start``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nConnection: close\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    status = await reader.readline()
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    if b" 200 " not in status or headers.get("transfer-encoding") != "chunked":
        raise RuntimeError(f"{status!r} {headers}: {await reader.read()!r}")
    first, tokens, pending, done, pieces = -1.0, -1, b"", False, []
    while not done:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            break
        pending += await reader.readexactly(size)
        await reader.readexactly(2)
        while b"\n\n" in pending and not done:
            event, pending = pending.split(b"\n\n", 1)
            data = event.removeprefix(b"data: ")
            if data == b"[DONE]":
                done = True
                continue
            chunk = json.loads(data)
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and chunk["choices"][0]["text"]:
                if first < 0:
                    first = time.perf_counter() - start
                pieces.append(chunk["choices"][0]["text"])
    end = time.perf_counter() - start
    writer.close()
    if tokens < 0 or first < 0:
        raise RuntimeError("a stream ended without text or without a usage chunk")
    return Result(first, tokens, end, "".join(pieces))


async def clients(port: int, model: str, count: int, max_tokens: int,
                  prompt: str) -> list[Result]:
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens,
                       "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    start = time.perf_counter()
    return await asyncio.gather(*(stream_completion(port, body, start) for _ in range(count)))


@dataclass
class Point:
    """One server at one client count: the medians over repeats."""

    ttft: float  # seconds
    tokens_per_s: float
    short: int  # streams that ended before max_tokens (end-of-text), over all repeats


def measure(ports: dict[str, int], model: str, counts: list[int], max_tokens: int,
            prompt: str, repeats: int) -> dict[tuple[str, int], Point]:
    """Each client count: the servers take turns, ``repeats`` times."""
    points = {}
    for count in counts:
        ttfts: dict[str, list[float]] = {name: [] for name in ports}
        rates: dict[str, list[float]] = {name: [] for name in ports}
        short = dict.fromkeys(ports, 0)
        for _ in range(repeats):
            for name, port in ports.items():
                results = asyncio.run(clients(port, model, count, max_tokens, prompt))
                ttfts[name].append(statistics.median(r.first for r in results))
                rates[name].append(sum(r.tokens for r in results) / max(r.end for r in results))
                short[name] += sum(r.tokens < max_tokens for r in results)
        for name in ports:
            points[name, count] = Point(statistics.median(ttfts[name]),
                                        statistics.median(rates[name]), short[name])
            print(f"  {name:4} {count:3} clients: TTFT {points[name, count].ttft * 1000:7.0f} ms,"
                  f" {points[name, count].tokens_per_s:8.1f} tokens/s", file=sys.stderr)
    return points


# -- the benchmark -----------------------------------------------------------------------------
def export_random(shape: str, tokenizer_path: Path, out_dir: Path) -> None:
    """A random ``shape`` model with GPT-2's tokenizer, as a Hugging Face GPT-2 directory."""
    import torch

    from scratchgpt.config import get_preset
    from scratchgpt.hub.export import export_hf
    from scratchgpt.model import GPTModel
    from scratchgpt.tokenizers import load_gpt2_tokenizer

    tokenizer = load_gpt2_tokenizer(tokenizer_path)
    torch.manual_seed(0)
    model = GPTModel(get_preset(shape).replace(vocab_size=tokenizer.vocab_size)).eval()
    export_hf(model, tokenizer, out_dir)


def bench_shape(args: argparse.Namespace, shape: str, max_tokens: int,
                work: Path) -> tuple[dict[tuple[str, int], Point], bool]:
    """The points of one model shape, and whether both servers gave the same greedy text."""
    directory = work / shape
    export_random(shape, args.tokenizer, directory)
    ports = {name: free_port() for name in SERVERS}
    commands = {
        "ours": [sys.executable, "-m", "scratchgpt.cli", "serve", "--model", str(directory),
                 "--port", str(ports["ours"]), "--max-concurrency", str(max(args.clients)),
                 "--max-tokens", str(max_tokens)],
        "peer": [sys.executable, __file__, "--serve-peer", str(directory), "--port",
                 str(ports["peer"]), "--peer", args.peer],
    }
    servers = [ServerProcess(commands[name], ports[name], work / f"{shape}-{name}.log",
                             args.threads) for name in SERVERS]
    try:
        texts = [asyncio.run(clients(port, shape, 1, max_tokens, args.prompt))[0].text
                 for port in ports.values()]  # warm-up: first forward passes, imports, caches
        print(f"{shape}: {max_tokens} new tokens per request; the servers' greedy texts are "
              f"{'the same' if texts[0] == texts[1] else 'DIFFERENT'}: {texts[0][:60]!r}",
              file=sys.stderr)
        points = measure(ports, shape, args.clients, max_tokens, args.prompt, args.repeats)
        return points, texts[0] == texts[1]
    finally:
        for server in servers:
            server.stop()


def parse_tokens(specs: list[str]) -> dict[str, int]:
    tokens = dict(DEFAULT_TOKENS)
    for spec in specs:
        shape, _, count = spec.partition("=")
        tokens[shape] = int(count)
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["micro", "gpt2-small"],
                        help="model presets (random weights)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32],
                        help="concurrent streaming clients per point")
    parser.add_argument("--tokens", action="append", default=[], metavar="SHAPE=N",
                        help="new tokens per request (default: micro=64, gpt2-small=16, "
                             "other shapes 32)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--peer", choices=["threads", "lock"], default="threads",
                        help="the peer generates concurrent requests in concurrent threads, "
                             "or one at a time")
    parser.add_argument("--threads", type=int,
                        help="PyTorch threads per server (default: PyTorch's, one per core); "
                             "1 gives steadier figures on a busy machine")
    parser.add_argument("--tokenizer", type=Path, default=ASSETS / "gpt2-tokenizer")
    parser.add_argument("--out", type=Path, help="keep the exported models and logs here")
    parser.add_argument("--serve-peer", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_peer:
        run_peer(args.serve_peer, args.port, args.peer == "lock")
        return

    import torch

    tokens = parse_tokens(args.tokens)
    work = args.out or Path(tempfile.mkdtemp(prefix="bench-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    start = time.perf_counter()
    runs = {shape: bench_shape(args, shape, tokens.get(shape, 32), work) for shape in args.shapes}
    results = {shape: points for shape, (points, _) in runs.items()}
    load_after = os.getloadavg()

    threads = args.threads or torch.get_num_threads()
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__} ({threads} threads per server); peer: "
          f"{'one request at a time' if args.peer == 'lock' else 'a thread per request'}; "
          f"median of {args.repeats}; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after; {time.perf_counter() - start:.0f} s in all\n")
    print("| shape | clients | new tokens each | ours TTFT (ms) | ours tokens/s | "
          "peer TTFT (ms) | peer tokens/s | ours / peer tokens/s | ours / ours at 1 client |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for shape, points in results.items():
        one = points.get(("ours", 1))
        for count in args.clients:
            ours, peer = points["ours", count], points["peer", count]
            scaling = f"{ours.tokens_per_s / one.tokens_per_s:.2f}x" if one else ""
            print(f"| {shape} | {count} | {tokens.get(shape, 32)} | {ours.ttft * 1000:,.0f} | "
                  f"{ours.tokens_per_s:,.1f} | {peer.ttft * 1000:,.0f} | "
                  f"{peer.tokens_per_s:,.1f} | {ours.tokens_per_s / peer.tokens_per_s:.2f}x | "
                  f"{scaling} |")
    short = {(shape, key): p.short for shape, points in results.items()
             for key, p in points.items() if p.short}
    if short:
        print(f"\nstreams that ended at end-of-text before max_tokens: {short}")
    same = [shape for shape, (_, alike) in runs.items() if alike]
    print(f"\nthe two servers' greedy texts are the same for: {', '.join(same) or 'none'}")
    for shape, points in results.items():
        if ("ours", 8) in points and ("ours", 1) in points:
            ours8 = points["ours", 8].tokens_per_s
            scaling = ours8 / points["ours", 1].tokens_per_s
            against = ours8 / points["peer", 8].tokens_per_s
            print(f"{shape}, 8 clients: ours {scaling:.2f}x our 1-client tokens/s (target 3x: "
                  f"{'met' if scaling >= 3 else 'missed'}), {against:.2f}x the peer's "
                  f"(target 2x: {'met' if against >= 2 else 'missed'})")
    print(f"\nmodels and server logs in {work}")


if __name__ == "__main__":
    main()
