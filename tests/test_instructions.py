"""Instruction records: read from JSON lists and JSON Lines, every mistake named by file, record
(or line) and field; seeded splits saved and read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scratchgpt.data.instructions import (
    Conversation,
    InstructionDataError,
    InstructionRecord,
    load_instruction_splits,
    load_instructions,
    record_fields,
    record_prompt,
    record_reference,
    record_segments,
    save_instruction_splits,
    split_records,
)
from scratchgpt.data.prompt_styles import Segment, get_prompt_style

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3+3?"},
    {"role": "assistant", "content": "6"},
]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- Reading ------------------------------------------------------------------------------------


def test_a_json_list_of_instructions_and_conversations(tmp_path: Path) -> None:
    data = [
        {"instruction": "Add.", "input": "2, 3", "output": "5"},
        {"instruction": "Name a prime.", "output": "7", "id": 17},  # no input; extra keys
        {"messages": CHAT},
    ]
    records = load_instructions(write(tmp_path / "data.json", "\n  " + json.dumps(data)))
    assert records == [
        InstructionRecord("Add.", "2, 3", "5"),
        InstructionRecord("Name a prime.", "", "7"),
        Conversation(tuple(CHAT)),
    ]


def test_json_lines_skip_blank_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps({"instruction": "Add.", "input": "", "output": "5"}),
        "",
        "  ",
        json.dumps({"messages": CHAT[1:3]}, ensure_ascii=False),
    ]
    records = load_instructions(write(tmp_path / "data.jsonl", "\n".join(lines) + "\n"))
    assert records == [InstructionRecord("Add.", "", "5"), Conversation(tuple(CHAT[1:3]))]


def test_the_books_instruction_data_loads(shared_assets: Path) -> None:
    records = load_instructions(shared_assets / "instructions" / "instruction-data.json")
    assert len(records) == 1100
    assert records[1] == InstructionRecord(
        "Edit the following sentence for grammar.",
        "He go to the park every day.",
        "He goes to the park every day.",
    )


RECORD_ERRORS = [
    # (record, the field named, what the message says)
    (1, "", "a number where a record is expected: an object with an 'instruction'"),
    ({"input": "x", "output": "y"}, "'instruction'", r"no field 'instruction' \(found fields: "),
    ({"instruction": "x"}, "'output'", "no field 'output'"),
    ({"instruction": "x", "output": 3}, "'output'", "field 'output' is a number, not a string"),
    ({"instruction": "x", "input": None, "output": "y"}, "'input'", 'is null.*"" for no input'),
    ({"instruction": ["x"], "output": "y"}, "'instruction'", "is a list, not a string"),
    ({"instruction": " \n", "output": "y"}, "'instruction'", "field 'instruction' is empty"),
    ({"instruction": "x", "output": ""}, "'output'", "field 'output' is empty"),
    ({"messages": "hi"}, "'messages'", "field 'messages' is a string, not a list"),
    ({"messages": []}, "'messages'", "no messages"),
    ({"messages": [CHAT[1], CHAT[1]]}, "'messages'", "message 1 has role 'user' where"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "'messages'", "message 0 has role 'bot'"),
    ({"messages": CHAT[:4]}, "'messages'", "message 3 has role 'user'.*end with an assistant"),
    ({"messages": [CHAT[1], {"role": "assistant"}]}, "'messages'", "message 1 has no field"),
    ({"messages": [CHAT[1], {**CHAT[2], "content": " "}]}, "'messages'", "message 1 .*empty"),
]
GOOD = {"instruction": "Add.", "output": "5"}


@pytest.mark.parametrize(("record", "field", "error"), RECORD_ERRORS)
def test_a_bad_record_in_a_json_list_is_named_by_file_record_and_field(
    tmp_path: Path, record: object, field: str, error: str
) -> None:
    path = write(tmp_path / "data.json", json.dumps([GOOD, record], indent=2))
    with pytest.raises(InstructionDataError, match=error) as caught:
        load_instructions(path)
    assert str(caught.value).startswith(f"{path}: record 1: ")
    assert field in str(caught.value)


@pytest.mark.parametrize(("record", "field", "error"), RECORD_ERRORS)
def test_a_bad_record_in_json_lines_is_named_by_file_line_and_field(
    tmp_path: Path, record: object, field: str, error: str
) -> None:
    path = write(tmp_path / "data.jsonl", "\n".join([json.dumps(GOOD), "", json.dumps(record)]))
    with pytest.raises(InstructionDataError, match=error) as caught:
        load_instructions(path)
    assert str(caught.value).startswith(f"{path}:3: ")
    assert field in str(caught.value)


def test_a_file_that_is_not_json_is_named_by_line_and_column(tmp_path: Path) -> None:
    broken = write(tmp_path / "broken.json", '[\n  {"instruction": "Add.",\n  "output" "5"}\n]')
    with pytest.raises(InstructionDataError) as caught:
        load_instructions(broken)
    assert str(caught.value).startswith(f"{broken}:3: not valid JSON")
    assert "column 12" in str(caught.value)
    pretty = write(tmp_path / "pretty.jsonl", '{"instruction": "Add.", "output": "5"}\n{\n')
    with pytest.raises(InstructionDataError) as caught:
        load_instructions(pretty)
    assert str(caught.value).startswith(f"{pretty}:2: not valid JSON")
    assert "column 2" in str(caught.value) and "each line must be one JSON object" in str(
        caught.value)


def test_a_file_that_is_not_utf8_is_named_by_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"instruction": "a", "output": "b"}\n{"instruction": "caf\xe9"}\n')
    with pytest.raises(InstructionDataError, match=r":2: byte 0xe9 is not valid UTF-8"):
        load_instructions(path)


@pytest.mark.parametrize("text", ["", "\n \n", "[]", " [ ]\n"])
def test_an_empty_dataset_is_an_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "empty.json", text)
    with pytest.raises(InstructionDataError, match=f"{path}: holds no instruction records"):
        load_instructions(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        load_instructions(tmp_path / "nothing.json")


# --- A record as prompts and answers -----------------------------------------------------------


def test_an_instruction_record_is_its_prompt_then_its_output() -> None:
    record = InstructionRecord("Add.", "2, 3", "5")
    phi3 = get_prompt_style("phi3")
    prompt = "<|user|>\nAdd.\n\n2, 3<|end|>\n<|assistant|>\n"
    assert record_segments(record, phi3) == [Segment(prompt, False), Segment("5<|end|>", True)]
    assert record_prompt(record, phi3) == prompt
    assert record_reference(record) == "5"
    assert record_fields(record) == {"instruction": "Add.", "input": "2, 3", "output": "5"}


def test_a_conversation_is_answered_at_its_last_turn() -> None:
    record = Conversation(tuple(CHAT))
    chatml = get_prompt_style("chatml")
    assert record_segments(record, chatml) == chatml.segments(CHAT)
    assert record_prompt(record, chatml) == chatml.render(CHAT[:-1])
    assert record_reference(record) == "6"
    assert record_fields(record) == {"instruction": "And 3+3?", "input": "", "output": "6"}


def test_a_conversation_must_end_with_an_answer() -> None:
    with pytest.raises(ValueError, match="must end with an assistant message"):
        Conversation(tuple(CHAT[:2]))


# --- Splits -------------------------------------------------------------------------------------


def numbered(n: int) -> list[InstructionRecord]:
    return [InstructionRecord(f"Say {i}.", "", str(i)) for i in range(n)]


def test_the_books_sizes_and_a_seeded_shuffle() -> None:
    records = numbered(1100)
    splits = split_records(records, seed=123)
    assert splits.counts() == {"train": 935, "val": 55, "test": 110}
    parts = [splits.train, splits.val, splits.test]
    assert sorted(r.output for part in parts for r in part) == sorted(r.output for r in records)
    assert all(part == sorted(part, key=records.index) for part in parts)  # in file order
    assert splits.train[:50] != records[:50]  # shuffled before the cut
    assert split_records(records, seed=123) == splits
    assert split_records(records, seed=124).test != splits.test


@pytest.mark.parametrize(
    ("n", "fractions"), [(3, (0.85, 0.05, 0.1)), (4, (0.1, 0.1, 0.8)), (5, (0.2, 0.6, 0.2))]
)
def test_every_split_gets_a_record_from_three_on(n: int, fractions: tuple) -> None:
    counts = split_records(numbered(n), seed=0, fractions=fractions).counts()
    assert min(counts.values()) >= 1 and sum(counts.values()) == n


def test_too_few_records_or_bad_fractions_are_errors() -> None:
    with pytest.raises(ValueError, match="2 instruction records are too few to split"):
        split_records(numbered(2), seed=0)
    with pytest.raises(ValueError, match="sum to 1"):
        split_records(numbered(10), seed=0, fractions=(0.5, 0.2, 0.2))


def test_saved_splits_read_back(tmp_path: Path) -> None:
    records = [*numbered(8), Conversation(tuple(CHAT)), InstructionRecord("Add.", "2, 3", "5")]
    splits = split_records(records, seed=7, fractions=(0.6, 0.2, 0.2))
    save_instruction_splits(splits, tmp_path / "split")
    assert load_instruction_splits(tmp_path / "split") == splits
    report = json.loads((tmp_path / "split" / "split.json").read_text())
    assert report == {"seed": 7, "fractions": [0.6, 0.2, 0.2], "counts": splits.counts()}
    line = (tmp_path / "split" / "train.jsonl").read_text().splitlines()[0]
    assert json.loads(line).keys() in ({"instruction", "input", "output"}, {"messages"})


def test_a_split_changed_after_saving_is_refused(tmp_path: Path) -> None:
    save_instruction_splits(split_records(numbered(10), seed=0), tmp_path)
    test_file = tmp_path / "test.jsonl"
    test_file.write_text(test_file.read_text() + test_file.read_text())
    with pytest.raises(InstructionDataError, match="test.jsonl: holds 2 records where"):
        load_instruction_splits(tmp_path)
    with pytest.raises(FileNotFoundError, match="no split.json"):
        load_instruction_splits(tmp_path / "elsewhere")
