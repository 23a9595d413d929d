"""``scratchgpt download ORG/NAME`` against a loopback server that answers as the Hugging Face
hub does (tests/file_server.py's ``HubServer``): the API's listing with each LFS file's sha256,
``resolve`` URLs that redirect LFS files to a CDN on another port, gated repositories (401
without a token, 403 with another one) and the hub's ``X-Error-Code``. No network, no mocks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from file_server import HubRepo, HubServer, Route, hub_servers
from safetensors.numpy import save_file

from scratchgpt.cli import main
from scratchgpt.hub.download import DownloadError, read_manifest
from scratchgpt.hub.hf_hub import (
    HubError,
    check_model_download,
    download_model,
    git_blob_id,
    select_files,
)
from scratchgpt.hub.models import resolve_model
from scratchgpt.hub.names import hub_model_dir, hub_model_path, parse_hub_name

REPO = "tiny-org/Tiny-0.1B"
TOKEN = "hf_right"
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json",
               "tokenizer_config.json", "model.safetensors", "LICENSE", "README.md")
SKIPPED = (".gitattributes", "pytorch_model.bin", "original/consolidated.00.pth")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model as the hub publishes one, made here: a Qwen3-shaped config.json, weights
    written by safetensors, a tokenizer.json, and files a model does not need."""
    directory = tmp_path_factory.mktemp("tiny-model")
    config = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 8,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
              "head_dim": 4, "intermediate_size": 16, "vocab_size": 64,
              "torch_dtype": "float32"}
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 2]}))
    rng = np.random.default_rng(0)
    save_file({"model.embed_tokens.weight": rng.standard_normal((64, 8), dtype=np.float32),
               "model.layers.0.mlp.up_proj.weight": rng.standard_normal((16, 8)).astype(
                   np.float32),
               "lm_head.weight": rng.standard_normal((512, 64), dtype=np.float32)},
              directory / "model.safetensors")
    vocab = {chr(ord("a") + i): i for i in range(26)}
    (directory / "tokenizer.json").write_text(json.dumps(
        {"version": "1.0", "added_tokens": [], "pre_tokenizer": None,
         "model": {"type": "BPE", "vocab": vocab, "merges": []}}))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}))
    (directory / "LICENSE").write_text("Apache License 2.0\n")
    (directory / "README.md").write_text("# Tiny\n")
    (directory / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (directory / "pytorch_model.bin").write_bytes(b"the same weights, pickled")
    return directory


def hub_repo(directory: Path, **weights_behaviour: object) -> HubRepo:
    """The repository of ``directory``'s files, the weights and tokenizer.json in LFS."""
    files = {path.name: Route(path.read_bytes(), lfs=path.name in ("model.safetensors",
                                                                  "tokenizer.json"))
             for path in sorted(directory.iterdir())}
    files["original/consolidated.00.pth"] = Route(b"Meta's own checkpoint", lfs=True)
    files["model.safetensors"] = Route(files["model.safetensors"].data, lfs=True,
                                       **weights_behaviour)  # type: ignore[arg-type]
    return HubRepo(files=files, revisions=("main", "v1.0"))


@pytest.fixture
def hub() -> Iterator[Callable[..., HubServer]]:
    with hub_servers() as start:
        yield start


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("SCRATCHGPT_BASE_URL", raising=False)
    return tmp_path / "cache"


def test_download_lists_redirects_verifies_and_names_the_model(
    hub, model_dir: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = hub_repo(model_dir)
    server = hub({REPO: repo})
    directory = download_model(REPO, base_url=server.url, progress=False)

    assert directory == cache / "models" / "tiny-org--Tiny-0.1B"
    for name in MODEL_FILES:
        assert (directory / name).read_bytes() == (model_dir / name).read_bytes(), name
    for name in SKIPPED:
        assert not (directory / name).exists(), name
    assert not list(directory.glob("*.part"))
    # the files came from the listing's commit; the LFS ones through the CDN's other port
    resolved = [path for path, _ in server.requests if "/resolve/" in path]
    assert len(resolved) == len(MODEL_FILES)
    assert all(f"/resolve/{repo.commit}/" in path for path in resolved)
    assert {path for path, _ in server.cdn.requests} == {
        "/lfs/" + hashlib.sha256((model_dir / name).read_bytes()).hexdigest()
        for name in ("model.safetensors", "tokenizer.json")}
    manifest = read_manifest(directory)
    assert manifest["model.safetensors"]["verified"] == ["size", "sha256", "content"]
    # a small file's ETag is its git blob id: checked (with its size) in the content check
    assert manifest["config.json"]["verified"] == ["size", "content"]
    record = json.loads((directory / "hub.json").read_text())
    assert record["commit"] == repo.commit and record["files"][0] == "config.json"
    assert set(record["files"]) == set(MODEL_FILES) and set(record["skipped"]) == set(SKIPPED)

    # A second run asks for the listing only: every file is still verified.
    server.requests.clear()
    download_model(REPO, base_url=server.url, progress=False)
    assert [path for path, _ in server.requests] == [
        f"/api/models/{REPO}/revision/main?blobs=true"]

    # The name now stands for the directory; an existing local path of that name comes first.
    assert hub_model_path(REPO) == directory
    assert resolve_model(REPO) == directory  # what every --model goes through
    monkeypatch.chdir(tmp_path)
    (tmp_path / REPO).mkdir(parents=True)
    assert hub_model_path(REPO) == Path(REPO)
    with pytest.raises(FileNotFoundError, match="run: scratchgpt download other/model$"):
        hub_model_path("other/model")
    with pytest.raises(FileNotFoundError,
                       match="run: scratchgpt download tiny-org/Tiny-0.1B --revision v1.0"):
        hub_model_path(REPO + "@v1.0")


def test_a_revision_goes_to_its_own_directory_and_missing_ones_are_named(
    hub, model_dir: Path, cache: Path
) -> None:
    server = hub({REPO: hub_repo(model_dir)})
    directory = download_model(REPO, revision="v1.0", base_url=server.url, progress=False)
    assert download_model(REPO + "@v1.0", base_url=server.url, progress=False) == directory
    assert directory == hub_model_dir(REPO, "v1.0") == cache / "models" / "tiny-org--Tiny-0.1B@v1.0"
    assert hub_model_path(REPO + "@v1.0") == directory
    assert parse_hub_name(REPO + "@refs/pr/1") == (REPO, "refs/pr/1")

    with pytest.raises(HubError, match=r"tiny-org/Tiny-0.1B has no revision 'v9' \(HTTP 404.*"
                                       r"\(the hub said: Invalid rev id: v9\)$"):
        download_model(REPO, revision="v9", base_url=server.url, progress=False)
    with pytest.raises(HubError, match=r"tiny-org/Nope does not exist on the hub \(HTTP 401.*"
                                       r"pass a token"):
        download_model("tiny-org/Nope", base_url=server.url, progress=False)
    assert not hub_model_dir("tiny-org/Nope").exists()
    with pytest.raises(ValueError, match="expected ORG/NAME"):
        download_model("not a name", base_url=server.url, progress=False)


def test_a_gated_repo_needs_the_right_token_which_never_reaches_the_cdn(
    hub, model_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = hub_repo(model_dir)
    repo.token = TOKEN
    server = hub({REPO: repo})
    page = f"https://huggingface.co/{REPO}"
    with pytest.raises(HubError, match=rf"gated or private: it needs a token \(HTTP 401\): "
                                       rf"accept the licence on {page}, .* --token hf_\.\.\. "
                                       rf"or the environment variable HF_TOKEN"):
        download_model(REPO, base_url=server.url, progress=False)
    with pytest.raises(HubError, match=rf"the token given was refused \(HTTP 403\): accept "
                                       rf"the licence on {page}"):
        download_model(REPO, base_url=server.url, token="hf_wrong", progress=False)
    assert not hub_model_dir(REPO).exists()  # nothing was published: the directory went

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    server.authorizations.clear()
    directory = download_model(REPO, base_url=server.url, progress=False)
    assert (directory / "model.safetensors").read_bytes() == (
        model_dir / "model.safetensors").read_bytes()
    assert {auth for _, auth in server.authorizations} == {f"Bearer {TOKEN}"}
    assert server.cdn.authorizations and all(
        auth is None for _, auth in server.cdn.authorizations)


def test_a_dropped_connection_is_resumed(hub, model_dir: Path) -> None:
    server = hub({REPO: hub_repo(model_dir, drop_first=True)})
    directory = download_model(REPO, base_url=server.url, progress=False)
    weights = (model_dir / "model.safetensors").read_bytes()
    assert (directory / "model.safetensors").read_bytes() == weights
    cdn = "/lfs/" + hashlib.sha256(weights).hexdigest()
    ranges = [r for path, r in server.cdn.requests if path == cdn]
    assert ranges == [None, f"bytes={len(weights) // 2}-"]


def test_a_corrupted_file_is_caught_by_its_sha256(hub, model_dir: Path, cache: Path) -> None:
    repo = hub_repo(model_dir)
    weights = (model_dir / "model.safetensors").read_bytes()
    corrupted = weights[:-1] + bytes([weights[-1] ^ 1])  # one bit flipped in the last tensor
    cdn_files = {f"/lfs/{hashlib.sha256(route.data).hexdigest()}": Route(route.data)
                 for route in repo.files.values() if route.lfs}
    cdn_files[f"/lfs/{hashlib.sha256(weights).hexdigest()}"] = Route(corrupted)
    server = hub({REPO: repo}, cdn_files)
    expected, found = hashlib.sha256(weights).hexdigest(), hashlib.sha256(corrupted).hexdigest()
    with pytest.raises(DownloadError, match=rf"model.safetensors from .* failed verification: "
                                            rf"expected sha256 {expected}, got {found}"):
        download_model(REPO, base_url=server.url, progress=False)
    directory = hub_model_dir(REPO)
    assert not (directory / "model.safetensors").exists()
    assert (directory / "config.json").is_file()  # what was verified before stays
    with pytest.raises(FileNotFoundError, match=r"was not finished; run: scratchgpt download "
                                                r"tiny-org/Tiny-0.1B$"):
        hub_model_path(REPO)


def test_a_corrupted_small_file_is_caught_by_its_git_blob_id(hub, model_dir: Path) -> None:
    repo = hub_repo(model_dir)
    config = (model_dir / "config.json").read_bytes()
    repo.files["config.json"] = Route(config.replace(b'"qwen3"', b'"qwen2"'))  # same size
    repo.listed_as["config.json"] = config
    server = hub({REPO: repo})
    with pytest.raises(DownloadError, match=rf"config.json from .* failed verification: "
                                            rf"expected git blob id {git_blob_id_of(config)} "
                                            rf"\(the hub's listing\), found "):
        download_model(REPO, base_url=server.url, progress=False)
    assert not hub_model_dir(REPO).exists()  # nothing was published: the directory went


def git_blob_id_of(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_sharded_weights_come_whole_or_not_at_all(model_dir: Path, tmp_path: Path) -> None:
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    shutil.copyfile(model_dir / "config.json", sharded / "config.json")
    rng = np.random.default_rng(1)
    weight_map = {}
    for shard, name in enumerate(["model.embed_tokens.weight", "lm_head.weight"], start=1):
        file = f"model-0000{shard}-of-00002.safetensors"
        save_file({name: rng.standard_normal((64, 8), dtype=np.float32)}, sharded / file)
        weight_map[name] = file
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 4096}, "weight_map": weight_map}))
    directory = download_model(REPO, tmp_path / "copy", source_dir=sharded, progress=False)
    assert sorted(json.loads((directory / "hub.json").read_text())["files"]) == sorted(
        p.name for p in sharded.iterdir())

    (sharded / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(HubError, match=r"maps tensors to model-00002-of-00002.safetensors, "
                                       r"which the model's files lack"):
        download_model(REPO, tmp_path / "broken", source_dir=sharded, progress=False)
    with pytest.raises(FileNotFoundError, match="broken was not finished; run: scratchgpt"):
        check_model_download(tmp_path / "broken", command="scratchgpt download " + REPO)


def test_git_blob_id_is_gits(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b'{"model_type": "qwen3"}\n')
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    expected = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True,
                              check=True).stdout.strip()
    assert git_blob_id(path) == expected


