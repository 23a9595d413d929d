"""``scratchgpt download`` against a real HTTP server on 127.0.0.1 (no network, no mocks).

The server plays both publishers: Hugging Face's hub (weights answered with a redirect to a
"CDN" that carries ``X-Linked-Etag``, the sha256) and OpenAI's Azure blob store (``Content-MD5``).
It serves a tiny random GPT-2 with the real 50,257-token vocabulary, and can misbehave: drop
the connection halfway, or state a wrong size or checksum.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from file_server import FileServer, Route, file_servers
from transformers import GPT2Config, GPT2LMHeadModel

from scratchgpt.cli import main
from scratchgpt.hub.download import (
    FORMATS,
    DownloadError,
    download_gpt2,
    gpt2_urls,
    model_name,
    read_manifest,
)
from scratchgpt.hub.models import load_model, resolve_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "tiny-gpt2-tf"
HF_PREFIX = "/openai-community/gpt2/resolve/main/"
OPENAI_PREFIX = "/gpt-2/models/124M/"


@pytest.fixture(scope="module")
def tiny_hf_dir(shared_assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-2 as Hugging Face publishes one: transformers' own save_pretrained,
    and GPT-2's real vocabulary under Hugging Face's file names."""
    directory = tmp_path_factory.mktemp("tiny-hf")
    torch.manual_seed(0)
    config = GPT2Config(n_embd=16, n_layer=2, n_head=2, n_positions=32, vocab_size=50257,
                        initializer_range=0.3)
    GPT2LMHeadModel(config).save_pretrained(directory)
    shutil.copyfile(shared_assets / "gpt2-tokenizer" / "encoder.json", directory / "vocab.json")
    shutil.copyfile(shared_assets / "gpt2-tokenizer" / "vocab.bpe", directory / "merges.txt")
    return directory


@pytest.fixture(scope="module")
def openai_dir(shared_assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files under OpenAI's names: the tiny TensorFlow checkpoint, a stand-in for its graph
    (``model.ckpt.meta``, only checked to be non-empty) and GPT-2's real vocabulary."""
    directory = tmp_path_factory.mktemp("openai")
    for name in ("checkpoint", "hparams.json", "model.ckpt.index",
                 "model.ckpt.data-00000-of-00001"):
        shutil.copyfile(FIXTURE / name, directory / name)
    (directory / "model.ckpt.meta").write_bytes(b"a TensorFlow graph would be here")
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copyfile(shared_assets / "gpt2-tokenizer" / name, directory / name)
    return directory


def hf_routes(directory: Path, **weights_behaviour: object) -> dict[str, Route]:
    routes = {HF_PREFIX + name: Route((directory / name).read_bytes())
              for name in ("config.json", "vocab.json", "merges.txt")}
    routes[HF_PREFIX + "model.safetensors"] = Route(
        (directory / "model.safetensors").read_bytes(), lfs=True, **weights_behaviour)
    return routes


@pytest.fixture
def serve() -> Iterator[Callable[[dict[str, Route]], FileServer]]:
    """``serve(routes)`` starts a server in a thread; it is shut down after the test."""
    with file_servers() as start:
        yield start


def test_urls_and_base_url_replacement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCRATCHGPT_BASE_URL", raising=False)
    urls = gpt2_urls("355M", "hf")
    assert urls["model.safetensors"] == (
        "https://huggingface.co/openai-community/gpt2-medium/resolve/main/model.safetensors")
    assert gpt2_urls("1558M", "openai")["model.ckpt.index"] == (
        "https://openaipublic.blob.core.windows.net/gpt-2/models/1558M/model.ckpt.index")
    assert gpt2_urls("124M", "openai", "http://mirror:8080/")["hparams.json"] == (
        "http://mirror:8080/gpt-2/models/124M/hparams.json")
    monkeypatch.setenv("SCRATCHGPT_BASE_URL", "http://env-mirror")
    assert gpt2_urls("124M", "hf")["config.json"] == (
        "http://env-mirror/openai-community/gpt2/resolve/main/config.json")
    with pytest.raises(ValueError, match="124M, 355M, 774M, 1558M"):
        gpt2_urls("7B", "hf")


def test_hf_download_resumes_a_dropped_connection_and_loads(
    serve, tiny_hf_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(hf_routes(tiny_hf_dir, drop_first=True))
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path / "cache"))
    directory = download_gpt2("124M", "hf", base_url=server.url, progress=False)

    assert directory == tmp_path / "cache" / "models" / model_name("124M", "hf")
    weights = (tiny_hf_dir / "model.safetensors").read_bytes()
    assert (directory / "model.safetensors").read_bytes() == weights
    for name in ("config.json", "vocab.json", "merges.txt"):
        assert (directory / name).read_bytes() == (tiny_hf_dir / name).read_bytes()
    assert not list(directory.glob("*.part"))
    # the first answer broke off halfway; the second asked for the rest
    cdn = "/cdn" + HF_PREFIX + "model.safetensors"
    ranges = [r for path, r in server.requests if path == cdn]
    assert ranges[0] is None and len(ranges) == 2
    assert ranges[1] == f"bytes={len(weights) // 2}-"
    record = read_manifest(directory)["model.safetensors"]
    assert record["sha256"] == hashlib.sha256(weights).hexdigest()
    assert record["verified"] == ["size", "sha256", "content"]
    # the sha1 ETag of a small file is no sha256: its size and content are what was checked
    assert read_manifest(directory)["config.json"]["verified"] == ["size", "content"]

    # A second run finds every file verified and asks the server nothing.
    server.requests.clear()
    download_gpt2("124M", "hf", base_url=server.url, progress=False)
    assert server.requests == []

    # The downloaded name loads, with the same logits as transformers on the same directory.
    model, tokenizer = load_model("gpt2-124M")
    reference = GPT2LMHeadModel.from_pretrained(tiny_hf_dir).eval()
    ids = torch.tensor([tokenizer.encode("Every effort moves you")])
    with torch.no_grad():
        assert (model(ids) - reference(ids).logits).abs().max() < 1e-4
    # and names its vocabulary wherever a tokenizer SPEC goes
    assert resolve_tokenizer("gpt2-124M").encode("Every effort") == tokenizer.encode("Every effort")


