"""A path that exists is that path: ``--model``, ``--tokenizer`` and ``--data`` read a file or
directory of the name given before they look for a download of that name in the cache
(scratchgpt.hub.names, used by every resolver). Each test runs in a working directory that
holds the thing, with an empty cache."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import pytest
import torch

from scratchgpt.cli import main
from scratchgpt.config import ModelConfig
from scratchgpt.data.instructions import load_instructions
from scratchgpt.finetune.classification import ClassifyData, read_labelled
from scratchgpt.hub.datasets import dataset_path, download_dataset
from scratchgpt.hub.export import export_hf
from scratchgpt.hub.models import resolve_model, resolve_tokenizer
from scratchgpt.hub.names import local_or_downloaded
from scratchgpt.model import GPTModel
from scratchgpt.tokenizers import load_gpt2_tokenizer

SMS_LINES = ["ham\tSee you at the station", "spam\tWIN a prize, text WIN to 80082",
             "ham\tLunch at 1?"]


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory, and an empty download cache elsewhere."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path / "cache"))
    return work


@pytest.fixture(scope="module")
def tiny_gpt2(shared_assets: Path) -> tuple[GPTModel, object]:
    """A random GPT with GPT-2's vocabulary, small enough to save and load in a moment."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=50257, context_length=64, emb_dim=16, n_heads=2,
                         n_layers=1)
    return GPTModel(config).eval(), load_gpt2_tokenizer(shared_assets / "gpt2-tokenizer")


def write_mmlu(root: Path) -> None:
    """The original release's layout, two subjects: data/{dev,test}/SUBJECT_SPLIT.csv."""
    for subject in ("astronomy", "virology"):
        for split, count in (("dev", 2), ("test", 3)):
            path = root / "data" / split / f"{subject}_{split}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", encoding="utf-8", newline="") as stream:
                csv.writer(stream).writerows(
                    [f"{subject} question {n}?", "one", "two", "three", "four", "ABCD"[n % 4]]
                    for n in range(count))


def test_evaluate_mmlu_reads_the_mmlu_directory_beside_it(
    here: Path, tiny_gpt2, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_mmlu(here / "mmlu")
    export_hf(*tiny_gpt2, tmp_path / "model")
    assert main(["evaluate", "mmlu", "--model", str(tmp_path / "model"), "--data", "mmlu",
                 "--json"]) == 0, capsys.readouterr().err
    record = json.loads(capsys.readouterr().out)
    assert sorted(record["subjects"]) == ["astronomy", "virology"]
    assert len(record["items"]) == 6
    assert record["data"]["files"] == 4  # the two subjects' dev and test files, read here
    assert all(path.startswith("mmlu/data/") for path in record["data"]["path"])


def test_a_model_name_that_is_a_directory_here_is_that_directory(
    here: Path, tiny_gpt2, capsys: pytest.CaptureFixture[str]
) -> None:
    model, tokenizer = tiny_gpt2
    export_hf(model, tokenizer, here / "gpt2-124M")
    assert resolve_model("gpt2-124M") == Path("gpt2-124M")
    assert main(["info", "--model", "gpt2-124M"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == str(model.num_parameters())
    (here / "hello.txt").write_text("Hello, world", encoding="utf-8")
    assert resolve_tokenizer("gpt2-124M").encode("Hello, world") == [15496, 11, 995]
    assert main(["tokenize", "--tokenizer", "gpt2-124M", "hello.txt"]) == 0
    assert capsys.readouterr().out == "3\n"


def test_a_dataset_name_that_is_a_file_here_is_that_file(here: Path) -> None:
    (here / "sms-spam").write_text("\n".join(SMS_LINES) + "\n", encoding="utf-8")
    assert dataset_path("sms-spam", "labelled") == Path("sms-spam")
    data = read_labelled(ClassifyData(data="sms-spam"))
    assert data.texts == [line.split("\t")[1] for line in SMS_LINES]
    records = [{"instruction": "Name a fruit.", "input": "", "output": "An apple."}]
    (here / "instructions").write_text(json.dumps(records), encoding="utf-8")
    assert load_instructions(dataset_path("instructions", "instructions"))[0].output == \
        "An apple."


def test_a_directory_that_download_filled_is_read_as_the_cache_is(
    here: Path, shared_assets: Path, tmp_path: Path
) -> None:
    publisher = tmp_path / "publisher"
    publisher.mkdir()
    with zipfile.ZipFile(publisher / "sms+spam+collection.zip", "w") as archive:
        archive.write(shared_assets / "sms-spam" / "SMSSpamCollection", "SMSSpamCollection")
    download_dataset("sms-spam", here / "sms-spam", source_dir=publisher, progress=False)
    assert dataset_path("sms-spam", "labelled") == Path("sms-spam") / "SMSSpamCollection"
    assert len(read_labelled(ClassifyData(data="sms-spam")).texts) == 5574
    (here / "sms-spam" / "SMSSpamCollection").unlink()
    with pytest.raises(FileNotFoundError, match=r"run the download again: scratchgpt download "
                                                r"sms-spam --dir sms-spam"):
        dataset_path("sms-spam", "labelled")


def test_names_not_here_are_still_looked_up_in_the_cache(here: Path) -> None:
    with pytest.raises(FileNotFoundError, match="mmlu has not been downloaded; run: scratchgpt "
                                                "download mmlu"):
        dataset_path("mmlu", "benchmark")
    with pytest.raises(FileNotFoundError, match="gpt2-124M has not been downloaded"):
        resolve_model("gpt2-124M")
    assert dataset_path("mine.csv", "labelled") == Path("mine.csv")  # the loader says missing


def test_an_empty_name_is_refused_not_taken_for_the_current_directory(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="the name is empty"):
        local_or_downloaded("", Path)
    assert main(["generate", "--model", "", "--prompt", "Hi"]) == 2
    assert "the name is empty" in capsys.readouterr().err
