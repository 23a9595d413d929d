"""``scratchgpt pretrain``: from raw text to a trained GPT, in one run directory.

The steps, each a library call you can make yourself:

1. read the corpus (:mod:`scratchgpt.data.corpus`; the built-in one by default),
2. train a BPE tokenizer on it or load one (:mod:`scratchgpt.tokenizers`),
3. tokenize once into a memory-mapped token file, cached by fingerprint,
4. split into training and validation tokens and cut them into windows,
5. build a :class:`~scratchgpt.model.GPTModel` and train it with the
   :class:`~scratchgpt.training.trainer.Trainer`.

:class:`PretrainJob` does steps 1-5; :func:`~scratchgpt.training.runner.run_job`, which every
fine-tuning shares, runs it in a run directory (:mod:`scratchgpt.run_dir`). The settings
(:class:`PretrainConfig`) are in :mod:`scratchgpt.pretraining_config`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from scratchgpt.data import load_corpus, read_token_file, tokenize_corpus, train_val_split
from scratchgpt.data.corpus import Corpus, default_cache_dir
from scratchgpt.hub.models import resolve_tokenizer
from scratchgpt.model import GPTModel
from scratchgpt.pretraining_config import (  # the settings, kept free of PyTorch
    DataConfig,
    ModelChoice,  # noqa: F401  (re-exported: scratchgpt.pretraining.ModelChoice)
    PretrainConfig,
)
from scratchgpt.run_dir import (
    HEAD,
    LANGUAGE_MODEL_HEAD,
    MODEL_TABLES,
    RESOLVED_MODEL,
    TOKENIZER_FILE,
)
from scratchgpt.tokenizers import ENDOFTEXT, Tokenizer, train_bpe
from scratchgpt.training import distributed
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.language_modeling import LanguageModelingTask
from scratchgpt.training.runner import Setup, log, run_job
from scratchgpt.training.trainer import FitResult


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
