"""From files on disk to one memory-mapped token file, tokenized once and cached.

``--data`` names a text file, a directory (searched recursively) or a glob. ``.txt`` files
are one document each; ``.jsonl`` files hold one JSON object per line whose ``text`` field is
a document. Documents are joined with the tokenizer's ``<|endoftext|>`` id, so the model learns
where one text ends and the next begins.

Tokenizing a large corpus is slow, so it runs in several processes and its result is cached
under a fingerprint of the inputs (path, size, modification time) and the tokenizer: a second
run with the same data starts at once.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scratchgpt.data.default_corpus import DEFAULT_CORPUS_NAME, default_documents
from scratchgpt.data.token_files import token_dtype, write_token_file
from scratchgpt.progress import progress_bar
from scratchgpt.tokenizers import (
    GPT2_SPLIT_PATTERN,
    BPETokenizer,
    CharTokenizer,
    SpecialTokenError,
    Tokenizer,
    WordTokenizer,
)
from scratchgpt.tokenizers.base import AllowedSpecial

SUFFIXES = (".txt", ".jsonl")
TASK_CHARS = 1 << 20  # text per task sent to a worker process: enough to dwarf the overhead


@dataclass(frozen=True)
class Document:
    """One text and where it came from (``file`` or ``file:line``), for error messages."""

    source: str
    text: str


def find_files(spec: str | Path) -> list[Path]:
    """The ``.txt``/``.jsonl`` files that ``spec`` (file, directory or glob) stands for."""
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        if not files:
            raise ValueError(f"{path} holds no .txt or .jsonl files")
        return files
    if glob.has_magic(str(spec)):
        files = sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).is_file())
        if not files:
            raise FileNotFoundError(f"no files match {spec}")
        return files
    raise FileNotFoundError(f"data path not found: {spec}")


def decode_utf8(data: bytes, source: str | Path, errors: str = "strict") -> str:
    """UTF-8 text of ``data``; invalid bytes are an error naming ``source`` and the byte offset."""
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{source}: byte {err.start} (0x{data[err.start]:02x}) is not valid UTF-8; "
            "convert the file to UTF-8, or pass --encoding-errors replace to read such bytes "
            "as U+FFFD"
        ) from None


def read_text_file(path: str | Path, errors: str = "strict") -> str:
    """Read ``path`` as UTF-8 (see :func:`decode_utf8`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    return decode_utf8(path.read_bytes(), path, errors)


def read_documents(path: Path, errors: str = "strict") -> Iterator[Document]:
    """The documents in one file: the whole of a ``.txt``, each line of a ``.jsonl``."""
    text = read_text_file(path, errors)
    if path.suffix != ".jsonl":
        yield Document(str(path), text)
        return
    for where, record in json_lines(text, path):
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ValueError(f'{where}: expected an object with a string "text" field')
        yield Document(where, record["text"])


def text_lines(text: str) -> list[str]:
    """The lines of ``text`` as a person sees them, for every file read as one item per line:
    cut at ``\\n`` alone, a ``\\r`` before it (Windows' line end) dropped, and no empty line
    after a final ``\\n``.

    ``str.splitlines()`` also cuts at ``\\x0b``, form feed, ``\\x1c``-``\\x1e``, ``\\x85``,
    U+2028 and U+2029, which real texts (emails above all) and JSON strings hold inside a
    line: one text would become two, and every answer after it would be paired with the wrong
    line. A lone ``\\r`` is not a line end either (only old Mac files used it).
    """
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def json_lines(text: str, path: Path) -> Iterator[tuple[str, Any]]:
    """``(where, value)`` for each non-blank line (:func:`text_lines`) of a JSON Lines
    ``text``, ``where`` being ``path:line``; a line that is not JSON is an error naming it."""
    for number, line in enumerate(text_lines(text), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err.msg}, column {err.colno}); each "
                             "line must be one JSON object") from None


@dataclass(frozen=True)
class Corpus:
    """The documents of a data spec, and a fingerprint that changes when the inputs change."""

    documents: list[Document]
    fingerprint: str

    @property
    def texts(self) -> list[str]:
        return [d.text for d in self.documents]


