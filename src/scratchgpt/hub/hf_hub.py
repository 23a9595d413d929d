"""Models from the Hugging Face hub: ``scratchgpt download ORG/NAME`` (``Qwen/Qwen3-0.6B``).

The hub's API lists a repository's files at a revision (a branch, tag or commit)::

    GET https://huggingface.co/api/models/ORG/NAME/revision/REVISION?blobs=true
    {"id": "Qwen/Qwen3-0.6B", "sha": "<the commit>", "gated": false,
     "siblings": [{"rfilename": "config.json", "size": 726, "blobId": "<git blob sha1>"},
                  {"rfilename": "model.safetensors", "size": 1503300328, "blobId": "...",
                   "lfs": {"sha256": "<sha256>", "size": 1503300328, "pointerSize": 135}}]}

Each file a model needs (:func:`select_files`) is then fetched from
``https://huggingface.co/ORG/NAME/resolve/COMMIT/FILE`` (the listing's commit, so a branch that
moves meanwhile cannot mix two versions) through the resumable, verifying
:func:`.download.fetch_files`. Large (LFS) files are answered with a redirect to the hub's CDN,
on another host, to which the token is not sent. What is checked: every file's size as listed;
an LFS file's sha256 as listed; a small file's git blob id (the sha1 of ``b"blob SIZE\\0"`` and
its bytes); JSON files must be JSON objects and safetensors files must be laid out as one.

A token (``--token`` or ``HF_TOKEN``) goes as ``Authorization: Bearer TOKEN``. A gated model
(Llama, Gemma) answers 401 without one and 403 when its licence was not accepted: the error
says to accept it on the model's page. The files land in ``$SCRATCHGPT_CACHE/models/ORG--NAME``
(:func:`.names.hub_model_dir`), with ``download.json`` (what was verified) and ``hub.json``,
written last: the repository, revision, commit and the files downloaded, which
:func:`check_model_download` requires before ``--model ORG/NAME`` reads the directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from scratchgpt.hub.download import (
    CHUNK,
    TIMEOUT_S,
    Check,
    ContentError,
    DownloadError,
    HTTPStatusError,
    _check_merges,
    check_download,
    check_json_object,
    check_safetensors_layout,
    fetch_files,
    mirror_url,
)
from scratchgpt.hub.names import hub_model_dir, parse_hub_name

HUB_URL = "https://huggingface.co"
TOKEN_ENV = "HF_TOKEN"
RECORD = "hub.json"
TOKENS_PAGE = "https://huggingface.co/settings/tokens"
# What a model needs, besides its weights: configuration, tokenizer, chat template, licence.
NEEDED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
          "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
          "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt")
LEGAL = re.compile(r"(LICEN[CS]E|NOTICE|USE_POLICY|README)([.-][\w.]*)?", re.IGNORECASE)
SAFETENSORS = re.compile(r"[\w.-]+\.safetensors|model\.safetensors\.index\.json")
TORCH_WEIGHTS = re.compile(r"pytorch_model[\w.-]*\.bin|pytorch_model\.bin\.index\.json")


class HubError(DownloadError):
    """The hub refused a request: a repository or revision that does not exist, or a gated
    model without a token that may read it. The message says what to do."""


@dataclass(frozen=True)
class HubFile:
    """One file of a repository as the hub lists it."""

    name: str  # the path in the repository ("rfilename")
    size: int
    blob_id: str | None  # the git blob sha1 (of the LFS pointer, for an LFS file)
    sha256: str | None  # the content's sha256, for an LFS file


@dataclass(frozen=True)
class Listing:
    """A repository's files at one revision, and the commit that revision stands for."""

    repo: str
    revision: str
    commit: str
    files: tuple[HubFile, ...]


def hub_token(token: str | None = None) -> str | None:
    """``token``, else the environment variable ``HF_TOKEN``, else None (anonymous)."""
    return token or os.environ.get(TOKEN_ENV) or None


def list_files(
    repo: str, revision: str = "main", *, token: str | None = None, base_url: str | None = None
) -> Listing:
    """The hub's listing of ``repo`` at ``revision`` (see the module docstring); ``base_url``
    replaces the hub's scheme and host (:func:`.download.mirror_url`). Raises
    :class:`HubError` for a repository or revision that does not exist or may not be read."""
    url = mirror_url(f"{HUB_URL}/api/models/{repo}/revision/{quote(revision, safe='')}",
                     base_url) + "?blobs=true"
    request = urllib.request.Request(url, headers={"User-Agent": "scratchgpt",
                                                   **_auth(token)})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            body = response.read()
    except urllib.error.HTTPError as err:
        raise HubError(explain_refusal(repo, revision, err.code, err.headers, token,
                                       url)) from None
    except (urllib.error.URLError, OSError) as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        raise HubError(f"{url}: cannot connect ({reason})") from None
    return parse_listing(repo, revision, body, url)


