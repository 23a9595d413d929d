"""Where a fine-tuning starts: a model that has learned language, or a random one to compare.

``init_from(spec)`` takes what ``--model`` names:

* a run directory of ``scratchgpt pretrain`` (its best checkpoint and its tokenizer),
* a downloaded GPT-2 (``gpt2-124M``, ...) or a Hugging Face or OpenAI GPT-2 directory,
* ``preset:NAME``: a fresh, randomly initialised model of that preset. Fine-tuned the same
  way, it shows what pretraining was worth (the book's lesson in chapter 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scratchgpt.config import get_preset
from scratchgpt.hub.gpt2 import load_gpt2
from scratchgpt.model import GPTModel
from scratchgpt.settings import DECAY, POSITIVE, Parses, check_settings, knob
from scratchgpt.tokenizers import ENDOFTEXT, Tokenizer, bpe_vocab_size, load_tokenizer, train_bpe

PRESET_PREFIX = "preset:"


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
            chosen = load_tokenizer(tokenizer)
        return GPTModel(config.replace(vocab_size=chosen.vocab_size)).train(), chosen
    model, chosen = load_gpt2(spec)
    return model.train(), chosen