def load_corpus(spec: str | Path | None, encoding_errors: str = "strict") -> Corpus:
    """Read every document of ``spec`` (None: the built-in corpus). Empty input is an error."""
    digest = hashlib.sha256(encoding_errors.encode())
    if spec is None:
        documents = [Document(f"{DEFAULT_CORPUS_NAME}#{i}", t)
                     for i, t in enumerate(default_documents())]
        for document in documents:
            digest.update(document.text.encode())
        name = DEFAULT_CORPUS_NAME
    else:
        files = find_files(spec)
        documents = [doc for path in files for doc in read_documents(path, encoding_errors)]
        for path in files:
            stat = path.stat()
            digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        name = ", ".join(str(p) for p in files[:3]) + (" ..." if len(files) > 3 else "")
    if not any(d.text.strip() for d in documents):
        raise ValueError(f"the corpus is empty: {name} holds no text")
    return Corpus(documents, digest.hexdigest())


def split_for_workers(text: str, pieces: int) -> list[str]:
    """Cut ``text`` into about ``pieces`` parts at newlines that follow a non-space character.

    No GPT-2 pre-token crosses such a point (letters, digits and punctuation all stop at
    whitespace, and the whitespace run that starts there is split the same way with or without
    what came before), so encoding the parts one by one gives the same ids as the whole.
    """
    if pieces <= 1 or len(text) < 2 * 65536:
        return [text]
    parts, start = [], 0
    step = len(text) // pieces
    while len(text) - start > step:
        cut = start + step
        while cut < len(text) and not (text[cut] == "\n" and not text[cut - 1].isspace()):
            cut += 1
        parts.append(text[start:cut])
        start = cut
    parts.append(text[start:])
    return [p for p in parts if p]


def newline_cuts_keep_ids(tokenizer: Tokenizer) -> bool:
    """Whether :func:`split_for_workers` may cut documents that ``tokenizer`` will encode.

    Shown above for GPT-2's pre-tokenization pattern; character and word tokenizers never join
    text across a newline either. Other patterns may: GPT-4's keeps ``".\\n"`` in one pre-token,
    so cutting there would change the ids. Any other tokenizer gets its documents whole.
    """
    if isinstance(tokenizer, BPETokenizer):
        return tokenizer.pattern == GPT2_SPLIT_PATTERN
    return isinstance(tokenizer, (CharTokenizer, WordTokenizer))


def encode_text(tokenizer: Tokenizer, text: str, *, source: str = "text",
                allowed_special: AllowedSpecial = frozenset(),
                progress: bool = True) -> list[int]:
    """``tokenizer.encode(text, allowed_special=...)``, the same ids, with a progress bar: a
    long text is encoded in parts of about :data:`TASK_CHARS` characters, cut where
    :func:`split_for_workers` may cut (no special token spans such a newline either). A
    special token that is not allowed is an error naming ``source`` (the file the text came
    from) and the character where the token starts."""
    parts = [text]
    if newline_cuts_keep_ids(tokenizer):
        parts = split_for_workers(text, math.ceil(len(text) / TASK_CHARS))
    ids: list[int] = []
    done = 0
    with progress_bar(total=len(text), unit="char", unit_scale=True, desc="tokenizing",
                      disable=not progress or len(parts) == 1) as bar:
        for part in parts:
            try:
                ids += tokenizer.encode(part, allowed_special=allowed_special)
            except SpecialTokenError as err:
                raise SpecialTokenError(err.token, done + err.position, source) from None
            done += len(part)
            bar.update(len(part))
    return ids


Piece = tuple[str, bool]  # some text, and whether a document ends with it


def _group(pieces: list[Piece], chars: int) -> list[list[Piece]]:
    """Consecutive pieces in groups of at least ``chars`` characters (the last may be short), so
    that a corpus of many small documents is sent to the workers in a few large tasks."""
    groups: list[list[Piece]] = [[]]
    size = 0
    for piece in pieces:
        if size >= chars:
            groups.append([])
            size = 0
        groups[-1].append(piece)
        size += len(piece[0])
    return groups


