"""From text files to one cached token file: finding files, reading them, tokenizing, splitting."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

from scratchgpt.data import (
    find_files,
    load_corpus,
    read_text_file,
    read_token_file,
    tokenize_corpus,
    train_val_split,
)
from scratchgpt.data.corpus import (
    TASK_CHARS,
    encode_text,
    newline_cuts_keep_ids,
    split_for_workers,
)
from scratchgpt.tokenizers import (
    ENDOFTEXT,
    BPETokenizer,
    CharTokenizer,
    SpecialTokenError,
    Tokenizer,
    WordTokenizer,
    load_tokenizer,
    pretokenize,
    train_bpe,
)


@pytest.fixture(scope="module")
def gpt2(shared_assets: Path) -> BPETokenizer:
    tokenizer = load_tokenizer(shared_assets / "gpt2-tokenizer")
    assert isinstance(tokenizer, BPETokenizer) and tokenizer.eot_id == 50256
    return tokenizer


@pytest.fixture(scope="module")
def moby_dick(shared_assets: Path) -> str:
    return read_text_file(shared_assets / "corpora" / "moby-dick.txt")


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never touch the user's cache, even in a test that forgets ``cache_dir``."""
    cache = tmp_path / "env-cache"
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(cache))
    return cache


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


# -- find_files -------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for name in ("b.txt", "a.jsonl", "sub/c.txt", "sub/deeper/d.jsonl",
                 "notes.md", "table.csv", "sub/script.py", "sub/deeper/txt"):
        write(root / name, "x")
    (root / "looks-like.txt").mkdir()  # a directory, not a text file
    return root


def test_find_files_single_file(tmp_path: Path) -> None:
    path = write(tmp_path / "one.txt", "hello")
    assert find_files(path) == [path]
    assert find_files(str(path)) == [path]


def test_find_files_directory_is_recursive_sorted_and_only_text(tree: Path) -> None:
    assert find_files(tree) == [
        tree / "a.jsonl",
        tree / "b.txt",
        tree / "sub" / "c.txt",
        tree / "sub" / "deeper" / "d.jsonl",
    ]


def test_find_files_glob(tree: Path) -> None:
    assert find_files(str(tree / "*.txt")) == [tree / "b.txt"]  # the directory is left out
    assert find_files(str(tree / "**" / "*.jsonl")) == [
        tree / "a.jsonl", tree / "sub" / "deeper" / "d.jsonl"
    ]
    assert find_files(str(tree / "sub" / "?.txt")) == [tree / "sub" / "c.txt"]
    with pytest.raises(FileNotFoundError, match=re.escape(f"no files match {tree / '*.xml'}")):
        find_files(str(tree / "*.xml"))


def test_find_files_missing_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-corpus.txt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        find_files(missing)
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_corpus(missing)


def test_find_files_directory_without_text_files(tmp_path: Path) -> None:
    write(tmp_path / "d" / "readme.md", "# hi")
    write(tmp_path / "d" / "sub" / "data.csv", "a,b")
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "d", tmp_path / "empty"):
        with pytest.raises(ValueError, match=re.escape(f"{folder} holds no .txt or .jsonl")):
            find_files(folder)


# -- reading documents ------------------------------------------------------------------------


def test_directory_corpus_reads_files_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path / "b.txt", "second file\n")
    write(tmp_path / "a.jsonl", '{"text": "from jsonl"}\n')
    write(tmp_path / "sub" / "c.txt", "third\n")
    corpus = load_corpus(tmp_path)
    assert corpus.texts == ["from jsonl", "second file\n", "third\n"]
    assert [d.source for d in corpus.documents] == [
        f"{tmp_path / 'a.jsonl'}:1", str(tmp_path / "b.txt"), str(tmp_path / "sub" / "c.txt")
    ]


def test_jsonl_documents_come_from_text_fields(tmp_path: Path) -> None:
    records = [
        {"text": "First document.\nIt has two lines.", "id": 1},
        {"text": "Unicode: café, 東京, a line\u2028separator and a next-line\x85char", "x": [1]},
        {"meta": {"text": "not this"}, "text": "third"},
    ]
    lines = [json.dumps(records[0]), "", "   ", json.dumps(records[1], ensure_ascii=False),
             json.dumps(records[2])]
    path = write(tmp_path / "docs.jsonl", "\n".join(lines) + "\n")
    corpus = load_corpus(path)
    assert corpus.texts == [r["text"] for r in records]
    # sources name the line each document is on (blank lines count)
    assert [d.source for d in corpus.documents] == [f"{path}:1", f"{path}:4", f"{path}:5"]


