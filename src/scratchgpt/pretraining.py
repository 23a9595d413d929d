"""``scratchgpt pretrain``: from raw text to a trained GPT, in one run directory.

The steps, each a library call you can make yourself:

1. read the corpus (:mod:`scratchgpt.data.corpus`; the built-in one by default),
2. train a BPE tokenizer on it or load one (:mod:`scratchgpt.tokenizers`),
3. tokenize once into a memory-mapped token file, cached by fingerprint,
4. split into training and validation tokens and cut them into windows,
5. build a :class:`~scratchgpt.model.GPTModel` and train it with the
   :class:`~scratchgpt.training.trainer.Trainer`.

:class:`PretrainJob` does steps 1-5; :func:`~scratchgpt.training.runner.run_job`, which every
fine-tuning shares, runs it in a run directory (:mod:`scratchgpt.run_dir`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from scratchgpt.config import PRESETS, ModelConfig, get_preset
from scratchgpt.data import load_corpus, read_token_file, tokenize_corpus, train_val_split
from scratchgpt.data.corpus import Corpus, default_cache_dir
from scratchgpt.hub.gpt2 import resolve_tokenizer
from scratchgpt.model import GPTModel
from scratchgpt.run_dir import (
    HEAD,
    LANGUAGE_MODEL_HEAD,
    MODEL_TABLES,
    RESOLVED_MODEL,
    TOKENIZER_FILE,
)
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
from scratchgpt.tokenizers import (
    ENDOFTEXT,
    Tokenizer,
    bpe_vocab_size,
    train_bpe,
)
from scratchgpt.training import distributed
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.language_modeling import LanguageModelingTask
from scratchgpt.training.runner import Setup, log, run_job
from scratchgpt.training.trainer import FitResult


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


@dataclass
class ModelChoice:
    """A preset, optionally with some of its fields changed (each checked by ModelConfig)."""

    preset: str = knob("micro", "nano, micro, mini (CPU sizes) or gpt2-small|medium|large|xl",
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
        changes = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "preset"}
        changes = {k: v for k, v in changes.items() if v is not None}
        if vocab_size is not None:
            changes["vocab_size"] = vocab_size
        return get_preset(self.preset).replace(**changes)


@dataclass
class PretrainConfig(Sections):
    """Everything ``scratchgpt pretrain`` needs; saved as ``RUN_DIR/config.toml``."""

    data: DataConfig
    model: ModelChoice
    train: TrainConfig


def load_config(path: str | Path | None, overrides: dict[str, dict[str, Any]]) -> PretrainConfig:
    """Defaults, then the TOML file (if any), then ``overrides`` (e.g. command-line flags).
    A run directory's ``config.toml`` works too (``--resume`` reads it)."""
    return PretrainConfig.load(path, overrides, ignore=MODEL_TABLES)


def default_run_dir() -> Path:
    return Path("runs") / datetime.now().strftime("pretrain-%Y%m%d-%H%M%S")


def corpus_tokenizer(config: DataConfig, corpus: Corpus, process: distributed.ProcessInfo,
                     cache_dir: Path | None = None) -> Tokenizer:
    """The tokenizer ``config.tokenizer`` names. ``bpe:N`` is trained on the corpus once and
    kept in the cache under the corpus's fingerprint, like its token file: the first process
    trains it, the others (under torchrun) read it, and a second run starts at once."""
    vocab_size = config.bpe_vocab_size
    if vocab_size is None:
        return resolve_tokenizer(config.tokenizer)
    key = hashlib.sha256(f"{corpus.fingerprint}:bpe:{vocab_size}:{ENDOFTEXT}".encode())
    path = (cache_dir or default_cache_dir()) / "tokenizers" / f"{key.hexdigest()[:24]}.json"
    if process.is_main and not path.exists():
        log(f"training a BPE tokenizer with {vocab_size} tokens on the corpus")
        tokenizer = train_bpe(corpus.texts, vocab_size, special_tokens=[ENDOFTEXT])
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        tokenizer.save(temporary)
        temporary.replace(path)
    distributed.barrier(process)
    return Tokenizer.load(path)


@dataclass
class PretrainJob:
    """Next-token prediction on a corpus, from a fresh model of a preset (a :class:`Job`)."""

    config: PretrainConfig
    cache_dir: Path | None = None
    show_progress: bool = True
    command = "pretrain"

    @property
    def train(self) -> TrainConfig:
        return self.config.train

    def setup(self, process: distributed.ProcessInfo, resume_dir: Path | None) -> Setup:
        """Read and tokenize the corpus (once: the token file is cached), split it, and build
        the model and the task."""
        data, train = self.config.data, self.config.train
        corpus = load_corpus(data.data, encoding_errors=data.encoding_errors)
        if resume_dir is not None:
            tokenizer = Tokenizer.load(resume_dir / TOKENIZER_FILE)
        else:
            tokenizer = corpus_tokenizer(data, corpus, process, self.cache_dir)
        model_config = self.config.model.resolve(tokenizer.vocab_size)
        if process.is_main:
            tokenize_corpus(corpus, tokenizer, cache_dir=self.cache_dir, workers=data.workers,
                            progress=self.show_progress)
        distributed.barrier(process)
        tokens = read_token_file(  # cached by now: every rank maps the same file
            tokenize_corpus(corpus, tokenizer, cache_dir=self.cache_dir, progress=False)
        )
        train_tokens, val_tokens = train_val_split(
            tokens, data.val_fraction, model_config.context_length
        )
        if process.is_main:
            log(f"corpus: {len(tokens):,} tokens ({len(train_tokens):,} train, "
                f"{len(val_tokens):,} validation), vocabulary {tokenizer.vocab_size:,}")

        torch.manual_seed(train.seed)
        model = GPTModel(model_config)
        task = LanguageModelingTask(
            train_tokens, val_tokens, context_length=model_config.context_length,
            batch_size=train.batch_size, stride=data.stride,
            eval_windows=train.eval_batches * train.global_batch(process.world_size),
            seed=train.seed,
            tokenizer=tokenizer, sample_prompt=data.sample_prompt,
            sample_tokens=data.sample_tokens, sample_temperature=data.sample_temperature,
            sample_top_k=data.sample_top_k,
        )
        tables = {**self.config.to_tables(), RESOLVED_MODEL: model_config.to_dict(),
                  HEAD: LANGUAGE_MODEL_HEAD}
        return Setup(model, task, tokenizer, tables)


def pretrain(config: PretrainConfig, run_dir: Path, *, resume: bool = False,
             show_progress: bool = True, cache_dir: Path | None = None) -> FitResult:
    """Run (or resume) a pretraining job in ``run_dir`` (see :func:`run_job`): everything
    that can fail on bad input is checked before the run directory is written.

    Token files and trained tokenizers are cached in ``cache_dir`` (default:
    ``$SCRATCHGPT_CACHE`` or ``~/.cache/scratchgpt``).
    """
    job = PretrainJob(config, cache_dir, show_progress)
    return run_job(job, run_dir, resume=resume, show_progress=show_progress)
