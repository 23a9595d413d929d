"""The training loop's pieces: schedule, optimizers, checkpoints, and a whole tiny run."""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pretrain_runs import pretrain_command, run_env, write_corpus

from scratchgpt.cli import main
from scratchgpt.config import get_preset
from scratchgpt.config_files import load_toml
from scratchgpt.generation import generate_text
from scratchgpt.model import GPTModel
from scratchgpt.pretraining import load_config, pretrain
from scratchgpt.progress import LogProgress, progress_bar
from scratchgpt.run_dir import load_run
from scratchgpt.training.checkpoints import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    resume_checkpoint,
    save_checkpoint,
    step_dirs,
)
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.language_modeling import LanguageModelingTask
from scratchgpt.training.optimizers import OPTIMIZERS, build_optimizer
from scratchgpt.training.schedule import lr_at
from scratchgpt.training.trainer import Trainer


def test_schedule_warms_up_then_decays_to_the_floor() -> None:
    lrs = [lr_at(s, max_lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=100) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10], strict=False))
    decay = lrs[10:100]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    assert lrs[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[100:] == [0.1] * 20


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_lowers_the_loss(name: str) -> None:
    torch.manual_seed(0)
    model = GPTModel(get_preset("nano").replace(vocab_size=50, context_length=16))
    tokens = torch.randint(0, 50, (8, 17))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    lr = {"sgd": 0.5, "muon": 0.02}.get(name, 3e-3)
    optimizer = build_optimizer(name, model, lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses


def test_weight_decay_spares_biases_and_norms() -> None:
    model = GPTModel(get_preset("nano").replace(vocab_size=50))
    optimizer = build_optimizer("adamw", model, lr=1e-3, weight_decay=0.1)
    decayed, spared = optimizer.optimizers[0].param_groups
    assert decayed["weight_decay"] == 0.1 and spared["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"])
    assert all(p.dim() == 1 for p in spared["params"])


def _weights(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((4, 4), value), "b": torch.zeros(4)}


def test_checkpoints_keep_the_last_k_and_the_best(tmp_path: Path) -> None:
    for step, val in [(1, 3.0), (2, 2.0), (3, 2.5), (4, 2.7)]:
        save_checkpoint(tmp_path, step=step, weights=_weights(step), state={"step": step},
                        val_loss=val, keep_last=2, is_best=val == 2.0)
    assert [s for s, _ in step_dirs(tmp_path)] == [3, 4]
    best = load_checkpoint(tmp_path / "best")
    assert best.step == 2 and best.val_loss == 2.0
    assert torch.equal(best.weights["w"], torch.full((4, 4), 2.0))
    latest = load_checkpoint(latest_checkpoint(tmp_path))
    assert latest.step == 4 and latest.state == {"step": 4}
    assert not list(tmp_path.glob(".*")), "temporary directories were left behind"


def test_corrupted_and_truncated_checkpoints_are_named(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, step=1, weights=_weights(1), state={"step": 1},
                           val_loss=None, keep_last=3, is_best=False)
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors is corrupted or truncated"):
        load_checkpoint(path)
    weights.write_bytes(data)
    state = path / "state.pt"
    state.write_bytes(state.read_bytes()[:-1] + b"x")
    with pytest.raises(CheckpointError, match="state.pt is corrupted"):
        load_checkpoint(path)
    (path / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("meta", [
    {"step": 1, "val_loss": None},  # no checksums at all
    {"step": 1, "val_loss": None, "sha256": {}},
    {"step": 1, "val_loss": None, "sha256": {"model.safetensors": "0" * 64}},  # one missing
])
def test_a_checkpoint_without_checksums_is_refused(tmp_path: Path, meta: dict) -> None:
    path = save_checkpoint(tmp_path, step=1, weights=_weights(1), state={"step": 1},
                           val_loss=None, keep_last=3, is_best=False)
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # a flipped weight byte, which only a checksum can catch
    weights.write_bytes(bytes(data))
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"meta\.json lists no sha256 for the weights "
                                              r"and state\.pt, so the checkpoint cannot be "
                                              "verified"):
        load_checkpoint(path)


def test_resume_point_is_the_newest_of_the_steps_and_best(tmp_path: Path) -> None:
    assert resume_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path, step=2, weights=_weights(2), state={}, val_loss=1.0, keep_last=5,
                    is_best=True)
    save_checkpoint(tmp_path, step=4, weights=_weights(4), state={}, val_loss=2.0, keep_last=5,
                    is_best=False)
    assert resume_checkpoint(tmp_path) == tmp_path / "step-00000004"
    shutil.rmtree(tmp_path / "step-00000004")
    assert resume_checkpoint(tmp_path) == tmp_path / "step-00000002"  # a tie: the step one
    shutil.rmtree(tmp_path / "step-00000002")
    assert resume_checkpoint(tmp_path) == tmp_path / "best"  # only best is left


