"""Where a fine-tuning starts: a model that has learned language, or a random one to compare.

``init_from(spec)`` takes what ``--model`` names:

* a run directory of ``scratchgpt pretrain`` (its best checkpoint and its tokenizer),
* a downloaded GPT-2 (``gpt2-124M``, ...) or a Hugging Face or OpenAI GPT-2 directory,
* ``preset:NAME``: a fresh, randomly initialised model of that preset. Fine-tuned the same
  way, it shows what pretraining was worth (the book's lesson in chapter 6).

A fine-tuning that resumes starts again from its own run instead (:func:`resume_from`): its
checkpoint, or, where it stopped before its first, the same start as above.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from scratchgpt.config import ModelConfig, get_preset
from scratchgpt.config_files import load_toml
from scratchgpt.hub.models import load_model, resolve_tokenizer
from scratchgpt.model import GPTModel
from scratchgpt.run_dir import CHECKPOINTS, CONFIG_FILE, RESOLVED_MODEL, TOKENIZER_FILE
from scratchgpt.tokenizers import ENDOFTEXT, Tokenizer, bpe_vocab_size, train_bpe
from scratchgpt.training.checkpoints import resume_checkpoint

PRESET_PREFIX = "preset:"


def init_from(spec: str, *, tokenizer: str = "bpe:2048",
              texts: Sequence[str] = ()) -> tuple[GPTModel, Tokenizer]:
    """The language model (in training mode) and tokenizer ``spec`` names. For
    ``preset:NAME`` the tokenizer is ``tokenizer``: ``bpe:N`` trains one on ``texts``, any
    other value is a tokenizer SPEC (see ``scratchgpt tokenize --help``)."""
    if spec.startswith(PRESET_PREFIX):
        config = get_preset(spec.removeprefix(PRESET_PREFIX))
        vocab_size = bpe_vocab_size(tokenizer)
        if vocab_size is not None:
            chosen = train_bpe(list(texts), vocab_size, special_tokens=[ENDOFTEXT])
        else:
            chosen = resolve_tokenizer(tokenizer)
        return GPTModel(config.replace(vocab_size=chosen.vocab_size)).train(), chosen
    model, chosen = load_model(spec)
    return model.train(), chosen


def resume_from(run_dir: Path, spec: str) -> tuple[GPTModel, Tokenizer]:
    """The language model a fine-tuning run resumes with (in training mode), and the run's
    tokenizer. Where the run holds a checkpoint, the model is built in the shape its
    ``config.toml`` records, and its weights come from the checkpoint. Where it holds none yet
    (it stopped before its first), the run starts over from ``spec``, its ``--model``: the
    model is the one :func:`init_from` built for it, given the same ``torch.manual_seed``."""
    tokenizer = Tokenizer.load(run_dir / TOKENIZER_FILE)
    config = ModelConfig.from_dict(load_toml(run_dir / CONFIG_FILE)[RESOLVED_MODEL])
    if spec.startswith(PRESET_PREFIX) or resume_checkpoint(run_dir / CHECKPOINTS) is not None:
        return GPTModel(config).train(), tokenizer  # a preset: sized to the run's tokenizer
    model, _ = load_model(spec)
    return model.train(), tokenizer


def start_model(spec: str, *, tokenizer: str, seed: int, resume_dir: Path | None,
                texts: Callable[[], Sequence[str]]) -> tuple[GPTModel, Tokenizer]:
    """The language model a fine-tuning run trains, and its tokenizer: resuming, the run's own
    (:func:`resume_from`), else ``spec``'s (:func:`init_from`, a preset's tokenizer trained on
    ``texts()``). Seeded with ``seed`` first either way: a preset's random start is
    reproducible, and a run that starts over starts as the fresh run did."""
    torch.manual_seed(seed)
    if resume_dir is not None:
        return resume_from(resume_dir, spec)
    return init_from(spec, tokenizer=tokenizer, texts=texts())
