"""Data: text files -> documents -> token files on disk -> sliding windows -> shuffled batches."""

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
