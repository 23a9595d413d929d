"""Benchmark our tokenizers against tiktoken and Hugging Face ``tokenizers``, in one process.

1. GPT-2 encoding throughput (MB/s of UTF-8 text) on Moby Dick: our pure-Python encoder with a
   cold chunk cache (a fresh tokenizer every repeat) and a warm one (the same tokenizer again),
   our tiktoken fast path, and tiktoken itself. All must give the same ids.
2. Training a byte-level BPE vocabulary of 8,192 on Moby Dick: ``train_bpe`` vs ``tokenizers``'
   ``BpeTrainer`` with the ByteLevel pre-tokenizer (which uses every core).

Runs alternate so drifting machine load hits all alike; each number is the median of the
repeats. Needs ../shared/assets (see ../shared/README.md). Prints a markdown table.

    python bench/bench_tokenizers.py
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from pathlib import Path

import tiktoken
import tokenizers
from timing import median_seconds
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers, trainers

from scratchgpt.tokenizers import ENDOFTEXT, BPETokenizer, load_tokenizer, train_bpe

ASSETS = Path(__file__).resolve().parent.parent.parent / "shared" / "assets"
TIKTOKEN_CACHE_NAMES = {  # tiktoken's cache names: the SHA-1 of each file's download URL
    "gpt2-tokenizer/vocab.bpe": "6d1cbeee0f20b3d9449abfede4726ed8212e3aee",
    "gpt2-tokenizer/encoder.json": "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6",
    "gpt2-tokenizer/gpt2.tiktoken": "0ea1e91bbb3a60f729a8dc8f777fd2fc07cd8df4",
}
ENCODE_REPEATS = 7
TRAIN_REPEATS = 5
VOCAB_SIZE = 8192


def offline_tiktoken_gpt2(cache_dir: Path) -> tiktoken.Encoding:
    """tiktoken's ``gpt2`` encoding from the shared files, without network access."""
    for source, name in TIKTOKEN_CACHE_NAMES.items():
        shutil.copyfile(ASSETS / source, cache_dir / name)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    return tiktoken.get_encoding("gpt2")


def bench_encoding(text: str, reference: tiktoken.Encoding) -> list[tuple[str, float]]:
    """(name, MB/s) for each GPT-2 encoder."""
    gpt2 = load_tokenizer(ASSETS / "gpt2-tokenizer")
    assert isinstance(gpt2, BPETokenizer)

    def fresh() -> BPETokenizer:
        return BPETokenizer(gpt2.ranks, gpt2.special_tokens, use_tiktoken=False)

    cold_tokenizers = [fresh() for _ in range(ENCODE_REPEATS)]
    warm = fresh()
    fast = BPETokenizer(gpt2.ranks, gpt2.special_tokens, use_tiktoken=True)
    expected = reference.encode(text)
    for tokenizer in (warm, fast):  # checks equality, warms the cache and builds tiktoken's BPE
        assert tokenizer.encode(text) == expected

    runs = {
        "ours, pure Python, cold cache": lambda: cold_tokenizers.pop().encode(text),
        "ours, pure Python, warm cache": lambda: warm.encode(text),
        "ours, tiktoken fast path": lambda: fast.encode(text),
        "tiktoken": lambda: reference.encode(text),
    }
    seconds = median_seconds(list(runs.values()), ENCODE_REPEATS)
    megabytes = len(text.encode("utf-8")) / 1e6
    return [(name, megabytes / s) for name, s in zip(runs, seconds, strict=True)]


def train_hugging_face(text: str) -> HFTokenizer:
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator([text], trainer)
    return hf


def bench_training(text: str) -> list[tuple[str, float]]:
    """(name, seconds) for training a vocabulary of VOCAB_SIZE."""
    assert train_bpe(text, VOCAB_SIZE, progress=False).vocab_size == VOCAB_SIZE
    assert train_hugging_face(text).get_vocab_size() == VOCAB_SIZE
    seconds = median_seconds(
        [lambda: train_bpe(text, VOCAB_SIZE, progress=False), lambda: train_hugging_face(text)],
        TRAIN_REPEATS,
    )
    return [("ours, `train_bpe`", seconds[0]), ("tokenizers `BpeTrainer`", seconds[1])]


def main() -> None:
    text = (ASSETS / "corpora" / "moby-dick.txt").read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as cache_dir:
        reference = offline_tiktoken_gpt2(Path(cache_dir))
        encoding = bench_encoding(text, reference)
    training = bench_training(text)

    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, tiktoken {tiktoken.__version__}, "
          f"tokenizers {tokenizers.__version__}. Text: moby-dick.txt, "
          f"{len(text.encode('utf-8')) / 1e6:.2f} MB.\n")
    print(f"GPT-2 encoding (median of {ENCODE_REPEATS})\n")
    print("| encoder | MB/s | vs tiktoken |")
    print("|---|---:|---:|")
    tiktoken_speed = encoding[-1][1]
    for name, speed in encoding:
        print(f"| {name} | {speed:.2f} | {speed / tiktoken_speed:.2f}x |")
    print(f"\nBPE training, vocabulary {VOCAB_SIZE} (median of {TRAIN_REPEATS})\n")
    print("| trainer | seconds | vs tokenizers |")
    print("|---|---:|---:|")
    hf_seconds = training[-1][1]
    for name, seconds in training:
        print(f"| {name} | {seconds:.2f} | {seconds / hf_seconds:.2f}x |")


if __name__ == "__main__":
    main()
