"""Hugging Face ``tokenizer.json`` files read by our own BPE give the ids ``tokenizers`` gives.

Each family's configuration is built here with the ``tokenizers`` library itself: a small BPE
trained on the-verdict.txt with that family's normalizer, pre-tokenizer, model flags, decoder,
post-processor and added tokens, saved as ``tokenizer.json``. The oracle is
``tokenizers.Tokenizer.from_file`` on the same file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

tokenizers = pytest.importorskip("tokenizers")
from hf_tokenizer_families import (  # noqa: E402
    CORPORA,
    FAMILIES,
    MIXED,
    MOBY,
    VERDICT,
    save,
)
from pretrain_runs import run_here  # noqa: E402
from tokenizers import (  # noqa: E402
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
)

from scratchgpt.tokenizers import (  # noqa: E402
    BPETokenizer,
    SpecialTokenError,
    load_tokenizer,
    save_gpt2_files,
)
from scratchgpt.tokenizers.hf_json import HFTokenizer, read_hf_tokenizer  # noqa: E402

SPECIAL_TEXT = {
    "llama3": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there!<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "qwen": "<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n<think>\nhm</think>\n\n"
            "Because.<|im_end|><|endoftext|>",
    "gemma3": "<bos><start_of_turn>user\nHi   there<end_of_turn>\n<start_of_turn>model\n",
    "llama2": "<s>[INST] Hello there [/INST] general kenobi</s><s>[INST]again</s>",
    "mistral": "<s>[INST] Hello there [/INST] general kenobi</s><s>[INST]again[/INST]",
}


@pytest.fixture(scope="module")
def family_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hf-tokenizers")
    return {name: build(folder / f"{name}.json") for name, build in FAMILIES.items()}


def _theirs(path: Path, text: str, *, special: bool = True) -> list[int]:
    return Tokenizer.from_file(str(path)).encode(text, add_special_tokens=special).ids


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("text_name", ["verdict", "moby", "mixed"])
def test_ids_equal_hugging_face(family_files: dict[str, Path], family: str,
                                text_name: str) -> None:
    text = {"verdict": VERDICT, "moby": MOBY, "mixed": MIXED}[text_name]
    ours = read_hf_tokenizer(family_files[family])
    assert ours.encode(text) == _theirs(family_files[family], text, special=False)
    assert ours.post_process(ours.encode(text)) == _theirs(family_files[family], text)


@pytest.mark.parametrize("family", FAMILIES)
def test_special_and_added_tokens_equal_hugging_face(family_files: dict[str, Path],
                                                     family: str) -> None:
    text = SPECIAL_TEXT[family] + " " + MIXED[:40]
    ours = read_hf_tokenizer(family_files[family])
    expected = _theirs(family_files[family], text, special=False)
    assert ours.encode(text, allowed_special="all") == expected
    with pytest.raises(SpecialTokenError, match="allowed_special"):
        ours.encode(text)  # as for every tokenizer here: special tokens only when allowed
    as_text = Tokenizer.from_file(str(family_files[family]))
    as_text.encode_special_tokens = True  # Hugging Face's way to read them as plain text
    ordinary = ours.encode_ordinary(text)
    assert ordinary == as_text.encode(text, add_special_tokens=False).ids
    assert set(ordinary).isdisjoint(ours.special_tokens.values())


@pytest.mark.parametrize("family", FAMILIES)
def test_decode_equals_hugging_face(family_files: dict[str, Path], family: str) -> None:
    theirs = Tokenizer.from_file(str(family_files[family]))
    ours = read_hf_tokenizer(family_files[family])
    for text in (VERDICT, MIXED, SPECIAL_TEXT[family]):
        ids = theirs.encode(text).ids
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=False)
    ids = ours.encode(MIXED)
    assert ours.decode(ids) == theirs.decode(ids) == MIXED or family == "qwen"  # NFC changes it
    streamed = b"".join(ours.decode_bytes([i]) for i in ids)  # as generation streams tokens
    assert streamed == ours.decode_bytes(ids)
    assert streamed.decode("utf-8") == (" " + MIXED if family in ("llama2", "mistral")
                                        else ours.decode(ids))  # Llama 2 strips the first space
    assert ours.decode(ours.encode(VERDICT)) == VERDICT


def test_the_families_differ_where_the_test_needs_them_to(family_files: dict[str, Path]) -> None:
    """The configurations exercise what they claim: Llama 3's ignore_merges changes ids,
    byte fallback is used, Llama 2 and Gemma 3 differ only by the prepended ``▁``, Llama 3 adds
    its BOS and Qwen none."""
    llama3 = json.loads(family_files["llama3"].read_text(encoding="utf-8"))
    llama3["model"]["ignore_merges"] = False
    without = Tokenizer.from_str(json.dumps(llama3))
    with_them = Tokenizer.from_file(str(family_files["llama3"]))
    assert with_them.encode(MOBY).ids != without.encode(MOBY).ids
    gemma = read_hf_tokenizer(family_files["gemma3"])
    byte_ids = {gemma.model.vocab[f"<0x{b:02X}>"] for b in range(256)}
    assert byte_ids & set(gemma.encode(MIXED))
    assert read_hf_tokenizer(family_files["llama3"]).bos_id is not None
    assert read_hf_tokenizer(family_files["qwen"]).bos_id is None


@pytest.mark.parametrize("family", ["llama3", "llama2"])
def test_older_files_merges_as_strings_and_stripping_added_tokens(
        family_files: dict[str, Path], family: str) -> None:
    """Files from before tokenizers 0.20 write each merge as one string ``"left right"``; an
    added token with ``lstrip``/``rstrip`` takes the whitespace around it."""
    data = json.loads(family_files[family].read_text(encoding="utf-8"))
    data["model"]["merges"] = [" ".join(pair) for pair in data["model"]["merges"]]
    for token in data["added_tokens"][-2:]:
        token["lstrip"] = token["rstrip"] = True
    theirs = Tokenizer.from_str(json.dumps(data))
    ours = HFTokenizer(data)
    stripped = [t["content"] for t in data["added_tokens"][-2:]]
    text = f"{VERDICT[:300]}  {stripped[0]} \n x{stripped[1]}\t\t{MIXED}"
    assert ours.encode(text, allowed_special="all") == theirs.encode(text).ids[
        1 if ours.bos_id is not None else 0:]


def test_gpt2s_real_vocabulary_as_tokenizer_json(tmp_path: Path) -> None:
    """GPT-2's 50,257 tokens in Hugging Face's GPT-2 configuration (ByteLevel with GPT-2's
    regex): our reader, ``tokenizers`` and our GPT-2 tokenizer (equal to tiktoken) agree; a
    directory that also holds vocab.json + merges.txt is read as GPT-2's."""
    assets = CORPORA.parent / "gpt2-tokenizer"
    tokenizer = Tokenizer(models.BPE.from_file(str(assets / "encoder.json"),
                                               str(assets / "vocab.bpe")))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(["<|endoftext|>"])
    path = save(tokenizer, tmp_path / "tokenizer.json")
    ours, gpt2 = read_hf_tokenizer(path), load_tokenizer(assets)
    text = VERDICT + "<|endoftext|>" + MIXED
    assert ours.encode(text, allowed_special="all") == tokenizer.encode(text).ids \
        == gpt2.encode(text, allowed_special="all")
    assert ours.decode(ours.encode(MIXED)) == MIXED
    save_gpt2_files(gpt2, tmp_path)
    assert isinstance(load_tokenizer(tmp_path), BPETokenizer)


