"""The steps around the BPE model in a Hugging Face ``tokenizer.json``, each built from its JSON.

Hugging Face's ``tokenizers`` runs text through a pipeline; each step is a JSON object with a
``"type"``, or ``null`` for none:

* the **normalizer** rewrites the text: ``Replace`` (Gemma, Llama 2 write a space as ``▁``),
  ``Prepend`` (Llama 2 puts ``▁`` before the text), Unicode normal forms (``NFC``: Qwen);
* the **pre-tokenizer** cuts it into pre-tokens that BPE never merges across: ``Split`` by the
  model's regex (Llama 3, Qwen), ``ByteLevel`` (each UTF-8 byte written as a printable character,
  as GPT-2 does), ``Metaspace`` (newer SentencePiece-style files: spaces as ``▁``);
* the **decoder** turns tokens back into text: ``ByteLevel``, or for SentencePiece-style files
  ``Replace`` ``▁`` -> space, ``ByteFallback`` (``<0x0A>`` -> the byte 10), ``Fuse`` (join) and
  ``Strip`` (drop the space that ``Prepend`` added).

Each builder takes the JSON object and the name of its field (for the error when a step is not
one this module knows). The byte-level characters are GPT-2's (:mod:`scratchgpt.tokenizers.bpe`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import regex

from scratchgpt.tokenizers.bpe import printable_to_token, token_to_printable
from scratchgpt.tokenizers.merge_list_bpe import byte_fallback_token
from scratchgpt.tokenizers.pretokenize import GPT2_SPLIT_PATTERN

Normalizer = Callable[[str], str]
Piece = tuple[str, bool]  # a pre-token, and whether it starts at the start of the text
PreTokenizer = Callable[[list[Piece]], list[Piece]]
T = TypeVar("T")
_BYTE_TOKENS = {byte_fallback_token(b): bytes([b]) for b in range(256)}
# bytes (read as Latin-1 characters, one per byte) -> GPT-2's printable characters, for
# str.translate: token_to_printable's map at the speed of one C call per pre-token
_PRINTABLE_BYTES = dict(enumerate(token_to_printable(bytes(range(256)))))


class UnsupportedStep(ValueError):
    """A step of ``tokenizer.json`` that this reader cannot run: which field, and why."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"field {where!r}: {message}")
        self.where = where


def _type_of(step: Any, where: str, known: tuple[str, ...]) -> str:
    kind = step.get("type") if isinstance(step, dict) else None
    if kind not in known:
        raise UnsupportedStep(where, f"type {kind!r} is not supported (this reader knows "
                                     f"{', '.join(known)})")
    return kind


def _pattern(step: dict[str, Any], where: str) -> regex.Pattern[str]:
    """``{"String": s}`` (a literal) or ``{"Regex": r}`` as a compiled pattern."""
    pattern = step.get("pattern")
    if isinstance(pattern, dict) and isinstance(pattern.get("String"), str):
        return regex.compile(regex.escape(pattern["String"]))
    if isinstance(pattern, dict) and isinstance(pattern.get("Regex"), str):
        return regex.compile(pattern["Regex"])
    raise UnsupportedStep(f"{where}.pattern", f"expected {{\"String\": ...}} or "
                                              f"{{\"Regex\": ...}}, got {pattern!r}")


def _in_order(steps: list[Callable[[T], T] | None]) -> Callable[[T], T]:
    """A ``Sequence`` step: its steps one after the other (a ``null`` one does nothing)."""
    kept = [step for step in steps if step is not None]

    def sequence(value: T) -> T:
        for step in kept:
            value = step(value)
        return value

    return sequence


# -- normalizers -----------------------------------------------------------------------------
_NORMAL_FORMS = ("NFC", "NFD", "NFKC", "NFKD")


def build_normalizer(step: Any, where: str = "normalizer") -> Normalizer | None:
    """The normalizer ``step`` describes (None for ``null``)."""
    if step is None:
        return None
    kind = _type_of(step, where, ("Sequence", "Replace", "Prepend", "Lowercase", *_NORMAL_FORMS))
    if kind == "Sequence":
        return _in_order([build_normalizer(s, f"{where}.normalizers[{i}]")
                          for i, s in enumerate(step.get("normalizers", []))])
    if kind == "Replace":
        pattern, content = _pattern(step, where), step["content"]
        return lambda text: pattern.sub(lambda _: content, text)
    if kind == "Prepend":
        prepend = step["prepend"]
        return lambda text: prepend + text if text else text
    if kind == "Lowercase":
        return str.lower
    return lambda text: unicodedata.normalize(kind, text)


