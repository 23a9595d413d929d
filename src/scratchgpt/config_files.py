"""Reading and writing run configurations as TOML, and reading the JSON settings files that
come with models (``config.json``, ``tokenizer_config.json``, ``generation_config.json``).

A configuration is a few tables (``[data]``, ``[model]``, ``[train]``) of plain values, so
the writer only needs strings, numbers, booleans and lists of them. Reading uses the
standard library.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) to TOML")


def dump_toml(tables: dict[str, dict[str, Any]]) -> str:
    """TOML text for ``{table: {key: value}}``; keys whose value is None are left out."""
    parts = []
    for table, values in tables.items():
        lines = [f"[{table}]"]
        lines += [f"{key} = {_value(v)}" for key, v in values.items() if v is not None]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def load_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error names the file and line."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: invalid TOML: {err}") from None


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that holds one object, such as a model's ``config.json``; an error that
    names the file (and the line, for JSON that does not parse) otherwise."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} line {err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data
