"""Benchmark the command line's start-up: help and argument errors, against ``python -c pass``.

``scratchgpt --help``, a verb's ``--help`` and an argument error must answer without
importing PyTorch (see :mod:`scratchgpt.cli`). Each command below runs in a fresh process,
the commands taking turns (``bench/timing.py``); the table gives the median wall time, its
ratio to ``python -c pass`` (the interpreter's own start-up, the floor), the time above that
floor, and the peak resident memory of the process (``ru_maxrss`` from ``wait4``; this
parent imports nothing big, so it does not lift the children's figure). ``python -c "import
torch"`` is there for reference: what every help used to cost.

Target: every help and argument error under 0.5 s.

    python bench/bench_startup.py               # median of 7
    python bench/bench_startup.py --repeats 15
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

from timing import median_seconds

TARGET_SECONDS = 0.5


def scratchgpt_command() -> list[str]:
    """The installed ``scratchgpt`` script, run by this interpreter (not through a shim such as
    pyenv's, which adds its own start-up); ``python -m scratchgpt.cli`` if there is none."""
    script = Path(sysconfig.get_path("scripts")) / "scratchgpt"
    return [sys.executable, str(script)] if script.exists() else [sys.executable, "-m",
                                                                 "scratchgpt.cli"]


def contenders() -> list[tuple[str, list[str], int]]:
    """(label, command line, expected exit code) for each command timed."""
    cli = scratchgpt_command()
    return [
        ("python -c pass", [sys.executable, "-c", "pass"], 0),
        ("scratchgpt --help", [*cli, "--help"], 0),
        ("scratchgpt pretrain --help", [*cli, "pretrain", "--help"], 0),
        ("scratchgpt serve --help", [*cli, "serve", "--help"], 0),
        ("scratchgpt finetune classify --help", [*cli, "finetune", "classify", "--help"], 0),
        ("scratchgpt pretrain --lr notanumber (error)", [*cli, "pretrain", "--lr",
                                                           "notanumber"], 2),
        ("python -c \"import torch\" (reference)", [sys.executable, "-c", "import torch"], 0),
    ]


def runner(argv: list[str], code: int, peaks: list[int]) -> Callable[[], None]:
    """A function that runs ``argv`` once, checks its exit code and records its peak RSS."""

    def run() -> None:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != code:
            raise RuntimeError(f"{' '.join(argv)} exited with {process.returncode}, not {code}")
        peaks.append(usage.ru_maxrss * 1024)  # KiB on Linux

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs of each command (7)")
    args = parser.parse_args()

    commands = contenders()
    peaks: list[list[int]] = [[] for _ in commands]
    fns = [runner(argv, code, peak) for (_, argv, code), peak in zip(commands, peaks,
                                                                       strict=True)]
    seconds = median_seconds(fns, args.repeats, warmup=1)

    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; `{' '.join(scratchgpt_command())}` is "
          f"scratchgpt. Median of {args.repeats}, fresh process each.\n")
    print("| command | seconds | vs python -c pass | above it | peak RSS |")
    print("|---|---:|---:|---:|---:|")
    floor = seconds[0]
    for (label, _, _), median, peak in zip(commands, seconds, peaks, strict=True):
        print(f"| `{label}` | {median:.3f} | {median / floor:.1f}x | {median - floor:+.3f} | "
              f"{sorted(peak)[len(peak) // 2] / 2**20:.0f} MB |")
    cli_seconds = [s for (label, _, _), s in zip(commands, seconds, strict=True)
                   if label.startswith("scratchgpt")]
    slowest = max(cli_seconds)
    verdict = "met" if slowest < TARGET_SECONDS else "NOT met"
    print(f"\nTarget: every help and argument error under {TARGET_SECONDS} s: **{verdict}** "
          f"(slowest {slowest:.3f} s).")


if __name__ == "__main__":
    main()
