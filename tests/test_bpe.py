"""BPE training and the BPETokenizer: checked against a naive trainer, Hugging Face
``tokenizers`` and tiktoken, plus save/load round trips and bad input."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchgpt.tokenizers import (
    ENDOFTEXT,
    BPETokenizer,
    SpecialTokenError,
    load_tokenizer,
    pretokenize,
    save_gpt2_files,
    train_bpe,
)
from scratchgpt.tokenizers.bpe import printable_to_token


@pytest.fixture(scope="module")
def verdict(shared_assets: Path) -> str:
    return (shared_assets / "corpora" / "the-verdict.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def moby_dick(shared_assets: Path) -> str:
    return (shared_assets / "corpora" / "moby-dick.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def trained(moby_dick: str) -> BPETokenizer:
    """2,000 ids learned from Moby Dick: 256 bytes, 1,743 merges, ``<|endoftext|>``."""
    return train_bpe(moby_dick, vocab_size=2000, progress=False)


def naive_bpe(text: str, n_merges: int) -> list[bytes]:
    """The textbook algorithm: recount every pair of the whole corpus before each merge."""
    words = Counter(tuple(bytes([b]) for b in chunk.encode()) for chunk in pretokenize(text))
    learned: list[bytes] = []
    for _ in range(n_merges):
        counts: Counter[tuple[bytes, bytes]] = Counter()
        for word, n in words.items():
            for pair in pairwise(word):
                counts[pair] += n
        if not counts:
            break
        a, b = min(counts, key=lambda pair: (-counts[pair], pair))  # most frequent, then bytes
        if a + b not in learned:
            learned.append(a + b)
        merged_words: Counter[tuple[bytes, ...]] = Counter()
        for word, n in words.items():
            merged, i = [], 0
            while i < len(word):
                if word[i : i + 2] == (a, b):
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            merged_words[tuple(merged)] += n
        words = merged_words
    return learned


# -- training -------------------------------------------------------------------------------
def test_training_equals_naive_bpe(verdict: str) -> None:
    text = verdict[:8000]
    tokenizer = train_bpe(text, vocab_size=256 + 150 + 1, progress=False)
    learned = [tokenizer.token_bytes(i) for i in range(256, 256 + 150)]
    assert learned == naive_bpe(text, 150)


def test_training_agrees_with_hugging_face(moby_dick: str, trained: BPETokenizer) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator([moby_dick], trainer)
    theirs = {printable_to_token(t) for t in hf.get_vocab() if t != ENDOFTEXT}
    ours = set(trained.ranks)
    assert len(theirs) == len(ours) == 1999
    # Same counts, different tie-breaking: the vocabularies may differ only at the margin.
    assert len(theirs & ours) >= 0.98 * len(ours)


def test_trained_layout_and_merges(trained: BPETokenizer, moby_dick: str) -> None:
    assert trained.vocab_size == 2000
    assert trained.special_tokens == {ENDOFTEXT: 1999}
    assert [trained.token_bytes(i) for i in range(256)] == [bytes([b]) for b in range(256)]
    merges = trained.merges()
    assert len(merges) == 1999 - 256
    for rank, (a, b) in enumerate(merges, start=256):
        assert trained.ranks[a + b] == rank
        assert trained.ranks[a] < rank and trained.ranks[b] < rank
    # The first merge is the most frequent adjacent byte pair of the corpus.
    pair_counts: Counter[bytes] = Counter()
    for chunk in pretokenize(moby_dick):
        data = chunk.encode()
        pair_counts.update(data[i : i + 2] for i in range(len(data) - 1))
    assert b"".join(merges[0]) == pair_counts.most_common(1)[0][0]


def test_trained_tokenizer_compresses_and_roundtrips(trained: BPETokenizer, moby_dick: str) -> None:
    ids = trained.encode(moby_dick)
    assert len(ids) < len(moby_dick.encode()) / 3
    assert trained.decode(ids) == moby_dick


def test_pure_python_and_tiktoken_paths_agree(trained: BPETokenizer, moby_dick: str) -> None:
    pytest.importorskip("tiktoken")
    pure = BPETokenizer(trained.ranks, trained.special_tokens, use_tiktoken=False)
    fast = BPETokenizer(trained.ranks, trained.special_tokens, use_tiktoken=True)
    assert pure.encode(moby_dick) == fast.encode(moby_dick)


def test_training_is_deterministic(verdict: str) -> None:
    first = train_bpe(verdict, 600, progress=False)
    second = train_bpe(verdict.splitlines(keepends=True), 600, progress=False)
    assert first.ranks == second.ranks


def test_special_tokens_get_the_last_ids_and_are_never_learned() -> None:
    text = "low lower<|endoftext|>newest widest<|pad|>" * 50
    tokenizer = train_bpe(text, 270, special_tokens=[ENDOFTEXT, "<|pad|>"], progress=False)
    assert tokenizer.special_tokens == {ENDOFTEXT: 268, "<|pad|>": 269}
    assert not any(b"<|" in token or b"|>" in token for token in tokenizer.ranks)
    ids = tokenizer.encode(text, allowed_special="all")
    assert ids.count(268) == ids.count(269) == 50
    with pytest.raises(SpecialTokenError, match=r"'<\|pad\|>'"):
        tokenizer.encode("a <|pad|>")


def test_progress_bar_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    train_bpe("hello hello world", 260, progress=True)
    captured = capsys.readouterr()
    assert "BPE merges" in captured.err and captured.out == ""


# -- saving and loading ---------------------------------------------------------------------
def test_json_save_load_roundtrip(trained: BPETokenizer, tmp_path: Path, verdict: str) -> None:
    path = tmp_path / "bpe.json"
    trained.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["type"] == "bpe" and data["tokens"][256] == "Ġt"  # bytes written GPT-2 style
    loaded = load_tokenizer(path)
    assert isinstance(loaded, BPETokenizer)
    assert loaded.ranks == trained.ranks and loaded.special_tokens == trained.special_tokens
    assert loaded.encode(verdict) == trained.encode(verdict)


def test_hugging_face_files_roundtrip(trained: BPETokenizer, tmp_path: Path) -> None:
    save_gpt2_files(trained, tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, BPETokenizer)
    assert loaded.ranks == trained.ranks and loaded.special_tokens == trained.special_tokens


def test_a_directory_holding_a_saved_tokenizer_loads_it(trained: BPETokenizer,
                                                        tmp_path: Path) -> None:
    """A run directory keeps its tokenizer as tokenizer.json: the directory names it."""
    trained.save(tmp_path / "tokenizer.json")
    (tmp_path / "config.toml").write_text("", encoding="utf-8")
    assert load_tokenizer(tmp_path).ranks == trained.ranks


def test_hugging_faces_own_tokenizer_json_is_not_taken_for_ours(trained: BPETokenizer,
                                                                tmp_path: Path) -> None:
    """GPT-2's Hugging Face directory holds its own tokenizer.json (no "type"), configured as
    GPT-2's: its vocab.json and merges.txt are read instead (tiktoken can encode those)."""
    save_gpt2_files(trained, tmp_path)
    (tmp_path / "tokenizer.json").write_text(
        '{"version": "1.0", "normalizer": null, "model": {"type": "BPE"}, "pre_tokenizer": '
        '{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}}', encoding="utf-8")
    assert load_tokenizer(tmp_path).ranks == trained.ranks


