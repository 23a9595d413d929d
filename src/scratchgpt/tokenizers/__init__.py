"""Tokenizers: text <-> token ids.

* :class:`WordTokenizer` and :class:`CharTokenizer`: small vocabularies built from a text.
* :class:`BPETokenizer`: byte-level byte-pair encoding, as used by GPT-2; learn one with
  :func:`train_bpe` or read GPT-2's own with :func:`load_gpt2_tokenizer`.
* :func:`load_tokenizer`: any of the above from a path.
"""

from scratchgpt.tokenizers.base import ENDOFTEXT, UNKNOWN, SpecialTokenError, Tokenizer
from scratchgpt.tokenizers.bpe import BPETokenizer
from scratchgpt.tokenizers.bpe_training import train_bpe
from scratchgpt.tokenizers.char import CharTokenizer, UnknownCharacterError
from scratchgpt.tokenizers.gpt2 import (
    load_gpt2_tokenizer,
    read_tiktoken_file,
    read_vocab_and_merges,
    save_gpt2_files,
)
from scratchgpt.tokenizers.pretokenize import GPT2_SPLIT_PATTERN, pretokenize
from scratchgpt.tokenizers.registry import bpe_vocab_size, load_tokenizer
from scratchgpt.tokenizers.word import WordTokenizer

__all__ = [
    "ENDOFTEXT",
    "GPT2_SPLIT_PATTERN",
    "UNKNOWN",
    "BPETokenizer",
    "CharTokenizer",
    "SpecialTokenError",
    "Tokenizer",
    "UnknownCharacterError",
    "WordTokenizer",
    "load_gpt2_tokenizer",
    "bpe_vocab_size",
    "load_tokenizer",
    "pretokenize",
    "read_tiktoken_file",
    "read_vocab_and_merges",
    "save_gpt2_files",
    "train_bpe",
]