def test_progress_in_a_log_is_whole_lines_without_repeats() -> None:
    log = io.StringIO()
    with LogProgress(total=50, file=log, unit="step", interval=3600) as bar:
        for _ in range(50):
            bar.update(1)
            bar.set_postfix(loss="1.0")  # tqdm redraws on each postfix: a log must not
        LogProgress.write("step 50: evaluated", file=log)
    lines = log.getvalue().split("\n")
    assert "\r" not in log.getvalue()
    assert lines[-1] == ""  # ends with a newline, and no blank line
    assert [line.split("|")[0].strip() for line in lines[:-1] if "|" in line] == ["0%", "100%"]
    assert lines[-2] == "step 50: evaluated"

    stopped = io.StringIO()
    with LogProgress(total=50, file=stopped, interval=3600) as bar:
        bar.update(20)  # Ctrl-C: the bar closes early and says where it stopped, once
    assert [line.split("|")[0].strip() for line in stopped.getvalue().splitlines()] == [
        "0%", "40%"]
    assert isinstance(progress_bar(total=3, file=io.StringIO()), LogProgress)


def test_a_failed_write_leaves_the_last_good_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, step=1, weights=_weights(1), state={"step": 1}, val_loss=None,
                    keep_last=1, is_best=False)
    with pytest.raises(Exception):  # noqa: B017 - anything may fail; what matters is below
        save_checkpoint(tmp_path, step=2, weights={"w": "not a tensor"}, state={},
                        val_loss=None, keep_last=1, is_best=False)
    assert [s for s, _ in step_dirs(tmp_path)] == [1]
    assert load_checkpoint(tmp_path / "step-00000001").step == 1
    assert not list(tmp_path.glob(".*"))


def test_the_book_recipe_resolves_to_gpt2_small_with_a_256_context() -> None:
    config = load_config(Path(__file__).parent.parent / "configs" / "book-ch5.toml", {})
    model = config.model.resolve(vocab_size=50257)
    assert model == get_preset("gpt2-small").replace(
        context_length=256, drop_rate=0.1, qkv_bias=False, tie_weights=False, init="pytorch"
    )
    assert (config.train.lr, config.train.weight_decay, config.train.batch_size) == (4e-4, 0.1, 2)


def test_unknown_config_keys_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlearning_rate = 0.1\n")
    with pytest.raises(ValueError, match=r"bad.toml \[train\]: unknown key\(s\) learning_rate"):
        load_config(bad, {})
    bad.write_text("[train\n")
    with pytest.raises(ValueError, match="bad.toml: invalid TOML"):
        load_config(bad, {})


