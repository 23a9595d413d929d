"""Helpers for tests that run ``scratchgpt pretrain`` for real, in this or another process."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from scratchgpt.cli import main
from scratchgpt.data.default_corpus import default_documents

# A tiny model that still learns something in a few steps on two CPU cores.
TINY_FLAGS = [
    "--tokenizer", "bpe:300", "--preset", "nano", "--context-length", "32",
    "--batch-size", "4", "--eval-batches", "2", "--sample-tokens", "5", "--warmup-steps", "2",
    "--workers", "1",
]


def write_corpus(path: Path, chars: int = 40_000) -> Path:
    """A small real English corpus (the start of the built-in one) as a text file."""
    text = "\n\n".join(default_documents())[:chars]
    path.write_text(text, encoding="utf-8")
    return path


def pretrain_command(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "scratchgpt.cli", "pretrain", "--data", str(data),
            "--out", str(run_dir), *TINY_FLAGS, *extra]


def run_env(cache: Path) -> dict[str, str]:
    return {**os.environ, "SCRATCHGPT_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}


def run_pretrain(data: Path, run_dir: Path, cache: Path, *extra: str,
                 **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run the real CLI to completion; returns the finished process."""
    return subprocess.run(pretrain_command(data, run_dir, *extra), env=run_env(cache),
                          capture_output=True, text=True, timeout=300, **kwargs)


def run_here(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    """``scratchgpt ARGS`` run in this process (:func:`scratchgpt.cli.main`, which ``python -m
    scratchgpt.cli`` calls) with ``cache`` as ``$SCRATCHGPT_CACHE``, for a test where no process
    boundary is under test (no signal, no resource limit, no terminal): its exit code, stdout
    and stderr as :func:`subprocess.run` gives them, without the cost of starting Python."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(out), redirect_stderr(err):
        patch.setenv("SCRATCHGPT_CACHE", str(cache))
        code = main(args)
    return subprocess.CompletedProcess(["scratchgpt", *args], code, out.getvalue(),
                                       err.getvalue())


def pretrain_here(data: Path, run_dir: Path, cache: Path,
                  *extra: str) -> subprocess.CompletedProcess[str]:
    """:func:`run_pretrain`'s run, in this process (see :func:`run_here`)."""
    return run_here(pretrain_command(data, run_dir, *extra)[3:], cache)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def kill_after_step_0(command: list[str], cache: Path) -> str:
    """Run ``command``, SIGKILL it as soon as it has printed its step-0 evaluation, and return
    what it wrote to stderr."""
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, env=run_env(cache), stdout=subprocess.PIPE,
                                   stderr=stderr, text=True)
        try:
            assert process.stdout is not None
            seen = any(line.startswith("step 0:") for line in process.stdout)
        finally:
            process.kill()
            process.wait()
        stderr.seek(0)
        log = stderr.read()
        assert seen, f"the run never printed its step-0 evaluation:\n{log}"
        return log