# -- pre-tokenizers --------------------------------------------------------------------------
def build_pre_tokenizer(step: Any, where: str = "pre_tokenizer") -> PreTokenizer | None:
    """The pre-tokenizer ``step`` describes (None for ``null``): pieces in, pieces out."""
    if step is None:
        return None
    kind = _type_of(step, where, ("Sequence", "Split", "ByteLevel", "Metaspace"))
    if kind == "Sequence":
        return _in_order([build_pre_tokenizer(s, f"{where}.pretokenizers[{i}]")
                          for i, s in enumerate(step.get("pretokenizers", []))])
    if kind == "Split":
        if step.get("invert"):
            raise UnsupportedStep(f"{where}.invert", "an inverted Split is not supported")
        splitter = _splitter(_pattern(step, where), step.get("behavior"), f"{where}.behavior")
        return lambda pieces: [cut for piece in pieces for cut in splitter(piece)]
    if kind == "ByteLevel":
        return _byte_level(step)
    return _metaspace(step, where)


Splitter = Callable[[Piece], list[Piece]]
_BEHAVIOURS = ("Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous")


def _splitter(pattern: regex.Pattern[str], behaviour: Any, where: str) -> Splitter:
    """Cut a piece at the matches of ``pattern``; ``behaviour`` says where the matches go."""
    if behaviour not in _BEHAVIOURS:
        raise UnsupportedStep(where, f"{behaviour!r} is not one of {', '.join(_BEHAVIOURS)}")

    def split(piece: Piece) -> list[Piece]:
        text, at_start = piece
        if behaviour == "Isolated" and not pattern.groups:
            # Llama 3's and Qwen's patterns match every character: then the pieces are just
            # the matches, found at the regex engine's speed (empty matches cut nothing)
            matches = pattern.findall(text)
            if sum(map(len, matches)) == len(text):
                return [(match, at_start and i == 0)
                        for i, match in enumerate(filter(None, matches))]
        spans: list[tuple[int, int, bool]] = []  # (start, end, is a match), covering the text
        done = 0
        for match in pattern.finditer(text):
            if match.start() == match.end():
                continue
            if match.start() > done:
                spans.append((done, match.start(), False))
            spans.append((match.start(), match.end(), True))
            done = match.end()
        if done < len(text):
            spans.append((done, len(text), False))
        return [(text[start:end], at_start and start == 0)
                for start, end in _place_matches(spans, behaviour)]

    return split


def _place_matches(spans: list[tuple[int, int, bool]], behaviour: str) -> list[tuple[int, int]]:
    """The (start, end) of each piece: Hugging Face's rules for where a match goes."""
    if behaviour == "Isolated":
        return [(start, end) for start, end, _ in spans]
    if behaviour == "Removed":
        return [(start, end) for start, end, is_match in spans if not is_match]
    if behaviour == "MergedWithNext":  # the mirror image of MergedWithPrevious
        mirrored = [(-end, -start, is_match) for start, end, is_match in reversed(spans)]
        return [(-end, -start) for start, end in reversed(_place_matches(mirrored,
                                                                         "MergedWithPrevious"))]
    out: list[list[int]] = []
    previous_match = False
    for start, end, is_match in spans:
        joins = (is_match and not previous_match if behaviour == "MergedWithPrevious"
                 else is_match == previous_match)  # Contiguous: a run of matches is one piece
        if joins and out:
            out[-1][1] = end
        else:
            out.append([start, end])
        previous_match = is_match
    return [(start, end) for start, end in out]


def _byte_level(step: dict[str, Any]) -> PreTokenizer:
    """GPT-2's step: an optional leading space, GPT-2's regex (``use_regex``), bytes as
    printable characters."""
    add_prefix_space = bool(step.get("add_prefix_space", False))
    split = regex.compile(GPT2_SPLIT_PATTERN) if step.get("use_regex", True) else None

    def byte_level(pieces: list[Piece]) -> list[Piece]:
        if add_prefix_space:
            pieces = [(text if text.startswith(" ") else " " + text, at_start)
                      for text, at_start in pieces]
        if split is not None:
            pieces = [(chunk, at_start and i == 0) for text, at_start in pieces
                      for i, chunk in enumerate(split.findall(text))]
        return [(text.encode("utf-8").decode("latin-1").translate(_PRINTABLE_BYTES), at_start)
                for text, at_start in pieces]

    return byte_level


def _prepend_scheme(step: dict[str, Any], where: str) -> str:
    """``always``, ``first`` or ``never``: where Metaspace puts a ``▁`` before a piece (older
    files say ``add_prefix_space`` instead)."""
    scheme = step.get("prepend_scheme")
    if scheme is None:
        scheme = "always" if step.get("add_prefix_space", True) else "never"
    if scheme not in ("always", "first", "never"):
        raise UnsupportedStep(f"{where}.prepend_scheme", f"{scheme!r} is not always, first or "
                                                         "never")
    return scheme


