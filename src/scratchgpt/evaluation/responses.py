"""Responses files: a model's answers beside the references, as evaluations read them.

``scratchgpt finetune instruct`` writes ``RUN/test-responses.json``: a JSON list of entries,
each with ``instruction``, ``input``, ``output`` (the reference answer) and ``response`` (the
model's). The judge (:mod:`.judge`) and the human review page (:mod:`.review`) read them
with :func:`load_responses`, which also takes JSON Lines and the book's files, whose answer
field is ``model_response``.
"""

from __future__ import annotations

import json
from pathlib import Path

FIELDS = ("instruction", "input", "output", "response")


class ResponsesError(ValueError):
    """A responses file that cannot be used: the message names the file, entry and field."""


def load_responses(path: str | Path) -> list[dict[str, str]]:
    """The entries of a responses file (a JSON list, or JSON Lines), each checked: a missing
    or non-text field is an error naming the file, the entry (counting from 0) and the field.
    ``model_response`` (the book's name) stands in for ``response``; ``input`` may be absent."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResponsesError(f"{path}: no such responses file (a run's test-responses.json, "
                             "written by `scratchgpt finetune instruct`)") from None
    except UnicodeDecodeError as err:
        raise ResponsesError(f"{path}: not UTF-8 text ({err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as whole:
        # here, not at the top: data.corpus brings numpy, which `evaluate judge --help` skips
        from scratchgpt.data.corpus import text_lines

        try:  # JSON Lines: one entry per line
            data = [json.loads(line) for line in text_lines(text) if line.strip()]
        except json.JSONDecodeError:
            raise ResponsesError(f"{path}: not valid JSON (a list of entries) or JSON Lines: "
                                 f"{whole}") from None
    if not isinstance(data, list):
        raise ResponsesError(f"{path}: expected a JSON list of responses (the "
                             "test-responses.json of `scratchgpt finetune instruct`), found a "
                             f"{type(data).__name__}")
    if not data:
        raise ResponsesError(f"{path}: holds no entries")
    entries = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise ResponsesError(f"{path}: entry {i} (counting from 0) is a "
                                 f"{type(item).__name__}, not an object with "
                                 f"{', '.join(FIELDS)}")
        item = dict(item)
        if "response" not in item and "model_response" in item:
            item["response"] = item["model_response"]
        item.setdefault("input", "")
        for name in FIELDS:
            if name not in item:
                raise ResponsesError(f"{path}: entry {i} (counting from 0) has no field "
                                     f"{name!r} (it has: {', '.join(sorted(item))})")
            if not isinstance(item[name], str):
                raise ResponsesError(f"{path}: entry {i} (counting from 0): field {name!r} is "
                                     f"a {type(item[name]).__name__}, not a string")
        entries.append({name: item[name] for name in FIELDS})
    return entries
