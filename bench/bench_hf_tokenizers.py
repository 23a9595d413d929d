"""Encoding with a Hugging Face ``tokenizer.json``: our BPE against the ``tokenizers`` library.

Each family's configuration is built as ``tests/test_hf_tokenizer_json.py`` builds it (a small
BPE trained by ``tokenizers`` with that family's normalizer, pre-tokenizer and model flags),
plus one the tests do not have: Llama 2's file with its vocabulary trained word by word, as
SentencePiece trains real models (the tests train theirs over the whole text, so their tokens
run across words). On each text (the-verdict.txt and moby-dick.txt) the ids must be equal; then,
taking turns, the median of ``--repeats`` of

* ours, cold: a freshly read tokenizer every repeat (an empty cache of merged pieces);
* ours, warm: the same tokenizer again (its cache full);
* ``tokenizers``: ``Tokenizer.encode`` on one tokenizer (its own cache warm).

SentencePiece-style files (Gemma 3, Llama 2, Mistral) have no pre-tokenizer that splits the
text (Gemma 3's ``Split`` on spaces comes after the normalizer has made them ``▁``): both
libraries get the whole text as one piece. Needs ../shared/assets. Prints a markdown table.

    python bench/bench_hf_tokenizers.py               # ~2 min on two cores
    python bench/bench_hf_tokenizers.py --repeats 7
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import tokenizers
from timing import median_seconds
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers

from scratchgpt.tokenizers.hf_json import read_hf_tokenizer

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ROOT.parent / "shared" / "assets" / "corpora"
TEXTS = ("the-verdict.txt", "moby-dick.txt")
sys.path.insert(0, str(ROOT / "tests"))
families = importlib.import_module("hf_tokenizer_families")  # the tests' builders


def llama2_trained_by_word(path: Path) -> Path:
    """Llama 2's configuration (no pre-tokenizer in the file), its vocabulary trained with the
    text cut before each ``▁``, as SentencePiece cuts it: no token runs on into the next word."""
    tokenizer = families.sentencepiece_like(
        normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]),
        decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                           decoders.Strip(" ", 1, 0)]),
        ["<unk>", "<s>", "</s>"], "<s>",
        pre_tokenizer=pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never"))

    def as_llama2_ships_it(data: dict) -> None:
        families.with_byte_tokens(data)
        data["pre_tokenizer"] = None

    return families.save(tokenizer, path, as_llama2_ships_it)


CONFIGURATIONS: dict[str, Callable[[Path], Path]] = {
    "Llama 3": families.llama3_like,
    "Qwen": families.qwen_like,
    "Gemma 3": families.gemma3_like,
    "Llama 2": families.llama2_like,
    "Mistral": families.mistral_like,
    "Llama 2, vocabulary trained by word": llama2_trained_by_word,
}


def bench(path: Path, text: str, repeats: int) -> tuple[float, float, float]:
    """Median seconds of (ours cold, ours warm, tokenizers) on ``text``."""
    theirs = Tokenizer.from_file(str(path))
    warm = read_hf_tokenizer(path)
    cold = [read_hf_tokenizer(path) for _ in range(repeats)]
    expected = theirs.encode(text, add_special_tokens=False).ids
    assert warm.encode(text) == expected, f"{path.name}: ids differ from tokenizers'"
    cold_seconds, warm_seconds, their_seconds = median_seconds(
        [lambda: cold.pop().encode(text), lambda: warm.encode(text),
         lambda: theirs.encode(text, add_special_tokens=False)], repeats)
    return cold_seconds, warm_seconds, their_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    texts = {name: (CORPORA / name).read_text(encoding="utf-8") for name in TEXTS}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, build in CONFIGURATIONS.items():
            path = build(Path(folder) / "tokenizer.json")
            for text_name, text in texts.items():
                seconds = bench(path, text, args.repeats)
                rows.append((name, text_name, *seconds))

    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, tokenizers {tokenizers.__version__}. Texts: "
          + ", ".join(f"{n} ({len(t.encode('utf-8')) / 1e6:.2f} MB)" for n, t in texts.items())
          + f". Median of {args.repeats}; ratio = our time / tokenizers' time.\n")
    print("| configuration | text | ours, cold (ms) | ours, warm (ms) | tokenizers (ms) "
          "| cold ratio | warm ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, text_name, cold, warm, theirs in rows:
        print(f"| {name} | {text_name} | {cold * 1e3:.1f} | {warm * 1e3:.1f} | "
              f"{theirs * 1e3:.1f} | {cold / theirs:.2f}x | {warm / theirs:.2f}x |")


if __name__ == "__main__":
    main()
