"""The settings every fine-tuning shares: the ``[model]`` table (what to start from, and the
shape of LoRA adapters), the book's training defaults, how a configuration is read (defaults,
then a TOML file, then flags) and the check that a split leaves something to train on. Each
fine-tuning adds its own ``[data]`` table and its ``train`` choice (which weights learn)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from scratchgpt.run_dir import MODEL_TABLES
from scratchgpt.settings import (
    DECAY,
    POSITIVE,
    Parses,
    Sections,
    SettingError,
    check_settings,
    knob,
)
from scratchgpt.tokenizers import bpe_vocab_size

C = TypeVar("C", bound="FinetuneConfig")

# The book's fine-tuning (chapters 6 and 7): AdamW at a constant 5e-5, weight decay 0.1, batch 8.
BOOK_TRAIN_DEFAULTS: dict[str, Any] = {
    "lr": 5e-5, "schedule": "constant", "warmup_steps": 0, "batch_size": 8,
    "weight_decay": 0.1, "eval_every": 50, "eval_batches": 10,
}


def check_split(val_fraction: float, test_fraction: float, items: str) -> None:
    """A ``[data]`` table's split must leave ``items`` ("texts", "records") to train on."""
    if val_fraction + test_fraction >= 1:
        raise SettingError("test_fraction", f"val_fraction + test_fraction must leave {items} "
                                            f"to train on, got {val_fraction} + {test_fraction}")


@dataclass
class FinetuneModel:
    """The ``[model]`` settings every fine-tuning shares: what to start from, and the shape of
    the LoRA adapters if they are what trains. Each fine-tuning adds its ``train`` choice."""

    model: str = knob("gpt2-124M", "what to fine-tune: a run directory of `scratchgpt "
                                   "pretrain`, a downloaded GPT-2 (gpt2-124M, ...), or "
                                   "preset:NAME for a fresh random model (the baseline)")
    tokenizer: str = knob("bpe:2048", "with preset:NAME only: bpe:VOCAB_SIZE, trained on the "
                                      "training texts, or a tokenizer SPEC",
                          Parses(bpe_vocab_size))
    lora_rank: int = knob(8, "rank of the LoRA adapters", POSITIVE)
    lora_alpha: float = knob(16.0, "LoRA scaling: the update is alpha / rank x B A", POSITIVE)
    lora_dropout: float = knob(0.0, "dropout on the LoRA adapters' input", DECAY)

    def __post_init__(self) -> None:
        check_settings(self)

    def lora(self) -> dict[str, Any]:
        """The adapters' shape, as :func:`~scratchgpt.model.trainable.set_trainable` takes it
        and the run's ``[head]`` table records it."""
        return {"lora_rank": self.lora_rank, "lora_alpha": self.lora_alpha,
                "lora_dropout": self.lora_dropout}


class FinetuneConfig(Sections):
    """A fine-tuning's whole configuration (its subclasses are dataclasses of ``data``,
    ``model`` and ``train`` tables), saved as ``RUN_DIR/config.toml``."""

    train_defaults: ClassVar[Mapping[str, Any]] = BOOK_TRAIN_DEFAULTS

    @classmethod
    def from_sources(cls: type[C], path: str | Path | None,
                     overrides: Mapping[str, Mapping[str, Any]]) -> C:
        """The fine-tuning's defaults (:attr:`train_defaults` for ``[train]``), then the TOML
        file (if any: a run's own ``config.toml`` works, its model tables skipped), then
        ``overrides`` (the command line's flags)."""
        return cls.load(path, overrides, ignore=MODEL_TABLES,
                        defaults={"train": cls.train_defaults})
