"""Instruction data: what a model is tuned on to follow instructions (chapter 7 of the book).

A record is either one instruction, an optional input and the wanted output (the book's data,
Stanford Alpaca's), or a conversation that ends with the assistant's answer. A prompt style
(:mod:`scratchgpt.data.prompt_styles`), or the model's own chat template
(:mod:`scratchgpt.data.chat_templates`), turns either into text: a prompt, and the answer the
model learns to continue it with.

:func:`load_instructions` reads records from a JSON list or a JSON Lines file; a mistake in the
file is an :class:`InstructionDataError` that names the file, the record (its index in a JSON
list, its line in JSON Lines) and the field. :func:`split_records` makes seeded train,
validation and test splits, and :func:`save_instruction_splits` writes them beside a run, so
that the run can be reproduced and its test records are never trained on. Preference records
(:mod:`scratchgpt.data.preferences`) are read, checked and split by the same pieces.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from scratchgpt.data.corpus import json_lines
from scratchgpt.data.labelled import utf8_text
from scratchgpt.data.prompt_format import PromptFormat
from scratchgpt.data.prompt_styles import Message, Segment, check_messages

SPLIT_NAMES = ("train", "val", "test")
REPORT_FILE = "split.json"
RECORD_SHAPES = (
    "an object with an 'instruction', an 'output' and optionally an 'input' field, or one with "
    "a 'messages' field"
)


class InstructionDataError(ValueError):
    """A mistake in instruction data, named by file, record (or line) and field."""


@dataclass(frozen=True)
class InstructionRecord:
    """One instruction, its input ("" when there is none) and the wanted output."""

    instruction: str
    input: str
    output: str


@dataclass(frozen=True)
class Conversation:
    """Messages in turns (an optional system message first) that end with an answer."""

    messages: tuple[Message, ...]

    def __post_init__(self) -> None:
        check_messages(self.messages, ends_with_answer=True)


Record = InstructionRecord | Conversation


def record_segments(record: Record, style: PromptFormat) -> list[Segment]:
    """The text of ``record`` in ``style`` (a prompt style or a chat template), its answers
    marked trained: for an instruction, the prompt (untrained) then the output and how the
    style ends a turn (trained)."""
    if isinstance(record, Conversation):
        return style.segments(record.messages)
    return style.instruction_segments(record.instruction, record.input, record.output)


def record_prompt(record: Record, style: PromptFormat) -> str:
    """The prompt for the record's final answer: what the model is given to answer it."""
    if isinstance(record, Conversation):
        return style.render(record.messages[:-1])
    return style.instruction_prompt(record.instruction, record.input)


def record_reference(record: Record) -> str:
    """The record's final answer, as written by a person: what a model's answer is judged by."""
    if isinstance(record, Conversation):
        return record.messages[-1]["content"]
    return record.output


def record_fields(record: Record) -> dict[str, str]:
    """``{"instruction", "input", "output"}`` of a record; a conversation gives its last user
    message as the instruction, no input, and its last answer as the output."""
    if isinstance(record, Conversation):
        return {
            "instruction": record.messages[-2]["content"],
            "input": "",
            "output": record.messages[-1]["content"],
        }
    return {"instruction": record.instruction, "input": record.input, "output": record.output}


def record_json(record: Record) -> dict[str, Any]:
    """The record as the JSON object it is read from."""
    if isinstance(record, Conversation):
        return {"messages": [dict(message) for message in record.messages]}
    return record_fields(record)


# --- Reading ------------------------------------------------------------------------------------


def load_instructions(path: str | Path) -> list[Record]:
    """The records of a JSON file holding a list of them (its first character is ``[``), or of
    a JSON Lines file holding one per line (blank lines are skipped). A record is an object with
    ``instruction``, ``output`` and optionally ``input`` (other fields are ignored), or with
    ``messages``: a list of ``{"role", "content"}`` objects. Records of a list are numbered from
    0 in errors, as ``json.load(file)[17]`` numbers them; lines from 1."""
    return [parse_record(value, where)
            for where, value in read_json_records(path, "instruction", RECORD_SHAPES)]


