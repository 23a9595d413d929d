"""``scratchgpt evaluate judge --mode pairwise`` (:func:`.pairwise.judge_pairwise`).

Two runs' responses to the same prompts, compared by a judge asked in both orders: against
test_judge.py's scripted judge on 127.0.0.1 (its replies keyed by the ``answer-N`` in the
prompt), and once against our own ``scratchgpt serve`` over real HTTP.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

import pytest
import test_judge
from test_judge import ENTRIES, Reply, fast

from scratchgpt.evaluation.confidence import mean_ci95
from scratchgpt.evaluation.judge import JudgeError, JudgeSettings, judge_responses
from scratchgpt.evaluation.pairwise import (
    PAIRWISE_REASK,
    combine_verdicts,
    judge_pairwise,
    pair_entries,
    pairwise_prompt,
    parse_verdict,
)
from scratchgpt.evaluation.records import data_fingerprint

scripted = test_judge.scripted  # the fixtures: a scripted judge; scratchgpt serve of a tiny GPT
judge_server = test_judge.judge_server


def entries(count: int, who: str) -> list[dict[str, str]]:
    """``count`` prompts, each answered ``"<who> answer-N"`` (N: the prompt's number, which
    the scripted judge keys its replies by, whichever response is shown first)."""
    return [{"instruction": f"Name number {i}.", "input": "in words" if i % 2 else "",
             "output": f"Number {i}.", "response": f"{who} answer-{i}"} for i in range(count)]


def write(path: Path, items: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(items, indent=1), encoding="utf-8")
    return path


def pairwise(url: str, **changes: Any) -> JudgeSettings:
    return fast(url, mode="pairwise", **changes)


# --- Parsing and combining verdicts -------------------------------------------------------------


@pytest.mark.parametrize(("answer", "verdict"), [
    ("A", "A"), ("B", "B"), ("tie", "tie"), ("Tie.", "tie"), ("TIE", "tie"),
    ("b", "B"), ("[[A]]", "A"), ('"B".', "B"), ("**A**", "A"),  # a verdict alone, any case
    ("A. It is more complete.", "A"), ("B\n\nResponse A misses the point.", "B"),  # first
    ("Response B is better.", "B"), ("Verdict: A", "A"), ("It's a tie.", "tie"),  # only one
    ("A tie.", None), ("Response A is better than Response B.", None),  # two: ambiguous
    ("Both are good.", None), ("", None), ("AB", None), ("They are tied", None),
    ("a good answer", None),  # lower-case a and b count only alone
])
def test_a_verdict_is_read_only_when_the_answer_names_one(answer: str,
                                                         verdict: str | None) -> None:
    assert parse_verdict(answer) == verdict


@pytest.mark.parametrize(("first_order", "second_order", "verdict"), [
    # order 0 shows the first file's response as A; order 1 shows the second's as A
    ("B", "A", "win"), ("A", "B", "loss"), ("tie", "tie", "tie"),  # both orders agree
    ("A", "A", "tie"), ("B", "B", "tie"),  # the position won, not a response
    ("B", "tie", "tie"), ("tie", "A", "tie"), ("A", "tie", "tie"), ("tie", "B", "tie"),
])
def test_a_win_needs_both_orders(first_order: str, second_order: str, verdict: str) -> None:
    assert combine_verdicts(first_order, second_order) == verdict


def test_the_prompt_shows_the_task_the_reference_and_both_responses() -> None:
    entry = {"instruction": "Add.", "input": "2+2", "output": "4", "response": "unused"}
    prompt = pairwise_prompt(entry, "five", "four")
    assert prompt.index("### Instruction:\nAdd.") < prompt.index("### Input:\n2+2") < \
        prompt.index("Correct output:\n4") < prompt.index("Response A:\nfive") < \
        prompt.index("Response B:\nfour")
    assert prompt.endswith("Respond with A, B or tie only.")
    assert "not their length or the order" in prompt and "unused" not in prompt
    bare = pairwise_prompt({**entry, "output": ""}, "five", "four")
    assert "Correct output" not in bare and "closer to the correct output" not in bare


def test_entries_pair_by_prompt_in_any_order(tmp_path: Path) -> None:
    first = entries(4, "first") + [entries(1, "again")[0]]  # prompt 0 twice
    second = list(reversed(entries(4, "second"))) + [entries(1, "more")[0]]
    assert pair_entries(first, second, tmp_path / "a", tmp_path / "b") == [3, 2, 1, 0, 4]


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s[:2] + [{**s[2], "instruction": "Name a colour."}] + s[3:],
     r"entry 2 of {a} \(instruction 'Name number 2\.'\) is not in {b}"),
    (lambda s: [{**s[0], "input": "in digits"}] + s[1:],
     r"entry 0 of {a} \(instruction 'Name number 0\.'\) is not in {b}"),
    (lambda s: s[:3], r"{a} \(4 entries\) and {b} \(3 entries\) do not hold the same prompts"
                      r".*entry 3 of {a}"),
    (lambda s: s + entries(6, "second")[5:], r"entry 4 of {b} \(instruction 'Name number 5\.' "
                                             r"with input 'in words'\) is not in {a}"),
])
def test_files_of_different_prompts_are_refused(tmp_path: Path, change: Any,
                                                message: str) -> None:
    a = write(tmp_path / "a" / "test-responses.json", entries(4, "first"))
    b = write(tmp_path / "b" / "test-responses.json", change(entries(4, "second")))
    pattern = message.format(a=re.escape(str(a)), b=re.escape(str(b)))
    with pytest.raises(JudgeError, match=pattern + ".*same test prompts"):
        judge_pairwise(a, b, pairwise("http://127.0.0.1:9"), progress=False)


def test_each_entry_point_takes_its_own_modes(tmp_path: Path) -> None:
    a = write(tmp_path / "a.json", entries(2, "first"))
    with pytest.raises(JudgeError, match="needs the pairwise mode, not 'score'"):
        judge_pairwise(a, a, fast("http://127.0.0.1:9"), progress=False)
    with pytest.raises(JudgeError, match="'pairwise' compares two responses files"):
        judge_responses(a, pairwise("http://127.0.0.1:9"), progress=False)
    with pytest.raises(ValueError, match="gives verdicts, not scores"):
        _ = pairwise("http://127.0.0.1:9").scale


# --- Against the scripted judge -----------------------------------------------------------------

SCRIPT = {
    0: ["B", "A"],  # the second's response preferred in both orders: a win
    1: ["A", "B"],  # the first's in both: a loss
    2: ["A", "A"],  # always the first position: a tie, inconsistent
    3: ["tie", "Response A is better."],  # a tie and a win: a tie, inconsistent
    4: ["Both have merit.", "B", "A"],  # re-asked in order 0, then a win
    5: ["No idea.", "Still none.", "A"],  # no verdict in order 0 after the re-ask: unjudged
    7: ["tie", "Tie."],  # a tie in both orders
}


def test_both_orders_are_asked_and_combined(tmp_path: Path, scripted: Any) -> None:
    judge = scripted({**{i: [Reply(text) for text in replies] for i, replies in SCRIPT.items()},
                      6: [Reply("the prompt is too long", status=400)]})
    first = write(tmp_path / "start" / "test-responses.json", entries(8, "first"))
    second = write(tmp_path / "dpo" / "test-responses.json",
                   list(reversed(entries(8, "second"))))  # the same prompts, another order
    result = judge_pairwise(first, second, pairwise(judge.url), progress=False)

    by = result.entries
    assert [e.index for e in by] == list(range(8))
    assert [e.second_index for e in by] == [7, 6, 5, 4, 3, 2, 1, 0]
    assert [e.status for e in by] == ["judged"] * 5 + ["unjudged", "failed", "judged"]
    assert [e.verdict for e in by] == ["win", "loss", "tie", "tie", "win", None, None, "tie"]
    assert [e.orders for e in by[:6]] == [["B", "A"], ["A", "B"], ["A", "A"], ["tie", "A"],
                                          ["B", "A"], [None, "A"]]
    assert by[4].answers == [["Both have merit.", "B"], ["A"]]
    assert by[5].answers == [["No idea.", "Still none."], ["A"]]
    assert "HTTP 400" in by[6].error and len(judge.chats(6)) == 1

    # what the judge was asked: the first file's response as A, then the second's as A
    reference = entries(8, "first")
    for i in (0, 1, 7):
        asked = [seen.body["messages"] for seen in judge.chats(i)]
        assert asked == [
            [{"role": "user", "content": pairwise_prompt(reference[i], f"first answer-{i}",
                                                         f"second answer-{i}")}],
            [{"role": "user", "content": pairwise_prompt(reference[i], f"second answer-{i}",
                                                         f"first answer-{i}")}]]
    reask = [seen.body["messages"] for seen in judge.chats(4)]
    assert len(reask) == 3 and reask[1][1:] == [
        {"role": "assistant", "content": "Both have merit."},
        {"role": "user", "content": PAIRWISE_REASK}]
    assert reask[1][0] == reask[0][0] and "Response A:\nsecond answer-4" in reask[2][0]["content"]
    assert judge.chats(0)[0].body["options"] == {"seed": 123, "temperature": 0, "num_ctx": 4096}

    # the record, in the second run's directory, named after the first's
    assert result.path == tmp_path / "dpo" / "eval" / "judge-pairwise-judge-vs-start.json"
    record = json.loads(result.path.read_text())
    points = [1, 0, 0.5, 0.5, 1, 0.5]
    low, high = mean_ci95(points)
    assert record["evaluation"] == "judge" and record["model"] == str(tmp_path / "dpo")
    assert record["judge"]["mode"] == "pairwise" and record["complete"] is True
    assert {k: record[k] for k in ("judged", "total", "wins", "ties", "losses", "unjudged",
                                   "failed", "pending")} == {
        "judged": 6, "total": 8, "wins": 2, "ties": 3, "losses": 1, "unjudged": 1,
        "failed": 1, "pending": 0}
    assert record["win_rate"] == pytest.approx(statistics.fmean(points))
    assert record["win_rate_ci95"] == pytest.approx([max(0, low), min(1, high)])
    assert record["position_consistency"] == pytest.approx(4 / 6)
    assert record["responses"] == [str(first), str(second)]
    assert record["data"] == data_fingerprint([first, second])
    assert record["entries"][0] == {
        "index": 0, "instruction": "Name number 0.", "second_index": 7, "verdict": "win",
        "orders": ["B", "A"], "status": "judged", "answers": [["B"], ["A"]], "error": None}
    summary = result.summary()
    assert f"{second} against {first}" in summary
    assert "6 judged of 8 (1 unjudged, 1 failed)" in summary
    assert "the second: wins 2, ties 3, losses 1; win rate 58.3% (ties count half)" in summary
    assert "position consistency 66.7%: the same verdict in both orders for 4 of 6" in summary
    assert "retry the failed entries" in summary and str(result.path) in summary

    # the same call again asks only about the failed entry, which now answers
    judge.script[6] = [Reply("B"), Reply("B")]
    asked = len(judge.chats())
    again = judge_pairwise(first, second, pairwise(judge.url), progress=False)
    assert [s.entry for s in judge.chats()[asked:]] == [6, 6]
    assert again.resumed == 7 and again.entries[6].verdict == "tie"
    assert [e.verdict for e in again.entries] == [e.verdict for e in by[:6]] + ["tie", "tie"]
    # a score-mode run may not resume from it, and files in the other order are another run
    with pytest.raises(JudgeError, match=r"another judge run: mode 'pairwise' \(now 'score'\)"):
        judge_responses(second, fast(judge.url), result.path, progress=False)
    with pytest.raises(JudgeError, match=r"another judge run: responses sha256"):
        judge_pairwise(second, first, pairwise(judge.url), result.path, progress=False)


def test_evaluate_judge_pairwise_command(tmp_path: Path, scripted: Any, capsys: Any) -> None:
    """A DPO run's layout: the starting model's and the tuned model's responses in one run
    directory; the record is named after the first file."""
    from scratchgpt.cli import main

    judge = scripted({0: [Reply("B"), Reply("A")], 1: [Reply("A"), Reply("A")]})
    run = tmp_path / "dpo"
    start = write(run / "start-responses.json", entries(2, "first"))
    tuned = write(run / "test-responses.json", entries(2, "second"))
    flags = ["--judge-url", judge.url, "--judge-model", "judge", "--attempts", "2"]
    assert main(["evaluate", "judge", "--mode", "pairwise", "--responses", str(start),
                 str(tuned), *flags, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["wins"], record["ties"], record["losses"], record["win_rate"]) == \
        (1, 1, 0, 0.75)
    out = run / "eval" / "judge-pairwise-judge-vs-start-responses.json"
    assert json.loads(out.read_text()) == record
    assert main(["evaluate", "judge", "--mode", "pairwise", "--responses", str(start),
                 str(tuned), *flags]) == 0  # resumed: nothing asked, the summary printed
    printed = capsys.readouterr()
    assert "2 judged of 2 (0 unjudged, 0 failed)" in printed.out
    assert "win rate 75.0%" in printed.out and "resuming" in printed.err

    assert main(["evaluate", "judge", "--mode", "pairwise", "--responses", str(start),
                 *flags]) == 2
    assert "--mode pairwise compares two responses files, got 1: give --responses FIRST " \
           "SECOND" in capsys.readouterr().err
    assert main(["evaluate", "judge", "--responses", str(start), str(tuned), *flags]) == 2
    assert "--mode score judges one responses file, got 2" in capsys.readouterr().err
    (run / "other.json").write_text(json.dumps(entries(3, "x")), encoding="utf-8")
    assert main(["evaluate", "judge", "--mode", "pairwise", "--responses", str(start),
                 str(run / "other.json"), *flags]) == 2
    error = capsys.readouterr().err
    assert str(start) in error and str(run / "other.json") in error
    assert "'Name number 2.'" in error


# --- Our own server as the judge ----------------------------------------------------------------


def test_our_served_model_judges_pairwise(judge_server: tuple[Any, str], tmp_path: Path) -> None:
    """The tiny random model answers gibberish over real HTTP: each order's verdict is what
    parse_verdict reads in its answers (one re-ask at most), and no entry fails."""
    server, name = judge_server
    first = write(tmp_path / "a" / "test-responses.json", ENTRIES)
    second = write(tmp_path / "b" / "test-responses.json",
                   [{**e, "response": e["output"]} for e in reversed(ENTRIES)])
    settings = JudgeSettings(url=server.url + "/v1", model=name, mode="pairwise", max_tokens=4,
                             concurrency=2, attempts=2, backoff=0.01, timeout=60)
    result = judge_pairwise(first, second, settings, progress=False)
    assert result.count("failed") == 0, [e.error for e in result.entries]
    for entry in result.entries:
        assert len(entry.answers) == 2
        for verdict, answers in zip(entry.orders, entry.answers, strict=True):
            parsed = [parse_verdict(a) for a in answers]
            assert verdict == parsed[-1] and parsed[:-1] in ([], [None])
            assert len(answers) == (1 if verdict else 2)
        if entry.status == "judged":
            assert entry.verdict == combine_verdicts(*entry.orders)
        else:
            assert entry.status == "unjudged" and None in entry.orders
    assert json.loads(result.path.read_text())["total"] == 3
