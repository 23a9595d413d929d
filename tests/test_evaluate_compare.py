"""Evaluation records (``RUN/eval/NAME.json``) and ``scratchgpt evaluate compare``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from scratchgpt.cli import main
from scratchgpt.evaluation.compare import compare_runs
from scratchgpt.evaluation.records import (
    data_fingerprint,
    make_record,
    read_records,
    write_record,
)


def _record(run: Path, name: str, evaluation: str, data: Path, **result: object) -> None:
    record = make_record(evaluation, run, dict(result), data=data_fingerprint(data),
                         command=f"scratchgpt evaluate {evaluation} --model {run}")
    write_record(run / "eval", name, record)


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Two runs with MMLU and perplexity records on the same data, one with a fine-tuning's
    eval.json too; a third run evaluated on other text."""
    text, other = tmp_path / "held-out.txt", tmp_path / "other.txt"
    text.write_text("the same held-out text\n", encoding="utf-8")
    other.write_text("different text\n", encoding="utf-8")
    a, b, c = (tmp_path / name for name in ("base", "tuned", "elsewhere"))
    _record(a, "mmlu-0shot", "mmlu", text, accuracy=0.25, macro=0.24, subjects={"x": 0.25})
    _record(b, "mmlu-0shot", "mmlu", text, accuracy=0.30, macro=0.31, subjects={"x": 0.3})
    _record(a, "perplexity-held-out", "perplexity", text, perplexity=40.0, tokens=1000)
    _record(b, "perplexity-held-out", "perplexity", text, perplexity=30.5, tokens=1000)
    _record(c, "perplexity-held-out", "perplexity", other, perplexity=20.0, tokens=900)
    (b / "eval.json").write_text(json.dumps({"rouge_l_f1": 0.31, "exact_match": 0.05,
                                             "count": 110}), encoding="utf-8")
    return a, b, c


def test_a_record_says_what_it_is_of_and_holds_the_result_at_its_top(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "test").mkdir(parents=True)
    (data / "test" / "a.csv").write_bytes(b"q,1,2,3,4,A\n")
    (data / "dev.csv").write_bytes(b"dev\n")
    fingerprint = data_fingerprint(data)
    digest = hashlib.sha256(b"dev.csv\0dev\ntest/a.csv\0q,1,2,3,4,A\n").hexdigest()
    assert fingerprint == {"path": str(data), "files": 2, "bytes": 16, "sha256": digest}
    record = make_record("mmlu", "runs/x", {"accuracy": 0.5}, data=fingerprint,
                         command="scratchgpt evaluate mmlu")
    assert list(record)[:5] == ["evaluation", "model", "command", "data", "time"]
    assert record["accuracy"] == 0.5 and record["time"].endswith("+00:00")
    path = write_record(tmp_path / "run" / "eval", "mmlu-0shot", record)
    assert json.loads(path.read_text(encoding="utf-8")) == record
    (path.parent / "notes.json").write_text("[1, 2]", encoding="utf-8")  # not a record
    (path.parent / "broken.json").write_text("{", encoding="utf-8")
    assert read_records(tmp_path / "run") == {"mmlu-0shot": record}
    with pytest.raises(ValueError, match="record's own keys"):
        make_record("mmlu", "m", {"time": 3})


def test_compare_puts_every_run_and_headline_metric_in_one_table(runs) -> None:
    a, b, c = runs
    comparison = compare_runs([a, b, c])
    assert comparison.columns == ["mmlu-0shot accuracy", "mmlu-0shot macro",
                                  "perplexity-held-out perplexity", "finetune rouge_l_f1",
                                  "finetune exact_match"]
    assert comparison.values[str(a)] == {"mmlu-0shot accuracy": 0.25, "mmlu-0shot macro": 0.24,
                                         "perplexity-held-out perplexity": 40.0}
    assert comparison.values[str(b)]["finetune rouge_l_f1"] == 0.31
    assert comparison.mixed_data == {"perplexity-held-out perplexity"}  # c saw other text
    table = comparison.table().splitlines()
    assert "perplexity-held-out perplexity (mixed data)" in table[0]
    assert table[2].split()[:3] == [str(a), "0.2500", "0.2400"]
    assert "0.3000*" in table[3]  # higher accuracy is better
    assert "20.0000*" in table[4]  # lower perplexity is better
    assert table[2].split()[-1] == "-"  # base has no fine-tuning metrics


def test_evaluate_compare_cli_prints_the_table_json_and_a_plot(runs, tmp_path, capsys) -> None:
    a, b, _ = runs
    assert main(["evaluate", "compare", str(a), str(b), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["runs"] == [str(a), str(b)] and printed["mixed_data"] == []
    plot = tmp_path / "compare.png"
    assert main(["evaluate", "compare", str(a), str(b), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "mmlu-0shot accuracy" in out and f"saved {plot}" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_says_what_to_do_with_runs_that_have_no_evaluations(tmp_path, capsys) -> None:
    (tmp_path / "fresh").mkdir()
    assert main(["evaluate", "compare", str(tmp_path / "fresh")]) == 0
    assert "run `scratchgpt evaluate ...` on them first" in capsys.readouterr().out
    assert main(["evaluate", "compare", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