def test_jsonl_with_windows_line_endings(tmp_path: Path) -> None:
    path = write(tmp_path / "crlf.jsonl", '{"text": "one"}\r\n\r\n{"text": "two"}\r\n')
    assert load_corpus(path).texts == ["one", "two"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "unterminated', "not valid JSON"),
        ("{'text': 'single quotes'}", "not valid JSON"),
        ('{"content": "no text field"}', 'expected an object with a string "text" field'),
        ('{"text": 42}', 'expected an object with a string "text" field'),
        ('["text", "a list"]', 'expected an object with a string "text" field'),
    ],
)
def test_bad_jsonl_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path / "bad.jsonl", '{"text": "fine"}\n\n' + line + '\n{"text": "x"}\n')
    with pytest.raises(ValueError, match=re.escape(f"{path}:3: {message}")):
        load_corpus(path)


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_invalid_utf8_names_file_and_byte_offset(tmp_path: Path, suffix: str) -> None:
    prefix = '{"text": "caf' if suffix == ".jsonl" else "café au lait, caf"
    data = prefix.encode() + b"\xe9" + (b'"}\n' if suffix == ".jsonl" else b" noir\n")
    path = write(tmp_path / f"latin1{suffix}", data)
    offset = len(prefix.encode())
    expected = f"{path}: byte {offset} (0xe9) is not valid UTF-8"
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_corpus(path)
    with pytest.raises(ValueError, match=re.escape(expected)):
        read_text_file(path)
    # errors="replace" reads on, with U+FFFD in place of the bad byte
    corpus = load_corpus(path, encoding_errors="replace")
    assert corpus.texts == ["café au lait, caf\ufffd noir\n" if suffix == ".txt" else "caf\ufffd"]
    assert corpus.fingerprint != load_corpus(path, encoding_errors="ignore").fingerprint


def test_read_text_file_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "gone.txt"))):
        read_text_file(tmp_path / "gone.txt")


@pytest.mark.parametrize(
    ("name", "content"),
    [("empty.txt", ""), ("blank.txt", "  \n\t\n  "), ("blank.jsonl", '\n{"text": "  "}\n\n'),
     ("nothing.jsonl", "\n\n")],
)
def test_empty_corpus_is_an_error(tmp_path: Path, name: str, content: str) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(ValueError, match=re.escape(f"the corpus is empty: {path} holds no text")):
        load_corpus(path)


def test_default_corpus_is_non_empty_and_deterministic() -> None:
    first, second = load_corpus(None), load_corpus(None)
    assert len(first.documents) > 50
    assert sum(map(len, first.texts)) > 200_000
    assert all(isinstance(t, str) for t in first.texts)
    assert first.texts == second.texts
    assert first.fingerprint == second.fingerprint
    assert len({d.source for d in first.documents}) == len(first.documents)
    assert any("assert" in t for t in first.texts[:200])


def test_fingerprint_follows_the_files(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "one two three")
    before = load_corpus(path).fingerprint
    assert load_corpus(path).fingerprint == before
    write(path, "one two three four")
    assert load_corpus(path).fingerprint != before


# -- tokenize_corpus --------------------------------------------------------------------------

DOCUMENTS = [
    "The first document.\n",
    "A second one, which spells <|endoftext|> as plain text.",
    "  Third: numbers 12345 and    spaces  \n\n",
]


def documents_corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    write(folder / "1.txt", DOCUMENTS[0])
    write(folder / "2.jsonl", json.dumps({"text": DOCUMENTS[1]}) + "\n"
          + json.dumps({"text": DOCUMENTS[2]}) + "\n")
    return folder


def expected_ids(tokenizer: BPETokenizer, texts: list[str]) -> list[int]:
    ids: list[int] = []
    for text in texts:
        ids += tokenizer.encode_ordinary(text) + [tokenizer.eot_id]
    return ids


