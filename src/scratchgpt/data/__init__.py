"""Data: text files -> documents -> token files on disk -> sliding windows -> shuffled batches.

The names below are imported on first use (PEP 562), not with the package: windows and
batches bring in PyTorch, and ``scratchgpt.data.prompt_styles`` (which ``--help`` reads) does
not need it. ``from scratchgpt.data import load_corpus`` works as ever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scratchgpt.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from scratchgpt.data.batches import BatchDataset, ShuffledBatches
    from scratchgpt.data.corpus import (
        Corpus,
        Document,
        find_files,
        load_corpus,
        read_text_file,
        tokenize_corpus,
        train_val_split,
    )
    from scratchgpt.data.token_files import read_token_file, token_dtype, write_token_file
    from scratchgpt.data.windows import TokenWindows, create_dataloader

_WHERE = {
    "BatchDataset": "batches",
    "ShuffledBatches": "batches",
    "Corpus": "corpus",
    "Document": "corpus",
    "find_files": "corpus",
    "load_corpus": "corpus",
    "read_text_file": "corpus",
    "tokenize_corpus": "corpus",
    "train_val_split": "corpus",
    "read_token_file": "token_files",
    "token_dtype": "token_files",
    "write_token_file": "token_files",
    "TokenWindows": "windows",
    "create_dataloader": "windows",
}

__all__ = [
    "BatchDataset",
    "Corpus",
    "Document",
    "ShuffledBatches",
    "TokenWindows",
    "create_dataloader",
    "find_files",
    "load_corpus",
    "read_text_file",
    "read_token_file",
    "token_dtype",
    "tokenize_corpus",
    "train_val_split",
    "write_token_file",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