def read_json_records(path: str | Path, what: str, shapes: str) -> list[tuple[str, Any]]:
    """Each JSON value of a JSON list or JSON Lines file of ``what`` (``instruction``) records,
    with where it is (``FILE: record 17``, ``FILE:18``) for errors to name; ``shapes`` says what
    a record is, for the error of a file that holds none."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.suffix in (".json", ".jsonl"))
        raise IsADirectoryError(
            f"{path} is a directory; {what} data is one file, a JSON list or JSON Lines "
            "file of records: give its path"
            + (f" (this directory holds {', '.join(found)})" if found else
               " (this directory holds no .json or .jsonl file)"))
    if not path.is_file():
        raise FileNotFoundError(f"{what} data not found: {path}")
    try:
        text = utf8_text(path.read_bytes(), path)
        if text.lstrip().startswith("["):
            try:
                values = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg}, column "
                                 f"{err.colno})") from None
            items = [(f"{path}: record {index}", value) for index, value in enumerate(values)]
        else:
            items = list(json_lines(text, path))
    except ValueError as err:  # not UTF-8, not JSON: the readers name the line
        raise InstructionDataError(str(err)) from None
    if not items:
        raise InstructionDataError(
            f"{path}: holds no {what} records; expected a JSON list of records or one "
            f"record per line, each {shapes}"
        )
    return items


def json_type(value: Any) -> str:
    """What ``value`` is, in JSON's words: ``a number``, ``null``, ``a list``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    names = {str: "a string", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def parse_record(value: Any, where: str) -> Record:
    """The record in the JSON ``value`` found at ``where`` (file and record or line)."""
    if not isinstance(value, dict):
        raise InstructionDataError(
            f"{where}: {json_type(value)} where a record is expected: {RECORD_SHAPES}"
        )
    if "messages" in value:
        return parse_conversation(value["messages"], where)
    return InstructionRecord(**text_fields(value, where, ("instruction", "input", "output"),
                                           RECORD_SHAPES))


def text_fields(value: dict[str, Any], where: str, names: tuple[str, ...],
                shapes: str) -> dict[str, str]:
    """The fields ``names`` of a record, each a string; all but ``input`` (``""`` when absent)
    present and not blank. ``shapes`` says what a record is, for the error of a missing one."""
    for name in names:
        if name != "input" and name not in value:
            found = ", ".join(repr(key) for key in value) or "none"
            raise InstructionDataError(
                f"{where}: no field {name!r} (found fields: {found}); a record is {shapes}"
            )
    fields = {name: value.get(name, "") for name in names}
    for name, text in fields.items():
        if not isinstance(text, str):
            raise InstructionDataError(
                f"{where}: field {name!r} is {json_type(text)}, not a string"
                + ('; write "" for no input' if name == "input" else "")
            )
        if name != "input" and not text.strip():
            raise InstructionDataError(
                f"{where}: field {name!r} is empty; fill it in or drop the record"
            )
    return fields


def parse_conversation(messages: Any, where: str) -> Conversation:
    """The conversation of a record's ``messages`` field."""
    return Conversation(parse_messages(messages, where, "messages", ends_with_answer=True))


def parse_messages(messages: Any, where: str, field: str,
                   ends_with_answer: bool) -> tuple[Message, ...]:
    """The messages of a record's ``field``: ``{"role", "content"}`` objects (other keys
    dropped) in the order of a conversation, none but a system message empty."""
    if not isinstance(messages, list):
        raise InstructionDataError(
            f"{where}: field {field!r} is {json_type(messages)}, not a list of "
            "{'role', 'content'} objects"
        )
    try:
        check_messages(messages, ends_with_answer=ends_with_answer)
    except ValueError as err:
        raise InstructionDataError(f"{where}: field {field!r}: {err}") from None
    for index, message in enumerate(messages):
        if message["role"] != "system" and not message["content"].strip():
            raise InstructionDataError(
                f"{where}: field {field!r}: message {index} ({message['role']}) has an empty "
                "'content'; fill it in or drop the record"
            )
    return tuple({"role": m["role"], "content": m["content"]} for m in messages)


