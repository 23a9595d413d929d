"""A disk that fills up while a checkpoint is written: a clear error, nothing half-written, and
a run that resumes once there is room again.

The disk is real: a small tmpfs mounted for the test (which needs root, or it is skipped). The
first checkpoint fits; then a ballast file leaves room for the next checkpoint's weights but
not for its optimizer state, so ``torch.save`` fails, as it does on a full disk, with a
RuntimeError from its C++ stream rather than an OSError.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pretrain_runs import pretrain_command, pretrain_here, read_metrics, run_env, write_corpus

from scratchgpt.training.checkpoints import load_checkpoint, step_dirs

DISK_BYTES = 8 << 20  # a tiny run directory holds about 3 MiB
LEFT_FREE = 700 << 10  # room for a checkpoint's weights (480 KiB), not its state (970 KiB)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of ``DISK_BYTES`` mounted for the test, unmounted after it."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small disk to fill")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here (needs root): "
                    f"{mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` with a ballast file until ``leave`` bytes are free; returns the file."""
    ballast = disk / "ballast"
    with ballast.open("wb") as f:
        f.write(bytes(shutil.disk_usage(disk).free - leave))
    return ballast


def test_a_full_disk_names_the_device_and_file_and_the_run_resumes_once_freed(
    small_disk: Path, tmp_path: Path
) -> None:
    corpus = write_corpus(tmp_path / "corpus.txt", chars=20_000)
    cache = tmp_path / "cache"  # the corpus's token file: not on the small disk
    run_dir = small_disk / "run"
    first = pretrain_here(corpus, run_dir, cache, "--max-steps", "2", "--eval-every", "2")
    assert first.returncode == 0, first.stderr
    good = run_dir / "checkpoints" / "step-00000002"

    ballast = fill(small_disk, LEFT_FREE)
    full = pretrain_here(corpus, run_dir, cache, "--resume", "--max-steps", "4",
                         "--eval-every", "2")
    assert full.returncode == 2, full.stderr
    state = run_dir / "checkpoints" / "step-00000004" / "state.pt"
    assert (f"scratchgpt pretrain: error: no space left on tmpfs (mounted at "
            f"{small_disk.resolve()}) writing {state}; the last good checkpoint is {good}, "
            f"intact; free some space, then continue with: scratchgpt pretrain --out "
            f"{run_dir} --resume") in full.stderr
    for noise in ("Traceback", "basic_ios", "inline_container"):
        assert noise not in full.stderr
    assert [s for s, _ in step_dirs(run_dir / "checkpoints")] == [2]
    assert not list((run_dir / "checkpoints").glob(".*"))  # no temporary directory left
    assert load_checkpoint(good).step == 2  # whole: its checksums verify

    ballast.unlink()
    resumed = pretrain_here(corpus, run_dir, cache, "--resume", "--max-steps", "4",
                            "--eval-every", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {good} (step 2)" in resumed.stderr
    assert [m["step"] for m in read_metrics(run_dir)] == [0, 2, 4]
    assert load_checkpoint(run_dir / "checkpoints" / "step-00000004").step == 4


def test_under_torchrun_every_process_stops_when_the_first_cannot_write(
    small_disk: Path, tmp_path: Path
) -> None:
    """DDP: only the first process writes, and every process stops on its failure with the
    error (before, the others were left at the next collective, for torchrun to kill)."""
    corpus = write_corpus(tmp_path / "corpus.txt", chars=20_000)
    cache = tmp_path / "cache"
    run_dir = small_disk / "run"
    first = pretrain_here(corpus, run_dir, cache, "--max-steps", "2", "--eval-every", "2")
    assert first.returncode == 0, first.stderr
    fill(small_disk, LEFT_FREE)
    command = pretrain_command(corpus, run_dir, "--resume", "--max-steps", "4",
                               "--eval-every", "2")
    script = command.index("-m")
    full = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", *command[script:]], env=run_env(cache),
                          capture_output=True, text=True, timeout=120)
    assert full.returncode != 0
    assert full.stderr.count("scratchgpt pretrain: error: ") == 2, full.stderr[-3000:]
    assert "no space left on tmpfs" in full.stderr
    assert "the first process could not write the checkpoint" in full.stderr
    assert [s for s, _ in step_dirs(run_dir / "checkpoints")] == [2]
