"""GPT-2, Llama 3, Qwen3 and Gemma 3 side by side: the same size, the same tokens, the same time.

Each architecture (``scratchgpt pretrain --arch``) is trained from scratch at one size preset
(``--preset``, micro: about 1M parameters each, within 7% of one another), on the built-in
corpus with the same tokenizer, batches, learning-rate schedule and seed, for ``--steps``
optimizer steps. The runs go one after another, each a real ``scratchgpt pretrain`` process;
each evaluation line it prints is timestamped as it arrives, so the table gives the validation
loss both after the same steps (the same tokens) and after the same wall time (the time the
fastest run took for all its steps: the others' last evaluation by then). ``scratchgpt viz
run`` draws the curves.

    python bench/bench_architectures.py                      # micro, 300 steps
    python bench/bench_architectures.py --steps 1000 --out-dir runs/architectures
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ARCHITECTURES = ("gpt2", "llama3", "qwen3", "gemma3")
EVALUATION = re.compile(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)")


def train(arch: str, run_dir: Path, args: argparse.Namespace) -> list[tuple[float, int, float]]:
    """Run ``scratchgpt pretrain --arch arch``; return (seconds, step, val loss) per evaluation,
    the seconds counted from the step-0 evaluation (after the tokenizer and data are ready)."""
    command = [sys.executable, "-m", "scratchgpt.cli", "pretrain", "--arch", arch,
               "--preset", args.preset, "--max-steps", str(args.steps),
               "--eval-every", str(args.eval_every), "--out", str(run_dir), "--seed", "1234"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)
    assert process.stdout is not None
    points: list[tuple[float, int, float]] = []
    start = None
    for line in process.stdout:
        match = EVALUATION.search(line)
        if match:
            now = time.perf_counter()
            start = now if start is None else start
            points.append((now - start, int(match.group(1)), float(match.group(3))))
    if process.wait():
        raise RuntimeError(f"{' '.join(command)} failed")
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="micro")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--out-dir", type=Path, default=Path("runs/architectures"))
    parser.add_argument("--picture", type=Path, default=Path("bench/architectures.png"))
    args = parser.parse_args()

    from scratchgpt.config import ModelConfig
    from scratchgpt.config_files import load_toml
    from scratchgpt.model import GPTModel

    curves = {}
    for arch in ARCHITECTURES:
        curves[arch] = train(arch, args.out_dir / arch, args)
    same_time = min(points[-1][0] for points in curves.values())
    subprocess.run([sys.executable, "-m", "scratchgpt.cli", "viz", "run", "--x", "step",
                    "--out", str(args.picture),
                    *(str(args.out_dir / arch) for arch in ARCHITECTURES)], check=True)

    print(f"{args.preset}, {args.steps} steps on the built-in corpus; validation loss after "
          f"the same steps and after the same wall time ({same_time:.0f} s, the fastest "
          f"run's); curves in {args.picture}\n")
    print("| architecture | parameters | s / step | val loss at step "
          f"{args.steps} | val loss at {same_time:.0f} s (its step) |")
    print("|---|---:|---:|---:|---:|")
    for arch, points in curves.items():
        resolved = load_toml(args.out_dir / arch / "config.toml")["resolved_model"]
        params = GPTModel(ModelConfig.from_dict(resolved)).num_parameters()
        seconds, last_step, last_loss = points[-1]
        at_time = [p for p in points if p[0] <= same_time][-1]
        print(f"| {arch} | {params:,} | {seconds / last_step:.3f} | {last_loss:.3f} | "
              f"{at_time[2]:.3f} (step {at_time[1]}) |")


if __name__ == "__main__":
    main()
