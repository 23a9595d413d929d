"""`viz run`: the training curves of several run directories on one figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from scratchgpt.plots import plot_losses
from scratchgpt.viz.runs import plot_runs


def write_run(directory: Path, steps: int, classifier: bool = False) -> list[dict]:
    """A run directory with a ``metrics.jsonl`` of ``steps + 1`` evaluations."""
    records = []
    for step in range(steps + 1):
        record = {"step": step * 10, "tokens": step * 10 * 256,
                  "train_loss": 5.0 / (step + 1), "val_loss": 5.5 / (step + 1), "lr": 1e-3}
        if classifier:
            record |= {"train_accuracy": 1 - 0.5 / (step + 1),
                       "val_accuracy": 0.9 - 0.4 / (step + 1)}
        else:
            record |= {"train_perplexity": math.exp(record["train_loss"]),
                       "val_perplexity": math.exp(record["val_loss"])}
        records.append(record)
    directory.mkdir(parents=True)
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records),
                                             encoding="utf-8")
    return records


def legend(ax) -> list[str]:
    return [text.get_text() for text in ax.get_legend().get_texts()]


def test_language_models_and_a_classifier_on_one_figure(tmp_path):
    pretrain = write_run(tmp_path / "pretrain", 5)
    write_run(tmp_path / "longer", 8)
    write_run(tmp_path / "spam", 3, classifier=True)
    out = tmp_path / "runs.png"
    fig = plot_runs([tmp_path / "pretrain", tmp_path / "longer", tmp_path / "spam"], out)
    assert out.read_bytes().startswith(b"\x89PNG")
    loss, accuracy = fig.axes
    assert len(loss.lines) == 6  # train and validation of each run
    assert [line.get_linestyle() for line in loss.lines[:2]] == ["-", "--"]
    assert list(loss.lines[0].get_xdata()) == [r["tokens"] for r in pretrain]
    assert list(loss.lines[1].get_ydata()) == [r["val_loss"] for r in pretrain]
    assert loss.get_xlabel() == "tokens seen"
    assert legend(loss) == ["pretrain", "longer", "spam", "train", "validation"]
    assert [line.get_label() for line in accuracy.lines] == ["spam train accuracy",
                                                           "spam val accuracy"]
    assert accuracy.lines[0].get_color() == loss.lines[4].get_color()  # one colour per run
    assert [child.get_ylabel() for child in loss.child_axes] == ["perplexity (language models)"]


def test_steps_on_the_x_axis_and_no_accuracy_panel_for_language_models(tmp_path):
    records = write_run(tmp_path / "a", 4)
    out = tmp_path / "steps.png"
    fig = plot_runs([str(tmp_path / "a")], out, x="step")
    assert out.is_file()
    (loss,) = fig.axes
    assert loss.get_xlabel() == "step"
    assert list(loss.lines[0].get_xdata()) == [r["step"] for r in records]
    assert legend(loss) == ["a", "train", "validation"]
    assert [child.get_ylabel() for child in loss.child_axes] == ["perplexity"]


def test_runs_with_the_same_name_are_told_apart(tmp_path):
    write_run(tmp_path / "x" / "run", 2)
    write_run(tmp_path / "y" / "run", 2)
    runs = [tmp_path / "x" / "run", tmp_path / "y" / "run"]
    fig = plot_runs(runs, tmp_path / "out.png")
    assert legend(fig.axes[0])[:2] == [str(run) for run in runs]


def test_one_runs_loss_png_is_still_drawn(tmp_path):
    records = write_run(tmp_path / "spam", 2, classifier=True)
    plot_losses(records, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")


def test_clear_errors(tmp_path):
    write_run(tmp_path / "good", 2)
    (tmp_path / "fresh").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("", encoding="utf-8")
    out = tmp_path / "out.png"
    with pytest.raises(FileNotFoundError, match="missing: no such run directory"):
        plot_runs([tmp_path / "good", tmp_path / "missing"], out)
    with pytest.raises(FileNotFoundError, match="fresh has no metrics.jsonl"):
        plot_runs([tmp_path / "fresh"], out)
    with pytest.raises(ValueError, match="empty/metrics.jsonl holds no evaluation"):
        plot_runs([tmp_path / "empty"], out)
    with pytest.raises(ValueError, match="x must be one of"):
        plot_runs([tmp_path / "good"], out, x="epoch")
    with pytest.raises(ValueError, match="no run directories"):
        plot_runs([], out)
    assert not out.exists()