def test_tokenize_corpus_joins_documents_with_eot(tmp_path: Path, gpt2: BPETokenizer) -> None:
    cache = tmp_path / "cache"
    path = tokenize_corpus(load_corpus(documents_corpus(tmp_path)), gpt2, cache_dir=cache,
                           workers=1, progress=False)
    assert path.parent == cache / "tokens" and path.suffix == ".npy"
    tokens = read_token_file(path)
    assert tokens.dtype == np.uint16
    assert tokens.tolist() == expected_ids(gpt2, DOCUMENTS)
    # the literal "<|endoftext|>" inside a document is text, not a separator
    assert tokens.tolist().count(gpt2.eot_id) == len(DOCUMENTS)
    assert gpt2.decode(tokens.tolist()).split(ENDOFTEXT) == [
        DOCUMENTS[0], DOCUMENTS[1].split(ENDOFTEXT)[0], DOCUMENTS[1].split(ENDOFTEXT)[1],
        DOCUMENTS[2], "",
    ]


def test_tokenize_corpus_reuses_its_cache(tmp_path: Path, gpt2: BPETokenizer) -> None:
    folder = documents_corpus(tmp_path)
    cache = tmp_path / "cache"
    first = tokenize_corpus(load_corpus(folder), gpt2, cache_dir=cache, progress=False)
    # an old, recognisable mtime: a rewrite of the file would replace it
    os.utime(first, ns=(1_000_000_000, 1_000_000_000))
    stat = first.stat()
    second = tokenize_corpus(load_corpus(folder), gpt2, cache_dir=cache, progress=False)
    assert second == first
    assert (second.stat().st_mtime_ns, second.stat().st_ino) == (stat.st_mtime_ns, stat.st_ino)
    assert sorted(p.name for p in (cache / "tokens").iterdir()) == [first.name]


def test_changed_file_gets_a_new_token_file(tmp_path: Path, gpt2: BPETokenizer) -> None:
    old_text, new_text = "It was a dark and stormy night.", "It was a cold and windy morning"
    assert len(old_text) == len(new_text)  # the same size: only the mtime tells them apart
    path = write(tmp_path / "story.txt", old_text)
    cache = tmp_path / "cache"
    first = tokenize_corpus(load_corpus(path), gpt2, cache_dir=cache, progress=False)
    write(path, new_text)
    mtime = path.stat().st_mtime_ns
    os.utime(path, ns=(mtime + 5_000_000_000, mtime + 5_000_000_000))
    second = tokenize_corpus(load_corpus(path), gpt2, cache_dir=cache, progress=False)
    assert second != first
    assert read_token_file(second).tolist() == expected_ids(gpt2, [new_text])
    assert read_token_file(first).tolist() == expected_ids(gpt2, [old_text])


def test_another_tokenizer_gets_another_token_file(tmp_path: Path, gpt2: BPETokenizer) -> None:
    corpus = load_corpus(documents_corpus(tmp_path))
    small = train_bpe(DOCUMENTS * 3, 280, progress=False)
    cache = tmp_path / "cache"
    big_path = tokenize_corpus(corpus, gpt2, cache_dir=cache, progress=False)
    small_path = tokenize_corpus(corpus, small, cache_dir=cache, progress=False)
    assert small_path != big_path
    assert read_token_file(small_path).tolist() == expected_ids(small, DOCUMENTS)


def test_tokenize_corpus_default_cache_is_scratchgpt_cache(
    tmp_path: Path, gpt2: BPETokenizer, private_cache: Path
) -> None:
    path = tokenize_corpus(load_corpus(documents_corpus(tmp_path)), gpt2, progress=False)
    assert path.parent == private_cache / "tokens"
    assert path.exists()


def test_tokenize_corpus_in_two_processes_matches_one(
    shared_assets: Path, gpt2: BPETokenizer, moby_dick: str, tmp_path: Path
) -> None:
    corpora = shared_assets / "corpora"
    corpus = load_corpus(corpora)  # moby-dick.txt, then the-verdict.txt
    assert [Path(d.source).name for d in corpus.documents] == ["moby-dick.txt", "the-verdict.txt"]
    assert len(split_for_workers(moby_dick, 2)) >= 2  # so two workers really share the work

    one = tokenize_corpus(corpus, gpt2, cache_dir=tmp_path / "one", workers=1, progress=False)
    two = tokenize_corpus(corpus, gpt2, cache_dir=tmp_path / "two", workers=2, progress=False)
    ids_one, ids_two = read_token_file(one), read_token_file(two)
    np.testing.assert_array_equal(ids_one, ids_two)
    expected = expected_ids(gpt2, corpus.texts)
    assert len(ids_one) == len(expected)
    np.testing.assert_array_equal(ids_one, np.asarray(expected, dtype=np.uint16))