def test_a_tiny_pretraining_run_leaves_a_complete_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_corpus(tmp_path / "corpus.txt")
    config = load_config(None, {
        "data": {"data": str(data), "tokenizer": "bpe:300", "sample_tokens": 5},
        "model": {"preset": "nano", "context_length": 32},
        "train": {"max_steps": 4, "eval_every": 2, "batch_size": 4, "eval_batches": 2,
                  "warmup_steps": 2},
    })
    run = tmp_path / "run"
    result = pretrain(config, run, show_progress=False, cache_dir=tmp_path / "cache")
    assert result.step == 4 and not result.interrupted
    for name in ("config.toml", "tokenizer.json", "metrics.jsonl", "samples.txt", "loss.png"):
        assert (run / name).is_file(), name
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 2, 4]
    assert {"step", "tokens", "train_loss", "val_loss", "lr"} <= metrics[-1].keys()
    assert metrics[1]["tokens"] == 2 * 4 * 32
    assert metrics[0]["val_loss"] == pytest.approx(math.log(300), abs=0.5)
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert (run / "samples.txt").read_text().count("--- step") == 3
    assert [s for s, _ in step_dirs(run / "checkpoints")] == [2, 4]
    assert (run / "checkpoints" / "best" / "model.safetensors").is_file()
    with pytest.raises(FileExistsError, match="pass --resume"):
        pretrain(config, run, show_progress=False, cache_dir=tmp_path / "cache")

    model, tokenizer = load_run(run)
    assert model.config.context_length == 32 and tokenizer.vocab_size == 300
    capsys.readouterr()
    assert main(["generate", "--model", str(run), "--prompt", "The", "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    expected = "".join(generate_text(model, tokenizer, "The", max_new_tokens=5))
    assert out == "The" + expected + "\n"


# -- the Trainer's knobs, on a tiny task --------------------------------------------------------
def _tiny_trainer(tmp_path: Path, **train: object) -> Trainer:
    torch.manual_seed(0)
    tokens = np.arange(2000) % 50  # each next token follows from the last: quick to learn
    task = LanguageModelingTask(tokens[:1800], tokens[1800:], context_length=16, batch_size=4)
    model = GPTModel(get_preset("nano").replace(vocab_size=50, context_length=16))
    config = TrainConfig(**{"max_steps": 10, "warmup_steps": 0, "device": "cpu", **train})
    return Trainer(model, task, config, tmp_path, show_progress=False)


def test_gradients_are_clipped_to_the_max_norm(tmp_path: Path) -> None:
    # Plain SGD moves the weights by lr x gradient: with lr 1 the step *is* the clipped gradient.
    trainer = _tiny_trainer(tmp_path, optimizer="sgd", momentum=0.0, weight_decay=0.0, lr=1.0,
                            min_lr=1.0, grad_clip=0.01)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_step()
    step = torch.cat([(p.detach() - b).flatten()
                      for p, b in zip(trainer.model.parameters(), before, strict=True)])
    assert step.norm().item() == pytest.approx(0.01, rel=1e-3)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_cpu(tmp_path: Path, precision: str) -> None:
    # The CUDA recipe (autocast; fp16 with a gradient scaler) runs on the CPU too, slowly.
    trainer = _tiny_trainer(tmp_path, precision=precision, lr=3e-3)
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    losses = [trainer.train_step().item() for _ in range(10)]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights


def test_compiled_training_matches_eager(tmp_path: Path) -> None:
    eager, compiled = (_tiny_trainer(tmp_path / str(c), compile=c) for c in (False, True))
    for _ in range(3):
        assert compiled.train_step().item() == pytest.approx(eager.train_step().item(), abs=1e-4)


def test_threads_reach_pytorch_and_the_progress_line_shows_tokens_per_second(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = write_corpus(tmp_path / "corpus.txt", chars=20_000)
    run_dir = tmp_path / "run"
    threads = torch.get_num_threads() + 1  # not what PyTorch would choose
    inside = ("import sys, torch; from scratchgpt.cli import main; code = main(sys.argv[1:]); "
              "print('threads', torch.get_num_threads()); sys.exit(code)")
    command = [sys.executable, "-c", inside,
               *pretrain_command(corpus, run_dir, "--max-steps", "2", "--eval-every", "2",
                                 "--threads", str(threads))[3:]]
    done = subprocess.run(command, env=run_env(tmp_path / "cache"), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"threads {threads}"
    assert load_toml(run_dir / "config.toml")["train"]["threads"] == threads
    final = [line for line in done.stderr.splitlines() if line.startswith("100%")][-1]
    assert re.search(r"tok/s=[\d,]+", final), final

    assert main(["pretrain", "--threads", "0", "--out", str(tmp_path / "none")]) == 2
    assert "--threads: must be > 0, got 0" in capsys.readouterr().err
