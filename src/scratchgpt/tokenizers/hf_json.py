"""Hugging Face's ``tokenizer.json``, read and run by our own code.

Today's open models ship their tokenizer as one ``tokenizer.json``. Two configurations of a BPE
model cover the families scratchgpt loads:

* **byte-level** (Llama 3, Qwen2/3): the normalizer is ``null`` (Qwen: ``NFC``), the
  pre-tokenizer a ``Split`` by the model's own regex and then ``ByteLevel`` (each UTF-8 byte as
  one of GPT-2's printable characters, ``use_regex: false``), the decoder ``ByteLevel``; Llama 3
  sets ``ignore_merges`` and its post-processor puts ``<|begin_of_text|>`` first.
* **SentencePiece-style** (Gemma, Llama 2, Mistral): the normalizer writes a space as ``▁``
  (Llama 2 also puts one before the text; Gemma 3 does not), the model has ``byte_fallback`` (a
  character outside the vocabulary becomes ``<0xNN>`` byte tokens), the decoder undoes both; the
  post-processor puts ``<bos>`` / ``<s>`` first.

Encoding runs Hugging Face's pipeline: the *added tokens* (``added_tokens``: special ones such as
``<|im_start|>``, and others such as Qwen3's ``<think>``) are cut out of the text first, those
marked ``normalized: false`` from the raw text, the others from the normalized text; the rest is
normalized, pre-tokenized and merged (:mod:`scratchgpt.tokenizers.hf_pipeline`,
:mod:`scratchgpt.tokenizers.merge_list_bpe`). As with every tokenizer here, ``encode`` refuses a
*special* token spelled in the text unless it is allowed (Hugging Face takes it as the token).

``encode`` gives the ids of the text alone; :meth:`HFTokenizer.post_process` adds what the
post-processor adds (Hugging Face's ``add_special_tokens=True``, transformers' default).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import regex

from scratchgpt.tokenizers.base import AllowedSpecial, SpecialTokenError, Tokenizer
from scratchgpt.tokenizers.hf_pipeline import (
    Decoder,
    Normalizer,
    Piece,
    PreTokenizer,
    UnsupportedStep,
    build_decoder,
    build_normalizer,
    build_pre_tokenizer,
)
from scratchgpt.tokenizers.merge_list_bpe import MergeListBPE

HF_TOKENIZER_FILE = "tokenizer.json"


def is_hf_tokenizer_json(data: Any) -> bool:
    """Whether ``data`` (a parsed JSON file) is Hugging Face's ``tokenizer.json``: it has a
    ``"model"`` object and no ``"type"`` of its own (ours have one)."""
    return isinstance(data, dict) and isinstance(data.get("model"), dict) and "type" not in data


@dataclass(frozen=True)
class AddedToken:
    """One entry of ``added_tokens``: a string cut out of the text before BPE, as one id."""

    content: str
    id: int
    special: bool = False
    lstrip: bool = False  # also takes the whitespace before it
    rstrip: bool = False  # ... and after it
    normalized: bool = True  # matched in the normalized text rather than the raw text


class _AddedTokenMatcher:
    """Finds added tokens in a text: at each place the longest, as Hugging Face does."""

    def __init__(self, tokens: list[AddedToken], spellings: list[str]) -> None:
        order = sorted(range(len(tokens)), key=lambda i: len(spellings[i]), reverse=True)
        self.tokens = [tokens[i] for i in order]
        space = r"\s*"
        self.pattern = regex.compile("|".join(
            f"{space if t.lstrip else ''}({regex.escape(spellings[i])}){space if t.rstrip else ''}"
            for i, t in zip(order, self.tokens, strict=True)
        )) if tokens else None

    def split(self, text: str, takes: Callable[[AddedToken, int], bool]
              ) -> Iterable[tuple[int, int, AddedToken | None]]:
        """(start, end, token) for each added token that ``takes(token, start)`` accepts, and
        (start, end, None) for the text between them (a token not accepted is part of it)."""
        done = 0
        if self.pattern is not None:
            for match in self.pattern.finditer(text):
                token = self.tokens[match.lastindex - 1]  # type: ignore[operator]
                if not takes(token, match.start()):
                    continue
                if match.start() > done:
                    yield done, match.start(), None
                yield match.start(), match.end(), token
                done = match.end()
        if done < len(text):
            yield done, len(text), None


class HFTokenizer(Tokenizer):
    """A BPE tokenizer configured by a Hugging Face ``tokenizer.json`` (see the module's doc)."""

    kind = "huggingface"  # (save() writes Hugging Face's file, which names no type)

    def __init__(self, data: dict[str, Any]) -> None:
        """Build from the parsed ``tokenizer.json``; :class:`UnsupportedStep` (a ``ValueError``)
        names the field this reader cannot run."""
        self.data = data
        model = data.get("model")
        if not isinstance(model, dict) or model.get("type") != "BPE":
            kind = model.get("type") if isinstance(model, dict) else model
            raise UnsupportedStep("model.type", f"{kind!r} is not supported: only BPE models "
                                                "(not Unigram, WordPiece or WordLevel) are read")
        if model.get("dropout") not in (None, 0, 0.0):
            raise UnsupportedStep("model.dropout", "BPE dropout (random merges) is for training")
        for name in ("continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(name):
                raise UnsupportedStep(f"model.{name}", "subword prefixes and suffixes are not "
                                                       "supported")
        self.model = MergeListBPE(
            model["vocab"],
            [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
             for m in model.get("merges", [])],
            unk_token=model.get("unk_token"),
            fuse_unk=bool(model.get("fuse_unk", False)),
            byte_fallback=bool(model.get("byte_fallback", False)),
            ignore_merges=bool(model.get("ignore_merges", False)),
        )
        self.normalizer: Normalizer | None = build_normalizer(data.get("normalizer"))
        self.pre_tokenizer: PreTokenizer | None = build_pre_tokenizer(data.get("pre_tokenizer"))
        self.decoder: Decoder = build_decoder(data.get("decoder"))
        self.added_tokens = _with_hf_ids(
            [_added_token(entry, i) for i, entry in enumerate(data.get("added_tokens") or [])],
            self.model.vocab)
        super().__init__({t.content: t.id for t in self.added_tokens if t.special})
        raw = [t for t in self.added_tokens if not t.normalized]
        normalized = [t for t in self.added_tokens if t.normalized]
        self._raw_matcher = _AddedTokenMatcher(raw, [t.content for t in raw])
        self._normalized_matcher = _AddedTokenMatcher(
            normalized, [self._normalize(t.content) for t in normalized])
        self.prefix_ids, self.suffix_ids = _post_processor_ids(data.get("post_processor"),
                                                                "post_processor")
        texts = {i: t for t, i in self.model.vocab.items()}
        texts.update((t.id, self._normalize(t.content) if t.normalized else t.content)
                     for t in self.added_tokens)  # (Hugging Face writes those normalized)
        self._decoder_table = {i: self.decoder.token(t) for i, t in texts.items()}

    @property
    def vocab_size(self) -> int:
        return max(self._decoder_table) + 1

    @property
    def bos_id(self) -> int | None:
        """The id the post-processor puts before a text (``<|begin_of_text|>``, ``<bos>``)."""
        return self.prefix_ids[0] if self.prefix_ids else None

    def post_process(self, ids: list[int]) -> list[int]:
        """``ids`` framed as the post-processor frames one text: its BOS before, if any."""
        return [*self.prefix_ids, *ids, *self.suffix_ids]

    # -- encoding ----------------------------------------------------------------------
    def encode(self, text: str, allowed_special: AllowedSpecial = frozenset()) -> list[int]:
        allowed = (set(self.special_tokens) if allowed_special == "all"
                   else set(allowed_special))
        return self._encode(text, allowed, refuse=True)

    def encode_ordinary(self, text: str) -> list[int]:
        return self._encode(text, set(), refuse=False)

    def _encode(self, text: str, allowed: set[str], *, refuse: bool) -> list[int]:
        """Added tokens out of the raw text, the rest normalized; added tokens out of that,
        the rest pre-tokenized and merged. A special token not ``allowed`` is an error
        (``refuse``) or plain text."""
        ids: list[int] = []

        def takes(token: AddedToken, position: int) -> bool:
            """Whether ``token``, found in the text, becomes its id (else it is plain text)."""
            if not token.special or token.content in allowed:
                return True
            if refuse:
                raise SpecialTokenError(token.content, position)
            return False

        for start, end, token in self._raw_matcher.split(text, takes):
            if token is not None:
                ids.append(token.id)
                continue
            normalized = self._normalize(text[start:end])
            for n_start, n_end, n_token in self._normalized_matcher.split(
                    normalized, lambda token, _, at=start: takes(token, at)):
                if n_token is not None:
                    ids.append(n_token.id)
                    continue
                pieces: list[Piece] = [(normalized[n_start:n_end], start == 0 and n_start == 0)]
                if self.pre_tokenizer is not None:
                    pieces = self.pre_tokenizer(pieces)
                tokenize = self.model.tokenize
                for piece, _ in pieces:
                    ids += tokenize(piece)
        return ids

    def _normalize(self, text: str) -> str:
        return self.normalizer(text) if self.normalizer is not None else text

    # -- decoding ----------------------------------------------------------------------
    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids`` as Hugging Face decodes it (special tokens kept): the tokens'
        bytes, then the decoder's strip of the whole text (Llama 2's leading space)."""
        return self.decoder.finish(self.decode_bytes(ids)).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Each token's bytes through the decoder (special tokens as they are spelled), without
        the whole-text strip, so that a stream of tokens decoded one at a time joins up."""
        table = self._decoder_table
        try:
            return b"".join([table[i] for i in ids])
        except KeyError as exc:
            raise ValueError(f"token id {exc.args[0]!r} is not in this tokenizer's vocabulary "
                             f"(ids 0..{self.vocab_size - 1})") from None

    # -- saving ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HFTokenizer:
        return cls(data)

    def save(self, path: str | Path) -> None:
        """Write ``tokenizer.json`` as Hugging Face wrote it (``tokenizers`` reads it too)."""
        Path(path).write_text(json.dumps(self.data, ensure_ascii=False), encoding="utf-8")


def _added_token(entry: Any, index: int) -> AddedToken:
    where = f"added_tokens[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("content"), str) \
            or type(entry.get("id")) is not int:
        raise UnsupportedStep(where, "expected an object with a string \"content\" and an "
                                     "integer \"id\"")
    if entry.get("single_word"):
        raise UnsupportedStep(f"{where}.single_word", "single_word added tokens are not "
                                                      "supported")
    return AddedToken(entry["content"], entry["id"], bool(entry.get("special", False)),
                      bool(entry.get("lstrip", False)), bool(entry.get("rstrip", False)),
                      bool(entry.get("normalized", not entry.get("special", False))))


def _with_hf_ids(tokens: list[AddedToken], vocab: dict[str, int]) -> list[AddedToken]:
    """The added tokens with the ids Hugging Face gives them when it reads the file: a token of
    the vocabulary keeps its id there, any other comes after the vocabulary and the added tokens
    before it, whatever id the file wrote (the two agree in a consistent file)."""
    out: list[AddedToken] = []
    last: int | None = None
    for token in tokens:
        token_id = vocab.get(token.content)
        if token_id is None:
            token_id = last + 1 if last is not None and last >= len(vocab) else len(vocab)
        last = token_id if last is None else max(last, token_id)
        out.append(replace(token, id=token_id))
    return out


def _post_processor_ids(step: Any, where: str) -> tuple[list[int], list[int]]:
    """The ids the post-processor puts before and after one text."""
    if step is None:
        return [], []
    kind = step.get("type") if isinstance(step, dict) else None
    if kind == "ByteLevel":  # it only adjusts offsets
        return [], []
    if kind == "Sequence":
        before: list[int] = []
        after: list[int] = []
        for i, inner in enumerate(step.get("processors", [])):
            prefix, suffix = _post_processor_ids(inner, f"{where}.processors[{i}]")
            before, after = before + prefix, suffix + after
        return before, after
    if kind in ("RobertaProcessing", "BertProcessing"):
        return [step["cls"][1]], [step["sep"][1]]
    if kind == "TemplateProcessing":
        specials = step.get("special_tokens", {})
        before, after = [], []
        seen_text = False
        for item in step.get("single", []):
            if "Sequence" in item:
                seen_text = True
                continue
            name = item.get("SpecialToken", {}).get("id")
            if name not in specials:
                raise UnsupportedStep(f"{where}.single", f"{name!r} is not one of its "
                                                         "special_tokens")
            (after if seen_text else before).extend(specials[name]["ids"])
        return before, after
    raise UnsupportedStep(f"{where}.type", f"{kind!r} is not supported (this reader knows "
                                           "ByteLevel, Sequence, TemplateProcessing, "
                                           "RobertaProcessing, BertProcessing)")


def read_hf_tokenizer(path: str | Path) -> HFTokenizer:
    """The tokenizer of a Hugging Face ``tokenizer.json``, or of a model directory holding
    one. An error names the file and the field it cannot read."""
    path = Path(path)
    if path.is_dir():
        path = path / HF_TOKENIZER_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
    return hf_tokenizer_from_json(data, path)


def hf_tokenizer_from_json(data: Any, path: str | Path) -> HFTokenizer:
    """:class:`HFTokenizer` for ``data``, parsed from ``path`` (named in any error)."""
    if not is_hf_tokenizer_json(data):
        raise ValueError(f"{path}: not a Hugging Face tokenizer.json (no \"model\" object)")
    try:
        return HFTokenizer(data)
    except UnsupportedStep as exc:
        raise ValueError(f"{path}: {exc}") from None
    except KeyError as exc:
        raise ValueError(f"{path}: the field {exc.args[0]!r} is missing") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a tokenizer.json this reader can run: {exc}") from None