# --- Splitting ----------------------------------------------------------------------------------

R = TypeVar("R")  # a record: an instruction record or conversation, or a preference record


@dataclass(frozen=True)
class InstructionSplits(Generic[R]):
    """Train, validation and test records, and how they were split."""

    train: list[R]
    val: list[R]
    test: list[R]
    seed: int
    fractions: tuple[float, float, float]

    def counts(self) -> dict[str, int]:
        """``{"train": 935, "val": 55, "test": 110}``"""
        return {name: len(getattr(self, name)) for name in SPLIT_NAMES}

    def report(self) -> dict[str, Any]:
        """How the splits were made, as ``split.json`` holds it."""
        return {"seed": self.seed, "fractions": list(self.fractions), "counts": self.counts()}


def split_records(
    records: list[R], seed: int, fractions: tuple[float, float, float] = (0.85, 0.05, 0.10),
    what: str = "instruction records",
) -> InstructionSplits[R]:
    """Train, validation and test splits of ``records`` by a seeded shuffle, each in the
    records' original order. Validation and test get their fraction of the records, rounded
    (at least one each), train the rest: the book's 935, 55 and 110 of its 1,100. ``what``
    names the records in errors."""
    if len(fractions) != 3 or min(fractions) <= 0 or not math.isclose(sum(fractions), 1):
        raise ValueError(
            f"fractions must be three positive numbers (train, validation, test) that sum to 1, "
            f"got {tuple(fractions)}"
        )
    n = len(records)
    if n < 3:
        raise ValueError(
            f"{n} {what} are too few to split: train, validation and test need at "
            "least one each"
        )
    n_val, n_test = (max(1, math.floor(n * f + 0.5)) for f in fractions[1:])
    while n - n_val - n_test < 1:  # so few records that train would get none
        n_val, n_test = (n_val - 1, n_test) if n_val >= n_test else (n_val, n_test - 1)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    cuts = [order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test]]
    train, val, test = ([records[i] for i in sorted(part)] for part in cuts)
    return InstructionSplits(train, val, test, seed, tuple(fractions))


def save_instruction_splits(splits: InstructionSplits[R], directory: Path,
                            to_json: Callable[[R], dict[str, Any]] = record_json) -> None:
    """Write ``train.jsonl``, ``val.jsonl`` and ``test.jsonl`` (one record per line, in the
    shape it was read in: ``to_json``) and ``split.json`` (seed, fractions, counts) into
    ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in SPLIT_NAMES:
        lines = (
            json.dumps(to_json(r), ensure_ascii=False) + "\n" for r in getattr(splits, name)
        )
        (directory / f"{name}.jsonl").write_text("".join(lines), encoding="utf-8")
    (directory / REPORT_FILE).write_text(json.dumps(splits.report(), indent=2) + "\n")


def load_instruction_splits(
    directory: Path, load: Callable[[Path], list[R]] = load_instructions
) -> InstructionSplits[R]:
    """The splits that :func:`save_instruction_splits` wrote into ``directory``, each file read
    by ``load``."""
    directory = Path(directory)
    report_path = directory / REPORT_FILE
    if not report_path.is_file():
        raise FileNotFoundError(f"{directory} holds no instruction splits: no {REPORT_FILE}")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    parts = [load(directory / f"{name}.jsonl") for name in SPLIT_NAMES]
    for name, part in zip(SPLIT_NAMES, parts, strict=True):
        if len(part) != report["counts"][name]:
            raise InstructionDataError(
                f"{directory / f'{name}.jsonl'}: holds {len(part)} records where {REPORT_FILE} "
                f"counts {report['counts'][name]}; the split was changed after it was saved"
            )
    return InstructionSplits(*parts, seed=report["seed"], fractions=tuple(report["fractions"]))