def test_openai_download_through_the_environment_base_url(
    serve, openai_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = {OPENAI_PREFIX + p.name: Route(p.read_bytes(), content_md5=True)
              for p in openai_dir.iterdir()}
    server = serve(routes)
    monkeypatch.setenv("SCRATCHGPT_BASE_URL", server.url)
    directory = download_gpt2("124M", "openai", tmp_path / "gpt2", progress=False)
    assert {path for path, _ in server.requests} == set(routes)
    for path in openai_dir.iterdir():
        assert (directory / path.name).read_bytes() == path.read_bytes()
    manifest = read_manifest(directory)
    assert manifest["model.ckpt.index"]["verified"] == ["size", "md5", "content"]
    assert manifest["encoder.json"]["verified"] == ["size", "sha256", "md5", "content"]
    assert manifest["model.ckpt.data-00000-of-00001"]["verified"] == ["size", "md5"]


def test_a_wrong_size_is_rejected_and_nothing_is_kept(
    serve, tiny_hf_dir: Path, tmp_path: Path
) -> None:
    server = serve(hf_routes(tiny_hf_dir, extra_length=100))
    with pytest.raises(DownloadError, match="model.safetensors") as error:
        download_gpt2("124M", "hf", tmp_path, base_url=server.url, progress=False)
    size = (tiny_hf_dir / "model.safetensors").stat().st_size
    assert f"size {size}" in str(error.value) and f"{size + 100}" in str(error.value)
    assert not (tmp_path / "model.safetensors").exists()
    assert not (tmp_path / "model.safetensors.part").exists()


def test_a_wrong_checksum_is_rejected_and_nothing_is_kept(
    serve, tiny_hf_dir: Path, tmp_path: Path
) -> None:
    wrong = hashlib.sha256(b"something else").hexdigest()
    server = serve(hf_routes(tiny_hf_dir, sha256=wrong))
    with pytest.raises(DownloadError, match=f"model.safetensors.*expected sha256 {wrong}"):
        download_gpt2("124M", "hf", tmp_path, base_url=server.url, progress=False)
    assert not (tmp_path / "model.safetensors").exists()
    assert not (tmp_path / "model.safetensors.part").exists()
    assert "model.safetensors" not in read_manifest(tmp_path)


def test_an_http_error_names_the_url_and_status(serve, tmp_path: Path) -> None:
    server = serve({})
    with pytest.raises(DownloadError, match=rf"{server.url}{HF_PREFIX}config.json: HTTP 404"):
        download_gpt2("124M", "hf", tmp_path, base_url=server.url, progress=False)


def test_from_a_local_directory(tiny_hf_dir: Path, tmp_path: Path) -> None:
    directory = download_gpt2("124M", "hf", tmp_path / "copy", source_dir=tiny_hf_dir,
                              progress=False)
    assert (directory / "model.safetensors").read_bytes() == (
        tiny_hf_dir / "model.safetensors").read_bytes()
    manifest = read_manifest(directory)
    assert set(manifest) == {"config.json", "model.safetensors", "vocab.json", "merges.txt"}
    # a copy's size is no evidence of anything: only the content checks were made
    assert all(record["verified"] == ["content"] for record in manifest.values())
    incomplete = tmp_path / "incomplete"
    shutil.copytree(tiny_hf_dir, incomplete)
    (incomplete / "merges.txt").unlink()
    with pytest.raises(FileNotFoundError, match="lacks merges.txt"):
        download_gpt2("124M", "hf", tmp_path / "other", source_dir=incomplete, progress=False)


def test_a_damaged_download_is_not_loaded(
    tiny_hf_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path))
    directory = download_gpt2("124M", "hf", source_dir=tiny_hf_dir, progress=False)
    with (directory / "model.safetensors").open("r+b") as f:
        f.truncate(1000)
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing or incomplete"):
        load_model("gpt2-124M")
    with pytest.raises(FileNotFoundError, match="scratchgpt download gpt2 --size 355M"):
        load_model("gpt2-355M")