# -- split_for_workers ------------------------------------------------------------------------


def test_split_for_workers_leaves_short_texts_whole() -> None:
    text = "short text\n" * 100
    assert split_for_workers(text, 8) == [text]
    assert split_for_workers("x" * 300_000, 1) == ["x" * 300_000]
    # no newline after a non-space character: nowhere safe to cut
    assert split_for_workers("word " * 60_000, 4) == ["word " * 60_000]


@pytest.mark.parametrize("pieces", [2, 5])
def test_split_for_workers_on_moby_dick(
    moby_dick: str, gpt2: BPETokenizer, pieces: int
) -> None:
    parts = split_for_workers(moby_dick, pieces)
    assert "".join(parts) == moby_dick
    assert pieces <= len(parts) <= pieces + 1
    assert all(parts)
    for before, after in zip(parts, parts[1:], strict=False):
        assert after[0] == "\n" and not before[-1].isspace()
    whole = gpt2.encode_ordinary(moby_dick)
    assert [i for part in parts for i in gpt2.encode_ordinary(part)] == whole


@pytest.mark.parametrize("pieces", [2, 3, 4, 7])
def test_split_for_workers_on_awkward_whitespace(gpt2: BPETokenizer, pieces: int) -> None:
    # newlines after letters, digits, punctuation, contractions and before runs of spaces ...
    unit = "word\n  indented\n\n\nx's\n'll\n12\n 3!\n\t\n?\n   \nend\r\n\x1c\n\u00a0\ncafé\n"
    # ... and many inside runs of spaces, where a cut would change the pre-tokens: "  \n " and
    # " more" together, but "  " then "\n " and " more" apart
    unsafe = "word  \n  more " * 40
    text = (unit + unsafe) * (140_000 // len(unit + unsafe) + 1)
    parts = split_for_workers(text, pieces)
    assert len(parts) >= pieces and "".join(parts) == text
    # no pre-token crosses a cut, so no tokenizer with GPT-2's pattern can tell the difference
    assert [c for p in parts for c in pretokenize(p)] == pretokenize(text)
    assert [i for p in parts for i in gpt2.encode_ordinary(p)] == gpt2.encode_ordinary(text)


# -- which tokenizers may have their documents cut -------------------------------------------

# GPT-4's pre-tokenization pattern (tiktoken's cl100k_base): a run of punctuation takes the
# newlines after it, so ".\n" is one pre-token and a cut before that newline changes the ids.
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)


