"""Download OpenAI's GPT-2 weights, resumably and verified, into a local cache.

Two publishers, two layouts (``FORMATS``):

* ``hf``: Hugging Face's copy, ``https://huggingface.co/openai-community/gpt2/resolve/main/``
  (``gpt2-medium``, ``gpt2-large``, ``gpt2-xl`` for the larger sizes): ``config.json``,
  ``model.safetensors``, ``vocab.json``, ``merges.txt``;
* ``openai``: the original TensorFlow checkpoint,
  ``https://openaipublic.blob.core.windows.net/gpt-2/models/124M/``.

Each file is fetched into ``NAME.part`` and renamed to ``NAME`` only once it is verified, so a
complete-looking name is never a partial file. An interrupted transfer resumes where the
``.part`` file ends with an HTTP ``Range`` request. Verification uses what the server states:

* the size: ``Content-Length`` (or the total in ``Content-Range`` for a resumed transfer);
* the sha256: the Hugging Face hub answers a weights URL with a redirect to its CDN carrying
  ``X-Linked-Etag: "<sha256>"``; any ``ETag`` that is 64 hex digits is taken as one too (a
  40-digit one is a git blob hash of a small file and is not checked);
* the MD5: Azure (OpenAI's files) sends ``Content-MD5`` (``x-ms-blob-content-md5`` for a
  range), base64.

A file that fails is deleted and the error names it with the expected and actual values. What
was verified is recorded in ``download.json`` beside the files (see :func:`read_manifest`), so
a later run skips a complete file after checking its size, and :func:`check_download` can
confirm a directory is whole before a model is loaded from it, without rehashing gigabytes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import http.client
import json
import os
import re
import sys
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from scratchgpt.data.corpus import default_cache_dir

GPT2_SIZES = {"124M": "gpt2", "355M": "gpt2-medium", "774M": "gpt2-large", "1558M": "gpt2-xl"}
FORMATS = {
    "hf": ("config.json", "model.safetensors", "vocab.json", "merges.txt"),
    "openai": ("checkpoint", "hparams.json", "model.ckpt.data-00000-of-00001", "model.ckpt.index",
               "model.ckpt.meta", "encoder.json", "vocab.bpe"),
}
HF_URL = "https://huggingface.co/openai-community/{repo}/resolve/main/{file}"
OPENAI_URL = "https://openaipublic.blob.core.windows.net/gpt-2/models/{size}/{file}"
BASE_URL_ENV = "SCRATCHGPT_BASE_URL"
MANIFEST = "download.json"
CHUNK = 1 << 20
TIMEOUT_S = 60
MAX_STALLED_ATTEMPTS = 3  # give up after this many attempts in a row that add no bytes


class DownloadError(OSError):
    """A file could not be fetched or failed verification."""


def models_dir() -> Path:
    """Where downloaded models live: ``$SCRATCHGPT_CACHE/models`` (``~/.cache/scratchgpt``)."""
    return default_cache_dir() / "models"


def model_name(size: str, fmt: str) -> str:
    """The cache directory name of a download: ``gpt2-124M-hf``."""
    _check_choice(size, fmt)
    return f"gpt2-{size}-{fmt}"


def gpt2_urls(size: str, fmt: str, base_url: str | None = None) -> dict[str, str]:
    """``{file name: URL}`` of one published GPT-2. ``base_url`` (default: the environment
    variable ``SCRATCHGPT_BASE_URL``) replaces the scheme and host of each URL, keeping its
    path, for mirrors and tests: ``http://127.0.0.1:8000/gpt-2/models/124M/hparams.json``."""
    _check_choice(size, fmt)
    base_url = base_url or os.environ.get(BASE_URL_ENV)
    urls = {}
    for file in FORMATS[fmt]:
        if fmt == "hf":
            url = HF_URL.format(repo=GPT2_SIZES[size], file=file)
        else:
            url = OPENAI_URL.format(size=size, file=file)
        urls[file] = base_url.rstrip("/") + urlsplit(url).path if base_url else url
    return urls


