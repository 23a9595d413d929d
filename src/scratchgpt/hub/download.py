"""Download files resumably and verified into a local cache: OpenAI's GPT-2 weights here, the
public datasets in :mod:`.datasets`, through the same :func:`fetch_files`.

GPT-2 comes from two publishers, in two layouts (``FORMATS``):

* ``hf``: Hugging Face's copy, ``https://huggingface.co/openai-community/gpt2/resolve/main/``
  (``gpt2-medium``, ``gpt2-large``, ``gpt2-xl`` for the larger sizes): ``config.json``,
  ``model.safetensors``, ``vocab.json``, ``merges.txt``;
* ``openai``: the original TensorFlow checkpoint,
  ``https://openaipublic.blob.core.windows.net/gpt-2/models/124M/``.

Each file is fetched (or, with ``source_dir``, copied; or extracted from an archive fetched
before it) into ``NAME.part`` and renamed to ``NAME`` only once it is verified, so a
complete-looking name is never a partial or bad file. An interrupted transfer resumes where the
``.part`` file ends with an HTTP ``Range`` request.

Verification checks what can be checked:

* what the server states, over HTTP only: the size (``Content-Length``, or the total in
  ``Content-Range`` for a resumed transfer); the sha256 (the Hugging Face hub answers a weights
  URL with a redirect to its CDN carrying ``X-Linked-Etag: "<sha256>"``; any ``ETag`` of 64 hex
  digits is taken as one too, while a 40-digit one is a git blob hash and is not checked); the
  MD5 (Azure, OpenAI's host, sends ``Content-MD5``, or ``x-ms-blob-content-md5`` for a range);
  for a file extracted from a zip, the size its archive states;
* the sha256 we ship for a file (``GPT2_SHA256``): GPT-2's vocabulary, the same for every size
  (a dataset's are in :mod:`.datasets`, with its checks);
* the content (``GPT2_CHECKS``), whatever the source: a size and a checksum the server states
  only prove a faithful copy of what it serves, and a copied file has neither. JSON files must
  be JSON objects; BPE merges files must look like one; ``model.safetensors``'s header must
  parse, place every tensor inside the file and agree with ``config.json``; the TensorFlow
  checkpoint's index must be readable. ``config.json`` comes before ``model.safetensors`` in
  ``FORMATS`` so that it is verified by the time the weights are checked against it.

A file that fails is deleted and the error names it, what was expected, what was found and what
to do. What was checked is recorded in ``download.json`` beside the files (see
:func:`read_manifest`). A later run keeps a recorded file after checking its size and, again,
its content (cheap for a model: nothing large is rehashed), and fetches it again if either
fails; :func:`check_download` confirms a directory is whole before anything is read from it.
A download that fails before it publishes any file removes the directory it created.
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
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from email.message import Message
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scratchgpt.data.corpus import default_cache_dir
from scratchgpt.hub.tf_checkpoint import CheckpointFormatError, read_sstable
from scratchgpt.progress import progress_bar

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
# GPT-2's vocabulary is the same file for every size (computed from OpenAI's files). Hugging
# Face's vocab.json and merges.txt and the weights have no sha256 here: we cannot compute them.
GPT2_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
CHECKS = ("size", "sha256", "md5", "content")  # what may be verified, in the manifest's order
Check = Callable[[Path], None]  # raises ContentError unless a file holds what its name promises


class DownloadError(OSError):
    """A file could not be fetched or failed verification."""


class HTTPStatusError(DownloadError):
    """The server answered a file's request with an error ``status`` (401, 404, ...); its
    ``headers`` may say why (the Hugging Face hub's ``X-Error-Code``, see :mod:`.hf_hub`)."""

    def __init__(self, message: str, status: int, headers: Message) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers


class ContentError(ValueError):
    """A file's content is not what its name promises; the message says "expected ..., found
    ..."."""


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
    urls = {}
    for file in FORMATS[fmt]:
        if fmt == "hf":
            url = HF_URL.format(repo=GPT2_SIZES[size], file=file)
        else:
            url = OPENAI_URL.format(size=size, file=file)
        urls[file] = mirror_url(url, base_url)
    return urls


def mirror_url(url: str, base_url: str | None = None) -> str:
    """``url`` with its scheme and host replaced by ``base_url`` (default: the environment
    variable ``SCRATCHGPT_BASE_URL``; neither: ``url`` unchanged), keeping its path."""
    base_url = base_url or os.environ.get(BASE_URL_ENV)
    return base_url.rstrip("/") + urlsplit(url).path if base_url else url


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
    ``models_dir() / model_name(size, fmt)``) and return that directory (see
    :func:`fetch_files`, which does the work, for ``source_dir``)."""
    urls = gpt2_urls(size, fmt, base_url)
    directory = Path(directory) if directory else models_dir() / model_name(size, fmt)
    return fetch_files(urls, directory, source_dir=source_dir, sha256=GPT2_SHA256,
                       checks=GPT2_CHECKS, progress=progress)


def fetch_files(
    urls: Mapping[str, str],
    directory: str | Path,
    *,
    source_dir: str | Path | None = None,
    extract: Mapping[str, tuple[str, str]] | None = None,
    sha256: Mapping[str, str] | None = None,
    checks: Mapping[str, Check] | None = None,
    headers: Mapping[str, str] | None = None,
    progress: bool = True,
) -> Path:
    """Fetch each file of ``urls`` (``{file name: URL}``), in order, into ``directory`` and
    return it: every download, GPT-2's and the datasets', goes through here.

    With ``source_dir`` the files are copied from that local directory instead of the network
    (all must be present). ``extract`` names files to take out of a zip fetched before them:
    ``{file name: (archive's file name, member)}``. Each file is verified against what its
    source states, its shipped ``sha256`` and its content check (``checks``), by file name, and
    recorded in the manifest as soon as it is published. ``headers`` go with every request
    (a token's ``Authorization``: never to another host a server redirects to). Files already
    recorded are kept once their size and content check out again. If this fails before
    publishing any file, a ``directory`` it created is removed again (only while empty: a
    ``.part`` to resume keeps it).
    """
    directory = Path(directory)
    sha256, checks = sha256 or {}, checks or {}
    sources: dict[str, Callable[..., dict[str, Any]]]  # file -> fetch(dest, sha256=, check=)
    if source_dir is not None:
        source_dir = Path(source_dir)
        missing = [file for file in urls if not (source_dir / file).is_file()]
        if missing:
            raise FileNotFoundError(f"{source_dir} lacks {', '.join(missing)} (expected "
                                    f"{', '.join(urls)})")
        sources = {file: partial(copy_file, source_dir / file, progress=progress)
                   for file in urls}
    else:
        sources = {file: partial(download_file, url, headers=headers, progress=progress)
                   for file, url in urls.items()}
    for file, (archive, member) in (extract or {}).items():
        sources[file] = partial(extract_file, directory / archive, member)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        manifest = read_manifest(directory)
        for file, fetch in sources.items():
            if _still_verified(directory / file, manifest, checks.get(file)):
                continue
            manifest[file] = fetch(directory / file, sha256=sha256.get(file),
                                   check=checks.get(file))
            _write_manifest(directory, manifest)
    except BaseException:  # Ctrl-C too
        if created:
            with contextlib.suppress(OSError):  # not empty: a file was published, or a .part
                directory.rmdir()
        raise
    return directory


def _still_verified(dest: Path, manifest: dict[str, dict[str, Any]], check: Check | None) -> bool:
    """Whether ``dest`` is recorded as verified in ``manifest`` and still has its recorded size
    and passes its content ``check``; a recorded file that fails is dropped from the manifest."""
    recorded = manifest.get(dest.name)
    if not (dest.is_file() and recorded and dest.stat().st_size == recorded["size"]):
        if dest.is_file():
            _log(f"{dest}: not recorded as verified in {MANIFEST}; fetching it again")
        return False
    try:
        if check is not None:
            check(dest)
    except ContentError as err:
        _log(f"{dest}: recorded as verified in {MANIFEST}, but {err}; fetching it again")
        del manifest[dest.name]
        _write_manifest(dest.parent, manifest)
        return False
    _log(f"{dest}: already downloaded ({recorded['size']:,} bytes)")
    return True


def download_file(
    url: str, dest: str | Path, *, sha256: str | None = None, check: Check | None = None,
    headers: Mapping[str, str] | None = None, progress: bool = True,
) -> dict[str, Any]:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a ``.part`` left by an
    interrupted run, and verify it (see the module docstring) with the ``sha256`` we ship for
    it and its content ``check``, if any. ``headers`` are sent with each request (not to
    another host a redirect leads to). Returns the manifest record ``{"url", "size",
    "sha256", "verified"}``. Raises :class:`DownloadError` (:class:`HTTPStatusError` for an
    error status)."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    stated: dict[str, Any] = {}  # what the server said about the whole file
    stalled = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        done = _fetch_into(url, part, stated, progress, headers or {})
        if done:
            break
        stalled = 0 if part.stat().st_size > before else stalled + 1
        if stalled >= MAX_STALLED_ATTEMPTS:
            have = part.stat().st_size
            part.unlink()
            raise DownloadError(f"{url}: the connection keeps closing early ({have:,} of "
                                f"{stated['size']:,} bytes received); try again later")
        _log(f"{url}: connection closed at {part.stat().st_size:,} bytes; resuming")
    return _verify_and_publish(url, part, dest, stated, sha256=sha256, check=check,
                               remedy="the bad file was deleted, run the download again")


def _fetch_into(
    url: str, part: Path, stated: dict[str, Any], progress: bool, headers: Mapping[str, str]
) -> bool:
    """One HTTP request appending to ``part`` from where it ends. Fills ``stated`` (``size``
    and any digests) from the first response and checks later ones agree. Returns whether
    ``part`` now holds ``stated["size"]`` bytes; False when the connection ended early."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "scratchgpt", **headers})
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
        raise HTTPStatusError(f"{url}: HTTP {err.code} {err.reason}", err.code,
                              err.headers) from None
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
        bar = progress_bar(total=total, initial=offset, unit="B", unit_scale=True,
                           unit_divisor=1024, desc=part.name.removesuffix(".part"),
                           file=sys.stderr, disable=not progress, leave=False)
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


def copy_file(
    source: Path, dest: Path, *, sha256: str | None = None, check: Check | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Copy a local file through ``dest.part``, verify it (nothing states its size or checksum:
    only a shipped ``sha256`` and its content ``check`` can be checked) and return its manifest
    record."""
    part = dest.with_name(dest.name + ".part")
    size = source.stat().st_size
    with source.open("rb") as src, part.open("wb") as out, progress_bar(
        total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
        file=sys.stderr, disable=not progress, leave=False,
    ) as bar:
        while chunk := src.read(CHUNK):
            out.write(chunk)
            bar.update(len(chunk))
    return _verify_and_publish(str(source), part, dest, {}, sha256=sha256, check=check, remedy=(
        f"the copy was deleted; replace {source} with a good copy, or download without --from"))


def extract_file(
    archive: Path, member: str, dest: Path, *, sha256: str | None = None,
    check: Check | None = None,
) -> dict[str, Any]:
    """Extract ``member`` of the zip ``archive`` through ``dest.part``, verify it against the
    size the archive states (zip checks each member's CRC-32 as it reads it), the ``sha256`` we
    ship and its content ``check``, and return its manifest record. The archive's own content
    check is what makes sure it is readable and holds ``member``."""
    part = dest.with_name(dest.name + ".part")
    with zipfile.ZipFile(archive) as zip_file, zip_file.open(member) as src, \
            part.open("wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
        stated = {"size": zip_file.getinfo(member).file_size}
    return _verify_and_publish(f"{archive}/{member}", part, dest, stated, sha256=sha256,
                               check=check, remedy=f"the extracted file was deleted; delete "
                               f"{archive} and run the download again")


def _verify_and_publish(
    source: str, part: Path, dest: Path, stated: dict[str, Any], *, sha256: str | None,
    check: Check | None, remedy: str,
) -> dict[str, Any]:
    """Check ``part`` against what was ``stated`` about it, the ``sha256`` we ship for it and
    its content ``check`` (see the module docstring). Rename it to ``dest`` if it passes, else
    delete it and raise :class:`DownloadError` naming the file, what was expected, what was
    found, and ``remedy``. The manifest record lists exactly the checks made."""
    expected = [(name, stated[name]) for name in ("size", "sha256", "md5") if name in stated]
    if sha256 is not None:
        expected.append(("sha256", sha256))
    actual: dict[str, Any] = {"size": part.stat().st_size}
    if actual["size"] == stated.get("size", actual["size"]):  # a wrong size needs no hashing
        actual.update(_hash_file(part))
    problem = next((f"expected {name} {value}, got {actual.get(name)}"
                    for name, value in expected if actual.get(name) != value), None)
    checked = {name for name, _ in expected}
    if problem is None and check is not None:
        try:
            check(part)
        except ContentError as err:
            problem = str(err)
        checked.add("content")
    if problem is not None:
        part.unlink()
        raise DownloadError(f"{dest.name} from {source} failed verification: {problem}; "
                            f"{remedy}")
    part.replace(dest)
    verified = [name for name in CHECKS if name in checked]
    _log(f"{dest}: {actual['size']:,} bytes, verified: {', '.join(verified) or 'nothing'}")
    return {"url": source, "size": actual["size"], "sha256": actual["sha256"],
            "verified": verified}


def _hash_file(path: Path) -> dict[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
    return {"sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


# -- what a file holds ----------------------------------------------------------------------------
GPT2_CONFIG_KEYS = ("n_embd", "n_layer", "n_positions", "vocab_size")  # what the weights need
SAFETENSORS_MAX_HEADER = 100_000_000  # bytes; safetensors itself refuses a longer header


def check_json_object(path: Path, keys: tuple[str, ...] = ()) -> None:
    """A JSON object, holding ``keys`` (``config.json`` and ``hparams.json``: the sizes)."""
    try:
        data = json.loads(path.read_bytes())
    except ValueError as exc:  # not JSON, or not text
        raise ContentError(f"expected a JSON object, found invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ContentError(f"expected a JSON object, found a JSON {type(data).__name__}")
    missing = [key for key in keys if key not in data]
    if missing:
        raise ContentError(f"expected a JSON object with {', '.join(keys)}, found one without "
                           f"{', '.join(missing)}")


def _check_merges(path: Path) -> None:
    """A BPE merges file (``merges.txt``, ``vocab.bpe``): ``#version: 0.2``, then one merge a
    line, two space-separated tokens (a space inside a token is written ``Ġ``)."""
    expected = "expected a BPE merges file ('#version' first line, then two tokens a line)"
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise ContentError(f"{expected}, found bytes that are not UTF-8 text") from None
    if not lines[0].startswith("#version"):
        raise ContentError(f"{expected}, found first line {lines[0][:40]!r}")
    for number, line in enumerate(lines[1:], start=2):
        if line and len(line.split(" ")) != 2:
            raise ContentError(f"{expected}, found line {number}: {line[:40]!r}")


def _check_safetensors(path: Path) -> None:
    """GPT-2's weights: a safetensors file (:func:`check_safetensors_layout`) whose shapes fit
    the ``config.json`` beside it, if any (:func:`_check_against_config`)."""
    shapes = check_safetensors_layout(path)
    config = path.with_name("config.json")
    if config.is_file():
        _check_against_config({name.removeprefix("transformer."): shape
                               for name, shape in shapes.items()},
                              json.loads(config.read_bytes()))


def check_safetensors_layout(path: Path) -> dict[str, Any]:
    """A safetensors file: an 8-byte little-endian header length, a JSON header giving each
    tensor's ``dtype``, ``shape`` and ``data_offsets`` ``[begin, end]`` in the bytes after the
    header, which the tensors fill exactly. Returns ``{tensor name: shape}``."""
    expected = "expected a safetensors file (an 8-byte header length, then a JSON header)"
    size = path.stat().st_size
    with path.open("rb") as f:
        if size < 8:
            raise ContentError(f"{expected}, found {size} bytes")
        header_size = int.from_bytes(f.read(8), "little")
        if not 0 < header_size <= min(size - 8, SAFETENSORS_MAX_HEADER):
            raise ContentError(f"{expected}, found a header length of {header_size:,} in a "
                               f"file of {size:,} bytes")
        try:
            header = json.loads(f.read(header_size))
        except ValueError:
            header = None
    if not isinstance(header, dict):
        raise ContentError(f"{expected}, found a header that is not a JSON object")
    header.pop("__metadata__", None)
    data_size, end = size - 8 - header_size, 0
    shapes: dict[str, Any] = {}  # name -> shape, as the header states it
    for name, info in header.items():
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(n, int) for n in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_size):
            raise ContentError(f"expected tensor {name!r} to lie inside the file's "
                               f"{data_size:,} data bytes, found bytes {offsets}")
        end = max(end, offsets[1])
        shapes[name] = info.get("shape")
    if end != data_size:
        raise ContentError(f"expected the last tensor to end at the end of the file (byte "
                           f"{data_size:,} of the data), found it ends at byte {end:,}")
    return shapes


def _check_against_config(shapes: dict[str, Any], config: dict[str, Any]) -> None:
    """GPT-2's weights fit its ``config.json``: the embeddings' shapes, one block ``h.N`` per
    layer. ``shapes`` is by name without the ``transformer.`` prefix that Hugging Face's
    ``GPT2LMHeadModel`` writes and the hub's files lack (see :mod:`.hf_weights`)."""
    n_embd, n_layer = config["n_embd"], config["n_layer"]
    for name, shape in (("wte.weight", [config["vocab_size"], n_embd]),
                        ("wpe.weight", [config["n_positions"], n_embd])):
        if shapes.get(name) != shape:
            raise ContentError(f"expected {name} of shape {shape} (from config.json), found "
                               f"{shapes.get(name, 'no such tensor')}")
    blocks = {int(m.group(1)) for name in shapes if (m := re.match(r"h\.(\d+)\.", name))}
    if blocks != set(range(n_layer)):
        raise ContentError(f"expected {n_layer} blocks h.0 to h.{n_layer - 1} (n_layer in "
                           f"config.json), found blocks {sorted(blocks)}")


def _check_tf_index(path: Path) -> None:
    """A TensorFlow checkpoint index that :mod:`.tf_checkpoint` reads (its table's magic
    number and every block's CRC32C), listing at least one tensor (the key ``""`` is the
    bundle's header)."""
    try:
        tensors = sum(key != b"" for key, _ in read_sstable(path))
    except CheckpointFormatError as err:  # its message names `path`, maybe a .part file
        found = str(err).replace(str(path), "the file")
        raise ContentError(f"expected a TensorFlow checkpoint index, found: {found}") from None
    if not tensors:
        raise ContentError("expected a TensorFlow checkpoint index, found one listing no "
                           "tensors")


def _check_not_empty(path: Path) -> None:
    """Any bytes at all: ``checkpoint`` (a line of text naming ``model.ckpt``) and
    ``model.ckpt.meta`` (the TensorFlow graph, which we do not read)."""
    if path.stat().st_size == 0:
        raise ContentError("expected a non-empty file, found 0 bytes")


# The check of each of GPT-2's files by name. Every check is cheap: it reads at most a header or
# a small file. A check may read the files beside it under their own names (the weights read
# config.json), so it can run on a ``.part``. The TensorFlow data file is raw tensor bytes:
# nothing in it can be checked on its own (its index's offsets are checked when it is loaded).
GPT2_CHECKS: dict[str, Check] = {
    "config.json": partial(check_json_object, keys=GPT2_CONFIG_KEYS),
    "hparams.json": partial(check_json_object, keys=("n_ctx", "n_embd", "n_head", "n_layer",
                                                      "n_vocab")),
    "vocab.json": check_json_object,
    "encoder.json": check_json_object,
    "merges.txt": _check_merges,
    "vocab.bpe": _check_merges,
    "model.safetensors": _check_safetensors,
    "model.ckpt.index": _check_tf_index,
    "checkpoint": _check_not_empty,
    "model.ckpt.meta": _check_not_empty,
}


# -- what the server says ------------------------------------------------------------------------
class _RecordingRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, keeping each redirect's headers: the Hugging Face hub
    states a weights file's sha256 on its redirect to the CDN, not on the CDN's answer.
    (urllib keeps the ``Range`` header across redirects.) A token's ``Authorization`` header
    is dropped when a redirect leads to another host (the hub's signed CDN URLs need none)."""

    def __init__(self) -> None:
        super().__init__()
        self.hops: list[Message] = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        self.hops.append(headers)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(new.full_url).netloc != urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


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
    that passed verification, or ``{}`` if there is none. ``verified`` lists the checks made,
    of ``size``, ``sha256``, ``md5`` and ``content``: ``["size", "sha256", "content"]`` for the
    hub's weights, ``["content"]`` for them copied with ``--from``, ``[]`` for a copied file
    nothing can be checked in (the TensorFlow data file)."""
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


def check_download(
    directory: str | Path, files: tuple[str, ...], *, command: str = "scratchgpt download"
) -> None:
    """Raise ``FileNotFoundError``, naming ``command`` (the one that completes the download),
    unless each of ``files`` is in ``directory`` with the size recorded when it was verified
    (a cheap check; nothing is rehashed)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    for file in files:
        path = directory / file
        size = path.stat().st_size if path.is_file() else None
        if file not in manifest or size != manifest[file]["size"]:
            raise FileNotFoundError(f"{path} is missing or incomplete; run the download "
                                    f"again: {command}")


def _check_choice(size: str, fmt: str) -> None:
    if size not in GPT2_SIZES:
        raise ValueError(f"unknown GPT-2 size {size!r}; choose one of {', '.join(GPT2_SIZES)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _log(message: str) -> None:
    print(message, file=sys.stderr)