# -- properties -----------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(text=st.text(), use_tiktoken=st.booleans())
def test_decode_inverts_encode(trained: BPETokenizer, text: str, use_tiktoken: bool) -> None:
    tokenizer = BPETokenizer(trained.ranks, trained.special_tokens, use_tiktoken=use_tiktoken)
    assert tokenizer.decode(tokenizer.encode_ordinary(text)) == text


# -- bad input ------------------------------------------------------------------------------
def test_vocab_size_too_small_says_the_minimum() -> None:
    with pytest.raises(ValueError, match="at least 257"):
        train_bpe("some text", 256, progress=False)
    with pytest.raises(ValueError, match="at least 258"):
        train_bpe("some text", 257, special_tokens=[ENDOFTEXT, "<|pad|>"], progress=False)


def test_empty_text_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        train_bpe([], 300, progress=False)
    with pytest.raises(ValueError, match="empty"):
        train_bpe(["", "<|endoftext|>"], 300, progress=False)


def test_running_out_of_pairs_warns() -> None:
    with pytest.warns(UserWarning, match="only support 2 merges"):
        tokenizer = train_bpe("abc", 1000, progress=False)
    assert tokenizer.vocab_size == 256 + 2 + 1


def test_bad_ranks_are_refused() -> None:
    byte_ranks = {bytes([b]): b for b in range(256)}
    with pytest.raises(ValueError, match="no gaps"):
        BPETokenizer({**byte_ranks, b"ab": 300})
    with pytest.raises(ValueError, match="single-byte"):
        BPETokenizer({bytes([b]): b for b in range(255)})
    with pytest.raises(ValueError, match="reuse ids"):
        BPETokenizer(byte_ranks, {ENDOFTEXT: 3})
    with pytest.raises(ValueError, match="token id 256 is not in"):
        BPETokenizer(byte_ranks).decode([256])


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        load_tokenizer(tmp_path / "nowhere.json")
    with pytest.raises(FileNotFoundError, match="neither encoder.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "vocab.json").write_text("{}", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        load_tokenizer(tmp_path)


@pytest.fixture
def gpt2_style_files(trained: BPETokenizer, tmp_path: Path) -> Path:
    save_gpt2_files(trained, tmp_path / "files")
    return tmp_path / "files"


def test_malformed_merges_name_file_and_line(gpt2_style_files: Path) -> None:
    merges = gpt2_style_files / "merges.txt"
    original = merges.read_text(encoding="utf-8")
    lines = original.splitlines()
    lines[4] = "Ġt h e"  # line 5
    merges.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=r"merges.txt line 5: expected two tokens"):
        load_tokenizer(gpt2_style_files)

    lines = original.splitlines()
    lines[4], lines[7] = lines[7], lines[4]  # line 5 now makes a later token than line 6
    merges.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=r"merges.txt line 6: .* in the order of the ids"):
        load_tokenizer(gpt2_style_files)


