"""Reading (and writing) GPT-2's tokenizer files.

GPT-2's vocabulary is published in three equivalent forms, all read into a
:class:`~scratchgpt.tokenizers.bpe.BPETokenizer` whose ranks are GPT-2's token ids:

* OpenAI's ``encoder.json`` (token -> id) and ``vocab.bpe`` (the merges, one ``left right`` pair
  per line, in the order they were learned), beside the original checkpoints;
* Hugging Face's ``vocab.json`` and ``merges.txt``: the same two files under other names;
* tiktoken's ``.tiktoken`` rank file: one ``base64(token bytes) rank`` per line.

The JSON and merge files write each byte as a printable character (a space is ``Ġ``; see
:func:`~scratchgpt.tokenizers.bpe.token_to_printable`). A merge list and tiktoken's ranks say the
same thing when the tokens made by the merges have increasing ids, which the reader checks.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

from scratchgpt.tokenizers.base import ENDOFTEXT
from scratchgpt.tokenizers.bpe import BPETokenizer, printable_to_token, token_to_printable

OPENAI_FILES = ("encoder.json", "vocab.bpe")
HF_FILES = ("vocab.json", "merges.txt")
_MERGES_HEADER = "#version: 0.2"


def load_gpt2_tokenizer(path: str | Path) -> BPETokenizer:
    """GPT-2's tokenizer from a directory holding ``encoder.json`` + ``vocab.bpe`` or
    ``vocab.json`` + ``merges.txt``, or from a ``.tiktoken`` file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_file():
        if path.suffix != ".tiktoken":
            raise ValueError(f"{path}: expected a directory of GPT-2 files or a .tiktoken file")
        return read_tiktoken_file(path)
    for vocab_name, merges_name in (OPENAI_FILES, HF_FILES):
        if (path / vocab_name).exists() or (path / merges_name).exists():
            return read_vocab_and_merges(path / vocab_name, path / merges_name)
    raise FileNotFoundError(
        f"{path} holds neither {' + '.join(OPENAI_FILES)} (OpenAI) nor {' + '.join(HF_FILES)} "
        "(Hugging Face)"
    )


def read_vocab_and_merges(vocab_path: str | Path, merges_path: str | Path) -> BPETokenizer:
    """Read ``encoder.json`` + ``vocab.bpe`` (or ``vocab.json`` + ``merges.txt``).

    Ranks are the ids of the 256 byte tokens and of the tokens the merges make; any other entry
    of the vocabulary (``<|endoftext|>``) is a special token.
    """
    vocab_path, merges_path = Path(vocab_path), Path(merges_path)
    vocab = _read_vocab_json(vocab_path)
    merges = _read_merges(merges_path)
    ranked: list[str] = [token_to_printable(bytes([b])) for b in range(256)]
    missing = [t for t in ranked if t not in vocab]
    if missing:
        raise ValueError(
            f"{vocab_path}: the byte token {missing[0]!r} (and {len(missing) - 1} more) is "
            "missing; a byte-level BPE vocabulary needs all 256"
        )

    last_id = -1
    for line_no, left, right in merges:
        where = f"{merges_path} line {line_no}"
        for part in (left, right):
            if part not in vocab:
                raise ValueError(f"{where}: {part!r} is not a token of {vocab_path.name}")
        merged = left + right
        if merged not in vocab:
            raise ValueError(f"{where}: the merged token {merged!r} is missing from "
                             f"{vocab_path.name}")
        if vocab[merged] <= last_id:
            raise ValueError(
                f"{where}: {merged!r} has id {vocab[merged]}, not above the previous merge's "
                f"{last_id}; merges must be listed in the order of the ids they make"
            )
        last_id = vocab[merged]
        ranked.append(merged)

    try:
        ranks = {printable_to_token(t): vocab[t] for t in ranked}
    except ValueError as exc:
        raise ValueError(f"{merges_path}: {exc}") from None
    is_ranked = set(ranked)
    specials = {t: i for t, i in vocab.items() if t not in is_ranked}
    return BPETokenizer(ranks, specials)


def read_tiktoken_file(path: str | Path) -> BPETokenizer:
    """Read a ``.tiktoken`` rank file. It holds no special tokens, so ``<|endoftext|>`` gets
    the id after the last rank (50256 for GPT-2)."""
    path = Path(path)
    ranks: dict[bytes, int] = {}
    for line_no, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            if len(fields) != 2:
                raise ValueError(f"expected 'base64-token rank', got {len(fields)} fields")
            token, rank = base64.b64decode(fields[0], validate=True), int(fields[1])
        except (ValueError, binascii.Error) as exc:
            raise ValueError(f"{path} line {line_no}: {exc}") from None
        if token in ranks:
            raise ValueError(f"{path} line {line_no}: token {token!r} is listed twice")
        ranks[token] = rank
    if not ranks:
        raise ValueError(f"{path} holds no tokens")
    return BPETokenizer(ranks, {ENDOFTEXT: max(ranks.values()) + 1})


def save_gpt2_files(tokenizer: BPETokenizer, directory: str | Path) -> None:
    """Write ``vocab.json`` + ``merges.txt`` (Hugging Face's layout) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {token_to_printable(t): i for t, i in tokenizer.ranks.items()}
    vocab.update(tokenizer.special_tokens)
    merges = [f"{token_to_printable(a)} {token_to_printable(b)}" for a, b in tokenizer.merges()]
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("\n".join([_MERGES_HEADER, *merges]) + "\n",
                                          encoding="utf-8")


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (or is not a file)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text: {exc}") from None


def _read_vocab_json(path: Path) -> dict[str, int]:
    """``{token: id}`` from ``encoder.json``/``vocab.json``."""
    try:
        vocab = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(vocab, dict):
        raise ValueError(f"{path}: expected a JSON object mapping each token to its id")
    for token, token_id in vocab.items():
        if type(token_id) is not int:
            raise ValueError(f"{path}: token {token!r} has id {token_id!r}, not an integer")
    return vocab


def _read_merges(path: Path) -> list[tuple[int, str, str]]:
    """``(line number, left, right)`` for each line of ``vocab.bpe``/``merges.txt``."""
    merges = []
    for line_no, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line or (line_no == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(
                f"{path} line {line_no}: expected two tokens separated by one space, got {line!r}"
            )
        merges.append((line_no, parts[0], parts[1]))
    return merges
