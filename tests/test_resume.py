"""Runs that are killed, interrupted or fed bad input resume exactly or fail clearly.

A kill, a Ctrl-C, a file-size limit and output to a pipe are tried on a real process; the
errors, and the resumes after them, run in this process (``pretrain_here``).
"""

from __future__ import annotations

import re
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pretrain_runs import (
    kill_after_step_0,
    pretrain_command,
    pretrain_here,
    read_metrics,
    run_env,
    run_pretrain,
    write_corpus,
)

from scratchgpt.cli import main
from scratchgpt.config_files import load_toml
from scratchgpt.tokenizers import Tokenizer
from scratchgpt.training.checkpoints import load_checkpoint, step_dirs

STEPS = ["--max-steps", "8", "--eval-every", "2", "--drop-rate", "0.1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def uninterrupted(corpus: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "whole"
    done = run_pretrain(corpus, run_dir, cache, *STEPS)
    assert done.returncode == 0, done.stderr
    return run_dir


def _start(corpus: Path, run_dir: Path, cache: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(pretrain_command(corpus, run_dir, *STEPS), env=run_env(cache),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(process: subprocess.Popen[str], run_dir: Path, step: int) -> None:
    deadline = time.monotonic() + 120
    while not any(s >= step for s, _ in step_dirs(run_dir / "checkpoints")):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


def test_sigkill_then_resume_gives_bit_identical_losses(
    corpus: Path, cache: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "killed"
    process = _start(corpus, run_dir, cache)
    _wait_for_checkpoint(process, run_dir, 4)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert read_metrics(run_dir)[-1]["step"] < 8, "the run finished before it was killed"
    resumed = pretrain_here(corpus, run_dir, cache, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    assert read_metrics(run_dir) == read_metrics(uninterrupted)  # exact float equality


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(
    corpus: Path, cache: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "interrupted"
    process = _start(corpus, run_dir, cache)
    _wait_for_checkpoint(process, run_dir, 2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted: saved a checkpoint at step" in stderr
    assert "Traceback" not in stderr
    stopped = max(s for s, _ in step_dirs(run_dir / "checkpoints"))
    assert f"step {stopped}" in stderr
    resumed = pretrain_here(corpus, run_dir, cache, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert read_metrics(run_dir) == read_metrics(uninterrupted)


def test_second_run_into_the_same_directory_refuses(
    corpus: Path, cache: Path, uninterrupted: Path
) -> None:
    again = pretrain_here(corpus, uninterrupted, cache, *STEPS)
    assert again.returncode == 2
    assert "already holds a run; pass --resume" in again.stderr


def test_resume_with_another_model_shape_is_refused(
    corpus: Path, cache: Path, uninterrupted: Path
) -> None:
    other = pretrain_here(corpus, uninterrupted, cache, "--resume", "--n-layers", "3")
    assert other.returncode == 2
    assert "different model shape (n_layers: 2 in the run, 3 now)" in other.stderr


def test_resume_from_a_corrupted_checkpoint_names_it(
    corpus: Path, cache: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "corrupt"
    assert pretrain_here(corpus, run_dir, cache, "--max-steps", "2", "--eval-every", "2",
                         ).returncode == 0
    weights = run_dir / "checkpoints" / "step-00000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    resumed = pretrain_here(corpus, run_dir, cache, "--resume", "--max-steps", "4")
    assert resumed.returncode == 2
    assert f"{weights} is corrupted or truncated" in resumed.stderr


def test_a_checkpoint_that_cannot_be_written_keeps_the_last_good_one(
    corpus: Path, cache: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "too-big"
    assert pretrain_here(corpus, run_dir, cache, "--max-steps", "2", "--eval-every", "2",
                         ).returncode == 0
    good = run_dir / "checkpoints" / "step-00000002"
    weights_size = (good / "model.safetensors").stat().st_size

    def small_files() -> None:  # files may not grow past half a checkpoint: writes fail
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (weights_size // 2, weights_size // 2))

    failed = run_pretrain(corpus, run_dir, cache, "--resume", "--max-steps", "4",
                          preexec_fn=small_files)
    assert failed.returncode == 2, failed.stderr
    assert (f"could not write {run_dir / 'checkpoints' / 'step-00000004' / 'model.safetensors'}"
            in failed.stderr)
    assert f"the last good checkpoint is {good}, intact; fix that, then continue with: " \
           f"scratchgpt pretrain --out {run_dir} --resume" in failed.stderr
    assert load_checkpoint(good).step == 2
    assert [s for s, _ in step_dirs(run_dir / "checkpoints")] == [2]
    assert not list((run_dir / "checkpoints").glob(".*"))


def _copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _sample_steps(run_dir: Path) -> list[int]:
    text = (run_dir / "samples.txt").read_text(encoding="utf-8")
    return [int(step) for step in re.findall(r"^--- step (\d+)$", text, re.MULTILINE)]


def test_a_failed_start_leaves_nothing_and_the_retry_gets_what_it_asked_for(
    corpus: Path, cache: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "retry"
    short = tmp_path / "short.txt"
    short.write_text(corpus.read_text(encoding="utf-8")[:3000], encoding="utf-8")
    too_short = pretrain_here(short, run_dir, cache, "--context-length", "512")
    assert too_short.returncode == 2, too_short.stderr
    assert "shorter than one window" in too_short.stderr  # found after training the tokenizer
    assert not run_dir.exists()
    bad_shape = pretrain_here(corpus, run_dir, cache, "--context-length", "0")
    assert bad_shape.returncode == 2
    assert "--context-length: must be > 0, got 0" in bad_shape.stderr
    assert not run_dir.exists()

    done = run_pretrain(corpus, run_dir, cache, "--tokenizer", "bpe:500", "--max-steps", "2",
                        "--eval-every", "2")
    assert done.returncode == 0, done.stderr
    assert Tokenizer.load(run_dir / "tokenizer.json").vocab_size == 500  # not a stale 300
    assert load_toml(run_dir / "config.toml")["data"]["tokenizer"] == "bpe:500"
    # Under a pipe: plain lines, no \r frames; the text samples print as text, indented.
    assert "\r" not in done.stderr + done.stdout
    lines = done.stdout.splitlines()
    assert lines[0].startswith("step 0: train loss")
    assert lines[1].startswith("  The")
    assert "\\x" not in done.stdout and "\\n" not in done.stdout


def test_killed_before_its_first_checkpoint_a_run_resumed_starts_over(
    corpus: Path, cache: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "killed-early"
    kill_after_step_0(pretrain_command(corpus, run_dir, *STEPS, "--max-steps", "100000",
                                       "--eval-every", "100000"), cache)
    assert not step_dirs(run_dir / "checkpoints")
    resumed = pretrain_here(corpus, run_dir, cache, "--resume", "--max-steps", "8",
                            "--eval-every", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert "holds no checkpoint yet" in resumed.stderr
    assert read_metrics(run_dir) == read_metrics(uninterrupted)  # step 0 too: the same start


def test_resume_says_what_a_run_directory_holds(
    uninterrupted: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for task in ("classify", "instruct"):
        assert main(["finetune", task, "--out", str(uninterrupted), "--resume"]) == 2
        assert (f"{uninterrupted} is a `pretrain` run, not a `finetune {task}` one: resume it "
                f"with `scratchgpt pretrain --out {uninterrupted} --resume`"
                ) in capsys.readouterr().err


def test_resume_with_no_checkpoint_says_so_and_starts_over(
    corpus: Path, cache: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run_dir = _copy_run(uninterrupted, tmp_path / "no-checkpoint")
    shutil.rmtree(run_dir / "checkpoints")  # as a kill before the first checkpoint leaves it
    resumed = pretrain_here(corpus, run_dir, cache, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "holds no checkpoint yet" in resumed.stderr
    assert "starting from the beginning" in resumed.stderr
    assert read_metrics(run_dir) == read_metrics(uninterrupted)  # each step once, same values
    assert _sample_steps(run_dir) == _sample_steps(uninterrupted) == [0, 2, 4, 6, 8]


def test_resume_when_only_best_is_left_continues_from_it(
    corpus: Path, cache: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run_dir = _copy_run(uninterrupted, tmp_path / "only-best")
    for _, step_dir in step_dirs(run_dir / "checkpoints"):
        shutil.rmtree(step_dir)
    best = load_checkpoint(run_dir / "checkpoints" / "best").step
    resumed = pretrain_here(corpus, run_dir, cache, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {run_dir / 'checkpoints' / 'best'} (step {best})" in resumed.stderr
    assert read_metrics(run_dir) == read_metrics(uninterrupted)
    assert _sample_steps(run_dir) == [0, 2, 4, 6, 8]


def _resumable_from_step_6(uninterrupted: Path, run_dir: Path) -> Path:
    """A copy of the finished run as a kill between the checkpoints of steps 6 and 8 leaves
    it: the step-8 records written, the step-8 checkpoint not."""
    _copy_run(uninterrupted, run_dir)
    shutil.rmtree(run_dir / "checkpoints" / "step-00000008")
    if load_checkpoint(run_dir / "checkpoints" / "best").step > 6:
        shutil.rmtree(run_dir / "checkpoints" / "best")
    return run_dir


def test_a_metrics_line_torn_by_a_kill_is_dropped_on_resume(
    corpus: Path, cache: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run_dir = _resumable_from_step_6(uninterrupted, tmp_path / "torn")
    metrics = run_dir / "metrics.jsonl"
    text = metrics.read_text(encoding="utf-8")
    metrics.write_text(text[: len(text) - 40], encoding="utf-8")  # the last line cut short
    resumed = pretrain_here(corpus, run_dir, cache, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{metrics} line 5 was cut short" in resumed.stderr
    assert read_metrics(run_dir) == read_metrics(uninterrupted)
    assert _sample_steps(run_dir) == [0, 2, 4, 6, 8]


def test_a_broken_metrics_line_is_named(
    corpus: Path, cache: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run_dir = _resumable_from_step_6(uninterrupted, tmp_path / "broken")
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = '{"step": 2, "tokens": 128,,}\n'
    metrics.write_text("".join(lines), encoding="utf-8")
    resumed = pretrain_here(corpus, run_dir, cache, "--resume")
    assert resumed.returncode == 2
    assert f"{metrics} line 2: not valid JSON" in resumed.stderr
    assert "Traceback" not in resumed.stderr
