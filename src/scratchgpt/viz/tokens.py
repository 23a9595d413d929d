"""Text coloured by token: what a tokenizer makes of a string, in the terminal or a web page.

A byte-level BPE (GPT-2's) cuts the UTF-8 *bytes* of a text, not its characters: a common word
is one token, a rare one several, and a word's leading space belongs to it, so ``" the"`` and
``"the"`` are different tokens. A character of several bytes (an emoji, most Chinese) may be
cut between tokens; such a piece is shown as its bytes in hex, ``<f0 9f>``, never guessed at.
"""

from __future__ import annotations

import html
import os
import unicodedata
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import TextIO

from scratchgpt.tokenizers import Tokenizer
from scratchgpt.tokenizers.base import AllowedSpecial

# 256-colour terminal backgrounds and their web twins: pale, so black text reads on all of them.
_TERMINAL_COLOURS = (153, 223, 194, 225, 229, 189, 152, 217)
_WEB_COLOURS = ("#afd7ff", "#ffd7af", "#d7ffd7", "#ffd7ff", "#ffffaf", "#d7d7ff", "#afd7d7",
                "#ffafaf")
_PICTURES = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


@dataclass(frozen=True)
class TokenPiece:
    """One token of a text: its ``id``, the ``data`` (bytes) it stands for, whether it is a
    special token such as ``<|endoftext|>``, and ``partial_of``: the characters of the text it
    holds only some of the bytes of (``""`` for nearly every token)."""

    id: int
    data: bytes
    special: bool = False
    partial_of: str = ""

    @property
    def segments(self) -> list[tuple[str, bool]]:
        """The bytes as runs of ``(text, is_bytes)``: whole UTF-8 as text, the rest as hex
        (``"<e2 80>"``, ``True``)."""
        runs: list[tuple[bytes, bool]] = []
        rest = self.data
        while rest:
            try:
                rest.decode("utf-8")
                start = end = len(rest)
            except UnicodeDecodeError as err:
                start, end = err.start, err.end
            if start:
                runs.append((rest[:start], False))
            if end > start and runs and runs[-1][1]:
                runs[-1] = (runs[-1][0] + rest[start:end], True)  # one <..> for neighbours
            elif end > start:
                runs.append((rest[start:end], True))
            rest = rest[end:]
        return [(f"<{data.hex(' ')}>", True) if is_bytes else (data.decode("utf-8"), False)
                for data, is_bytes in runs]

    @property
    def label(self) -> str:
        """The token as text, its stray bytes in hex: ``" caf"``, ``" <f0 9f>"``."""
        return "".join(text for text, _ in self.segments)


def token_pieces(tokenizer: Tokenizer, text: str,
                 allowed_special: AllowedSpecial = frozenset()) -> list[TokenPiece]:
    """``text`` encoded by ``tokenizer``, one :class:`TokenPiece` per id. For a BPE or
    character tokenizer the pieces' bytes join back into the text's UTF-8; a word tokenizer
    drops the spaces. Special tokens in the text are refused unless ``allowed_special``."""
    ids = tokenizer.encode(text, allowed_special=allowed_special)
    specials = set(tokenizer.special_tokens.values())
    data = [tokenizer.decode_bytes([i]) for i in ids]
    partial = _partial_characters(text, data)
    return [TokenPiece(i, d, i in specials, p) for i, d, p in zip(ids, data, partial, strict=True)]


def _partial_characters(text: str, data: Sequence[bytes]) -> list[str]:
    """For each token, the characters it holds only part of: the first and last character of
    its byte range, when that range cuts them. Empty for tokens that do not spell the text
    byte for byte."""
    if b"".join(data) != text.encode("utf-8", "surrogatepass"):
        return [""] * len(data)
    starts = list(accumulate((len(c.encode("utf-8")) for c in text), initial=0))
    partial, end = [], 0
    for token in data:
        start, end = end, end + len(token)
        first, last = bisect_right(starts, start) - 1, bisect_right(starts, end - 1) - 1
        cut = [k for k in dict.fromkeys((first, last)) if starts[k] < start or starts[k + 1] > end]
        partial.append("".join(text[k] for k in cut))
    return partial


def use_color(stream: TextIO) -> bool:
    """Colour for a terminal, unless ``NO_COLOR`` is set (https://no-color.org); never for a
    file or a pipe."""
    return not os.environ.get("NO_COLOR") and stream.isatty()


def visible_text(text: str, spaces: bool = True) -> str:
    """Whitespace and control characters drawn as symbols (a raw escape character could
    restyle the terminal); ordinary spaces too when ``spaces``."""
    out = []
    for char in text:
        if char in _PICTURES and (char != " " or spaces):
            out.append(_PICTURES[char])
        elif ord(char) < 0x20:
            out.append(chr(0x2400 + ord(char)))  # the Unicode "control pictures": ␛ for ESC
        elif unicodedata.category(char) in ("Cc", "Cf"):
            out.append(char.encode("unicode_escape").decode("ascii"))  # \x9b, \u200b
        else:
            out.append(char)
    return "".join(out)


