"""A run directory: what a training run leaves behind, the same whatever made it.

::

    RUN_DIR/
        config.toml       the settings, resolved; [resolved_model] is the model that was
                          built, [head] what sits on top of it (see model_tables)
        tokenizer.json    the tokenizer (see docs/formats.md)
        metrics.jsonl     one JSON object per evaluation
        samples.txt       text generated at each evaluation
        loss.png          training and validation loss against tokens seen
        checkpoints/      step-NNNNNNNN/ and best/ (see scratchgpt.training.checkpoints)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scratchgpt.config import ModelConfig
from scratchgpt.config_files import dump_toml, load_toml
from scratchgpt.model import GPTModel
from scratchgpt.tokenizers import Tokenizer
from scratchgpt.training.checkpoints import latest_checkpoint, load_checkpoint, load_weights

CONFIG_FILE = "config.toml"
TOKENIZER_FILE = "tokenizer.json"
RESOLVED_MODEL = "resolved_model"
HEAD = "head"
LANGUAGE_MODEL_HEAD = {"kind": "language_model"}  # next-token logits (runs older than [head])
MODEL_TABLES = (RESOLVED_MODEL, HEAD)
CHECKPOINTS = "checkpoints"


def model_tables(tables: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The tables of ``config.toml`` that fix the model: ``[resolved_model]`` (its
    ``ModelConfig``) and ``[head]`` (``kind = "language_model"``, or a classifier's
    ``num_classes`` and label names)."""
    return {RESOLVED_MODEL: tables[RESOLVED_MODEL], HEAD: tables.get(HEAD, LANGUAGE_MODEL_HEAD)}


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse a directory that cannot take this run: a file, a run already there (unless
    resuming it), or, when resuming, no run at all. Nothing is written."""
    if run_dir.exists() and not run_dir.is_dir():
        raise FileExistsError(f"{run_dir} is a file, not a run directory; choose another --out")
    if (run_dir / CONFIG_FILE).exists() and not resume:
        raise FileExistsError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    if resume and not (run_dir / CONFIG_FILE).exists():
        raise FileNotFoundError(f"--resume: {run_dir} holds no run ({CONFIG_FILE} is missing)")


def start_run_dir(run_dir: Path, tokenizer: Tokenizer, tables: dict[str, dict[str, Any]]) -> None:
    """Create the run directory: the tokenizer, then ``config.toml`` (written last, whole or
    not at all: its presence is what marks a run)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(run_dir / TOKENIZER_FILE)
    temporary = run_dir / f".{CONFIG_FILE}.tmp"
    temporary.write_text(dump_toml(tables), encoding="utf-8")
    temporary.replace(run_dir / CONFIG_FILE)


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / CHECKPOINTS).is_dir()


def load_run(run_dir: str | Path, checkpoint: str = "best") -> tuple[GPTModel, Tokenizer]:
    """The model and tokenizer of a run: its ``best`` checkpoint, or ``latest``, or a
    ``step-NNNNNNNN`` directory name."""
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a run directory ({CONFIG_FILE} and "
                                f"{CHECKPOINTS}/ expected)")
    config = ModelConfig.from_dict(load_toml(run_dir / CONFIG_FILE)[RESOLVED_MODEL],
                                   f"{run_dir / CONFIG_FILE} [{RESOLVED_MODEL}]")
    path = run_dir / CHECKPOINTS / checkpoint
    if checkpoint == "latest" or (checkpoint == "best" and not path.exists()):
        path = latest_checkpoint(run_dir / CHECKPOINTS)
    if path is None or not path.exists():
        raise FileNotFoundError(f"{run_dir} has no checkpoint {checkpoint!r} yet")
    model = GPTModel(config)
    load_weights(model, load_checkpoint(path).weights, path)
    return model.eval(), Tokenizer.load(run_dir / TOKENIZER_FILE)
