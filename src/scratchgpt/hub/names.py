"""Names and paths: what a ``--model``, ``--tokenizer`` or ``--data`` argument stands for.

An argument that names an existing file or directory is read from there, as Hugging Face's
``from_pretrained`` does; only otherwise is it the name of something ``scratchgpt download``
fetched into the cache (``gpt2-124M``, ``sms-spam``, ``mmlu``). So with MMLU unpacked in
``./mmlu``, ``--data mmlu`` reads ``./mmlu``: what is beside you is never shadowed by the cache.
:func:`local_or_downloaded` is that rule, and every resolver of a name goes through it
(:func:`scratchgpt.hub.gpt2.resolve_model`, :func:`~scratchgpt.hub.gpt2.resolve_tokenizer`,
:func:`scratchgpt.hub.datasets.dataset_path`).

The module imports no PyTorch, so that the command line's ``--help`` can say what a SPEC may
name (:data:`TOKENIZER_SPECS`) in a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

TOKENIZER_SPECS = ("a run directory (its tokenizer.json), a downloaded model name "
                   "(gpt2-124M), a directory of GPT-2's files, a tiktoken rank file or a JSON "
                   "file written by `scratchgpt train-tokenizer`")


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