def download_gpt2(
    size: str = "124M",
    fmt: str = "hf",
    directory: str | Path | None = None,
    *,
    base_url: str | None = None,
    source_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Fetch GPT-2 of ``size`` in format ``fmt`` into ``directory`` (default:
    ``models_dir() / model_name(size, fmt)``) and return that directory.

    With ``source_dir`` the files are copied from that local directory instead of the network
    (all must be present). Files already downloaded and verified are kept.
    """
    directory = Path(directory) if directory else models_dir() / model_name(size, fmt)
    directory.mkdir(parents=True, exist_ok=True)
    if source_dir is not None:
        source_dir = Path(source_dir)
        missing = [f for f in FORMATS[fmt] if not (source_dir / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{source_dir} lacks {', '.join(missing)} (the {fmt!r} "
                                    f"layout needs {', '.join(FORMATS[fmt])})")
    manifest = read_manifest(directory)
    for file, url in gpt2_urls(size, fmt, base_url).items():
        dest = directory / file
        recorded = manifest.get(file)
        if dest.is_file() and recorded and dest.stat().st_size == recorded["size"]:
            _log(f"{dest}: already downloaded ({recorded['size']:,} bytes)")
            continue
        if dest.is_file():
            _log(f"{dest}: not recorded as verified in {MANIFEST}; fetching it again")
        if source_dir is not None:
            manifest[file] = copy_file(source_dir / file, dest, progress=progress)
        else:
            manifest[file] = download_file(url, dest, progress=progress)
        _write_manifest(directory, manifest)
    return directory


def download_file(url: str, dest: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a ``.part`` left by an
    interrupted run, and verify it (see the module docstring). Returns the manifest record
    ``{"url", "size", "sha256", "verified"}``. Raises :class:`DownloadError`."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    stated: dict[str, Any] = {}  # what the server said about the whole file
    stalled = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        done = _fetch_into(url, part, stated, progress)
        if done:
            break
        stalled = 0 if part.stat().st_size > before else stalled + 1
        if stalled >= MAX_STALLED_ATTEMPTS:
            have = part.stat().st_size
            part.unlink()
            raise DownloadError(f"{url}: the connection keeps closing early ({have:,} of "
                                f"{stated['size']:,} bytes received); try again later")
        _log(f"{url}: connection closed at {part.stat().st_size:,} bytes; resuming")
    return _verify_and_publish(url, part, dest, stated)


def _fetch_into(url: str, part: Path, stated: dict[str, Any], progress: bool) -> bool:
    """One HTTP request appending to ``part`` from where it ends. Fills ``stated`` (``size``
    and any digests) from the first response and checks later ones agree. Returns whether
    ``part`` now holds ``stated["size"]`` bytes; False when the connection ended early."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "scratchgpt"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    redirects = _RecordingRedirectHandler()
    opener = urllib.request.build_opener(redirects)
    try:
        response = opener.open(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing after `offset`: the .part may be complete
            total = _content_range_total(err.headers)
            stated_now = {"size": total, **_digests(redirects.hops + [err.headers])}
            _agree(url, part, stated, stated_now)
            return True
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        raise DownloadError(f"{url}: cannot connect ({reason})") from None
    with response:
        headers = response.headers
        if response.status == 206:
            start = _content_range_start(headers)
            if start != offset:
                raise DownloadError(f"{url}: asked for bytes from {offset}, got from {start}")
            total = _content_range_total(headers)
        else:  # 200: the server ignored the Range header (or there was none): start over
            offset = 0
            total = int(headers["Content-Length"]) if headers["Content-Length"] else None
        if total is None:
            raise DownloadError(f"{url}: the server did not state the file's size")
        _agree(url, part, stated, {"size": total, **_digests(redirects.hops + [headers])})
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=part.name.removesuffix(".part"), file=sys.stderr, disable=not progress,
                   leave=False)
        with bar, part.open("r+b" if offset else "wb") as out:
            out.seek(offset)
            out.truncate()
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException):
                    break  # a reset, a timeout or an IncompleteRead: the caller resumes
                if not chunk:
                    break
                out.write(chunk)
                bar.update(len(chunk))
    return part.stat().st_size >= total


def copy_file(source: Path, dest: Path, *, progress: bool = True) -> dict[str, Any]:
    """Copy a local file through ``dest.part`` (checking the copy's size and hashing it) and
    return its manifest record."""
    part = dest.with_name(dest.name + ".part")
    size = source.stat().st_size
    with source.open("rb") as src, part.open("wb") as out, tqdm(
        total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
        file=sys.stderr, disable=not progress, leave=False,
    ) as bar:
        while chunk := src.read(CHUNK):
            out.write(chunk)
            bar.update(len(chunk))
    return _verify_and_publish(str(source), part, dest, {"size": size})