def test_which_files_a_model_needs() -> None:
    names = ["README.md", ".gitattributes", "config.json", "model-00002-of-00002.safetensors",
             "model-00001-of-00002.safetensors", "model.safetensors.index.json",
             "pytorch_model.bin", "original/consolidated.00.pth", "original/params.json",
             "tokenizer.model", "chat_template.jinja", "USE_POLICY.md", "LICENSE.txt",
             "model.gguf", "onnx/model.onnx", "merges.txt", "vocab.json"]
    kept, skipped = select_files(names)
    assert kept == ["config.json", "LICENSE.txt", "README.md", "USE_POLICY.md",
                    "chat_template.jinja", "merges.txt", "tokenizer.model", "vocab.json",
                    "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                    "model.safetensors.index.json"]
    assert skipped == [".gitattributes", "pytorch_model.bin", "original/consolidated.00.pth",
                       "original/params.json", "model.gguf", "onnx/model.onnx"]
    # without safetensors, PyTorch's weights are what there is
    kept, _ = select_files(["config.json", "pytorch_model.bin", "model.pth"])
    assert kept == ["config.json", "pytorch_model.bin"]


def test_the_command_line_downloads_copies_and_prints_the_directory(
    hub, model_dir: Path, tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = hub({REPO: hub_repo(model_dir)})
    out = tmp_path / "tiny"
    env = {**os.environ, "SCRATCHGPT_BASE_URL": server.url}
    done = subprocess.run([sys.executable, "-m", "scratchgpt.cli", "download", REPO, "--dir",
                           str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{out}\n"
    assert "skipping 3 files not needed to run the model" in done.stderr
    assert (out / "model.safetensors").read_bytes() == (
        model_dir / "model.safetensors").read_bytes()

    # --from copies a local model directory into the cache, where the name then finds it
    assert main(["download", REPO, "--from", str(model_dir)]) == 0
    copied = Path(capsys.readouterr().out.strip())
    assert copied == hub_model_dir(REPO) and hub_model_path(REPO) == copied
    assert sorted(p.name for p in copied.iterdir()) == sorted(
        [*MODEL_FILES, "download.json", "hub.json"])
    assert read_manifest(copied)["model.safetensors"]["verified"] == ["content"]

    assert main(["download", REPO, "--from", str(tmp_path / "cache")]) == 2
    assert "holds no config.json" in capsys.readouterr().err
    assert main(["download", "sms-spam", "--token", "hf_x"]) == 2
    assert "--revision and --token are for a Hugging Face model" in capsys.readouterr().err
    assert main(["download", "nonsense"]) == 2
    assert "choose gpt2, sms-spam" in capsys.readouterr().err
