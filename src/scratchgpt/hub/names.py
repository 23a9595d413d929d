"""Names and paths: what a ``--model``, ``--tokenizer`` or ``--data`` argument stands for.

An argument that names an existing file or directory is read from there, as Hugging Face's
``from_pretrained`` does; only otherwise is it the name of something ``scratchgpt download``
fetched into the cache (``gpt2-124M``, ``sms-spam``, ``mmlu``, a hub model ``ORG/NAME``
in ``models/ORG--NAME``: :func:`hub_model_path`). So with MMLU unpacked in
``./mmlu``, ``--data mmlu`` reads ``./mmlu``: what is beside you is never shadowed by the cache.
:func:`local_or_downloaded` is that rule, and every resolver of a name goes through it
(:func:`scratchgpt.hub.models.resolve_model`, :func:`~scratchgpt.hub.models.resolve_tokenizer`,
:func:`scratchgpt.hub.datasets.dataset_path`, :func:`hub_model_path`).

The module imports no PyTorch, so that the command line's ``--help`` can say what a SPEC may
name (:data:`TOKENIZER_SPECS`) in a fraction of a second.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

TOKENIZER_SPECS = ("a run directory (its tokenizer.json), a downloaded model name "
                   "(gpt2-124M, or a hub model's ORG/NAME), a directory of GPT-2's files, a "
                   "Hugging Face model directory or tokenizer.json (Llama 3, Qwen, Gemma...), a "
                   "tiktoken rank file or a JSON file written by `scratchgpt train-tokenizer`")


def local_or_downloaded(spec: str | Path, downloaded: Callable[[str], Path]) -> Path:
    """``spec`` itself when a file or directory of that name exists, else ``downloaded(spec)``:
    what the name stands for in the download cache (which raises, saying what to run, when
    it is not there). An empty ``spec`` is a ``ValueError``: it would name the current
    directory."""
    text = str(spec)
    if not text.strip():
        raise ValueError("the name is empty: give a path, or the name of a download")
    path = Path(text)
    return path if path.exists() else downloaded(text)


HUB_NAME = re.compile(r"([A-Za-z0-9][\w.-]*)/([A-Za-z0-9][\w.-]*)(?:@(\S+))?")


def parse_hub_name(name: str) -> tuple[str, str]:
    """``(repo, revision)`` of a hub model's name, ``ORG/NAME`` or ``ORG/NAME@REVISION``
    (revision ``main`` by default); a ``ValueError`` for anything else."""
    match = HUB_NAME.fullmatch(name)
    if not match or ".." in name:
        raise ValueError(f"{name!r} is not a Hugging Face model name: expected ORG/NAME, as in "
                         "Qwen/Qwen3-0.6B (optionally @REVISION)")
    return f"{match.group(1)}/{match.group(2)}", match.group(3) or "main"


def is_hub_name(name: str) -> bool:
    """Whether ``name`` has the shape of a hub model's name (``ORG/NAME``, ``@REVISION``
    optional), as opposed to a path of another shape or a GPT-2 download's name."""
    try:
        parse_hub_name(name)
    except ValueError:
        return False
    return True


def hub_model_dir(repo: str, revision: str = "main") -> Path:
    """Where ``scratchgpt download ORG/NAME`` puts a hub model: ``$SCRATCHGPT_CACHE/models/
    ORG--NAME`` beside ``gpt2-124M-hf``; another revision than ``main`` in
    ``ORG--NAME@REVISION`` (a ``/`` in it written ``--``)."""
    from scratchgpt.hub.download import models_dir  # imported here: it brings in numpy

    org, name = repo.split("/")
    suffix = "" if revision == "main" else "@" + revision.replace("/", "--")
    return models_dir() / f"{org}--{name}{suffix}"


def downloaded_hub_model(name: str) -> Path:
    """The directory of the hub model ``name`` (``ORG/NAME`` or ``ORG/NAME@REVISION``) in the
    download cache, once its download finished and its files check out;
    ``FileNotFoundError`` saying what to run otherwise (a name of another shape is no
    download: the error says so)."""
    from scratchgpt.hub.hf_hub import check_model_download

    try:
        repo, revision = parse_hub_name(name)
    except ValueError:
        raise FileNotFoundError(f"{name} is neither an existing path nor a Hugging Face model "
                                "name (ORG/NAME)") from None
    flags = "" if revision == "main" else f" --revision {revision}"
    try:
        check_model_download(hub_model_dir(repo, revision),
                             command=f"scratchgpt download {repo}{flags}")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{name} is no file or directory here; as a Hugging Face "
                                f"model: {err}") from None
    return hub_model_dir(repo, revision)


def hub_model_path(spec: str | Path) -> Path:
    """What a ``--model ORG/NAME`` names: an existing path first (``./Qwen/Qwen3-0.6B``), else
    the downloaded hub model of that name (:func:`downloaded_hub_model`)."""
    return local_or_downloaded(spec, downloaded_hub_model)