def _verify_and_publish(
    source: str, part: Path, dest: Path, stated: dict[str, Any]
) -> dict[str, Any]:
    """Check ``part`` against ``stated``; rename it to ``dest`` if it passes, else delete it
    and raise :class:`DownloadError` naming the file, the expected and the actual values."""
    actual: dict[str, Any] = {"size": part.stat().st_size}
    if actual["size"] == stated["size"]:  # hashing a file of the wrong size tells nothing new
        actual.update(_hash_file(part))
    for check in ("size", "sha256", "md5"):
        if check in stated and actual.get(check) != stated[check]:
            part.unlink()
            raise DownloadError(f"{dest.name} from {source} failed verification: expected "
                                f"{check} {stated[check]}, got {actual[check]}; the bad "
                                "file was deleted, run the download again")
    part.replace(dest)
    verified = [check for check in ("size", "sha256", "md5") if check in stated]
    _log(f"{dest}: {actual['size']:,} bytes, verified {' + '.join(verified)}")
    return {"url": source, "size": actual["size"], "sha256": actual["sha256"],
            "verified": verified}


def _hash_file(path: Path) -> dict[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
    return {"sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


# -- what the server says ------------------------------------------------------------------------
class _RecordingRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, keeping each redirect's headers: the Hugging Face hub
    states a weights file's sha256 on its redirect to the CDN, not on the CDN's answer.
    (urllib keeps the ``Range`` header across redirects.)"""

    def __init__(self) -> None:
        super().__init__()
        self.hops: list[Message] = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        self.hops.append(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_SHA256 = re.compile(r'^"?([0-9a-f]{64})"?$')  # a weak ETag (W/"...") is no checksum


def _digests(all_headers: list[Message]) -> dict[str, str]:
    """The sha256 and MD5 of the whole file, where any response (redirects included) states
    them. ``Content-MD5`` on a range answer is the range's, so it is ignored there."""
    found: dict[str, str] = {}
    for headers in all_headers:
        for name in ("X-Linked-Etag", "ETag"):
            match = _SHA256.match((headers.get(name) or "").strip().lower())
            if match:
                found.setdefault("sha256", match.group(1))
        partial = headers.get("Content-Range") is not None
        md5 = headers.get("x-ms-blob-content-md5") or (
            None if partial else headers.get("Content-MD5"))
        if md5:
            with contextlib.suppress(binascii.Error):  # not base64: not a checksum we can use
                found.setdefault("md5", base64.b64decode(md5, validate=True).hex())
    return found


def _agree(url: str, part: Path, stated: dict[str, Any], now: dict[str, Any]) -> None:
    """Record what the first response stated; a later (resumed) one must say the same, else
    the file changed on the server (or the server is wrong) and ``part`` is deleted."""
    for key, value in now.items():
        if stated.setdefault(key, value) != value:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: the server now states {key} {value}, earlier "
                                f"{stated[key]}; the partial file was deleted, run the "
                                "download again")


def _content_range_start(headers: Message) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/", headers.get("Content-Range") or "")
    return int(match.group(1)) if match else None


def _content_range_total(headers: Message) -> int | None:
    match = re.search(r"/(\d+)$", headers.get("Content-Range") or "")
    return int(match.group(1)) if match else None


# -- the manifest ---------------------------------------------------------------------------------
def read_manifest(directory: str | Path) -> dict[str, dict[str, Any]]:
    """``download.json``: ``{file: {"url", "size", "sha256", "verified"}}`` for each file
    that passed verification, or ``{}`` if there is none."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc.msg}); delete it and download "
                         "again") from None


def _write_manifest(directory: Path, manifest: dict[str, dict[str, Any]]) -> None:
    temp = directory / (MANIFEST + ".part")
    temp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    temp.replace(directory / MANIFEST)


def check_download(directory: str | Path, files: tuple[str, ...]) -> None:
    """Raise ``FileNotFoundError`` unless each of ``files`` is in ``directory`` with the size
    recorded when it was verified (a cheap check; nothing is rehashed)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    for file in files:
        path = directory / file
        size = path.stat().st_size if path.is_file() else None
        if file not in manifest or size != manifest[file]["size"]:
            raise FileNotFoundError(f"{path} is missing or incomplete; run the download again")


def _check_choice(size: str, fmt: str) -> None:
    if size not in GPT2_SIZES:
        raise ValueError(f"unknown GPT-2 size {size!r}; choose one of {', '.join(GPT2_SIZES)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _log(message: str) -> None:
    print(message, file=sys.stderr)