_worker_tokenizer: Tokenizer | None = None


def _init_worker(tokenizer: Tokenizer) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer


def _encode(pieces: list[Piece]) -> np.ndarray:
    """The ids of ``pieces`` one after the other, an end-of-text id wherever a document ends."""
    tokenizer = _worker_tokenizer
    assert tokenizer is not None
    separator = [] if tokenizer.eot_id is None else [tokenizer.eot_id]
    ids: list[int] = []
    for text, ends_document in pieces:
        ids += tokenizer.encode_ordinary(text)
        if ends_document:
            ids += separator
    return np.asarray(ids, dtype=token_dtype(tokenizer.vocab_size))


def _cpu_count() -> int:
    """CPUs this process may run on (``os.sched_getaffinity`` is Linux-only)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_cache_dir() -> Path:
    """``$SCRATCHGPT_CACHE`` or ``~/.cache/scratchgpt``."""
    base = os.environ.get("SCRATCHGPT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "scratchgpt"
    )
    return Path(base)


def tokenize_corpus(
    corpus: Corpus,
    tokenizer: Tokenizer,
    *,
    cache_dir: Path | None = None,
    workers: int = 0,
    progress: bool = True,
) -> Path:
    """Tokenize ``corpus`` into a token file under ``cache_dir/tokens`` (reused if present).

    Special-token spellings inside documents are encoded as plain text; the documents are
    separated by the tokenizer's end-of-text id, when it has one.
    """
    tokenizer_hash = hashlib.sha256(
        json.dumps(tokenizer.to_dict(), sort_keys=True).encode()
    ).hexdigest()
    key = hashlib.sha256(f"{corpus.fingerprint}:{tokenizer_hash}".encode()).hexdigest()[:24]
    path = (cache_dir or default_cache_dir()) / "tokens" / f"{key}.npy"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    workers = workers or _cpu_count()
    cut = newline_cuts_keep_ids(tokenizer)
    pieces: list[Piece] = []
    for document in corpus.documents:
        parts = split_for_workers(document.text, workers) if cut else [document.text]
        pieces += [(part, i == len(parts) - 1) for i, part in enumerate(parts)]
    total = sum(len(text) for text, _ in pieces)
    tasks = _group(pieces, min(TASK_CHARS, total // (4 * workers) + 1))
    bar = progress_bar(total=total, unit="char", unit_scale=True, desc="tokenizing",
                       disable=not progress)

    def counted(encoded: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for task, ids in zip(tasks, encoded, strict=True):
            bar.update(sum(len(text) for text, _ in task))
            yield ids

    with bar:
        if workers > 1 and len(tasks) > 1:
            with ProcessPoolExecutor(workers, initializer=_init_worker,
                                     initargs=(tokenizer,)) as pool:
                write_token_file(path, counted(pool.map(_encode, tasks)), tokenizer.vocab_size)
        else:
            _init_worker(tokenizer)
            write_token_file(path, counted(map(_encode, tasks)), tokenizer.vocab_size)
    return path


def train_val_split(
    tokens: np.ndarray, val_fraction: float, context_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``1 - val_fraction`` of the tokens for training, the rest for validation.

    Both parts must hold at least one window (``context_length + 1`` tokens).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    # Validation gets the last ceil(n * val_fraction) tokens. Rounding first keeps float error
    # from moving the cut: int(1000 * (1.0 - 0.07)) is 929, not 930.
    split = len(tokens) - math.ceil(round(len(tokens) * val_fraction, 6))
    train, val = tokens[:split], tokens[split:]
    need = context_length + 1
    for name, part in (("training", train), ("validation", val)):
        if len(part) < need:
            raise ValueError(
                f"the corpus has {len(tokens):,} tokens: its {name} part ({len(part):,}) is "
                f"shorter than one window of {need} (context_length {context_length} + 1); "
                "use more text, a shorter --context-length or another --val-fraction"
            )
    return train, val