def parse_listing(repo: str, revision: str, body: bytes, url: str) -> Listing:
    """The :class:`Listing` in the API's answer ``body``; a ``HubError`` naming ``url`` and
    the field when it is not the hub's shape."""
    try:
        data = json.loads(body)
        siblings = data["siblings"]
        files = tuple(HubFile(name=s["rfilename"], size=int(s.get("size", -1)),
                              blob_id=s.get("blobId"), sha256=(s.get("lfs") or {}).get("sha256"))
                      for s in siblings)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise HubError(f"{url}: expected the hub's model listing (a JSON object whose "
                       f"'siblings' give each file's 'rfilename', 'size' and 'lfs'), found "
                       f"{type(err).__name__}: {err}") from None
    return Listing(repo, revision, str(data.get("sha") or revision), files)


def select_files(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(kept, skipped)``: the files a model needs among ``names`` (:data:`NEEDED`, the
    licence and README, the safetensors weights and their index; PyTorch's ``.bin`` weights
    only where there are no safetensors), ``config.json`` first so that it is on disk before
    anything is checked against it, the weights last. Everything else is skipped: other weight
    formats (``*.pth``, ``*.gguf``, ``*.bin``), subdirectories (``original/``, ``onnx/``)."""
    top = [name for name in names if "/" not in name]
    weights = [name for name in top if SAFETENSORS.fullmatch(name)]
    if not weights:
        weights = [name for name in top if TORCH_WEIGHTS.fullmatch(name)]
    small = [name for name in top if name in NEEDED or LEGAL.fullmatch(name)]
    kept = sorted(small, key=lambda name: (name != "config.json", name)) + sorted(weights)
    return kept, [name for name in names if name not in kept]


def download_model(
    repo: str,
    directory: str | Path | None = None,
    *,
    revision: str = "main",
    token: str | None = None,
    base_url: str | None = None,
    source_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Fetch the hub model ``repo`` (``ORG/NAME``, or ``ORG/NAME@REVISION``) at ``revision``
    into ``directory`` (default: :func:`.names.hub_model_dir`) and return the directory.
    ``token`` (default: ``HF_TOKEN``) reads a gated or private model; ``base_url`` takes a
    mirror; with ``source_dir`` the files are copied from that local model directory instead."""
    repo, named = parse_hub_name(repo)  # a ValueError unless ORG/NAME[@REVISION]
    if named != "main":
        if revision not in ("main", named):
            raise ValueError(f"two revisions given: {named} (after @) and {revision}")
        revision = named
    target = Path(directory) if directory else hub_model_dir(repo, revision)
    if source_dir is not None:
        return _copy_model(repo, Path(source_dir), target, progress)
    token = hub_token(token)
    listing = list_files(repo, revision, token=token, base_url=base_url)
    kept, skipped = select_files([file.name for file in listing.files])
    if "config.json" not in kept:
        raise HubError(f"{repo} at {revision} has no config.json: not a model in Hugging "
                       f"Face's layout (files: {_some(f.name for f in listing.files)})")
    if skipped:
        _log(f"{repo}: skipping {len(skipped)} files not needed to run the model: "
             f"{_some(skipped)}")
    listed = {file.name: file for file in listing.files}
    urls = {name: mirror_url(f"{HUB_URL}/{repo}/resolve/{quote(listing.commit, safe='')}/"
                             f"{quote(name)}", base_url) for name in kept}
    sha256 = {name: listed[name].sha256 for name in kept if listed[name].sha256}
    checks = {name: partial(_check_hub_file, file=listed[name]) for name in kept}
    (target / RECORD).unlink(missing_ok=True)  # written again once every file is verified
    try:
        fetch_files(urls, target, sha256=sha256, checks=checks, headers=_auth(token),
                    progress=progress)
    except HTTPStatusError as err:
        raise HubError(explain_refusal(repo, revision, err.status, err.headers, token,
                                       str(err))) from None
    _check_shards(target, kept)
    _write_record(target, {"repo": repo, "revision": revision, "commit": listing.commit,
                           "files": kept, "skipped": skipped})
    return target


def _copy_model(repo: str, source: Path, target: Path, progress: bool) -> Path:
    """``--from DIR``: copy the files a model needs from a local model directory (which must
    hold ``config.json``), each checked for its content as a downloaded one is."""
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"{source} holds no config.json: expected a Hugging Face model "
                                "directory (config.json, *.safetensors, tokenizer.json, ...)")
    names = sorted(path.name for path in source.iterdir() if path.is_file())
    kept, skipped = select_files(names)
    if skipped:
        _log(f"{source}: not copying {len(skipped)} files not needed to run the model: "
             f"{_some(skipped)}")
    (target / RECORD).unlink(missing_ok=True)
    fetch_files({name: str(source / name) for name in kept}, target, source_dir=source,
                checks={name: check for name in kept if (check := content_check(name))},
                progress=progress)
    _check_shards(target, kept)
    _write_record(target, {"repo": repo, "from": str(source.resolve()), "files": kept,
                           "skipped": skipped})
    return target


