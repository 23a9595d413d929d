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
        split/            a fine-tuning's data split (see scratchgpt.data.splits)
        template/         a run tuned in its model's own chat template: that template's files
        eval.json, confusion.png, errors.jsonl   a classifier's test (scratchgpt.evaluation)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from scratchgpt.config import ModelConfig
from scratchgpt.config_files import dump_toml, load_toml
from scratchgpt.data.chat_templates import copy_usage_files
from scratchgpt.data.prompt_styles import TEMPLATE
from scratchgpt.model import GPTClassifier, GPTModel
from scratchgpt.model.lora import apply_lora, merge_lora
from scratchgpt.tokenizers import Tokenizer
from scratchgpt.training.checkpoints import latest_checkpoint, load_checkpoint, load_weights

CONFIG_FILE = "config.toml"
TOKENIZER_FILE = "tokenizer.json"
RESOLVED_MODEL = "resolved_model"
HEAD = "head"
LANGUAGE_MODEL_HEAD = {"kind": "language_model"}  # next-token logits (runs older than [head])
MODEL_TABLES = (RESOLVED_MODEL, HEAD)
CHECKPOINTS = "checkpoints"
SPLIT_DIR = "split"  # a fine-tuning's train/val/test texts (scratchgpt.data.splits)
TEMPLATE_DIR = "template"  # the chat template a run was instruction-tuned in, and its files


