"""Word- and character-level tokenizers, checked against the book's chapter 2 numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchgpt.tokenizers import (
    ENDOFTEXT,
    UNKNOWN,
    CharTokenizer,
    SpecialTokenError,
    Tokenizer,
    UnknownCharacterError,
    WordTokenizer,
    load_tokenizer,
)


@pytest.fixture(scope="module")
def verdict(shared_assets: Path) -> str:
    return (shared_assets / "corpora" / "the-verdict.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def words(verdict: str) -> WordTokenizer:
    return WordTokenizer.from_texts(verdict)


# -- word level -----------------------------------------------------------------------------
def test_word_vocabulary_matches_the_book(words: WordTokenizer) -> None:
    # 1,130 distinct words and punctuation marks in "The Verdict", plus the two special tokens.
    assert words.vocab_size == 1132
    assert words.special_tokens == {ENDOFTEXT: 1130, UNKNOWN: 1131}
    assert words.eot_id == 1130
    assert words.words == sorted(words.words)


def test_word_encode_decode_matches_the_book(words: WordTokenizer) -> None:
    text = '"It\'s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'
    ids = words.encode(text)
    assert ids == [1, 56, 2, 850, 988, 602, 533, 746, 5, 1126, 596, 5, 1, 67, 7, 38, 851, 1108,
                   754, 793, 7]
    assert words.decode(ids) == (
        '" It\' s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'
    )


def test_word_unknown_words_and_document_separator(words: WordTokenizer) -> None:
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of the palace."
    ids = words.encode(text, allowed_special={ENDOFTEXT})
    assert ids == [1131, 5, 355, 1126, 628, 975, 10, 1130, 55, 988, 956, 984, 722, 988, 1131, 7]
    assert words.decode(ids) == (
        "<|unk|>, do you like tea? <|endoftext|> In the sunlit terraces of the <|unk|>."
    )


def test_word_special_token_in_text_is_refused_unless_allowed(words: WordTokenizer) -> None:
    with pytest.raises(SpecialTokenError, match=r"'<\|endoftext\|>'"):
        words.encode("the end <|endoftext|> the start")
    # Read as plain text, the spelling is just an unknown word.
    assert words.encode_ordinary("<|endoftext|>") == [words.special_tokens[UNKNOWN]]


@pytest.mark.parametrize("name", ["words.json", "words.vocab", "words"])
def test_word_save_load_roundtrip(words: WordTokenizer, tmp_path: Path, name: str) -> None:
    path = tmp_path / name  # load_tokenizer goes by the content, not the name
    words.save(path)
    loaded = load_tokenizer(path)
    assert isinstance(loaded, WordTokenizer)
    assert loaded.words == words.words and loaded.special_tokens == words.special_tokens
    assert WordTokenizer.load(path).encode("I had always thought") == words.encode(
        "I had always thought"
    )
    with pytest.raises(TypeError, match="WordTokenizer, not a CharTokenizer"):
        CharTokenizer.load(path)


def test_word_vocabulary_skips_special_tokens() -> None:
    tokenizer = WordTokenizer.from_texts("The end.<|endoftext|>The start <|unk|>")
    assert tokenizer.words == [".", "The", "end", "start"]


def test_word_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        WordTokenizer.from_texts(["", "  \n"])
    tokenizer = WordTokenizer(["a", "b"])
    with pytest.raises(ValueError, match="token id 7 is not in"):
        tokenizer.decode([0, 7])
    with pytest.raises(ValueError, match="repeats"):
        WordTokenizer(["a", "a"])


# -- character level ------------------------------------------------------------------------
def test_char_roundtrip_on_real_text(verdict: str) -> None:
    chars = CharTokenizer.from_texts(verdict)
    assert chars.chars == "".join(sorted(set(verdict)))
    assert chars.vocab_size == len(set(verdict))
    ids = chars.encode(verdict)
    assert len(ids) == len(verdict)
    assert chars.decode(ids) == verdict


def test_char_special_tokens_take_the_last_ids() -> None:
    chars = CharTokenizer.from_texts(["ab", "ba c"], special_tokens=[ENDOFTEXT])
    assert chars.chars == " abc"
    assert chars.eot_id == 4 and chars.vocab_size == 5
    ids = chars.encode("ab<|endoftext|>c", allowed_special="all")
    assert ids == [1, 2, 4, 3]
    assert chars.decode(ids) == "ab<|endoftext|>c"
    with pytest.raises(SpecialTokenError):
        chars.encode("ab<|endoftext|>c")


def test_char_unknown_character_names_it_and_its_position() -> None:
    chars = CharTokenizer.from_texts("hello world")
    with pytest.raises(UnknownCharacterError, match=r"'€' \(U\+20AC\) at position 6"):
        chars.encode("hello €uro")


def test_char_save_load_roundtrip(tmp_path: Path) -> None:
    chars = CharTokenizer.from_texts("Ünïcødé text 🙂", special_tokens=[ENDOFTEXT])
    path = tmp_path / "chars.json"
    chars.save(path)
    loaded = Tokenizer.load(path)
    assert isinstance(loaded, CharTokenizer)
    assert loaded.chars == chars.chars and loaded.special_tokens == chars.special_tokens


def test_char_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.from_texts("")
    with pytest.raises(ValueError, match="token id -1 is not in"):
        CharTokenizer("ab").decode([-1])


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1))
def test_char_roundtrip_property(text: str) -> None:
    chars = CharTokenizer.from_texts(text)
    assert chars.decode(chars.encode(text)) == text