def test_malformed_vocab_json_names_file_and_line(gpt2_style_files: Path) -> None:
    vocab = gpt2_style_files / "vocab.json"
    vocab.write_text('{\n"a": 0,\n"b": oops\n}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab.json line 3: not valid JSON"):
        load_tokenizer(gpt2_style_files)
    vocab.write_text('{"a": "zero"}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab.json: token 'a' has id 'zero'"):
        load_tokenizer(gpt2_style_files)


def test_malformed_tiktoken_file_names_line(tmp_path: Path, shared_assets: Path) -> None:
    path = tmp_path / "broken.tiktoken"
    lines = (shared_assets / "gpt2-tokenizer" / "gpt2.tiktoken").read_text().splitlines()[:300]
    lines[299] = "!!notbase64!! 299"
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"broken.tiktoken line 300"):
        load_tokenizer(path)
    lines[299] = "IQ=="
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"broken.tiktoken line 300: expected 'base64-token rank'"):
        load_tokenizer(path)


def test_malformed_saved_json(trained: BPETokenizer, tmp_path: Path, shared_assets: Path) -> None:
    path = tmp_path / "bpe.json"
    trained.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    del data["tokens"]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=r"bpe.json: field 'tokens' is missing"):
        load_tokenizer(path)
    shutil.copyfile(shared_assets / "gpt2-tokenizer" / "encoder.json", tmp_path / "encoder.json")
    with pytest.raises(ValueError, match=r"encoder.json: the \"type\" field is 4906.*directory"):
        load_tokenizer(tmp_path / "encoder.json")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"notes.txt is neither a saved tokenizer \(JSON\) nor a "
                                         r"tiktoken rank file.*encoder.json"):
        load_tokenizer(tmp_path / "notes.txt")
