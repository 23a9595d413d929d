"""The settings of ``scratchgpt pretrain``: its ``[data]``, ``[model]`` and ``[train]`` tables.

Settings only, without PyTorch, so that ``scratchgpt pretrain --help`` lists them at once;
:mod:`scratchgpt.pretraining` reads them (:func:`~scratchgpt.pretraining.load_config`) and
runs the job.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from scratchgpt.config import ARCHITECTURES, PRESETS, ModelConfig, get_preset, with_architecture
from scratchgpt.settings import (
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    Matches,
    OneOf,
    Parses,
    Sections,
    check_settings,
    knob,
)
from scratchgpt.tokenizers import bpe_vocab_size
from scratchgpt.training.config import TrainConfig


@dataclass
class DataConfig:
    """Where the text comes from and how it becomes tokens."""

    data: str | None = knob(None, "text file, directory or glob of .txt/.jsonl files "
                                  "(default: the Python documentation built into CPython)")
    tokenizer: str = knob("bpe:2048", "bpe:VOCAB_SIZE to train one on the corpus, or a "
                                      "tokenizer SPEC (see `scratchgpt tokenize --help`)",
                          Parses(bpe_vocab_size))
    val_fraction: float = knob(0.1, "share of the tokens held out for validation (the end)",
                               FRACTION)
    encoding_errors: str = knob("strict", "strict: stop at bytes that are not UTF-8; "
                                          "replace: turn them into U+FFFD",
                                OneOf(("strict", "replace")))
    stride: int | None = knob(None, "step between training windows (default: context length)",
                              POSITIVE)
    sample_prompt: str = knob("The", "prompt for the text samples printed at each evaluation",
                              Matches(r"(?s).+", "some text"))
    sample_tokens: int = knob(40, "length of each text sample, in tokens", NON_NEGATIVE)
    sample_temperature: float = knob(0.8, "sampling temperature of the text samples (0: greedy, "
                                          "which small models turn into loops)", NON_NEGATIVE)
    sample_top_k: int | None = knob(40, "sample among the k most likely tokens", POSITIVE)
    workers: int = knob(0, "processes tokenizing the corpus (0: one per CPU core)", NON_NEGATIVE)

    def __post_init__(self) -> None:
        check_settings(self)

    @property
    def bpe_vocab_size(self) -> int | None:
        """N of ``bpe:N`` (a tokenizer to train), or None for a tokenizer to load."""
        return bpe_vocab_size(self.tokenizer)


SIZE_FIELDS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers")


@dataclass
class ModelChoice:
    """A preset, built as an architecture, optionally with some of its fields changed (each
    checked by ModelConfig)."""

    arch: str | None = knob(None, "gpt2, llama3, qwen3 or gemma3: the design the preset's size "
                                  "is built in (default: the preset's own, GPT-2's for the "
                                  "size presets)", OneOf(ARCHITECTURES))
    preset: str = knob("micro", "nano, micro, mini (CPU sizes), gpt2-small|medium|large|xl, or "
                                "a published shape (qwen3-0.6b, llama-3.2-1b, gemma-3-270m)",
                       OneOf(tuple(PRESETS)))
    context_length: int | None = knob(None, "tokens the model sees at once")
    emb_dim: int | None = knob(None, "width of the token vectors")
    n_heads: int | None = knob(None, "attention heads per layer")
    n_layers: int | None = knob(None, "transformer blocks")
    drop_rate: float | None = knob(None, "dropout probability")
    qkv_bias: bool | None = knob(None, "biases in the query/key/value projections")
    tie_weights: bool | None = knob(None, "share the token embedding with the output layer")
    pos_encoding: str | None = knob(None, "learned, sinusoidal or rope")
    init: str | None = knob(None, "starting weights: gpt2 (N(0, 0.02)) or pytorch (each "
                                  "layer's default, as in the book)")

    def __post_init__(self) -> None:
        check_settings(self)
        self.resolve()  # the model's own checks, before anything is trained or written

    def resolve(self, vocab_size: int | None = None) -> ModelConfig:
        """The preset with the fields that were set (and ``vocab_size``, if given) changed."""
        changes = {f.name: getattr(self, f.name) for f in fields(self)
                   if f.name not in ("arch", "preset")}
        changes = {k: v for k, v in changes.items() if v is not None}
        if vocab_size is not None:
            changes["vocab_size"] = vocab_size
        # The size first, so that the architecture sizes what depends on it (Gemma's window is
        # a quarter of the context); the other fields last, so that they win.
        size = {k: changes.pop(k) for k in SIZE_FIELDS if k in changes}
        config = get_preset(self.preset).replace(**size)
        if self.arch is not None:
            config = with_architecture(config, self.arch)
        return config.replace(**changes)


@dataclass
class PretrainConfig(Sections):
    """Everything ``scratchgpt pretrain`` needs; saved as ``RUN_DIR/config.toml``."""

    data: DataConfig
    model: ModelChoice
    train: TrainConfig
