"""Helpers for tests that run ``scratchgpt finetune instruct`` (and other commands) for real."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pretrain_runs import run_env, run_here

# A few steps on a few dozen records: the whole path, quickly.
TINY = ["--batch-size", "4", "--eval-every", "4", "--eval-batches", "1", "--max-new-tokens", "8",
        "--epochs", "0", "--max-steps", "4"]


def cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    """Run ``scratchgpt ARGS`` in another process to completion."""
    return subprocess.run([sys.executable, "-m", "scratchgpt.cli", *args], env=run_env(cache),
                          capture_output=True, text=True, timeout=300)


def cli_here(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    """:func:`cli`'s command run in this process, where no process boundary is under test
    (:func:`pretrain_runs.run_here`)."""
    return run_here(list(args), cache)


def finetune_instruct(records: Path, model: Path, run_dir: Path, *extra: str,
                      cache: Path) -> subprocess.CompletedProcess[str]:
    """``scratchgpt finetune instruct`` with :data:`TINY`'s settings, in this process."""
    return cli_here("finetune", "instruct", "--data", str(records), "--model", str(model),
                    "--out", str(run_dir), *TINY, *extra, cache=cache)