def explain_refusal(repo: str, revision: str, status: int, headers: Message,
                    token: str | None, source: str) -> str:
    """What an error ``status`` from the hub means, and what to do: the hub names the cause in
    ``X-Error-Code`` (``GatedRepo``, ``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``),
    and answers 401 for a repository it will not show an anonymous caller."""
    code = headers.get("X-Error-Code") if headers is not None else None
    said = headers.get("X-Error-Message") if headers is not None else None
    return _refusal(repo, revision, status, code, token, source) + (
        f" (the hub said: {said})" if said else "")


def _refusal(repo: str, revision: str, status: int, code: str | None, token: str | None,
             source: str) -> str:
    page = f"https://huggingface.co/{repo}"
    if code == "RevisionNotFound" or (status == 404 and code is None and revision != "main"):
        return (f"{repo} has no revision {revision!r} (HTTP {status} from {source}); give a "
                f"branch, tag or commit listed on {page}")
    if code == "RepoNotFound" or (status == 404 and code != "EntryNotFound"):
        private = "" if token else "; if it is private, pass a token: --token hf_... or HF_TOKEN"
        return (f"{repo} does not exist on the hub (HTTP {status} from {source}); check the "
                f"name on {page}{private}")
    if status in (401, 403):
        if token:
            refused = (f"the token given was refused (HTTP {status}): accept the licence on "
                       f"{page} with the account the token belongs to, or check the token on "
                       f"{TOKENS_PAGE}")
        else:
            refused = (f"it needs a token (HTTP {status}): accept the licence on {page}, "
                       f"create a read token on {TOKENS_PAGE} and pass it with --token hf_... "
                       f"or the environment variable {TOKEN_ENV}")
        return f"{repo} is gated or private: {refused} (from {source})"
    return f"{source}: HTTP {status}" + (f" ({code})" if code else "")


def check_model_download(directory: Path, command: str) -> None:
    """Raise ``FileNotFoundError`` naming ``command`` unless ``directory`` holds a finished
    hub download: its ``hub.json``, and each file it lists at its verified size."""
    record = directory / RECORD
    if not record.is_file():
        state = "was not finished" if directory.is_dir() else "has not been downloaded"
        raise FileNotFoundError(f"{directory} {state}; run: {command}")
    check_download(directory, tuple(json.loads(record.read_text(encoding="utf-8"))["files"]),
                   command=command)


def _check_shards(directory: Path, files: list[str]) -> None:
    """Every shard that ``model.safetensors.index.json`` maps a tensor to is among ``files``
    (a ``HubError`` naming the missing ones otherwise)."""
    index = directory / "model.safetensors.index.json"
    if not index.is_file():
        return
    weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
    missing = sorted(set(weight_map.values()) - set(files))
    if missing:
        raise HubError(f"{index} maps tensors to {_some(missing)}, which the model's files "
                       f"lack ({_some(files)}); the repository is incomplete")


def content_check(name: str) -> Check | None:
    """What a file's name promises about its content: JSON files are JSON objects, weights are
    safetensors files, ``merges.txt`` a BPE merges file."""
    if name.endswith(".json"):
        return check_json_object
    if name.endswith(".safetensors"):
        return _check_safetensors
    if name == "merges.txt":
        return _check_merges
    return None


def _check_safetensors(path: Path) -> None:
    check_safetensors_layout(path)


def _check_hub_file(path: Path, file: HubFile) -> None:
    """``path`` holds ``file`` as the hub lists it: its size, then (a small file) its git blob
    id, or (an LFS file, whose sha256 :func:`.download.fetch_files` checks) nothing more; and
    what its name promises (:func:`content_check`)."""
    size = path.stat().st_size
    if file.size >= 0 and size != file.size:
        raise ContentError(f"expected {file.size:,} bytes (the hub's listing), found {size:,}")
    if file.sha256 is None and file.blob_id:
        blob = git_blob_id(path)
        if blob != file.blob_id:
            raise ContentError(f"expected git blob id {file.blob_id} (the hub's listing), "
                               f"found {blob}")
    check = content_check(file.name)
    if check is not None:
        check(path)


def git_blob_id(path: Path) -> str:
    """The id git gives a file's content: the sha1 of ``b"blob SIZE\\0"`` and its bytes."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _write_record(directory: Path, record: Mapping[str, Any]) -> None:
    temp = directory / (RECORD + ".part")
    temp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    temp.replace(directory / RECORD)


def _some(names: Any, limit: int = 8) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more"
                                       if len(names) > limit else "")


def _log(message: str) -> None:
    print(message, file=sys.stderr)