def _metaspace(step: dict[str, Any], where: str) -> PreTokenizer:
    """Spaces become ``replacement`` (``▁``), one is put before a piece by the prepend scheme,
    and with ``split`` the text is cut before each ``▁``."""
    replacement = step.get("replacement", "▁")
    scheme = _prepend_scheme(step, where)
    cut = _splitter(regex.compile(regex.escape(replacement)), "MergedWithNext", where)

    def metaspace(pieces: list[Piece]) -> list[Piece]:
        out = []
        for text, at_start in pieces:
            text = text.replace(" ", replacement)
            if not text.startswith(replacement) and (
                scheme == "always" or (scheme == "first" and at_start)
            ):
                text = replacement + text
            out.extend(cut((text, at_start)) if step.get("split", True) else [(text, at_start)])
        return out

    return metaspace


# -- decoders --------------------------------------------------------------------------------
@dataclass
class Decoder:
    """A decoder as two parts: ``token`` turns one token's text into its bytes (``Replace``,
    ``ByteFallback``, ``ByteLevel``, a ``Strip`` before ``Fuse``), and ``strip_start`` /
    ``strip_end`` drop that many ``strip`` bytes from the whole decoded text (a ``Strip``
    after ``Fuse``, whose tokens are one text by then)."""

    token_steps: list[Callable[[bytes], bytes]] = field(default_factory=list)
    strip: bytes = b" "
    strip_start: int = 0
    strip_end: int = 0

    def token(self, text: str) -> bytes:
        data = text.encode("utf-8")
        for step in self.token_steps:
            data = step(data)
        return data

    def finish(self, data: bytes) -> bytes:
        """The whole decoded text's bytes after the whole-text strips."""
        for _ in range(self.strip_start):
            if not data.startswith(self.strip):
                break
            data = data[len(self.strip):]
        for _ in range(self.strip_end):
            if not data.endswith(self.strip) or not data:
                break
            data = data[: -len(self.strip)]
        return data


def build_decoder(step: Any, where: str = "decoder") -> Decoder:
    """The decoder ``step`` describes (``null``: tokens joined as they are written)."""
    decoder = Decoder()
    fused = [False]
    _add_decoder_step(decoder, step, where, fused)
    return decoder


def _add_decoder_step(decoder: Decoder, step: Any, where: str, fused: list[bool]) -> None:
    if step is None:
        return
    kind = _type_of(step, where, ("Sequence", "ByteLevel", "Replace", "ByteFallback", "Fuse",
                                  "Strip", "Metaspace"))
    if kind == "Sequence":
        for i, inner in enumerate(step.get("decoders", [])):
            _add_decoder_step(decoder, inner, f"{where}.decoders[{i}]", fused)
    elif kind == "ByteLevel":
        decoder.token_steps.append(_from_printable)
    elif kind == "Replace":
        pattern = step.get("pattern")
        if not (isinstance(pattern, dict) and isinstance(pattern.get("String"), str)):
            raise UnsupportedStep(f"{where}.pattern", "a decoder's Replace must be a String")
        old, new = pattern["String"].encode("utf-8"), step["content"].encode("utf-8")
        decoder.token_steps.append(lambda data: data.replace(old, new))
    elif kind == "ByteFallback":
        decoder.token_steps.append(lambda data: _BYTE_TOKENS.get(data.decode("utf-8", "replace"),
                                                                 data))
    elif kind == "Fuse":
        fused[0] = True
    elif kind == "Strip":
        content = step.get("content", " ").encode("utf-8")
        start, stop = int(step.get("start", 0)), int(step.get("stop", 0))
        if fused[0]:
            decoder.strip, decoder.strip_start, decoder.strip_end = content, start, stop
        else:
            decoder.token_steps.append(lambda data: _strip(data, content, start, stop))
    else:  # Metaspace: ▁ -> space, and the first token's leading space dropped
        old = step.get("replacement", "▁").encode("utf-8")
        decoder.token_steps.append(lambda data: data.replace(old, b" "))
        if _prepend_scheme(step, where) != "never":
            decoder.strip, decoder.strip_start = b" ", 1


def _from_printable(data: bytes) -> bytes:
    """A byte-level token's bytes; a token outside GPT-2's 256 characters (an added token
    such as ``<think>`` written plainly) stays as it is written, as Hugging Face decodes it."""
    text = data.decode("utf-8", "replace")
    try:
        return printable_to_token(text)
    except ValueError:
        return data


def _strip(data: bytes, content: bytes, start: int, stop: int) -> bytes:
    for _ in range(start):
        if not data.startswith(content):
            break
        data = data[len(content):]
    for _ in range(stop):
        if not data.endswith(content) or not data:
            break
        data = data[: -len(content)]
    return data