def _summary(pieces: Sequence[TokenPiece]) -> str:
    """``"5 tokens for 19 characters (19 bytes): 3.8 characters a token"``, and the characters
    split between tokens, if any."""
    data = b"".join(p.data for p in pieces)
    chars = len(data.decode("utf-8", "replace"))
    count = len(pieces)
    line = (f"{count} token{'s' * (count != 1)} for {chars} characters ({len(data)} bytes): "
            f"{chars / max(count, 1):.1f} characters a token")
    split = "".join(dict.fromkeys("".join(p.partial_of for p in pieces)))
    if split:
        line += "\ncut between tokens (shown as <hex> bytes): " + ", ".join(
            f"{c} U+{ord(c):04X}" for c in split)
    return line


def render_terminal(pieces: Sequence[TokenPiece], color: bool = True, spaces: bool = True) -> str:
    """The text with each token on its own background colour (cycling, so neighbours always
    differ), then the ids in the same colours. With ``color=False``, plain text:
    ``[The][␣cat]`` and a line of ids. ``spaces`` draws spaces as ``␣``; a newline is ``↵``
    and ends the line. Stray bytes are underlined hex (``<f0 9f>``), special tokens bold."""
    lines, ids, line = [], [], ""
    for index, piece in enumerate(pieces):
        text = "".join((f"\x1b[4m{s}\x1b[24m" if color else s) if is_bytes
                       else visible_text(s, spaces) for s, is_bytes in piece.segments)
        if color:
            style = f"30;48;5;{_TERMINAL_COLOURS[index % len(_TERMINAL_COLOURS)]}"
            style += ";1" if piece.special else ""
            line += f"\x1b[{style}m{text}\x1b[0m"
            ids.append(f"\x1b[{style}m{piece.id}\x1b[0m")
        else:
            line += f"[{text}]"
            ids.append(str(piece.id))
        if b"\n" in piece.data:
            lines.append(line)
            line = ""
    lines.append(line)
    return "\n".join([*lines, "", "ids: " + " ".join(ids), _summary(pieces)]) + "\n"


def render_html(pieces: Sequence[TokenPiece], title: str) -> str:
    """A page of its own (no scripts, no files beside it): each token a coloured box, its text
    over its id, its bytes in a tooltip; a summary, the ids to copy, and a legend."""
    boxes = []
    for index, piece in enumerate(pieces):
        text = "".join(
            f'<span class="bytes">{html.escape(s)}</span>' if is_bytes
            else html.escape(visible_text(s)).replace("␣", '<span class="ws">␣</span>')
            for s, is_bytes in piece.segments)
        tip = f"id {piece.id} · bytes {piece.data.hex(' ')}"
        tip += "".join(f" · part of {c} (U+{ord(c):04X})" for c in piece.partial_of)
        tip += " · a special token" if piece.special else ""
        kind = " special" if piece.special else ""
        boxes.append(f'<span class="tok c{index % len(_WEB_COLOURS)}{kind}" '
                     f'title="{html.escape(tip)}"><span class="text">{text}</span>'
                     f'<span class="id">{piece.id}</span></span>')
        if b"\n" in piece.data:
            boxes.append("<br>")
    colours = "\n".join(f".c{i} {{ background: {c}; }}" for i, c in enumerate(_WEB_COLOURS))
    summary = html.escape(_summary(pieces)).replace("\n", "<br>")
    ids = html.escape(", ".join(str(p.id) for p in pieces))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }}
.tokens {{ line-height: 2.6; }}
.tok {{ display: inline-block; vertical-align: top; text-align: center; line-height: 1.3;
        margin: 2px 1px; padding: 2px 4px; border-radius: 4px; }}
.tok .text {{ display: block; font: 1.1rem ui-monospace, monospace; white-space: pre; }}
.tok .id {{ display: block; font: 0.7rem ui-monospace, monospace; color: #555; }}
.special {{ outline: 2px solid #222; font-weight: bold; }}
.ws {{ color: #888; }}
.bytes {{ color: #a00; font-size: 0.85rem; }}
.summary {{ color: #555; }}
pre {{ white-space: pre-wrap; word-break: break-all; }}
{colours}
</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<div class="tokens">
{"".join(boxes)}
</div>
<p class="summary">{summary}</p>
<details><summary>the ids, as the model reads them</summary><pre>[{ids}]</pre></details>
<h2>How to read this</h2>
<ul>
<li>Each box is one token: the text it stands for above, its id (its row of the embedding
matrix) below. Hover over a box for its bytes. Neighbouring boxes differ in colour only so that
the boundaries show.</li>
<li><span class="ws">␣</span> is a space and ↵ a newline. A byte-level BPE keeps a word's
leading space inside the word's token, so <code>" the"</code> and <code>"the"</code> are two
different tokens with two different embeddings (in GPT-2's vocabulary, ids 262 and 1169;
<code>"The"</code> is 464): the model has to learn that they mean the same word, at the start
of a text or in the middle of a sentence.</li>
<li>Common words are one token; rarer words, names and numbers are cut into several. The merges
that glue bytes into tokens were learned from how often pairs occur in the tokenizer's training
text.</li>
<li><span class="bytes">&lt;f0 9f&gt;</span> is raw bytes: the tokenizer works on UTF-8 bytes,
and a character it has no token for (an emoji, many non-Latin letters) may be cut between tokens.
No single token is that character; it reappears only when the bytes are joined.</li>
</ul>
</body>
</html>
"""
