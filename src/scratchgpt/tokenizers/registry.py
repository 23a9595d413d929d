"""Loading any tokenizer from a path: our own saved JSON files or GPT-2's published files."""

from __future__ import annotations

import json
from pathlib import Path

from scratchgpt.tokenizers.base import Tokenizer
from scratchgpt.tokenizers.bpe import BPETokenizer
from scratchgpt.tokenizers.char import CharTokenizer
from scratchgpt.tokenizers.gpt2 import load_gpt2_tokenizer, read_tiktoken_file
from scratchgpt.tokenizers.word import WordTokenizer

TOKENIZER_KINDS: dict[str, type[Tokenizer]] = {
    cls.kind: cls for cls in (WordTokenizer, CharTokenizer, BPETokenizer)
}
_EXPECTED = (
    "expected a directory holding encoder.json + vocab.bpe or vocab.json + merges.txt, "
    "a .tiktoken file, or a .json file written by Tokenizer.save()"
)


def load_tokenizer(spec: str | Path) -> Tokenizer:
    """The tokenizer at ``spec``: a directory of GPT-2 files (OpenAI's or Hugging Face's
    layout), a ``.tiktoken`` rank file, or a JSON file saved by :meth:`Tokenizer.save`."""
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; {_EXPECTED}")
    if path.is_dir():
        return load_gpt2_tokenizer(path)
    if path.suffix == ".tiktoken":
        return read_tiktoken_file(path)
    if path.suffix == ".json":
        return load_saved_tokenizer(path)
    raise ValueError(f"{path} is not a tokenizer file I can read: {_EXPECTED}")


def load_saved_tokenizer(path: Path) -> Tokenizer:
    """Read a file written by :meth:`Tokenizer.save`; its ``"type"`` field picks the class."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
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
