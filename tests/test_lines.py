"""A line is what a person sees: files read as one item per line are cut at ``\\n`` (or
``\\r\\n``) only, never at the other breaks ``str.splitlines()`` knows (``\\x0b``, form feed,
``\\x1c``-``\\x1e``, ``\\x85``, U+2028, U+2029), which real texts hold inside a line
(scratchgpt.data.corpus.text_lines)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scratchgpt.classify import Classifier
from scratchgpt.cli import main
from scratchgpt.data.corpus import text_lines
from scratchgpt.evaluation.responses import load_responses

# Every break str.splitlines() cuts at besides \n and \r, each inside a line of text.
INNER_BREAKS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
LINES = [f"Call now{brk}to claim your prize {i}" for i, brk in enumerate(INNER_BREAKS)]


def test_text_lines_cut_at_newlines_only() -> None:
    text = "".join(f"{line}\n" for line in LINES)
    assert len(text.splitlines()) == 2 * len(LINES)  # what went wrong before
    assert text_lines(text) == LINES
    assert text_lines("a\r\nb\n\nc") == ["a", "b", "", "c"]  # Windows' ends; no final \n
    assert text_lines("a\rb\n") == ["a\rb"]  # a lone \r ends no line
    assert text_lines("") == [] and text_lines("\n") == [""]


def test_classify_file_answers_each_line_once_and_in_order(
    classifier_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = tmp_path / "messages.txt"
    lines = [*LINES, "see you at the station"]
    messages.write_bytes(("\r\n".join(lines[:2]) + "\n" + "\n".join(lines[2:]) + "\n")
                         .encode("utf-8"))
    assert main(["classify", "--model", str(classifier_run), "--file", str(messages),
                 "--json"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.split("\n") if line]
    assert len(answers) == len(lines)
    expected = Classifier.from_run(classifier_run).predict(lines)
    for answer, prediction in zip(answers, expected, strict=True):
        assert answer["probabilities"] == pytest.approx(prediction.probabilities, abs=1e-6)
    # Each text whole, not cut at its inner break: the same as the line classified alone.
    alone = Classifier.from_run(classifier_run).predict([lines[6]])[0]
    assert answers[6]["probabilities"] == pytest.approx(alone.probabilities, abs=1e-6)


def test_json_lines_responses_keep_breaks_that_json_allows_raw(tmp_path: Path) -> None:
    entries = [{"instruction": f"Say it{brk}twice.", "input": "", "output": f"a{brk}b",
                "response": f"c{brk}d"} for brk in ("\x85", "\u2028", "\u2029")]
    path = tmp_path / "responses.jsonl"
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries),
                    encoding="utf-8")
    assert load_responses(path) == entries
