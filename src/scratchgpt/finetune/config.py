"""The settings of fine-tuning. What every fine-tuning shares: the ``[model]`` table (what to
start from, and the shape of LoRA adapters), the book's training defaults, how a
configuration is read (defaults, then a TOML file, then flags) and the check that a split
leaves something to train on. Then each fine-tuning's own ``[data]`` table and ``train``
choice (which weights learn): :class:`ClassifyConfig` for :mod:`.classification`,
:class:`InstructConfig` for :mod:`.instruction`, :class:`DPOConfig` for
:mod:`.preference`.

Settings only, without PyTorch, so that ``scratchgpt finetune TASK --help`` lists them at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from scratchgpt.data.prompt_styles import PROMPT_STYLES, TEMPLATE
from scratchgpt.settings import (
    DECAY,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    Between,
    Matches,
    OneOf,
    Parses,
    Sections,
    SettingError,
    check_settings,
    knob,
)
from scratchgpt.tokenizers import bpe_vocab_size
from scratchgpt.training.config import TrainConfig

C = TypeVar("C", bound="FinetuneConfig")

# The book's fine-tuning (chapters 6 and 7): AdamW at a constant 5e-5, weight decay 0.1, batch 8.
BOOK_TRAIN_DEFAULTS: dict[str, Any] = {
    "lr": 5e-5, "schedule": "constant", "warmup_steps": 0, "batch_size": 8,
    "weight_decay": 0.1, "eval_every": 50, "eval_batches": 10,
}


def split_fractions(data: ClassifyData | InstructData | DPOData) -> tuple[float, float, float]:
    """The shares of a ``[data]`` table's train, validation and test splits."""
    return 1 - data.val_fraction - data.test_fraction, data.val_fraction, data.test_fraction


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
    lora_targets: str = knob("all", "which projections of each block get adapters: all, or "
                                    "some of q,k,v,o,gate,up,down (Llama, Qwen3, Gemma 3's "
                                    "q_proj ... down_proj) or qkv,o,up,down (GPT-2's)",
                             Matches(r"all|[a-z]+(,[a-z]+)*",
                                     "all, or names separated by commas: q,v"))

    def __post_init__(self) -> None:
        check_settings(self)

    def lora(self) -> dict[str, Any]:
        """The adapters' shape, as :func:`~scratchgpt.model.trainable.set_trainable` takes it
        and the run's ``[head]`` table records it."""
        return {"lora_rank": self.lora_rank, "lora_alpha": self.lora_alpha,
                "lora_dropout": self.lora_dropout, "lora_targets": self.lora_targets}


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
        from scratchgpt.run_dir import MODEL_TABLES  # here: run_dir needs PyTorch

        return cls.load(path, overrides, ignore=MODEL_TABLES,
                        defaults={"train": cls.train_defaults})


# -- scratchgpt finetune classify ---------------------------------------------------------
TRAINABLE = Matches(r"head|last-block|last-blocks:\d+|all|lora",
                    "head, last-block, last-blocks:N, all or lora")


@dataclass
class ClassifyData:
    """Which labelled texts, how they are split, and how each is read."""

    data: str = knob("sms-spam", "sms-spam or spamassassin (after `scratchgpt download NAME`), "
                                 "or a labelled file or directory: the SMS collection or its "
                                 ".zip, SpamAssassin .tar.bz2 groups, .csv, .tsv or .jsonl")
    text_field: str | None = knob(None, "the text column of a .csv, .tsv or .jsonl file "
                                        "(default: text)")
    label_field: str | None = knob(None, "the label column of a .csv, .tsv or .jsonl file "
                                         "(default: label)")
    balance: bool = knob(False, "undersample every class to the size of the smallest (the "
                                "book's choice); the test is also reported at the natural mix")
    val_fraction: float = knob(0.1, "share of the texts held out for validation", FRACTION)
    test_fraction: float = knob(0.2, "share of the texts held out for the final test", FRACTION)
    epochs: float = knob(5, "passes over the training texts; sets --max-steps (0: train "
                            "--max-steps steps instead)", NON_NEGATIVE)
    truncate: str = knob("head", "head: keep the start of a text longer than --max-length; "
                                 "tail: keep its end", OneOf(("head", "tail")))
    max_length: int | None = knob(None, "tokens read of each text (default and most: the "
                                        "model's context length)", POSITIVE)
    class_weights: bool = knob(False, "weigh each class's loss by its inverse frequency "
                                      "(for imbalanced data you do not --balance)")

    def __post_init__(self) -> None:
        check_settings(self)
        check_split(self.val_fraction, self.test_fraction, "texts")


@dataclass
class ClassifyModel(FinetuneModel):
    """What to start from, and which of its weights learn."""

    train: str = knob("last-block", "which weights learn: head, last-block (the last "
                                    "transformer block, final norm and head: the book's), "
                                    "last-blocks:N, all, or lora (low-rank adapters)", TRAINABLE)
    pooling: str = knob("last", "what the head reads: last (the last real token's state) or "
                                "mean (the mean over the text's tokens)", OneOf(("last", "mean")))


@dataclass
class ClassifyConfig(FinetuneConfig):
    """Everything ``scratchgpt finetune classify`` needs; saved as ``RUN_DIR/config.toml``."""

    data: ClassifyData
    model: ClassifyModel
    train: TrainConfig