def model_tables(tables: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The tables of ``config.toml`` that fix the model: ``[resolved_model]`` (its
    ``ModelConfig``) and ``[head]`` (``kind = "language_model"``, or a classifier's
    ``num_classes`` and label names)."""
    return {RESOLVED_MODEL: tables[RESOLVED_MODEL], HEAD: tables.get(HEAD, LANGUAGE_MODEL_HEAD)}


def run_command(tables: dict[str, Any]) -> str:
    """The command that made a run, read from its ``config.toml`` tables: ``finetune classify``
    (a classifier head), ``finetune dpo`` (a language model with a prompt style and a DPO
    ``beta``), ``finetune instruct`` (one with a prompt style) or ``pretrain``."""
    head = tables.get(HEAD, LANGUAGE_MODEL_HEAD)
    if head.get("kind") == "classifier":
        return "finetune classify"
    if "prompt_style" not in head:
        return "pretrain"
    return "finetune dpo" if "beta" in tables.get("model", {}) else "finetune instruct"


def check_run_dir(run_dir: Path, command: str, resume: bool) -> None:
    """Refuse a directory that cannot take a run of ``command`` (``pretrain``, ``finetune
    classify``...): a file, a run already there (unless resuming it), or, when resuming, no run
    at all or a run of another command. Each refusal says what to do. Nothing is written."""
    if run_dir.exists() and not run_dir.is_dir():
        raise FileExistsError(f"{run_dir} is a file, not a run directory; choose another --out")
    config = run_dir / CONFIG_FILE
    if config.exists() and not resume:
        raise FileExistsError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    if not resume:
        return
    start = f"start one with `scratchgpt {command} --out {run_dir}` (without --resume)"
    if not run_dir.exists():
        raise FileNotFoundError(f"--resume: the run directory {run_dir} does not exist; {start}")
    if not config.exists():
        raise FileNotFoundError(f"--resume: {run_dir} holds no run ({CONFIG_FILE} is missing); "
                                f"{start}")
    made_by = run_command(load_toml(config))
    if made_by != command:
        raise ValueError(f"{run_dir} is a `{made_by}` run, not a `{command}` one: resume it "
                         f"with `scratchgpt {made_by} --out {run_dir} --resume`")


def start_run_dir(run_dir: Path, tokenizer: Tokenizer, tables: dict[str, dict[str, Any]],
                  write: Callable[[Path], None] | None = None) -> None:
    """Create the run directory: the tokenizer, what ``write`` writes (a fine-tuning's data
    split), then ``config.toml`` (last, whole or not at all: its presence marks a run)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(run_dir / TOKENIZER_FILE)
    if write is not None:
        write(run_dir)
    write_whole(run_dir / CONFIG_FILE, dump_toml(tables))


def write_whole(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: into a temporary file beside it, then
    renamed into place, so a crash never leaves half a file where a reader looks."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / CHECKPOINTS).is_dir()


def build_model(tables: dict[str, Any], source: str) -> nn.Module:
    """The model a run's ``config.toml`` tables describe, with fresh weights: a
    :class:`GPTModel` (``[head] kind = "language_model"``), or a :class:`GPTClassifier` for
    ``kind = "classifier"``, with the LoRA adapters it trained where it trained them."""
    tables = model_tables(tables)
    config = ModelConfig.from_dict(tables[RESOLVED_MODEL], f"{source} [{RESOLVED_MODEL}]")
    head = tables[HEAD]
    if head.get("kind") == "language_model":
        model: nn.Module = GPTModel(config)
        backbone = model
    elif head.get("kind") == "classifier":
        model = GPTClassifier(config, len(head["labels"]), head["pooling"])
        backbone = model.backbone
    else:
        raise ValueError(f"{source} [{HEAD}]: unknown kind {head.get('kind')!r}; expected "
                         "language_model or classifier")
    if head.get("trainable") == "lora":
        apply_lora(backbone, head["lora_rank"], head["lora_alpha"], head["lora_dropout"],
                   head.get("lora_targets", "all"))
    return model


def run_prompt_style(run_dir: str | Path) -> str | None:
    """The prompt style a run was instruction-tuned with (``[head] prompt_style``: ``alpaca``,
    ``phi3``, ``chatml``, or ``template``, its model's own chat template, kept in
    :func:`run_template_dir`), or None for a base model: ``chat``, ``generate`` and the server
    format prompts with it unasked."""
    tables = model_tables(load_toml(Path(run_dir) / CONFIG_FILE))
    return tables[HEAD].get("prompt_style")


def save_run_template(source_dir: Path, run_dir: Path) -> None:
    """Keep the chat template a run is instruction-tuned in: copy the files of ``source_dir``
    (a Hugging Face directory, or a run's :data:`TEMPLATE_DIR`) that hold the template, its
    special tokens and the model's end-of-turn ids
    (:data:`~scratchgpt.data.chat_templates.USAGE_FILES`), as they are, into
    ``RUN_DIR/template/``. A template directory reads as the model's own: the run is prompted,
    stops and exports as the model it came from."""
    (run_dir / TEMPLATE_DIR).mkdir(parents=True, exist_ok=True)
    copy_usage_files(source_dir, run_dir / TEMPLATE_DIR)


def run_template_dir(run_dir: str | Path) -> Path | None:
    """The directory holding the chat template of a run tuned in it (``prompt_style =
    "template"``), which :func:`~scratchgpt.data.chat_templates.read_chat_template` and
    :func:`~scratchgpt.data.chat_templates.end_of_turn_ids` read as a model's; None for any
    other run."""
    run_dir = Path(run_dir)
    if run_prompt_style(run_dir) != TEMPLATE:
        return None
    directory = run_dir / TEMPLATE_DIR
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{run_dir} was instruction-tuned in its model's chat template ([{HEAD}] "
            f'prompt_style = "{TEMPLATE}") but {directory} is missing: copy the chat template '
            "files of the model it was tuned from (tokenizer_config.json, chat_template.jinja, "
            "generation_config.json) into it"
        )
    return directory


def load_run(run_dir: str | Path, checkpoint: str = "best") -> tuple[nn.Module, Tokenizer]:
    """The model (in eval mode, LoRA adapters merged) and tokenizer of a run: its ``best``
    checkpoint, or ``latest``, or a ``step-NNNNNNNN`` directory name. The model is a
    :class:`GPTModel` or, for a classifier run, a :class:`GPTClassifier`."""
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a run directory ({CONFIG_FILE} and "
                                f"{CHECKPOINTS}/ expected)")
    model = build_model(load_toml(run_dir / CONFIG_FILE), str(run_dir / CONFIG_FILE))
    path = run_dir / CHECKPOINTS / checkpoint
    if checkpoint == "latest" or (checkpoint == "best" and not path.exists()):
        path = latest_checkpoint(run_dir / CHECKPOINTS)
    if path is None or not path.exists():
        raise FileNotFoundError(f"{run_dir} has no checkpoint {checkpoint!r} yet")
    load_weights(model, load_checkpoint(path).weights, path)
    merge_lora(model)
    return model.eval(), Tokenizer.load(run_dir / TOKENIZER_FILE)
