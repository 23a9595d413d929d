"""The first stages of the ``scratchgpt`` command: info, train-tokenizer and tokenize."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scratchgpt.cli import main
from scratchgpt.config import get_preset
from scratchgpt.model.summary import describe, explain_parameters
from scratchgpt.tokenizers import ENDOFTEXT, BPETokenizer, load_tokenizer

GPT2_SMALL_PARAMETERS = 124_439_808


@pytest.fixture
def verdict(shared_assets: Path) -> Path:
    return shared_assets / "corpora" / "the-verdict.txt"


@pytest.fixture
def gpt2_dir(shared_assets: Path) -> Path:
    return shared_assets / "gpt2-tokenizer"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- info --------------------------------------------------------------------------------------


def test_info_prints_the_parameter_count_first(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "info", "--preset", "gpt2-small")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == str(GPT2_SMALL_PARAMETERS)
    assert "preset: gpt2-small" in lines
    assert "vocab_size: 50257" in lines


def test_info_with_another_vocabulary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "info", "--preset", "gpt2-small", "--vocab-size", "50000")
    assert code == 0
    # GPT-2 ties the output head to the token embedding: 257 fewer rows of 768
    assert out.splitlines()[0] == str(GPT2_SMALL_PARAMETERS - 257 * 768)
    assert "vocab_size: 50000" in out.splitlines()


def test_info_unknown_preset_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "info", "--preset", "gpt2-enormous")
    assert code == 2 and out == ""
    assert "gpt2-enormous" in err


def test_info_reads_a_hugging_face_directory_as_transformers_counts_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_embd=64, n_layer=3, n_head=4, n_positions=96, vocab_size=500)
    (tmp_path / "config.json").write_text(config.to_json_string(), encoding="utf-8")
    code, out, _ = run_cli(capsys, "info", "--model", tmp_path)
    assert code == 0 and f"model: {tmp_path}" in out.splitlines()
    assert int(out.splitlines()[0]) == GPT2LMHeadModel(config).num_parameters()
    assert {"context_length: 96", "n_layers: 3"} <= set(out.splitlines())


def test_info_reads_a_run_without_its_weights(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from scratchgpt.config_files import dump_toml

    micro = get_preset("micro").replace(vocab_size=300)
    head = {"kind": "classifier", "labels": ["ham", "spam"]}
    (tmp_path / "config.toml").write_text(
        dump_toml({"resolved_model": micro.to_dict(), "head": head}), encoding="utf-8")
    code, out, _ = run_cli(capsys, "info", "--model", tmp_path)
    assert code == 0
    assert out.splitlines()[0] == str(describe(micro)["parameters"])
    assert "a classifier (ham, spam)" in out
    with pytest.raises(SystemExit) as refused:
        run_cli(capsys, "info", "--model", tmp_path, "--preset", "micro")
    assert refused.value.code == 2
    assert "not allowed with argument --model" in capsys.readouterr().err


def test_info_on_something_that_is_not_a_model_says_what_it_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "info", "--model", tmp_path / "nowhere")
    assert code == 2 and out == ""
    assert "nowhere is neither a directory nor a downloaded model name" in err
    code, out, err = run_cli(capsys, "info", "--model", tmp_path)
    assert code == 2 and out == ""
    assert f"{tmp_path} is not a model directory: expected config.json" in err


def test_info_as_a_real_process() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scratchgpt.cli", "info", "--preset", "gpt2-small"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(GPT2_SMALL_PARAMETERS)
    assert ("parameters: 124,439,808 (the output layer shares the token embedding's weights)"
            in lines)
    assert ("without weight tying: 163,037,184 (a separate 38,597,376-parameter output layer)"
            in lines)


def test_parameter_counts_of_an_untied_model_are_explained() -> None:
    # Untied, the output layer's 50,257 x 768 weights are counted in the total itself.
    untied = get_preset("gpt2-small").replace(tie_weights=False)
    assert explain_parameters(describe(untied)) == [
        "parameters: 163,037,184 (including a separate 38,597,376-parameter output layer)",
        "with weight tying: 124,439,808 (the output layer sharing the token embedding's weights)",
    ]


def test_a_reader_that_leaves_early_is_not_an_error() -> None:
    # `scratchgpt info --preset gpt2-small | head -1`: head exits before the output is written
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "scratchgpt.cli", "info", "--preset", "gpt2-small"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (0, "")


# -- train-tokenizer, then tokenize ----------------------------------------------------------


def test_train_tokenizer_then_tokenize(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, verdict: Path
) -> None:
    tok_file = tmp_path / "tok.json"
    code, out, err = run_cli(capsys, "train-tokenizer", verdict, "--vocab-size", "300",
                             "--out", tok_file, "--special", ENDOFTEXT)
    assert code == 0, err
    assert out == ""
    assert "300 tokens" in err and str(tok_file) in err
    tokenizer = load_tokenizer(tok_file)
    assert isinstance(tokenizer, BPETokenizer)
    assert tokenizer.vocab_size == 300
    assert tokenizer.special_tokens == {ENDOFTEXT: 299}
    assert len(tokenizer.merges()) == 300 - 256 - 1

    ids_file = tmp_path / "ids.npy"
    code, out, err = run_cli(capsys, "tokenize", "--tokenizer", tok_file, verdict,
                             "--ids-out", ids_file)
    assert code == 0, err
    text = verdict.read_text(encoding="utf-8")
    expected = tokenizer.encode(text)
    assert out == f"{len(expected)}\n"  # the bare count, for scripts
    assert err.endswith(f"wrote {len(expected):,} token ids to {ids_file} (a 1-D numpy array "
                        "of int64; np.load reads it)\n")  # what was written where
    assert len(expected) < len(text.encode())  # the merges compress the text
    ids = np.load(ids_file)
    assert ids.ndim == 1 and np.issubdtype(ids.dtype, np.integer)
    assert ids.tolist() == expected
    assert tokenizer.decode(ids.tolist()) == text


def test_train_tokenizer_on_several_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    files = []
    for i, text in enumerate(["aaaa bbbb aaaa bbbb", "abab abab cccc"]):
        files.append(tmp_path / f"{i}.txt")
        files[-1].write_text(text, encoding="utf-8")
    tok_file = tmp_path / "tok.json"
    code, _, err = run_cli(capsys, "train-tokenizer", *files, "--vocab-size", "260",
                           "--out", tok_file, "--special")  # --special with none: no specials
    assert code == 0, err
    tokenizer = load_tokenizer(tok_file)
    assert tokenizer.vocab_size == 260 and tokenizer.special_tokens == {}
    merges = tokenizer.merges()
    assert (b"a", b"a") in merges  # learned from the first file
    assert (b"c", b"c") in merges  # "cc" is only in the second


@pytest.mark.parametrize("name", ["bpe.tok", "tokenizer", "tok.tiktoken"])
def test_tokenize_reads_what_train_tokenizer_wrote_whatever_its_name(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, verdict: Path, name: str
) -> None:
    tok_file = tmp_path / name
    code, _, err = run_cli(capsys, "train-tokenizer", verdict, "--vocab-size", "300",
                           "--out", tok_file)
    assert code == 0, err
    code, out, err = run_cli(capsys, "tokenize", "--tokenizer", tok_file, verdict)
    assert code == 0, err
    assert out == f"{len(load_tokenizer(tok_file).encode(verdict.read_text()))}\n"


def test_tokenize_reads_a_tiktoken_rank_file_whatever_its_name(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, gpt2_dir: Path
) -> None:
    ranks = tmp_path / "gpt2-ranks.txt"
    ranks.write_bytes((gpt2_dir / "gpt2.tiktoken").read_bytes())
    text = tmp_path / "hello.txt"
    text.write_text("Hello, world", encoding="utf-8")
    code, out, err = run_cli(capsys, "tokenize", "--tokenizer", ranks, text)
    assert (code, out) == (0, "3\n"), err


@pytest.mark.parametrize("content", [b"", b"hello world\n", b"[1, 2, 3]", b"\x00\xff\xfe"])
def test_a_file_that_is_no_tokenizer_is_named_with_the_choices(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, verdict: Path, content: bytes
) -> None:
    not_a_tokenizer = tmp_path / "notes.json"
    not_a_tokenizer.write_bytes(content)
    code, out, err = run_cli(capsys, "tokenize", "--tokenizer", not_a_tokenizer, verdict)
    assert code == 2 and out == ""
    assert err.startswith(f"scratchgpt tokenize: error: {not_a_tokenizer} is neither")
    assert "tiktoken rank file" in err and "train-tokenizer" in err and "merges.txt" in err
    assert len(err.splitlines()) == 1


def test_tokenize_with_gpt2_matches_tiktoken(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, verdict: Path, gpt2_dir: Path,
    tiktoken_gpt2,
) -> None:
    ids_file = tmp_path / "verdict.npy"
    code, out, err = run_cli(capsys, "tokenize", "--tokenizer", gpt2_dir, verdict,
                             "--ids-out", ids_file)
    assert code == 0, err
    expected = tiktoken_gpt2.encode(verdict.read_text(encoding="utf-8"))
    assert out == f"{len(expected)}\n"
    assert np.load(ids_file).tolist() == expected


def test_ids_out_writes_the_file_it_names(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, gpt2_dir: Path
) -> None:
    text = tmp_path / "hello.txt"
    text.write_text("Hello, world", encoding="utf-8")
    code, out, err = run_cli(capsys, "tokenize", "--tokenizer", gpt2_dir, text, "--ids-out",
                             tmp_path / "hello.ids")
    assert (code, out) == (0, "3\n"), err
    assert f"wrote 3 token ids to {tmp_path / 'hello.ids'}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hello.ids", "hello.txt"]  # no .npy
    assert np.load(tmp_path / "hello.ids").tolist() == [15496, 11, 995]


def test_tokenize_without_ids_out_only_counts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, gpt2_dir: Path
) -> None:
    text = tmp_path / "hello.txt"
    text.write_text("Hello, world", encoding="utf-8")
    code, out, _ = run_cli(capsys, "tokenize", "--tokenizer", gpt2_dir, text)
    assert (code, out) == (0, "3\n")  # [15496, 11, 995]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hello.txt"]


def test_special_token_in_text_needs_allow_special(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, gpt2_dir: Path, tiktoken_gpt2,
) -> None:
    text = tmp_path / "two-docs.txt"
    text.write_text(f"Hello{ENDOFTEXT} world", encoding="utf-8")
    ids_file = tmp_path / "ids.npy"

    code, out, err = run_cli(capsys, "tokenize", "--tokenizer", gpt2_dir, text,
                             "--ids-out", ids_file)
    assert code == 2 and out == ""
    assert ENDOFTEXT in err and "--allow-special" in err
    assert not ids_file.exists()

    code, out, err = run_cli(capsys, "tokenize", "--tokenizer", gpt2_dir, text,
                             "--ids-out", ids_file, "--allow-special")
    assert code == 0, err
    ids = np.load(ids_file).tolist()
    assert ids == tiktoken_gpt2.encode(f"Hello{ENDOFTEXT} world", allowed_special="all")
    assert ids == [15496, 50256, 995]
    assert out == "3\n"


@pytest.mark.parametrize("command", ["tokenize", "train-tokenizer"])
def test_non_utf8_file_names_file_and_byte(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, gpt2_dir: Path, command: str
) -> None:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("naïve ".encode() + b"caf\xe9\n")
    out_file = tmp_path / "tok.json"
    argv = (["tokenize", "--tokenizer", gpt2_dir, bad] if command == "tokenize"
            else ["train-tokenizer", bad, "--vocab-size", "260", "--out", out_file])
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert f"{bad}: byte 10 (0xe9) is not valid UTF-8" in err
    assert err.startswith(f"scratchgpt {command}: error:")
    assert not out_file.exists()

    # The error's advice works for this command: the byte becomes U+FFFD.
    assert "pass --encoding-errors replace" in err
    code, out, err = run_cli(capsys, *argv, "--encoding-errors", "replace")
    assert code == 0, err
    tokenizer = load_tokenizer(gpt2_dir if command == "tokenize" else out_file)
    expected = tokenizer.encode("naïve caf\ufffd\n")
    assert out == (f"{len(expected)}\n" if command == "tokenize" else "")


def test_missing_tokenizer_names_the_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, verdict: Path
) -> None:
    missing = tmp_path / "nowhere" / "tok.json"
    code, out, err = run_cli(capsys, "tokenize", "--tokenizer", missing, verdict)
    assert code == 2 and out == ""
    assert str(missing) in err


def test_missing_text_file_names_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, gpt2_dir: Path
) -> None:
    missing = tmp_path / "missing.txt"
    for argv in (["tokenize", "--tokenizer", gpt2_dir, missing],
                 ["train-tokenizer", missing, "--vocab-size", "300", "--out", tmp_path / "t.json"]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and out == ""
        assert str(missing) in err


def test_train_tokenizer_vocab_too_small(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, verdict: Path
) -> None:
    out_file = tmp_path / "tok.json"
    code, out, err = run_cli(capsys, "train-tokenizer", verdict, "--vocab-size", "100",
                             "--out", out_file)
    assert code == 2 and out == ""
    assert "vocab_size=100" in err and "at least 257" in err
    assert not out_file.exists()


@pytest.mark.parametrize("content", ["", f"{ENDOFTEXT}"])
def test_train_tokenizer_on_no_text(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text(content, encoding="utf-8")
    out_file = tmp_path / "tok.json"
    code, out, err = run_cli(capsys, "train-tokenizer", empty, "--vocab-size", "300",
                             "--out", out_file)
    assert code == 2 and out == ""
    assert "no text to train on" in err
    assert not out_file.exists()


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], verdict: Path) -> None:
    for argv in ([], ["tokenize", str(verdict)], ["train-tokenizer", str(verdict)],
                 ["info", "--vocab-size", "many"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert "usage: scratchgpt" in capsys.readouterr().err
