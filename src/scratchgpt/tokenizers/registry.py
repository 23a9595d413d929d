"""Loading any tokenizer from a path: our own saved JSON files or GPT-2's published files.

A file is recognised by what it holds, not by its name: ``train-tokenizer --out bpe.tok``
must be readable by ``tokenize --tokenizer bpe.tok``.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

from scratchgpt.tokenizers.base import Tokenizer
from scratchgpt.tokenizers.bpe import BPETokenizer
from scratchgpt.tokenizers.char import CharTokenizer
from scratchgpt.tokenizers.gpt2 import load_gpt2_tokenizer, read_tiktoken_file
from scratchgpt.tokenizers.word import WordTokenizer

TOKENIZER_KINDS: dict[str, type[Tokenizer]] = {
    cls.kind: cls for cls in (WordTokenizer, CharTokenizer, BPETokenizer)
}
SAVED_TOKENIZER = "tokenizer.json"  # the name a run directory gives its tokenizer
_EXPECTED = (
    "expected a run directory (its tokenizer.json), a directory holding encoder.json + "
    "vocab.bpe or vocab.json + merges.txt, a tiktoken rank file (lines of 'base64-token "
    "rank'), or a JSON file written by `scratchgpt train-tokenizer` (Tokenizer.save)"
)


def bpe_vocab_size(spec: str) -> int | None:
    """N of a ``bpe:N`` spec (a BPE tokenizer to train with N tokens), or None for a spec
    naming a tokenizer to load; ``bpe:`` without a whole number is an error."""
    if not spec.startswith("bpe:"):
        return None
    if not spec.removeprefix("bpe:").isdigit():
        raise ValueError(f"{spec!r} is not bpe:VOCAB_SIZE with a whole number, e.g. bpe:2048")
    return int(spec.removeprefix("bpe:"))


def load_tokenizer(spec: str | Path) -> Tokenizer:
    """The tokenizer at ``spec``: a directory holding a ``tokenizer.json`` saved by
    :meth:`Tokenizer.save` (a run directory), a directory of GPT-2 files (OpenAI's or Hugging
    Face's layout), a tiktoken rank file, or a JSON file saved by :meth:`Tokenizer.save`,
    whatever the file's name."""
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; {_EXPECTED}")
    if path.is_dir():
        saved = path / SAVED_TOKENIZER
        data = _read_json(saved) if saved.is_file() else None
        if isinstance(data, dict) and data.get("type") in TOKENIZER_KINDS:
            return _saved_tokenizer(saved, data)
        return load_gpt2_tokenizer(path)  # (Hugging Face's own tokenizer.json has no "type")
    kind = _file_kind(path)
    if kind == "json":
        return load_saved_tokenizer(path)
    if kind == "tiktoken":
        return read_tiktoken_file(path)
    raise ValueError(f"{path} is neither a saved tokenizer (JSON) nor a tiktoken rank file; "
                     f"{_EXPECTED}")


def _file_kind(path: Path) -> str | None:
    """``"json"`` for a JSON object, ``"tiktoken"`` when the first line is ``base64 rank``,
    else None. Only the start of the file is read; the loader checks the rest."""
    with path.open("rb") as file:
        head = file.read(4096).lstrip()
    if head.startswith(b"{"):
        return "json"
    fields = head.split(b"\n", 1)[0].split()
    if len(fields) == 2 and fields[1].isdigit():
        try:
            base64.b64decode(fields[0], validate=True)
        except binascii.Error:
            return None
        return "tiktoken"
    return None


def load_saved_tokenizer(path: Path) -> Tokenizer:
    """Read a file written by :meth:`Tokenizer.save`; its ``"type"`` field picks the class."""
    return _saved_tokenizer(path, _read_json(path))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None


def _saved_tokenizer(path: Path, data: Any) -> Tokenizer:
    """The tokenizer ``data`` (read from ``path``) describes, or a ``ValueError`` naming
    ``path`` and what is wrong."""
    kind = data.get("type") if isinstance(data, dict) else None
    if not isinstance(kind, str) or kind not in TOKENIZER_KINDS:
        raise ValueError(
            f"{path}: the \"type\" field is {kind!r}, not one of {sorted(TOKENIZER_KINDS)}; is "
            "this a file written by Tokenizer.save()? (For GPT-2's encoder.json or vocab.json, "
            "load the directory that holds it.)"
        )
    try:
        return TOKENIZER_KINDS[kind].from_dict(data)
    except KeyError as exc:
        raise ValueError(f"{path}: field {exc} is missing (type {kind!r})") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a valid {kind!r} tokenizer file: {exc}") from None
