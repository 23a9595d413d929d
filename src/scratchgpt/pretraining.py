"""``scratchgpt pretrain``: from raw text to a trained GPT, in one run directory.

The steps, each a library call you can make yourself:

1. read the corpus (:mod:`scratchgpt.data.corpus`; the built-in one by default),
2. train a BPE tokenizer on it or load one (:mod:`scratchgpt.tokenizers`),
3. tokenize once into a memory-mapped token file, cached by fingerprint,
4. split into training and validation tokens and cut them into windows,
5. build a :class:`~scratchgpt.model.GPTModel` and train it with the
   :class:`~scratchgpt.training.trainer.Trainer`.

The run directory's layout is described in :mod:`scratchgpt.run_dir`.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from scratchgpt.config import ModelConfig, get_preset
from scratchgpt.config_files import check_fields, dump_toml, load_toml
from scratchgpt.data import load_corpus, read_token_file, tokenize_corpus, train_val_split
from scratchgpt.model import GPTModel
from scratchgpt.run_dir import CHECKPOINTS, CONFIG_FILE, RESOLVED_MODEL, TOKENIZER_FILE
from scratchgpt.tokenizers import Tokenizer, load_tokenizer, train_bpe
from scratchgpt.training import distributed
from scratchgpt.training.checkpoints import latest_checkpoint
from scratchgpt.training.config import TrainConfig, knob
from scratchgpt.training.language_modeling import LanguageModelingTask
from scratchgpt.training.trainer import FitResult, Trainer


@dataclass
class DataConfig:
    """Where the text comes from and how it becomes tokens."""

    data: str | None = knob(None, "text file, directory or glob of .txt/.jsonl files "
                                  "(default: the Python documentation built into CPython)")
    tokenizer: str = knob("bpe:2048", "bpe:VOCAB_SIZE to train one on the corpus, or a "
                                      "tokenizer SPEC (see `scratchgpt tokenize --help`)")
    val_fraction: float = knob(0.1, "share of the tokens held out for validation (the end)")
    encoding_errors: str = knob("strict", "strict: stop at bytes that are not UTF-8; "
                                          "replace: turn them into U+FFFD")
    stride: int | None = knob(None, "step between training windows (default: context length)")
    sample_prompt: str = knob("The", "prompt for the text samples printed at each evaluation")
    sample_tokens: int = knob(40, "length of each text sample, in tokens")
    sample_temperature: float = knob(0.8, "sampling temperature of the text samples (0: greedy, "
                                          "which small models turn into loops)")
    sample_top_k: int | None = knob(40, "sample among the k most likely tokens")
    workers: int = knob(0, "processes tokenizing the corpus (0: one per CPU core)")


@dataclass
class ModelChoice:
    """A preset, optionally with some of its fields changed."""

    preset: str = knob("micro", "nano, micro, mini (CPU sizes) or gpt2-small|medium|large|xl")
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

    def resolve(self, vocab_size: int) -> ModelConfig:
        changes = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "preset"}
        changes = {k: v for k, v in changes.items() if v is not None}
        return get_preset(self.preset).replace(**changes, vocab_size=vocab_size)


@dataclass
class PretrainConfig:
    """Everything ``scratchgpt pretrain`` needs; saved as ``RUN_DIR/config.toml``."""

    data: DataConfig
    model: ModelChoice
    train: TrainConfig

    @classmethod
    def from_tables(cls, tables: dict[str, dict[str, Any]], source: str) -> PretrainConfig:
        """Build from TOML tables. ``[resolved_model]``, which a run directory's config.toml
        adds to show the model that was built, is read by ``--resume`` only."""
        unknown = sorted(set(tables) - {"data", "model", "train", RESOLVED_MODEL})
        if unknown:
            raise ValueError(f"{source}: unknown table(s) [{'], ['.join(unknown)}]; "
                             f"expected [data], [model], [train]")
        return cls(
            DataConfig(**check_fields(tables.get("data", {}), DataConfig, f"{source} [data]")),
            ModelChoice(**check_fields(tables.get("model", {}), ModelChoice, f"{source} [model]")),
            TrainConfig(**check_fields(tables.get("train", {}), TrainConfig, f"{source} [train]")),
        )

    def to_tables(self) -> dict[str, dict[str, Any]]:
        return {"data": asdict(self.data), "model": asdict(self.model), "train": asdict(self.train)}


def load_config(path: str | Path | None, overrides: dict[str, dict[str, Any]]) -> PretrainConfig:
    """Defaults, then the TOML file (if any), then ``overrides`` (e.g. command-line flags)."""
    tables: dict[str, dict[str, Any]] = load_toml(path) if path else {}
    for section, values in overrides.items():
        tables.setdefault(section, {}).update(values)
    return PretrainConfig.from_tables(tables, str(path or "command line"))


def default_run_dir() -> Path:
    return Path("runs") / datetime.now().strftime("pretrain-%Y%m%d-%H%M%S")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _prepare_tokenizer(config: DataConfig, texts: list[str], run_dir: Path) -> Tokenizer:
    saved = run_dir / TOKENIZER_FILE
    if saved.exists():
        return Tokenizer.load(saved)
    if config.tokenizer.startswith("bpe:"):
        vocab_size = int(config.tokenizer.removeprefix("bpe:"))
        _log(f"training a BPE tokenizer with {vocab_size} tokens on the corpus")
        tokenizer = train_bpe(texts, vocab_size, special_tokens=["<|endoftext|>"])
    else:
        tokenizer = load_tokenizer(config.tokenizer)
    tokenizer.save(saved)
    return tokenizer


def prepare_run_dir(run_dir: Path, config: PretrainConfig, resume: bool) -> None:
    """Create the run directory; refuse to overwrite one unless resuming it."""
    existing = run_dir / CONFIG_FILE
    if existing.exists() and not resume:
        raise FileExistsError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    if resume and not existing.exists():
        raise FileNotFoundError(f"--resume: {run_dir} holds no run ({CONFIG_FILE} is missing)")
    run_dir.mkdir(parents=True, exist_ok=True)


def check_same_model(saved: ModelConfig, current: ModelConfig, run_dir: Path) -> None:
    differ = [f"{k}: {v} in the run, {current.to_dict()[k]} now"
              for k, v in saved.to_dict().items() if current.to_dict()[k] != v]
    if differ:
        raise ValueError(f"cannot resume {run_dir} with a different model shape ("
                         + "; ".join(differ) + ")")


def pretrain(config: PretrainConfig, run_dir: Path, *, resume: bool = False,
             show_progress: bool = True, cache_dir: Path | None = None) -> FitResult:
    """Run (or resume) a pretraining job in ``run_dir``.

    Token files are cached in ``cache_dir`` (default: ``$SCRATCHGPT_CACHE`` or
    ``~/.cache/scratchgpt``).
    """
    process = distributed.init_distributed(
        "cuda" if config.train.device.startswith("cuda")
        or (config.train.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    try:
        if process.is_main:
            prepare_run_dir(run_dir, config, resume)
        distributed.barrier(process)
        data = config.data
        corpus = load_corpus(data.data, encoding_errors=data.encoding_errors)
        if process.is_main:
            _prepare_tokenizer(data, corpus.texts, run_dir)
        distributed.barrier(process)
        tokenizer = Tokenizer.load(run_dir / TOKENIZER_FILE)
        model_config = config.model.resolve(tokenizer.vocab_size)
        if resume:
            saved = load_toml(run_dir / CONFIG_FILE)
            check_same_model(ModelConfig.from_dict(saved[RESOLVED_MODEL]), model_config, run_dir)
        elif process.is_main:
            tables = {**config.to_tables(), RESOLVED_MODEL: model_config.to_dict()}
            (run_dir / CONFIG_FILE).write_text(dump_toml(tables), encoding="utf-8")

        if process.is_main:
            tokenize_corpus(corpus, tokenizer, cache_dir=cache_dir, workers=data.workers,
                            progress=show_progress)
        distributed.barrier(process)
        tokens = read_token_file(  # cached by now: every rank maps the same file
            tokenize_corpus(corpus, tokenizer, cache_dir=cache_dir, progress=False)
        )
        train_tokens, val_tokens = train_val_split(
            tokens, data.val_fraction, model_config.context_length
        )
        if process.is_main:
            _log(f"corpus: {len(tokens):,} tokens ({len(train_tokens):,} train, "
                 f"{len(val_tokens):,} validation), vocabulary {tokenizer.vocab_size:,}")

        torch.manual_seed(config.train.seed)
        model = GPTModel(model_config)
        train = config.train
        global_batch = train.batch_size * train.grad_accum_steps * process.world_size
        task = LanguageModelingTask(
            train_tokens, val_tokens, context_length=model_config.context_length,
            batch_size=config.train.batch_size, stride=data.stride,
            eval_windows=config.train.eval_batches * global_batch, seed=config.train.seed,
            tokenizer=tokenizer, sample_prompt=data.sample_prompt,
            sample_tokens=data.sample_tokens, sample_temperature=data.sample_temperature,
            sample_top_k=data.sample_top_k,
        )
        trainer = Trainer(model, task, config.train, run_dir, process=process,
                          show_progress=show_progress)
        if resume:
            checkpoint = latest_checkpoint(run_dir / CHECKPOINTS)
            if checkpoint is not None:
                trainer.resume(checkpoint)
                if process.is_main:
                    _log(f"resumed from {checkpoint} (step {trainer.step})")
                    if trainer.step >= train.max_steps:
                        _log(f"the run has already trained its {train.max_steps} steps; "
                             "pass a larger --max-steps to train on")
        result = trainer.fit()
        if process.is_main and result.interrupted:
            _log(f"interrupted: saved a checkpoint at step {result.step}; "
                 f"continue with: scratchgpt pretrain --out {run_dir} --resume")
        return result
    finally:
        distributed.shutdown(process)
