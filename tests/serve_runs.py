"""Helpers for tests that run ``scratchgpt serve`` for real: a server process on a free
loopback port, and the answer the library gives for a chat."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pretrain_runs import run_env

from scratchgpt.data.prompt_styles import get_prompt_style
from scratchgpt.generation import generate_text
from scratchgpt.run_dir import load_run

MESSAGES = [{"role": "user", "content": "Name a fruit."}]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``scratchgpt serve`` in another process, until :meth:`stop`."""

    def __init__(self, model: Path, cache: Path, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "scratchgpt.cli", "serve", "--model", str(model), "--port",
             str(self.port), *flags], env=run_env(cache), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.announcement = self.process.stdout.readline()  # printed once it listens
        assert self.url in self.announcement, self.process.stderr.read() if \
            self.process.stderr else ""

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], Any]:
        """Status, headers and parsed JSON body of one HTTP request."""
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers={"Content-Type": "application/json",
                                                  **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, headers, data = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, headers, data = error.code, error.headers, error.read()
        return status, {k.lower(): v for k, v in headers.items()}, json.loads(data)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def expected_answer(run_dir: Path, max_tokens: int, messages: list[dict[str, str]]) -> str:
    model, tokenizer = load_run(run_dir)
    style = get_prompt_style("chatml")
    prompt = tokenizer.encode_ordinary(style.render(messages))
    return "".join(generate_text(model, tokenizer, prompt, max_tokens, stop=style.stop))
