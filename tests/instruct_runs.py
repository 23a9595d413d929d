"""Helpers for tests that run ``scratchgpt finetune instruct`` (and other commands) for real."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pretrain_runs import run_env

# A few steps on a few dozen records: the whole path, quickly.
TINY = ["--batch-size", "4", "--eval-every", "4", "--eval-batches", "1", "--max-new-tokens", "8",
        "--epochs", "0", "--max-steps", "4"]


def cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    """Run ``scratchgpt ARGS`` in another process to completion."""
    return subprocess.run([sys.executable, "-m", "scratchgpt.cli", *args], env=run_env(cache),
                          capture_output=True, text=True, timeout=300)


def finetune_instruct(records: Path, model: Path, run_dir: Path, *extra: str,
                      cache: Path) -> subprocess.CompletedProcess[str]:
    return cli("finetune", "instruct", "--data", str(records), "--model", str(model),
               "--out", str(run_dir), *TINY, *extra, cache=cache)
