"""Shared fixtures: the real data in ../shared/assets, tiktoken's GPT-2 encoding offline, and
a tiny instruction-tuned run (for finetune instruct, chat and serve tests); and each
pytest-xdist worker's share of the CPU cores."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from instruct_runs import cli_here, finetune_instruct
from pretrain_runs import pretrain_here, write_corpus
from serve_runs import Server

REPO_ROOT = Path(__file__).resolve().parent.parent

# tiktoken looks for downloaded files in $TIKTOKEN_CACHE_DIR under the SHA-1 of their URL.
TIKTOKEN_CACHE_NAMES = {
    "gpt2-tokenizer/vocab.bpe": "6d1cbeee0f20b3d9449abfede4726ed8212e3aee",
    "gpt2-tokenizer/encoder.json": "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6",
    "gpt2-tokenizer/gpt2.tiktoken": "0ea1e91bbb3a60f729a8dc8f777fd2fc07cd8df4",
}


def pytest_collection_finish(session: pytest.Session) -> None:
    """Under pytest-xdist, each busy worker, and every process it starts (through
    ``OMP_NUM_THREADS``), computes with its share of the cores, not all of them: two workers of
    two threads each on two cores wait on each other's threads (README.md: 40 steps a minute,
    not 213), and the suite ran several times slower. A run of fewer files than workers (``-m
    guide``: one) shares the cores among the workers that have a file to run."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    busy = min(workers, len({item.path for item in session.items}))  # --dist loadfile
    if busy:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
        threads = str(max(1, cores // busy))
        os.environ.setdefault("OMP_NUM_THREADS", threads)
        os.environ.setdefault("MKL_NUM_THREADS", threads)
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def shared_assets() -> Path:
    """``../shared/assets`` beside the repository (see ../shared/README.md)."""
    assets = REPO_ROOT.parent / "shared" / "assets"
    if not assets.is_dir():
        pytest.skip(f"../shared/assets is absent: expected the shared data at {assets}")
    return assets


@pytest.fixture(scope="session")
def tiktoken_gpt2(shared_assets: Path, tmp_path_factory: pytest.TempPathFactory):
    """tiktoken's ``gpt2`` encoding, loaded from the shared files with no network access."""
    tiktoken = pytest.importorskip("tiktoken")
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    for source, name in TIKTOKEN_CACHE_NAMES.items():
        shutil.copyfile(shared_assets / source, cache / name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        yield tiktoken.get_encoding("gpt2")


@pytest.fixture(scope="session")
def instruct_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("instruct-cache")


@pytest.fixture(scope="session")
def instruction_records(shared_assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The book's first 40 instruction records, as a JSON list."""
    data = json.loads((shared_assets / "instructions" / "instruction-data.json").read_text())
    path = tmp_path_factory.mktemp("instructions") / "instructions.json"
    path.write_text(json.dumps(data[:40]), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def instruct_base(instruct_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory of `scratchgpt pretrain` (2 steps) with room for the book's prompts."""
    corpus = write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", chars=20_000)
    run_dir = tmp_path_factory.mktemp("runs") / "base"
    done = pretrain_here(corpus, run_dir, instruct_cache, "--max-steps", "2", "--eval-every",
                         "2", "--context-length", "160")
    assert done.returncode == 0, done.stderr
    return run_dir


@pytest.fixture(scope="session")
def instruct_run(instruction_records: Path, instruct_base: Path, instruct_cache: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``finetune instruct`` of the base model, chatml style: the run directory and its log."""
    run_dir = tmp_path_factory.mktemp("runs") / "assistant"
    done = finetune_instruct(instruction_records, instruct_base, run_dir, "--prompt-style",
                             "chatml", cache=instruct_cache)
    assert done.returncode == 0, done.stderr
    return run_dir, done.stderr


@pytest.fixture(scope="session")
def classifier_run(shared_assets: Path, instruct_cache: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny spam classifier (``finetune classify``, nano, 300 SMS) for serving tests."""
    lines = (shared_assets / "sms-spam" / "SMSSpamCollection").read_text(
        encoding="utf-8").splitlines()
    data = tmp_path_factory.mktemp("sms") / "SMSSpamCollection"
    data.write_text("\n".join(lines[:300]) + "\n", encoding="utf-8")
    run_dir = tmp_path_factory.mktemp("runs") / "spam"
    done = cli_here("finetune", "classify", "--data", str(data), "--model", "preset:nano",
                    "--tokenizer", "bpe:300", "--epochs", "1", "--batch-size", "8",
                    "--eval-every", "10", "--eval-batches", "1", "--out", str(run_dir),
                    cache=instruct_cache)
    assert done.returncode == 0, done.stderr
    return run_dir


@pytest.fixture(scope="session")
def chat_server(instruct_run: tuple[Path, str], instruct_cache: Path) -> Iterator[Server]:
    """``scratchgpt serve`` of the instruction-tuned run, shared by the serving tests."""
    server = Server(instruct_run[0], instruct_cache, "--max-tokens", "64")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def classifier_server(classifier_run: Path, instruct_cache: Path) -> Iterator[Server]:
    """``scratchgpt serve`` of the classifier run."""
    server = Server(classifier_run, instruct_cache)
    yield server
    server.stop()
