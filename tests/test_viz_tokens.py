"""`viz tokens`: a text cut into tokens, shown honestly in the terminal and as a web page."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from scratchgpt.hub.models import resolve_tokenizer
from scratchgpt.tokenizers import CharTokenizer, Tokenizer, WordTokenizer
from scratchgpt.viz.tokens import TokenPiece, render_html, render_terminal, token_pieces, use_color

TEXTS = [
    "The cat sat on the mat. the end",
    "naïve café — 🦙 日本語\n\n\tindented",
    "<script>alert('x')</script> & \"quotes\"",
]


@pytest.fixture(scope="module")
def gpt2(shared_assets: Path) -> Tokenizer:
    return resolve_tokenizer(str(shared_assets / "gpt2-tokenizer" / "gpt2.tiktoken"))


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("text", TEXTS)
def test_pieces_are_tiktokens_ids_and_join_back_into_the_text(gpt2, tiktoken_gpt2, text):
    pieces = token_pieces(gpt2, text)
    assert [p.id for p in pieces] == tiktoken_gpt2.encode(text)
    assert b"".join(p.data for p in pieces) == text.encode("utf-8")
    assert [p.data for p in pieces] == [tiktoken_gpt2.decode_single_token_bytes(p.id)
                                        for p in pieces]


def test_a_character_cut_between_tokens_is_shown_as_its_bytes(gpt2):
    pieces = token_pieces(gpt2, "a 🦙!")
    assert [p.label for p in pieces] == ["a", " <f0 9f>", "<a6>", "<99>", "!"]
    assert [p.partial_of for p in pieces] == ["", "🦙", "🦙", "🦙", ""]
    assert [p.segments for p in pieces][1] == [(" ", False), ("<f0 9f>", True)]
    plain = render_terminal(pieces, color=False)
    assert "[a][␣<f0 9f>][<a6>][<99>][!]" in plain
    assert "🦙 U+1F999" in plain  # named under the tokens


def test_stray_bytes_anywhere_in_a_token_never_crash():
    assert TokenPiece(0, b"\xe2\x80").label == "<e2 80>"
    assert TokenPiece(0, b"a\x80\x81b\xffc").label == "a<80 81>b<ff>c"
    assert TokenPiece(0, b" caf\xc3\xa9").label == " café"


def test_plain_rendering_has_brackets_ids_and_no_escape_codes(gpt2):
    text = "The cat\nsat \x1b[31m"
    pieces = token_pieces(gpt2, text)
    plain = render_terminal(pieces, color=False)
    assert "\x1b" not in plain  # the text's own escape is drawn, not sent to the terminal
    assert plain.startswith("[The][␣cat][↵]\n[sat][␣][␛]")
    assert "ids: " + " ".join(str(p.id) for p in pieces) in plain
    assert f"{len(pieces)} tokens for {len(text)} characters" in plain
    assert "[ cat]" in render_terminal(pieces, color=False, spaces=False)


def test_colour_rendering_gives_each_token_and_its_id_a_background(gpt2):
    pieces = token_pieces(gpt2, "The cat sat")
    coloured = render_terminal(pieces)
    assert coloured.count("\x1b[30;48;5;") == 2 * len(pieces)  # each token, then each id
    assert "\x1b[30;48;5;153mThe\x1b[0m\x1b[30;48;5;223m␣cat\x1b[0m" in coloured


def test_colour_only_for_a_terminal_without_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color(FakeTerminal())
    assert not use_color(io.StringIO())  # a pipe or a file
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color(FakeTerminal())


def test_html_page_escapes_the_text_and_boxes_every_token(gpt2):
    text = "<script>alert('x')</script> the 🦙"
    pieces = token_pieces(gpt2, text)
    page = render_html(pieces, title="<script>title</script>")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;title&lt;/script&gt;" in page
    assert page.count('<span class="tok ') == len(pieces)
    for piece in pieces:
        assert f'<span class="id">{piece.id}</span>' in page
        assert f'title="id {piece.id} · bytes {piece.data.hex(" ")}' in page
    assert '<span class="bytes">&lt;f0 9f&gt;</span>' in page
    assert "part of 🦙 (U+1F999)" in page
    assert '<code>" the"</code> and <code>"the"</code> are two' in page  # the legend


def test_special_tokens_when_allowed(gpt2):
    with pytest.raises(ValueError, match="special token"):
        token_pieces(gpt2, "end<|endoftext|>")
    pieces = token_pieces(gpt2, "end<|endoftext|>", allowed_special="all")
    assert pieces[-1] == TokenPiece(50256, b"<|endoftext|>", special=True)
    assert 'special" title="id 50256 · bytes' in render_html(pieces, "t")


def test_a_word_tokenizer_which_drops_spaces_still_renders():
    tokenizer = WordTokenizer.from_texts("the cat sat")
    pieces = token_pieces(tokenizer, "the dog sat")
    assert [p.label for p in pieces] == ["the", "<|unk|>", "sat"]
    assert render_terminal(pieces, color=False).startswith("[the][<|unk|>][sat]")


def test_tokenizer_spec_takes_a_run_directory(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    CharTokenizer("abc ").save(run / "tokenizer.json")
    (run / "config.toml").write_text("[train]\n", encoding="utf-8")
    tokenizer = resolve_tokenizer(str(run))
    assert isinstance(tokenizer, CharTokenizer)
    assert tokenizer.encode("cab") == [2, 0, 1]


def test_tokenizer_spec_errors_name_what_is_accepted(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="nowhere.json does not exist; expected a run"):
        resolve_tokenizer(str(tmp_path / "nowhere.json"))
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="scratchgpt download gpt2 --size 124M"):
        resolve_tokenizer("gpt2-124M")
