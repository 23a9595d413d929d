"""GPT-2's tokenizer read from its published files gives exactly tiktoken's ids."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchgpt.tokenizers import (
    ENDOFTEXT,
    BPETokenizer,
    SpecialTokenError,
    load_gpt2_tokenizer,
    load_tokenizer,
)

FORMATS = ["openai", "hugging-face", "tiktoken"]
# Arbitrary Unicode rarely forms words; this mixes in text that exercises many merges.
ENGLISH_LIKE = st.from_regex(r"(\s*('s|'ll|[a-zA-Z]+|[0-9]+|[!?.,-]+))*\s*", fullmatch=True)


@pytest.fixture(scope="module")
def gpt2_files(shared_assets: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Where each format lives. The Hugging Face files are written by Hugging Face's own
    ``tokenizers`` library from OpenAI's files."""
    from tokenizers.models import BPE

    openai = shared_assets / "gpt2-tokenizer"
    hugging_face = tmp_path_factory.mktemp("hf-gpt2")
    BPE.from_file(str(openai / "encoder.json"), str(openai / "vocab.bpe")).save(str(hugging_face))
    assert {p.name for p in hugging_face.iterdir()} == {"vocab.json", "merges.txt"}
    return {"openai": openai, "hugging-face": hugging_face,
            "tiktoken": openai / "gpt2.tiktoken"}


@pytest.fixture(scope="module")
def gpt2(gpt2_files: dict[str, Path]) -> dict[str, BPETokenizer]:
    tokenizers = {name: load_tokenizer(path) for name, path in gpt2_files.items()}
    assert all(isinstance(t, BPETokenizer) for t in tokenizers.values())
    return tokenizers  # type: ignore[return-value]


@pytest.fixture(scope="module")
def pure(gpt2: dict[str, BPETokenizer]) -> BPETokenizer:
    """GPT-2 encoded in pure Python (no tiktoken)."""
    tokenizer = gpt2["openai"]
    return BPETokenizer(tokenizer.ranks, tokenizer.special_tokens, use_tiktoken=False)


def test_all_formats_hold_the_same_vocabulary(gpt2: dict[str, BPETokenizer]) -> None:
    openai = gpt2["openai"]
    assert openai.vocab_size == 50257
    assert openai.special_tokens == {ENDOFTEXT: 50256} and openai.eot_id == 50256
    for tokenizer in gpt2.values():
        assert tokenizer.ranks == openai.ranks
        assert tokenizer.special_tokens == openai.special_tokens


@pytest.mark.parametrize("use_tiktoken", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
def test_hello_world(gpt2: dict[str, BPETokenizer], fmt: str, use_tiktoken: bool) -> None:
    tokenizer = BPETokenizer(gpt2[fmt].ranks, gpt2[fmt].special_tokens, use_tiktoken=use_tiktoken)
    assert tokenizer.encode("Hello, world") == [15496, 11, 995]
    assert tokenizer.decode([15496, 11, 995]) == "Hello, world"


@pytest.mark.parametrize("corpus", ["moby-dick.txt", "the-verdict.txt"])
@pytest.mark.parametrize("use_tiktoken", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
def test_corpora_match_tiktoken(
    gpt2: dict[str, BPETokenizer], tiktoken_gpt2, shared_assets: Path,
    fmt: str, use_tiktoken: bool, corpus: str,
) -> None:
    text = (shared_assets / "corpora" / corpus).read_text(encoding="utf-8")
    tokenizer = BPETokenizer(gpt2[fmt].ranks, gpt2[fmt].special_tokens, use_tiktoken=use_tiktoken)
    ids = tokenizer.encode(text)
    assert ids == tiktoken_gpt2.encode(text)
    assert tokenizer.decode(ids) == text


def test_load_gpt2_tokenizer_accepts_directory_and_rank_file(gpt2_files: dict[str, Path]) -> None:
    for path in gpt2_files.values():
        assert load_gpt2_tokenizer(path).encode("Hello, world") == [15496, 11, 995]


def test_special_token_is_refused_unless_allowed(pure: BPETokenizer, tiktoken_gpt2) -> None:
    text = "The end.<|endoftext|>Once upon a time"
    with pytest.raises(SpecialTokenError, match=r"'<\|endoftext\|>'"):
        pure.encode(text)
    with pytest.raises(ValueError, match="endoftext"):
        tiktoken_gpt2.encode(text)  # tiktoken refuses it too
    ids = pure.encode(text, allowed_special={ENDOFTEXT})
    assert 50256 in ids
    assert ids == tiktoken_gpt2.encode(text, allowed_special={ENDOFTEXT})
    assert pure.encode(text, allowed_special="all") == ids
    # As ordinary text the spelling is just characters.
    assert pure.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)
    assert 50256 not in pure.encode_ordinary(text)


def test_lone_surrogates_are_replaced_like_tiktoken(pure: BPETokenizer, tiktoken_gpt2) -> None:
    text = "a\ud800b \udfff"
    assert pure.encode(text) == tiktoken_gpt2.encode(text)


@settings(max_examples=200, deadline=None)
@given(text=st.text() | ENGLISH_LIKE)
def test_any_text_matches_tiktoken(pure: BPETokenizer, tiktoken_gpt2, text: str) -> None:
    ids = pure.encode_ordinary(text)
    assert ids == tiktoken_gpt2.encode_ordinary(text)
    assert pure.decode(ids) == text


@settings(max_examples=200, deadline=None)
@given(text=st.text() | ENGLISH_LIKE)
def test_decode_inverts_encode(pure: BPETokenizer, text: str) -> None:
    assert pure.decode(pure.encode(text, allowed_special="all")) == text
