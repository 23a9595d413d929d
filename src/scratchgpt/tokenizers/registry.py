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
from scratchgpt.tokenizers.gpt2 import HF_FILES, load_gpt2_tokenizer, read_tiktoken_file
from scratchgpt.tokenizers.hf_json import hf_tokenizer_from_json, is_hf_tokenizer_json
from scratchgpt.tokenizers.word import WordTokenizer

TOKENIZER_KINDS: dict[str, type[Tokenizer]] = {
    cls.kind: cls for cls in (WordTokenizer, CharTokenizer, BPETokenizer)
}
SAVED_TOKENIZER = "tokenizer.json"  # the name a run directory gives its tokenizer
_EXPECTED = (
    "expected a run directory (its tokenizer.json), a Hugging Face model directory or "
    "tokenizer.json, a directory holding encoder.json + vocab.bpe or vocab.json + merges.txt, "
    "a tiktoken rank file (lines of 'base64-token rank'), or a JSON file written by "
    "`scratchgpt train-tokenizer` (Tokenizer.save)"
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
    :meth:`Tokenizer.save` (a run directory) or Hugging Face's (a model directory), a directory
    of GPT-2 files (OpenAI's or Hugging Face's layout), a tiktoken rank file, or a JSON file
    saved by :meth:`Tokenizer.save` or Hugging Face's ``tokenizer.json``, whatever the file's
    name. GPT-2's own Hugging Face directory is read from its ``vocab.json`` + ``merges.txt``
    (the same tokens; tiktoken can encode them)."""
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; {_EXPECTED}")
    if path.is_dir():
        saved = path / SAVED_TOKENIZER
        data = _read_json(saved) if saved.is_file() else None
        if isinstance(data, dict) and data.get("type") in TOKENIZER_KINDS:
            return _saved_tokenizer(saved, data)
        if is_hf_tokenizer_json(data) and not (_is_gpt2_configuration(data) and all(
                (path / name).is_file() for name in HF_FILES)):
            return hf_tokenizer_from_json(data, saved)
        return load_gpt2_tokenizer(path)
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
    """Read a file written by :meth:`Tokenizer.save`, whose ``"type"`` field picks the class,
    or a Hugging Face ``tokenizer.json`` (it has a ``"model"`` and no ``"type"``)."""
    data = _read_json(path)
    if is_hf_tokenizer_json(data):
        return hf_tokenizer_from_json(data, path)
    return _saved_tokenizer(path, data)


def _is_gpt2_configuration(data: dict[str, Any]) -> bool:
    """Whether a Hugging Face ``tokenizer.json`` is configured as GPT-2's: byte-level BPE with
    GPT-2's regex and nothing else, so that its ``vocab.json`` + ``merges.txt`` say it all."""
    pre = data.get("pre_tokenizer") or {}
    model = data["model"]
    return (pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
            and not pre.get("add_prefix_space") and data.get("normalizer") is None
            and model.get("type") == "BPE" and not model.get("ignore_merges")
            and not model.get("byte_fallback")
            and (data.get("post_processor") or {}).get("type") in (None, "ByteLevel"))


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
