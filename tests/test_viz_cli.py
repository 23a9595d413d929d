"""``scratchgpt viz {attention,embeddings,tokens,run}``: each writes the picture ``--out``
names and prints its path (the issue's contract), and bad requests say what to do."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest
import torch
from test_viz_runs import write_run

from scratchgpt.cli import main
from scratchgpt.config import ModelConfig
from scratchgpt.hub.export import export_hf
from scratchgpt.model import GPTModel
from scratchgpt.tokenizers.gpt2 import load_gpt2_tokenizer


@pytest.fixture(scope="module")
def model_dir(shared_assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-2-shaped model in Hugging Face's layout, as `export` writes it."""
    torch.manual_seed(0)
    model = GPTModel(ModelConfig(vocab_size=50257, context_length=64, emb_dim=32, n_heads=2,
                                 n_layers=2))
    directory = tmp_path_factory.mktemp("viz") / "tiny"
    export_hf(model, load_gpt2_tokenizer(shared_assets / "gpt2-tokenizer"), directory)
    return directory


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def png_size(path: Path) -> tuple[int, int]:
    height, width = matplotlib.image.imread(path).shape[:2]
    return width, height


@pytest.mark.parametrize("argv", [
    ["attention", "--text", "The cat sat on the mat", "--layer", "1"],
    ["attention", "--text", "The cat sat", "--head", "0"],
    ["embeddings", "--words", "apple", "banana", "king", "queen"],
    ["embeddings", "--positions"],
])
def test_model_pictures_are_written_where_out_says(model_dir: Path, tmp_path: Path, capsys,
                                                   argv: list[str]) -> None:
    out = tmp_path / "picture.png"
    printed = run_cli(capsys, "viz", argv[0], "--model", str(model_dir), *argv[1:],
                      "--out", str(out))
    assert printed.strip() == str(out)
    width, height = png_size(out)
    assert width > 300 and height > 300


def test_neighbours_are_printed(model_dir: Path, capsys) -> None:
    printed = run_cli(capsys, "viz", "embeddings", "--model", str(model_dir), "--neighbours",
                      "king", "--k", "3")
    assert printed.startswith("tokens nearest to ' king'") and len(printed.splitlines()) == 4


def test_tokens_in_the_terminal_and_as_a_page(shared_assets: Path, tmp_path: Path, capsys,
                                              monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    tokenizer = str(shared_assets / "gpt2-tokenizer")
    printed = run_cli(capsys, "viz", "tokens", "--tokenizer", tokenizer, "--text", "the The")
    assert printed.splitlines()[0] == "[the][␣The]" and "1169 383" in printed
    page = tmp_path / "tokens.html"
    assert run_cli(capsys, "viz", "tokens", "--tokenizer", tokenizer, "--text", "<b>x</b>",
                   "--out", str(page)).strip() == str(page)
    assert "<b>x" not in page.read_text(encoding="utf-8")  # escaped, never markup


def test_a_file_that_is_not_utf8_is_read_as_the_error_advises(shared_assets: Path,
                                                               tmp_path: Path, capsys,
                                                               monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café".encode("latin-1"))
    tokens = ["viz", "tokens", "--tokenizer", str(shared_assets / "gpt2-tokenizer"),
              "--file", str(latin1)]
    assert main(tokens) == 2
    assert "pass --encoding-errors replace" in capsys.readouterr().err
    assert "\ufffd" in run_cli(capsys, *tokens, "--encoding-errors", "replace")


def test_runs_on_one_figure(tmp_path: Path, capsys) -> None:
    write_run(tmp_path / "a", 3)
    write_run(tmp_path / "b", 5)
    out = tmp_path / "runs.png"
    assert run_cli(capsys, "viz", "run", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                   str(out)).strip() == str(out)
    assert png_size(out)[0] > 300


@pytest.mark.parametrize(("argv", "message"), [
    (["embeddings"], "say what to show"),
    (["attention", "--text", "x", "--layer", "7"], "layer 7 is out of range"),
])
def test_bad_requests_say_what_to_do(model_dir: Path, capsys, argv: list[str],
                                     message: str) -> None:
    assert main(["viz", argv[0], "--model", str(model_dir), *argv[1:]]) == 2
    assert message in capsys.readouterr().err