# -- scratchgpt finetune instruct ---------------------------------------------------------
@dataclass
class InstructData:
    """Which records, how they are split, and how each becomes text."""

    data: str = knob("instructions", "instructions or alpaca (after `scratchgpt download "
                                     "NAME`), or a JSON list or JSON Lines file of {instruction, "
                                     "input, output} records or {messages: [...]} conversations")
    prompt_style: str | None = knob(
        None, "how a record becomes text: template (the model's own chat template, the loss "
              "on its assistant turns), alpaca (the book's), phi3 or chatml; default: template "
              "for a model that has a chat template, else alpaca; the one used is recorded in "
              "the run, for chat, serve and export", OneOf((TEMPLATE, *PROMPT_STYLES)))
    mask_prompt: bool = knob(False, "put the loss on the responses only, not on the prompts "
                                    "(conversations, and any record in a template, always "
                                    "train on the assistant's turns only)")
    limit: int | None = knob(None, "use only the first N records (default: all)", POSITIVE)
    val_fraction: float = knob(0.05, "share of the records held out for validation", FRACTION)
    test_fraction: float = knob(0.1, "share of the records held out for the final test",
                                FRACTION)
    epochs: float = knob(2, "passes over the training records; sets --max-steps (0: train "
                            "--max-steps steps instead)", NON_NEGATIVE)
    max_new_tokens: int = knob(128, "the longest response generated for a validation sample "
                                    "or a test entry", POSITIVE)

    def __post_init__(self) -> None:
        check_settings(self)
        check_split(self.val_fraction, self.test_fraction, "records")


@dataclass
class InstructModel(FinetuneModel):
    """What to start from, and which of its weights learn."""

    train: str = knob("all", "which weights learn: all (full fine-tuning), last-block (the "
                             "last transformer block and the final norm), last-blocks:N, or "
                             "lora (low-rank adapters, under 1% of the weights)",
                      Matches(r"last-block|last-blocks:\d+|all|lora",
                              "last-block, last-blocks:N, all or lora"))


@dataclass
class InstructConfig(FinetuneConfig):
    """Everything ``scratchgpt finetune instruct`` needs; saved as ``RUN_DIR/config.toml``."""

    data: InstructData
    model: InstructModel
    train: TrainConfig

    train_defaults = {**BOOK_TRAIN_DEFAULTS, "eval_batches": 5}  # answers take longer


# -- scratchgpt finetune dpo --------------------------------------------------------------
# The book's DPO notebook (chapter 7's bonus): AdamW at 5e-6, weight decay 0.01, batch 8, 1 epoch.
DPO_TRAIN_DEFAULTS: dict[str, Any] = {**BOOK_TRAIN_DEFAULTS, "lr": 5e-6, "weight_decay": 0.01,
                                      "eval_batches": 5}


@dataclass
class DPOData:
    """Which preference pairs, how they are split, and how each becomes text."""

    data: str = knob("preferences", "preferences (after `scratchgpt download preferences`), "
                                    "or a JSON list or JSON Lines file of {instruction, input, "
                                    "chosen, rejected} records or {prompt, chosen, rejected} "
                                    "conversations")
    prompt_style: str | None = knob(
        None, "how a pair becomes text: template (the model's own chat template), alpaca, phi3 "
              "or chatml; default: the model's chat template if it has one, else the prompt "
              "style its instruction tuning recorded, else alpaca",
        OneOf((TEMPLATE, *PROMPT_STYLES)))
    limit: int | None = knob(None, "use only the first N pairs (default: all)", POSITIVE)
    val_fraction: float = knob(0.05, "share of the pairs held out for validation", FRACTION)
    test_fraction: float = knob(0.1, "share of the pairs held out for the final test", FRACTION)
    epochs: float = knob(1, "passes over the training pairs; sets --max-steps (0: train "
                            "--max-steps steps instead)", NON_NEGATIVE)
    max_new_tokens: int = knob(64, "the longest answer generated for a validation sample",
                               POSITIVE)

    def __post_init__(self) -> None:
        check_settings(self)
        check_split(self.val_fraction, self.test_fraction, "pairs")


@dataclass
class DPOModel(FinetuneModel):
    """What to start from (the policy, and the frozen reference), which weights learn, and the
    strength of DPO's pull."""

    train: str = knob("all", "which weights learn: all (the reference is a frozen copy of the "
                             "start) or lora (adapters; the reference is the same weights with "
                             "the adapters off)", OneOf(("all", "lora")))
    beta: float = knob(0.1, "how strongly the policy is held to the reference: the implicit "
                            "reward is beta x the log-ratio (the book's and TRL's: 0.1)",
                       POSITIVE)
    label_smoothing: float = knob(0.0, "the chance a pair's labels are flipped (conservative "
                                       "DPO; 0: plain DPO)", Between(0, 0.5, high_open=True))
    precompute_reference: bool = knob(False, "score the training pairs with the reference "
                                             "once, before the first step, instead of at every "
                                             "step (a step then runs the policy alone)")


@dataclass
class DPOConfig(FinetuneConfig):
    """Everything ``scratchgpt finetune dpo`` needs; saved as ``RUN_DIR/config.toml``."""

    data: DPOData
    model: DPOModel
    train: TrainConfig

    train_defaults = DPO_TRAIN_DEFAULTS
