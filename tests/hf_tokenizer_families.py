"""Tokenizers in each open family's configuration, built with Hugging Face's ``tokenizers``
library and saved as ``tokenizer.json``: a small BPE trained on the-verdict.txt with the
family's normalizer, pre-tokenizer, model flags, decoder, post-processor and added tokens.
tests/test_hf_tokenizer_json.py checks our reader against them, bench/bench_hf_tokenizers.py
times it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "assets" / "corpora"
VERDICT = (CORPORA / "the-verdict.txt").read_text(encoding="utf-8")
MOBY = (CORPORA / "moby-dick.txt").read_text(encoding="utf-8")[200_000:230_000]
# Llama 3's and Qwen2's pre-tokenizer regexes, as their tokenizer.json files spell them.
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
MIXED = ("Héllo wörld! naïve café, Ünïcödé ΑΒΓ абв 你好，世界 🙂🎉👩‍👩‍👧 ½ ⅞ ١٢٣\n"
         "  leading\tand\t\ttabs\r\nCRLF   three spaces    \n\n\nnumbers 1234567 3.14 -42 "
         "I'm they'LL WE'VE don't  trailing  \u00a0nbsp \u200bzwsp end   ")


def train(tokenizer: Tokenizer, vocab_size: int, **trainer_options: object) -> None:
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, **trainer_options)
    tokenizer.train_from_iterator([VERDICT, MOBY], trainer=trainer)


def save(tokenizer: Tokenizer, path: Path, edit=None) -> Path:
    """Save ``tokenizer`` to ``path``, with ``edit`` applied to its JSON first."""
    data = json.loads(tokenizer.to_str())
    if edit is not None:
        edit(data)  # then through Hugging Face again, which writes the ids it gives
        data = json.loads(Tokenizer.from_str(json.dumps(data)).to_str())
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def byte_level(pattern: str, *, ignore_merges: bool) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    train(tokenizer, 1500, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    return tokenizer


def llama3_like(path: Path) -> Path:
    """Llama 3: its regex, ignore_merges, special tokens after the vocabulary,
    ``<|begin_of_text|>`` from a TemplateProcessing behind a ByteLevel post-processor."""
    tokenizer = byte_level(LLAMA3_PATTERN, ignore_merges=True)
    tokenizer.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>",
                                  "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])
    bos = tokenizer.token_to_id("<|begin_of_text|>")
    tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    return save(tokenizer, path, unreachable_words)


def unreachable_words(data: dict) -> None:
    """As in Llama 3's file (converted from tiktoken), some words are tokens that no merge
    makes: only ``ignore_merges`` gives them as one token."""
    merges = data["model"]["merges"]
    data["model"]["merges"] = [m for m in merges if "".join(m) not in UNREACHABLE]
    assert len(data["model"]["merges"]) == len(merges) - len(UNREACHABLE)


UNREACHABLE = {"Ġthe", "Ġand", "Ġwas"}


def qwen_like(path: Path) -> Path:
    """Qwen2/3: NFC, its regex, no BOS, special tokens and plain added ones (``<think>``)."""
    tokenizer = byte_level(QWEN_PATTERN, ignore_merges=False)
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer.add_tokens([AddedToken("<think>", normalized=False, special=False),
                          AddedToken("</think>", normalized=False, special=False)])
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return save(tokenizer, path)


def with_byte_tokens(data: dict) -> None:
    """SentencePiece-style files list ``<0x00>`` .. ``<0xFF>`` in the vocabulary."""
    vocab = data["model"]["vocab"]
    next_id = 1 + max([*vocab.values(), *(t["id"] for t in data["added_tokens"])])
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = next_id + b
    data["model"]["byte_fallback"] = True


def sentencepiece_like(normalizer, decoder, specials: list[str], bos: str,
                        pre_tokenizer=None) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tokenizer.normalizer = normalizer
    if pre_tokenizer is not None:
        tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoder
    # limit_alphabet keeps rare characters (é, —, ...) out of the vocabulary: <0xNN> for them
    train(tokenizer, 800, special_tokens=specials, limit_alphabet=60,
           max_token_length=12)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tokenizer.token_to_id(bos))])
    return tokenizer


def gemma3_like(path: Path) -> Path:
    """Gemma 3: spaces as ``▁`` (none prepended), byte fallback, ``<bos>`` first."""
    tokenizer = sentencepiece_like(
        normalizers.Replace(" ", "▁"),
        decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]),
        ["<pad>", "<eos>", "<bos>", "<unk>"], "<bos>",
        pre_tokenizer=pre_tokenizers.Split(" ", "merged_with_previous"))
    tokenizer.add_special_tokens(["<start_of_turn>", "<end_of_turn>"])
    return save(tokenizer, path, with_byte_tokens)


def llama2_like(path: Path) -> Path:
    """Llama 2 (legacy): ``▁`` prepended and for spaces, byte fallback, the decoder strips the
    leading space, ``<s>`` first; plus a plain added token matched in normalized text."""
    tokenizer = sentencepiece_like(
        normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]),
        decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                           decoders.Strip(" ", 1, 0)]),
        ["<unk>", "<s>", "</s>"], "<s>")
    tokenizer.add_tokens([AddedToken("[INST]", normalized=True, special=False)])
    return save(tokenizer, path, with_byte_tokens)


def mistral_like(path: Path) -> Path:
    """Newer SentencePiece-style files: no normalizer, a Metaspace pre-tokenizer that puts ``▁``
    before the first piece only, the same decoder as Llama 2."""
    tokenizer = sentencepiece_like(
        None, decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                 decoders.Fuse(), decoders.Strip(" ", 1, 0)]),
        ["<unk>", "<s>", "</s>"], "<s>",
        pre_tokenizer=pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                               split=False))
    tokenizer.add_special_tokens(["[INST]", "[/INST]"])
    return save(tokenizer, path, with_byte_tokens)


FAMILIES = {"llama3": llama3_like, "qwen": qwen_like, "gemma3": gemma3_like,
            "llama2": llama2_like, "mistral": mistral_like}