def test_cli_download(serve, tiny_hf_dir: Path, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    server = serve(hf_routes(tiny_hf_dir))
    out_dir = tmp_path / "gpt2"
    assert main(["download", "gpt2", "--size", "124M", "--dir", str(out_dir),
                 "--base-url", server.url]) == 0
    assert capsys.readouterr().out == f"{out_dir}\n"
    assert json.loads((out_dir / "config.json").read_text())["n_embd"] == 16
    assert main(["download", "gpt2", "--dir", str(tmp_path / "x"), "--base-url",
                 server.url + "/nowhere"]) == 2
    assert "HTTP 404" in capsys.readouterr().err
    copied = tmp_path / "copied"
    assert main(["download", "gpt2", "--dir", str(copied), "--from", str(out_dir)]) == 0
    assert (copied / "model.safetensors").read_bytes() == (
        out_dir / "model.safetensors").read_bytes()


# -- content verification (a size and a checksum the server states prove only a faithful copy) --
def _json_with(**changes: object) -> Callable[[bytes], bytes]:
    """A transform of a JSON file that changes some of its keys."""
    return lambda data: json.dumps({**json.loads(data), **changes}).encode()


ENCODER_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
BAD_FILES = [  # format, the file made bad, how, the file that fails, what the error says
    pytest.param("hf", "model.safetensors", lambda _: b"junk\n", "model.safetensors",
                 r"expected a safetensors file .*found 5 bytes", id="weights-junk"),
    pytest.param("hf", "model.safetensors", lambda data: data[:-10], "model.safetensors",
                 r"expected tensor '[\w.]+' to lie inside the file's [\d,]+ data bytes, "
                 r"found bytes", id="weights-truncated"),
    pytest.param("hf", "model.safetensors", lambda data: data + bytes(8), "model.safetensors",
                 r"expected the last tensor to end at the end of the file", id="weights-padded"),
    pytest.param("hf", "config.json", _json_with(n_layer=3), "model.safetensors",
                 r"expected 3 blocks h.0 to h.2 \(n_layer in config.json\), found blocks \[0, 1\]",
                 id="weights-vs-config-layers"),
    pytest.param("hf", "config.json", _json_with(vocab_size=50000), "model.safetensors",
                 r"expected wte.weight of shape \[50000, 16\] \(from config.json\), found "
                 r"\[50257, 16\]", id="weights-vs-config-vocab"),
    pytest.param("hf", "config.json", lambda _: b"junk\n", "config.json",
                 r"expected a JSON object, found invalid JSON", id="config-junk"),
    pytest.param("hf", "config.json", lambda _: b'{"n_embd": 16}', "config.json",
                 r"expected a JSON object with n_embd, n_layer, n_positions, vocab_size, found "
                 r"one without n_layer, n_positions, vocab_size", id="config-incomplete"),
    pytest.param("hf", "vocab.json", lambda _: b"[1, 2]", "vocab.json",
                 r"expected a JSON object, found a JSON list", id="vocab-list"),
    pytest.param("hf", "merges.txt", lambda _: b"junk\n", "merges.txt",
                 r"expected a BPE merges file .*found first line 'junk'", id="merges-junk"),
    pytest.param("hf", "merges.txt", lambda data: data + b"a b c\n", "merges.txt",
                 r"expected a BPE merges file .*found line 50002: 'a b c'", id="merges-line"),
    pytest.param("openai", "encoder.json", _json_with(extra=1), "encoder.json",
                 rf"expected sha256 {ENCODER_SHA256}, got [0-9a-f]{{64}}", id="encoder-sha256"),
    pytest.param("openai", "vocab.bpe", lambda _: b"#version: 0.2\na b\n", "vocab.bpe",
                 r"expected sha256 1ce1664773c5", id="vocab-bpe-sha256"),
    pytest.param("openai", "hparams.json", lambda _: b"junk\n", "hparams.json",
                 r"expected a JSON object, found invalid JSON", id="hparams-junk"),
    pytest.param("openai", "model.ckpt.index", lambda _: b"junk\n", "model.ckpt.index",
                 r"expected a TensorFlow checkpoint index, found: the file is too short",
                 id="index-junk"),
    pytest.param("openai", "model.ckpt.meta", lambda _: b"", "model.ckpt.meta",
                 r"expected a non-empty file, found 0 bytes", id="meta-empty"),
    pytest.param("openai", "checkpoint", lambda _: b"", "checkpoint",
                 r"expected a non-empty file, found 0 bytes", id="checkpoint-empty"),
]


@pytest.mark.parametrize(("fmt", "changed", "transform", "failing", "expected"), BAD_FILES)
def test_download_from_a_directory_checks_each_files_content(
    fmt: str, changed: str, transform: Callable[[bytes], bytes], failing: str, expected: str,
    tiny_hf_dir: Path, openai_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "source"
    shutil.copytree(tiny_hf_dir if fmt == "hf" else openai_dir, source)
    (source / changed).write_bytes(transform((source / changed).read_bytes()))
    out = tmp_path / "out"
    assert main(["download", "gpt2", "--format", fmt, "--dir", str(out),
                 "--from", str(source)]) == 2
    error = capsys.readouterr().err
    assert f"error: {failing} from {source / failing} failed verification: " in error
    assert re.search(expected, error), error
    assert f"the copy was deleted; replace {source / failing} with a good copy" in error
    # Nothing bad is published or recorded; what came before it in the layout's order was.
    assert not (out / failing).exists() and not list(out.glob("*.part"))
    files = list(FORMATS[fmt])
    before = files[: files.index(failing)]
    assert sorted(read_manifest(out)) == sorted(before)


def test_http_content_is_checked_even_when_size_and_checksum_agree(
    serve, tiny_hf_dir: Path, openai_dir: Path, tmp_path: Path
) -> None:
    routes = hf_routes(tiny_hf_dir)
    routes[HF_PREFIX + "model.safetensors"] = Route(b"junk\n", lfs=True)  # its true sha256
    server = serve(routes)
    with pytest.raises(DownloadError, match=r"model.safetensors from http://\S+ failed "
                       r"verification: expected a safetensors file .*found 5 bytes; the bad "
                       r"file was deleted, run the download again"):
        download_gpt2("124M", "hf", tmp_path / "hf", base_url=server.url, progress=False)
    assert not (tmp_path / "hf" / "model.safetensors").exists()
    assert "model.safetensors" not in read_manifest(tmp_path / "hf")

    routes = {OPENAI_PREFIX + p.name: Route(p.read_bytes(), content_md5=True)
              for p in openai_dir.iterdir()}
    routes[OPENAI_PREFIX + "encoder.json"] = Route(b'{"!": 0}', content_md5=True)
    server = serve(routes)
    with pytest.raises(DownloadError, match=rf"encoder.json .*expected sha256 {ENCODER_SHA256}"):
        download_gpt2("124M", "openai", tmp_path / "openai", base_url=server.url,
                      progress=False)
    assert not (tmp_path / "openai" / "encoder.json").exists()


def test_a_recorded_file_whose_content_is_bad_is_fetched_again(
    serve, tiny_hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file an earlier version recorded as verified on its size alone is checked again."""
    server = serve(hf_routes(tiny_hf_dir))
    out = tmp_path / "gpt2"
    args = ["download", "gpt2", "--dir", str(out), "--base-url", server.url]
    assert main(args) == 0
    weights = out / "model.safetensors"
    weights.write_bytes(bytes(weights.stat().st_size))  # the recorded size, but no safetensors
    server.requests.clear()
    capsys.readouterr()

    assert main(args) == 0
    error = capsys.readouterr().err
    assert f"{weights}: recorded as verified in download.json, but expected a safetensors " \
           "file" in error
    assert "fetching it again" in error
    assert [path for path, _ in server.requests] == [HF_PREFIX + "model.safetensors",
                                                     "/cdn" + HF_PREFIX + "model.safetensors"]
    assert weights.read_bytes() == (tiny_hf_dir / "model.safetensors").read_bytes()


# -- a failed download and what `generate` then says --------------------------------------------
def test_a_failed_download_leaves_no_empty_cache_directory(
    serve, tiny_hf_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path / "cache"))
    models = tmp_path / "cache" / "models"
    server = serve({})  # every file: 404
    assert main(["download", "gpt2", "--base-url", server.url]) == 2
    assert "HTTP 404" in capsys.readouterr().err
    assert not (models / "gpt2-124M-hf").exists()
    generate = ["generate", "--model", "gpt2-124M", "--prompt", "Hello"]
    assert main(generate) == 2
    assert (f"error: gpt2-124M has not been downloaded (looked in {models}); run: scratchgpt "
            "download gpt2 --size 124M\n") in capsys.readouterr().err

    # A cache directory left empty by an earlier version is no download either.
    (models / "gpt2-124M-hf").mkdir(parents=True)
    (models / "gpt2-124M-hf" / "download.json").write_text("{}")
    assert main(generate) == 2
    assert "gpt2-124M has not been downloaded" in capsys.readouterr().err

    # A download that got somewhere keeps what it published, and says how to finish it.
    shutil.rmtree(models / "gpt2-124M-hf")
    routes = hf_routes(tiny_hf_dir)
    del routes[HF_PREFIX + "model.safetensors"]
    server = serve(routes)
    assert main(["download", "gpt2", "--base-url", server.url]) == 2
    assert sorted(read_manifest(models / "gpt2-124M-hf")) == ["config.json"]
    capsys.readouterr()
    assert main(generate) == 2
    assert (f"error: {models / 'gpt2-124M-hf' / 'model.safetensors'} is missing or incomplete; "
            "run the download again: scratchgpt download gpt2 --size 124M --format hf\n"
            ) in capsys.readouterr().err


def test_a_failed_download_keeps_a_directory_that_was_there(serve, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    empty = tmp_path / "empty"
    empty.mkdir()
    server = serve({})
    for directory in (mine, empty):
        assert main(["download", "gpt2", "--dir", str(directory), "--base-url", server.url]) == 2
        assert directory.is_dir()
    assert (mine / "notes.txt").read_text() == "my notes"
