"""Every setting is checked in one place, and a bad one is named with where it came from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scratchgpt.cli import main
from scratchgpt.config import ModelConfig
from scratchgpt.pretraining import DataConfig, ModelChoice
from scratchgpt.settings import FRACTION, POSITIVE, Between, SettingError
from scratchgpt.training.config import TrainConfig


@pytest.mark.parametrize(("flags", "message"), [
    (["--lr", "0"], "--lr: must be > 0, got 0.0"),
    (["--lr", "-1"], "--lr: must be > 0, got -1.0"),
    (["--lr", "nan"], "--lr: must be > 0, got nan"),
    (["--min-lr", "0.01"], "--min-lr: must not exceed lr (0.001), got 0.01"),
    (["--lr", "1e-5", "--min-lr", "1e-4"], "--min-lr: must not exceed lr (1e-05), got 0.0001"),
    (["--warmup-steps", "-1"], "--warmup-steps: must be >= 0, got -1"),
    (["--grad-clip", "-1"], "--grad-clip: must be >= 0, got -1.0"),
    (["--max-steps", "0"], "--max-steps: must be > 0, got 0"),
    (["--beta2", "1"], "--beta2: must be in [0, 1), got 1.0"),
    (["--device", "banana"], "--device: must be auto, cpu, cuda, cuda:N or mps, got 'banana'"),
    (["--precision", "fp8"], "--precision: must be one of auto, fp32, bf16, fp16, got 'fp8'"),
    (["--optimizer", "adam2"], "--optimizer: must be one of"),
    (["--context-length", "0"], "--context-length: must be > 0, got 0"),
    (["--n-heads", "5"], "--n-heads: emb_dim (128) must be divisible by n_heads (5)"),
    (["--drop-rate", "1"], "--drop-rate: must be in [0, 1), got 1.0"),
    (["--pos-encoding", "alibi"], "--pos-encoding: must be one of learned, sinusoidal, rope"),
    (["--preset", "banana"], "--preset: must be one of gpt2-small,"),
    (["--val-fraction", "1.5"], "--val-fraction: must be in (0, 1), got 1.5"),
    (["--val-fraction", "0"], "--val-fraction: must be in (0, 1), got 0.0"),
    (["--tokenizer", "bpe:abc"], "--tokenizer: 'bpe:abc' is not bpe:VOCAB_SIZE with a whole"),
    (["--encoding-errors", "ignore"], "--encoding-errors: must be one of strict, replace"),
    (["--sample-temperature", "nan"], "--sample-temperature: must be >= 0, got nan"),
    (["--sample-prompt", ""], "--sample-prompt: must be some text, got ''"),
    (["--stride", "0"], "--stride: must be > 0, got 0"),
])
def test_a_bad_flag_is_named_and_nothing_is_written(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert main(["pretrain", "--out", str(run_dir), *flags]) == 2
    err = capsys.readouterr().err
    assert f"scratchgpt pretrain: error: {message}" in err
    assert "Traceback" not in err
    assert not run_dir.exists()


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("text", "message"), [
    ('[train]\nmax_steps = "20"\n', "[train] max_steps: expected a whole number, got '20' (text)"),
    ("[train]\nlr = 0.0\n", "[train] lr: must be > 0, got 0.0"),
    ('[train]\ncompile = "yes"\n', "[train] compile: expected true or false, got 'yes' (text)"),
    ("[train]\nseed = 1.5\n", "[train] seed: expected a whole number, got 1.5 (a number)"),
    ("[model]\ndrop_rate = 2\n", "[model] drop_rate: must be in [0, 1), got 2.0"),
    ("[model]\nemb_dim = [64]\n", "[model] emb_dim: expected a whole number, got [64] (list)"),
    ("[data]\nval_fraction = true\n", "[data] val_fraction: expected a number, got True"),
    ("train = 5\n", "[train] must be a table of settings, got 5"),
    ("[trian]\nlr = 0.1\n", "unknown table(s) [trian]"),
    ("[train]\nlearning_rate = 0.1\n", "[train]: unknown key(s) learning_rate; known keys:"),
])
def test_a_bad_toml_value_names_the_file_table_and_key(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _toml(tmp_path, text)
    run_dir = tmp_path / "run"
    assert main(["pretrain", "--config", str(config), "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"error: {config}" in err
    assert message in err
    assert "Traceback" not in err
    assert not run_dir.exists()


def test_a_flag_overrides_a_bad_toml_value_and_is_named_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _toml(tmp_path, "[train]\nlr = 0.5\nmin_lr = 0.1\n")
    assert main(["pretrain", "--config", str(config), "--out", str(tmp_path / "r"),
                 "--lr", "0.05"]) == 2
    assert "error: --lr" not in capsys.readouterr().err  # the TOML's min_lr is the culprit
    assert main(["pretrain", "--config", str(config), "--out", str(tmp_path / "r"),
                 "--min-lr", "0.9"]) == 2
    assert "error: --min-lr: must not exceed lr (0.5), got 0.9" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: --device cuda is valid")
def test_a_device_that_is_not_there_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for device in ("cuda", "cuda:3"):
        assert main(["pretrain", "--out", str(tmp_path / "r"), "--device", device]) == 2
        err = capsys.readouterr().err
        assert f"error: device {device!r} is not available" in err
        assert "use --device cpu or auto" in err
        assert "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_out_naming_a_file_is_refused_and_the_file_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "notes.txt"
    existing.write_text("mine", encoding="utf-8")
    assert main(["pretrain", "--out", str(existing)]) == 2
    err = capsys.readouterr().err
    assert f"error: {existing} is a file, not a run directory; choose another --out" in err
    assert "Errno" not in err
    assert existing.read_text(encoding="utf-8") == "mine"


def test_settings_are_checked_from_python_too() -> None:
    with pytest.raises(SettingError, match="lr: must be > 0") as caught:
        TrainConfig(lr=0.0)
    assert caught.value.field == "lr"
    with pytest.raises(SettingError, match="context_length: must be > 0"):
        ModelConfig(context_length=-1)
    with pytest.raises(SettingError, match="context_length: must be > 0"):
        ModelChoice(context_length=0)  # checked by the ModelConfig it resolves to
    with pytest.raises(SettingError, match="tokenizer: 'bpe:' is not"):
        DataConfig(tokenizer="bpe:")


def test_numbers_given_as_whole_numbers_become_floats_and_defaults_follow_lr() -> None:
    config = TrainConfig(lr=1, grad_clip=0)
    assert isinstance(config.lr, float) and isinstance(config.grad_clip, float)
    assert TrainConfig().min_lr == pytest.approx(1e-4)  # the default floor, as it always was
    assert TrainConfig(lr=3e-4).min_lr == pytest.approx(1e-4)
    assert TrainConfig(lr=5e-5).min_lr == pytest.approx(5e-5)  # never above lr
    assert TrainConfig(lr=4e-4, min_lr=4e-4).min_lr == 4e-4  # a constant rate


def test_ranges_describe_themselves() -> None:
    assert str(POSITIVE) == "> 0"
    assert str(FRACTION) == "in (0, 1)"
    assert str(Between(high=1)) == "<= 1"
    assert Between(0, 1).problem(float("inf")) == "must be in [0, 1], got inf"
    assert Between(0, 1).problem(1.0) is None