def test_unsupported_model_type_names_the_file_and_field(tmp_path: Path) -> None:
    unigram = Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0)], unk_id=0))
    path = save(unigram, tmp_path / "tokenizer.json")
    with pytest.raises(ValueError, match=r"tokenizer\.json: field 'model\.type': 'Unigram' is "
                                         r"not supported"):
        read_hf_tokenizer(path)
    with pytest.raises(ValueError, match="model.type"):
        load_tokenizer(tmp_path)
    (tmp_path / "bare.json").write_text('{"model": {"type": "BPE"}}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bare\.json: the field 'vocab' is missing"):
        load_tokenizer(tmp_path / "bare.json")
    wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    with pytest.raises(ValueError, match="'WordPiece' is not supported"):
        read_hf_tokenizer(save(wordpiece, tmp_path / "wp.json"))


def test_load_tokenizer_reads_a_file_and_a_model_directory(family_files: dict[str, Path],
                                                           tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "tokenizer.json").write_bytes(family_files["qwen"].read_bytes())
    (model_dir / "config.json").write_text("{}", encoding="utf-8")
    for spec in (family_files["qwen"], model_dir):
        tokenizer = load_tokenizer(spec)
        assert isinstance(tokenizer, HFTokenizer)
        assert tokenizer.encode(MIXED) == _theirs(family_files["qwen"], MIXED)
    saved = tmp_path / "saved.json"
    tokenizer.save(saved)  # as Hugging Face wrote it: both readers take it
    assert Tokenizer.from_file(str(saved)).encode(MIXED).ids == load_tokenizer(saved).encode(MIXED)


@pytest.mark.parametrize("family", ["llama3", "gemma3"])
def test_tokenize_command_writes_hugging_face_ids(family_files: dict[str, Path], family: str,
                                                  tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "tokenizer.json").write_bytes(family_files[family].read_bytes())
    text_file = tmp_path / "text.txt"
    text = MOBY[:5000] + MIXED
    text_file.write_bytes(text.encode("utf-8"))
    out = tmp_path / "ids.npy"
    done = run_here(["tokenize", "--tokenizer", str(model_dir), str(text_file), "--ids-out",
                     str(out)], tmp_path)
    assert done.returncode == 0, done.stderr
    expected = _theirs(family_files[family], text)
    assert np.load(out).tolist() == expected
    assert expected[0] == read_hf_tokenizer(model_dir).bos_id

