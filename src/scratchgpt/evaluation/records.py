"""Evaluation records: every evaluation leaves one JSON file in its model's directory.

A number means little alone: "MMLU 26%" says something only beside another run's figure on
the same data. So each ``scratchgpt evaluate`` writes ``MODEL_DIR/eval/NAME.json``: the
result's fields at the top level (what ``--json`` prints too), and beside them what it is a
result *of* — the evaluation, the model, the command that made it, a fingerprint of the data
(a hash of its bytes, so two runs scored on "the same file" really were) and the time.
``scratchgpt evaluate compare`` reads these files back into one table.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scratchgpt.hub.models import resolve_model
from scratchgpt.run_dir import write_whole

EVAL_DIR = "eval"
RECORD_KEYS = ("evaluation", "model", "command", "data", "time")  # what a record says about itself


def eval_dir(model: str | Path) -> Path:
    """Where the evaluations of ``model`` go: ``eval/`` in its run directory, or in the cache
    directory of a downloaded model (``gpt2-124M``)."""
    return resolve_model(model) / EVAL_DIR


def data_fingerprint(paths: Path | Sequence[Path]) -> dict[str, Any]:
    """The data's identity: its path(s), file count, bytes, and one sha256 over the files'
    relative names and contents (a directory's files taken in sorted order)."""
    paths = [paths] if isinstance(paths, Path) else list(paths)
    digest, files, size = hashlib.sha256(), 0, 0
    for root in paths:
        members = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for member in members:
            name = member.relative_to(root).as_posix() if root.is_dir() else member.name
            digest.update(name.encode() + b"\0")
            with member.open("rb") as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(chunk)
                    size += len(chunk)
            files += 1
    return {"path": [str(p) for p in paths] if len(paths) > 1 else str(paths[0]),
            "files": files, "bytes": size, "sha256": digest.hexdigest()}


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed (``scratchgpt evaluate mmlu ...``), quoted so it can be run again."""
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["scratchgpt", *args])


def make_record(evaluation: str, model: str | Path, result: dict[str, Any], *,
                data: dict[str, Any] | None = None, command: str | None = None) -> dict[str, Any]:
    """One evaluation's record: the identifying keys first, then ``result``'s fields."""
    clash = set(RECORD_KEYS) & set(result)
    if clash:
        raise ValueError(f"a result may not use the record's own keys: {sorted(clash)}")
    return {"evaluation": evaluation, "model": str(model),
            "command": command if command is not None else command_line(),
            "data": data, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **result}


def record_name(evaluation: str, part: str) -> str:
    """A record's file name (no suffix): ``judge-llama3.1`` for ``("judge", "llama3.1")``;
    characters a file name should not hold become dashes."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", part).strip("-") or "data"
    return f"{evaluation}-{safe}"


def save_evaluation(evaluation: str, model: str | Path, name: str, result: dict[str, Any],
                    data: Path | Sequence[Path]) -> tuple[dict[str, Any], Path]:
    """Make the record of ``result`` (with the fingerprint of ``data``) and write it to
    ``eval/NAME.json`` in ``model``'s directory; return both."""
    record = make_record(evaluation, model, result, data=data_fingerprint(data))
    return record, write_record(eval_dir(model), name, record)


def write_record(directory: Path, name: str, record: dict[str, Any]) -> Path:
    """Write ``record`` to ``directory/NAME.json`` whole (never half a file), and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    write_whole(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return path


def read_records(model_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The records in ``MODEL_DIR/eval/``, by name (file stem); files that are not records
    (not JSON objects with an ``evaluation`` key) are left out."""
    records = {}
    for path in sorted((Path(model_dir) / EVAL_DIR).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and "evaluation" in record:
            records[path.stem] = record
    return records
