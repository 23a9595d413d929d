"""Shared fixtures: the real data in ../shared/assets, and tiktoken's GPT-2 encoding offline."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# tiktoken looks for downloaded files in $TIKTOKEN_CACHE_DIR under the SHA-1 of their URL.
TIKTOKEN_CACHE_NAMES = {
    "gpt2-tokenizer/vocab.bpe": "6d1cbeee0f20b3d9449abfede4726ed8212e3aee",
    "gpt2-tokenizer/encoder.json": "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6",
    "gpt2-tokenizer/gpt2.tiktoken": "0ea1e91bbb3a60f729a8dc8f777fd2fc07cd8df4",
}


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
