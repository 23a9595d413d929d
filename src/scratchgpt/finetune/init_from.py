"""Where a fine-tuning starts: a model that has learned language, or a random one to compare.

``init_from(spec)`` takes what ``--model`` names:

* a run directory of ``scratchgpt pretrain`` (its best checkpoint and its tokenizer),
* a downloaded GPT-2 (``gpt2-124M``, ...) or a Hugging Face or OpenAI GPT-2 directory,
* ``preset:NAME``: a fresh, randomly initialised model of that preset. Fine-tuned the same
  way, it shows what pretraining was worth (the book's lesson in chapter 6).

A fine-tuning that resumes starts again from its own run instead (:func:`resume_from`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from scratchgpt.config import ModelConfig, get_preset
from scratchgpt.config_files import load_toml
from scratchgpt.hub.gpt2 import load_gpt2, resolve_tokenizer
from scratchgpt.model import GPTModel
from scratchgpt.run_dir import CONFIG_FILE, RESOLVED_MODEL, TOKENIZER_FILE
from scratchgpt.tokenizers import ENDOFTEXT, Tokenizer, bpe_vocab_size, train_bpe

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
    model, chosen = load_gpt2(spec)
    return model.train(), chosen


def resume_from(run_dir: Path) -> tuple[GPTModel, Tokenizer]:
    """The language model a fine-tuning run started from, in the shape its ``config.toml``
    records (its weights come from the run's checkpoint), and the run's tokenizer."""
    saved = load_toml(run_dir / CONFIG_FILE)
    model = GPTModel(ModelConfig.from_dict(saved[RESOLVED_MODEL]))
    return model, Tokenizer.load(run_dir / TOKENIZER_FILE)