class ByteTokenizer(Tokenizer):
    """The UTF-8 bytes of the text as ids, and ``<|endoftext|>`` as 256."""

    kind = "test-bytes"

    def __init__(self) -> None:
        super().__init__({ENDOFTEXT: 256})

    @property
    def vocab_size(self) -> int:
        return 257

    def encode_ordinary(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode_bytes(self, ids) -> bytes:
        return bytes(i for i in ids if i < 256)

    def to_dict(self) -> dict:
        return {}

    @classmethod
    def from_dict(cls, data: dict) -> ByteTokenizer:
        return cls()


def test_encode_text_in_parts_gives_the_ids_of_the_whole(
    shared_assets: Path, gpt2: BPETokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    text = read_text_file(shared_assets / "corpora" / "moby-dick.txt")
    assert len(split_for_workers(text, math.ceil(len(text) / TASK_CHARS))) == 2
    text += "<|endoftext|>\nThe End.\n"
    ids = encode_text(gpt2, text, allowed_special="all")
    assert ids == gpt2.encode(text, allowed_special="all")
    assert gpt2.eot_id in ids[-8:]
    assert "tokenizing" in capsys.readouterr().err  # a progress bar for a long text
    with pytest.raises(SpecialTokenError) as refused:
        encode_text(gpt2, text, source="moby.txt", progress=False)
    position = len(text) - len("<|endoftext|>\nThe End.\n")
    assert refused.value.position == position > TASK_CHARS  # counted in the whole text
    assert str(refused.value).startswith(
        f"moby.txt contains the special token '<|endoftext|>' at character {position};")


def test_newline_cuts_only_for_tokenizers_known_to_allow_them(gpt2: BPETokenizer) -> None:
    assert newline_cuts_keep_ids(gpt2)
    assert newline_cuts_keep_ids(CharTokenizer("ab\n"))
    assert newline_cuts_keep_ids(WordTokenizer(["a", "b"]))
    bytes_only = {bytes([b]): b for b in range(256)}
    assert not newline_cuts_keep_ids(BPETokenizer(bytes_only, pattern=GPT4_SPLIT_PATTERN))
    assert not newline_cuts_keep_ids(ByteTokenizer())  # unknown: documents stay whole


def test_other_patterns_keep_their_documents_whole(tmp_path: Path) -> None:
    text = "".join(f"Line {i} ends with a full stop.\n" for i in range(5000))
    tokenizer = train_bpe(text[:5000], 300, pattern=GPT4_SPLIT_PATTERN, progress=False)
    whole = tokenizer.encode_ordinary(text)
    parts = split_for_workers(text, 2)
    assert [i for p in parts for i in tokenizer.encode_ordinary(p)] != whole  # cuts would hurt
    corpus = load_corpus(write(tmp_path / "lines.txt", text))
    path = tokenize_corpus(corpus, tokenizer, cache_dir=tmp_path, workers=2, progress=False)
    assert read_token_file(path).tolist() == [*whole, tokenizer.eot_id]


def test_many_small_documents_in_two_processes_match_one(tmp_path: Path) -> None:
    texts = [f"Document {i}:{' some words' * (i % 7)}\n" for i in range(3000)]
    path = write(tmp_path / "many.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in texts))
    corpus, tokenizer = load_corpus(path), ByteTokenizer()
    one, two = (
        read_token_file(tokenize_corpus(corpus, tokenizer, cache_dir=tmp_path / str(workers),
                                        workers=workers, progress=False))
        for workers in (1, 2)
    )
    expected = [i for text in texts for i in [*text.encode(), 256]]
    assert one.tolist() == two.tolist() == expected


# -- train_val_split --------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "fraction", "n_val"), [(100, 0.1, 10), (1000, 0.25, 250),
                                                      (1001, 0.5, 501), (50, 0.9, 45),
                                                      (1000, 0.07, 70), (1100, 0.07, 77),
                                                      (90, 0.3, 27), (150, 0.34, 51)])
def test_train_val_split_proportions(n: int, fraction: float, n_val: int) -> None:
    tokens = np.arange(n, dtype=np.uint16)
    train, val = train_val_split(tokens, fraction, context_length=4)
    assert len(val) == n_val and len(train) == n - n_val
    np.testing.assert_array_equal(np.concatenate([train, val]), tokens)  # train first, in order


def test_train_val_split_of_a_token_file_stays_mapped(tmp_path: Path, gpt2: BPETokenizer) -> None:
    path = write(tmp_path / "a.txt", "Hello world. " * 200)
    tokens = read_token_file(tokenize_corpus(load_corpus(path), gpt2, cache_dir=tmp_path,
                                             progress=False))
    train, val = train_val_split(tokens, 0.1, context_length=8)
    assert isinstance(train, np.memmap) and isinstance(val, np.memmap)
    assert np.shares_memory(train, tokens) and np.shares_memory(val, tokens)


def test_train_val_split_too_short() -> None:
    tokens = np.arange(40, dtype=np.uint16)
    with pytest.raises(ValueError, match=r"40 tokens: its validation part \(4\) is shorter than "
                                         r"one window of 9 \(context_length 8 \+ 1\)"):
        train_val_split(tokens, 0.1, context_length=8)
    with pytest.raises(ValueError, match=r"its training part \(4\) is shorter than one window"):
        train_val_split(tokens, 0.9, context_length=8)
    train, val = train_val_split(tokens, 0.25, context_length=8)  # 30 + 10: both hold a window
    assert (len(train), len(val)) == (30, 10)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_train_val_split_fraction_must_be_inside_0_1(fraction: float) -> None:
    with pytest.raises(ValueError, match="val_fraction must be between 0 and 1"):
        train_val_split(np.arange(1000), fraction, context_length=4)
