"""Tokenizers: text <-> token ids.

* :class:`WordTokenizer` and :class:`CharTokenizer`: small vocabularies built from a text.
* :class:`BPETokenizer`: byte-level byte-pair encoding, as used by GPT-2; learn one with
  :func:`train_bpe` or read GPT-2's own with :func:`load_gpt2_tokenizer`.
* :class:`HFTokenizer`: a Hugging Face ``tokenizer.json`` (Llama 3, Qwen, Gemma ...) run by our
  own BPE; :func:`read_hf_tokenizer` reads one.
* :func:`load_tokenizer`: any of the above from a path.

The names below are imported on first use (PEP 562), not with the package, so that one of
them costs only its own module: ``bpe_vocab_size``, with which ``--help`` reads settings,
does not bring in the BPE trainer and its progress bars. ``pretokenize`` alone is imported
here: it is also the name of its module, which would otherwise stand in its place once
imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scratchgpt.lazy_exports import lazy_exports
from scratchgpt.tokenizers.pretokenize import GPT2_SPLIT_PATTERN, pretokenize

if TYPE_CHECKING:
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
    from scratchgpt.tokenizers.hf_json import HFTokenizer, read_hf_tokenizer
    from scratchgpt.tokenizers.registry import bpe_vocab_size, load_tokenizer
    from scratchgpt.tokenizers.word import WordTokenizer

_WHERE = {
    "ENDOFTEXT": "base",
    "UNKNOWN": "base",
    "SpecialTokenError": "base",
    "Tokenizer": "base",
    "BPETokenizer": "bpe",
    "train_bpe": "bpe_training",
    "CharTokenizer": "char",
    "UnknownCharacterError": "char",
    "load_gpt2_tokenizer": "gpt2",
    "read_tiktoken_file": "gpt2",
    "read_vocab_and_merges": "gpt2",
    "save_gpt2_files": "gpt2",
    "HFTokenizer": "hf_json",
    "read_hf_tokenizer": "hf_json",
    "bpe_vocab_size": "registry",
    "load_tokenizer": "registry",
    "WordTokenizer": "word",
}

__all__ = [
    "ENDOFTEXT",
    "GPT2_SPLIT_PATTERN",
    "UNKNOWN",
    "BPETokenizer",
    "CharTokenizer",
    "HFTokenizer",
    "SpecialTokenError",
    "Tokenizer",
    "UnknownCharacterError",
    "WordTokenizer",
    "load_gpt2_tokenizer",
    "bpe_vocab_size",
    "load_tokenizer",
    "pretokenize",
    "read_hf_tokenizer",
    "read_tiktoken_file",
    "read_vocab_and_merges",
    "save_gpt2_files",
    "train_bpe",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
