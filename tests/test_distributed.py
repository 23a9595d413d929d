"""Two processes under torchrun train exactly like one process with the same global batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pretrain_runs import pretrain_command, pretrain_here, read_metrics, run_env, write_corpus

STEPS = ["--max-steps", "4", "--eval-every", "2"]


def _assert_same_losses(a: list[dict], b: list[dict]) -> None:
    assert [m["step"] for m in a] == [m["step"] for m in b] == [0, 2, 4]
    assert [m["tokens"] for m in a] == [m["tokens"] for m in b]
    for x, y in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss"):
            assert x[key] == pytest.approx(y[key], abs=1e-5), (key, x["step"])
    assert a[-1]["train_loss"] < a[0]["train_loss"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict]]:
    tmp = tmp_path_factory.mktemp("ddp")
    corpus, cache = write_corpus(tmp / "corpus.txt"), tmp / "cache"
    done = pretrain_here(corpus, tmp / "single", cache, *STEPS, "--batch-size", "8")
    assert done.returncode == 0, done.stderr
    return corpus, cache, read_metrics(tmp / "single")


def test_torchrun_two_processes_equal_one(
    one_process: tuple[Path, Path, list[dict]], tmp_path: Path
) -> None:
    corpus, cache, single = one_process
    command = pretrain_command(corpus, tmp_path / "ddp", *STEPS, "--batch-size", "4")
    script = command.index("-m")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2", *command[script:]]
    done = subprocess.run(torchrun, env=run_env(cache), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_losses(read_metrics(tmp_path / "ddp"), single)


def test_gradient_accumulation_equals_a_bigger_batch(
    one_process: tuple[Path, Path, list[dict]], tmp_path: Path
) -> None:
    corpus, cache, single = one_process
    done = pretrain_here(corpus, tmp_path / "accum", cache, *STEPS, "--batch-size", "4",
                         "--grad-accum-steps", "2")
    assert done.returncode == 0, done.stderr
    _assert_same_losses(read_metrics(tmp_path / "accum"), single)
