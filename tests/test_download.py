"""``scratchgpt download`` against a real HTTP server on 127.0.0.1 (no network, no mocks).

The server plays both publishers: Hugging Face's hub (weights answered with a redirect to a
"CDN" that carries ``X-Linked-Etag``, the sha256) and OpenAI's Azure blob store (``Content-MD5``).
It serves a tiny random GPT-2 with the real 50,257-token vocabulary, and can misbehave: drop
the connection halfway, or state a wrong size or checksum.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from scratchgpt.cli import main
from scratchgpt.hub.download import (
    DownloadError,
    download_gpt2,
    gpt2_urls,
    model_name,
    read_manifest,
)
from scratchgpt.hub.gpt2 import load_gpt2

FIXTURE = Path(__file__).parent / "fixtures" / "tiny-gpt2-tf"
HF_PREFIX = "/openai-community/gpt2/resolve/main/"
OPENAI_PREFIX = "/gpt-2/models/124M/"


@dataclass
class Route:
    """One file the server offers, and how it misbehaves."""

    data: bytes
    lfs: bool = False  # answer with a redirect to /cdn/... carrying X-Linked-Etag, as the hub does
    sha256: str | None = None  # the sha256 to state, if not the true one
    extra_length: int = 0  # claim this many more bytes in Content-Length than are sent
    drop_first: bool = False  # close the connection halfway through the first answer
    content_md5: bool = False  # send Content-MD5 (base64), as Azure does


class Handler(BaseHTTPRequestHandler):
    server: FileServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path
        self.server.requests.append((path, self.headers.get("Range")))
        cdn = path.startswith("/cdn/")
        route = self.server.routes.get(path.removeprefix("/cdn"))
        if route is None:
            self.send_error(404, "Not Found")
            return
        sha256 = route.sha256 or hashlib.sha256(route.data).hexdigest()
        if route.lfs and not cdn:
            self.send_response(302)
            self.send_header("Location", "/cdn" + path)
            self.send_header("X-Linked-Etag", f'"{sha256}"')
            self.send_header("X-Linked-Size", str(len(route.data)))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_file(path, route)

    def _send_file(self, path: str, route: Route) -> None:
        total, start = len(route.data), 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            if start >= total:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = route.data[start:]
        self.send_response(206 if match else 200)
        if match:
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        self.send_header("Content-Length", str(len(body) + route.extra_length))
        # Small files on the hub carry a git blob sha1 (40 hex digits), not a sha256.
        self.send_header("ETag", f'"{hashlib.sha1(route.data).hexdigest()}"')
        if route.content_md5 and not match:
            self.send_header("Content-MD5", base64.b64encode(hashlib.md5(route.data).digest())
                             .decode())
        self.end_headers()
        first = sum(p == path for p, _ in self.server.requests) == 1
        if route.drop_first and first:
            body = body[: len(body) // 2]
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


class FileServer(ThreadingHTTPServer):
    def __init__(self, routes: dict[str, Route]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes = routes
        self.requests: list[tuple[str, str | None]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


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
    """Files under OpenAI's names (the tiny TensorFlow checkpoint and GPT-2's vocabulary):
    enough to test the downloader, which does not look inside them."""
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
def serve() -> Iterator:
    """``serve(routes)`` starts a server in a thread; it is shut down after the test."""
    servers: list[FileServer] = []

    def start(routes: dict[str, Route]) -> FileServer:
        server = FileServer(routes)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


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
    assert record["verified"] == ["size", "sha256"]
    assert read_manifest(directory)["config.json"]["verified"] == ["size"]  # sha1 ETag ignored

    # A second run finds every file verified and asks the server nothing.
    server.requests.clear()
    download_gpt2("124M", "hf", base_url=server.url, progress=False)
    assert server.requests == []

    # The downloaded name loads, with the same logits as transformers on the same directory.
    model, tokenizer = load_gpt2("gpt2-124M")
    reference = GPT2LMHeadModel.from_pretrained(tiny_hf_dir).eval()
    ids = torch.tensor([tokenizer.encode("Every effort moves you")])
    with torch.no_grad():
        assert (model(ids) - reference(ids).logits).abs().max() < 1e-4


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
    assert read_manifest(directory)["model.ckpt.index"]["verified"] == ["size", "md5"]


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
    assert set(read_manifest(directory)) == {"config.json", "model.safetensors", "vocab.json",
                                             "merges.txt"}
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
        load_gpt2("gpt2-124M")
    with pytest.raises(FileNotFoundError, match="scratchgpt download gpt2 --size 355M"):
        load_gpt2("gpt2-355M")


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
