"""Pairwise judging: two runs' responses to the same prompts compared by a judge model, each
pair asked in both orders (MT-Bench's and AlpacaEval's way).

``scratchgpt evaluate judge --mode pairwise`` (:func:`judge_pairwise`) compares two responses
files, say an instruction-tuned run's and the DPO run made from it: the *second* file's
responses against the *first*'s. Their entries are paired by ``(instruction, input)``, in any
order (:func:`pair_entries`); files that do not hold the same prompts are refused. For each pair
the judge sees the task, the reference (the first file's ``output``, when there is one) and the
two responses as "Response A" and "Response B", and answers "A", "B" or "tie"
(:func:`pairwise_prompt`).

**Both orders.** Judges favour a position (often the first shown), so each pair is asked
**twice, in both orders** (the first file's response as A, then the second's as A), and the
verdict must survive the swap (:func:`combine_verdicts`): the second file **wins** an entry only
when the judge prefers its response in both orders, **loses** it when the judge prefers the
other in both, and otherwise it is a **tie**. The share of judged entries whose two orders agree
is the **position consistency**: near 1, the judge judges the responses; low, it mostly picks a
position.

**The win rate** is ``(wins + ties / 2) / judged``, the mean of per-entry points 1, ½ and 0,
with the same t interval over those points as a score run's mean
(:mod:`scratchgpt.evaluation.confidence`), clipped to [0, 1].

**Parsing.** An answer gives a verdict when it is "A", "B" or "tie" alone, starts with one, or
names exactly one of them (:func:`parse_verdict`); one without gets one re-ask, "Answer with A,
B or tie only.", and an order still without one leaves its entry **unjudged** (kept, with the
answers, and counted, as a score run's unscored entries are).

The judge is asked, retried and run in parallel by :mod:`scratchgpt.evaluation.judge`, whose
docstring says how; this module adds the prompt, the verdicts and the record.

**The record** (``SECOND_RUN/eval/judge-pairwise-<judge-model>-vs-<first>.json`` by default,
``<first>`` the first file's run directory, or its name when both files share one:
:func:`default_out`) is saved and resumed as a score run's is, from the sha256 of both files. It
holds ``judged``, ``total``, ``wins``, ``ties``, ``losses`` (the second file's), ``win_rate``,
``win_rate_ci95``, ``position_consistency``, ``unjudged``, ``failed``, ``pending``,
``complete``, the judge's settings, ``responses`` (the two files, first and second), and per
entry its ``index`` (in the first file) and ``second_index``, ``instruction``, ``verdict`` (win,
tie or loss; null unless judged), ``orders`` (the judge's verdict in each order: A, B, tie or
null), ``status`` (``judged``, ``unjudged``, ``failed`` or ``pending``), the raw ``answers`` of
each order and a failure's ``error``.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scratchgpt.evaluation.confidence import mean_ci95
from scratchgpt.evaluation.judge import (
    FAILED,
    PENDING,
    Failed,
    JudgeClient,
    JudgeError,
    Judging,
    ask,
    format_input,
    judge,
    output_path,
    resolve_endpoint,
)
from scratchgpt.evaluation.judge_settings import JudgeSettings
from scratchgpt.evaluation.responses import load_responses

PAIRWISE_REASK = "Answer with A, B or tie only."
JUDGED, UNJUDGED = "judged", "unjudged"  # a verdict from both orders, or not
WIN, TIE, LOSS = "win", "tie", "loss"  # the second responses against the first
POINTS = {WIN: 1.0, TIE: 0.5, LOSS: 0.0}  # the win rate is their mean


# --- The prompt and the verdicts ----------------------------------------------------------------


def pairwise_prompt(entry: dict[str, Any], response_a: str, response_b: str) -> str:
    """What the judge is asked about two responses to one entry (``instruction``, ``input``,
    and ``output``, the reference, left out when empty), shown as Response A and Response B."""
    reference = f"Correct output:\n{entry['output']}\n\n" if entry.get("output") else ""
    return ("Compare two responses to a task and say which is better.\n\n"
            f"Task:\n{format_input(entry)}\n\n"
            f"{reference}"
            f"Response A:\n{response_a}\n\n"
            f"Response B:\n{response_b}\n\n"
            "Which response completes the task better (more correct, more complete"
            + (", closer to the correct output" if reference else "")
            + ")? Judge what the responses say, not their length or the order they are "
            "shown in.\n"
            "Respond with A, B or tie only.")


_VERDICT_ALONE = re.compile(r"\W*(a|b|tie)\W*", re.IGNORECASE)  # "B", "[[A]]", "Tie."
_VERDICT_FIRST = re.compile(r"\W*(A|B|(?i:tie))(?![ \t]*\w)")  # "A. It is more complete"
_VERDICT_WORD = re.compile(r"(?<!\w)(A|B|(?i:tie))(?!\w)")  # "Response B is better"


def parse_verdict(answer: str) -> str | None:
    """The judge's verdict in ``answer``: ``"A"``, ``"B"``, ``"tie"``, or None. It counts when
    the answer is a verdict alone (any case: ``b``, ``[[A]]``, ``Tie.``), starts with one
    (``A. It is more complete``), or names exactly one (``Response B is better``: capital A and
    B as words, tie in any case); an answer naming two (``A tie``, ``B, not A``) is ambiguous."""
    lead = _VERDICT_ALONE.fullmatch(answer) or _VERDICT_FIRST.match(answer)
    named = {lead.group(1)} if lead else {m.group(1) for m in _VERDICT_WORD.finditer(answer)}
    verdicts = {"tie" if word.lower() == "tie" else word.upper() for word in named}
    return verdicts.pop() if len(verdicts) == 1 else None


def second_verdict(order: int, verdict: str) -> str:
    """What the judge's verdict (A, B or tie) in ``order`` says of the second responses: order
    0 shows the first file's response as A, order 1 the second's."""
    if verdict == "tie":
        return TIE
    return WIN if verdict == ("B" if order == 0 else "A") else LOSS


def combine_verdicts(first_order: str, second_order: str) -> str:
    """An entry's verdict for the second responses from the judge's in both orders: a win or
    a loss only when both orders say so, else a tie (a verdict that flips with the order is
    the position talking, not the responses)."""
    verdicts = second_verdict(0, first_order), second_verdict(1, second_order)
    return verdicts[0] if verdicts[0] == verdicts[1] else TIE


# --- Results ------------------------------------------------------------------------------------


@dataclass
class PairedEntry:
    """One prompt judged pairwise: its ``index`` in the first file and ``second_index`` in the
    second; the judge's verdict in each order (``orders``: A, B, tie, or None for no verdict;
    the first file's response shown as A, then the second's) with each order's raw
    ``answers``; and the entry's ``verdict`` for the second responses (win, tie or loss; None
    unless judged)."""

    index: int
    instruction: str
    second_index: int
    verdict: str | None = None
    orders: list[str | None] = field(default_factory=list)
    status: str = PENDING
    answers: list[list[str]] = field(default_factory=list)
    error: str | None = None

    @property
    def done(self) -> bool:
        """Judged for good: judged or unjudged (failed and pending ones are asked again)."""
        return self.status in (JUDGED, UNJUDGED)

    @property
    def consistent(self) -> bool:
        """Both orders gave the same verdict (the judge was not swayed by the position)."""
        if len(self.orders) != 2 or None in self.orders:
            return False
        first, second = self.orders
        return second_verdict(0, first) == second_verdict(1, second)


@dataclass(kw_only=True)
class PairwiseResult(Judging[PairedEntry]):
    """A pairwise judge run: the second responses (``responses_path``, whose run directory
    keeps the record) against the first (``first_path``), entry by entry."""

    first_path: Path

    def tally(self) -> dict[str, int]:
        return {"wins": self.verdicts(WIN), "ties": self.verdicts(TIE),
                "losses": self.verdicts(LOSS), "unjudged": self.count(UNJUDGED),
                "failed": self.count(FAILED)}

    def verdicts(self, verdict: str) -> int:
        """How many judged entries the second responses won, tied or lost."""
        return sum(e.status == JUDGED and e.verdict == verdict for e in self.entries)

    @property
    def points(self) -> list[float]:
        """Each judged entry's points for the second responses: 1 a win, ½ a tie, 0 a loss."""
        return [POINTS[e.verdict] for e in self.entries if e.status == JUDGED and e.verdict]

    def win_rate_ci95(self) -> tuple[float, float] | None:
        """The t interval of the win rate (the mean of :attr:`points`), clipped to [0, 1]."""
        ci = mean_ci95(self.points)
        return (max(0.0, ci[0]), min(1.0, ci[1])) if ci else None

    @property
    def position_consistency(self) -> float | None:
        """The share of judged entries whose verdict did not change with the order."""
        judged = [e for e in self.entries if e.status == JUDGED]
        return sum(e.consistent for e in judged) / len(judged) if judged else None

    def to_dict(self) -> dict[str, Any]:
        """The result's fields (the record's, without the keys the record adds itself):
        ``judged``, ``total``, the second responses' ``wins``, ``ties``, ``losses`` and
        ``win_rate`` with its interval, the ``position_consistency``, the counts, the judge's
        settings, both responses files (first, second) and every entry."""
        points, ci = self.points, self.win_rate_ci95()
        return {
            "judged": len(points), "total": len(self.entries),
            "wins": self.verdicts(WIN), "ties": self.verdicts(TIE),
            "losses": self.verdicts(LOSS),
            "win_rate": statistics.fmean(points) if points else None,
            "win_rate_ci95": list(ci) if ci else None,
            "ci_method": "student-t",
            "position_consistency": self.position_consistency,
            "unjudged": self.count(UNJUDGED), "failed": self.count(FAILED),
            "pending": self.count(PENDING), "complete": self.complete,
            "judge": self.judge_settings(),
            "responses": [str(self.first_path), str(self.responses_path)],
            "entries": [asdict(entry) for entry in self.entries],
        }

    def summary(self) -> str:
        """What a person reads: the counts, wins, ties and losses, the win rate with its
        interval, the position consistency, the file."""
        settings, points = self.settings, self.points
        lines = [f"judge {settings.model} ({self.endpoint.protocol}, pairwise, both orders): "
                 f"{self.responses_path} against {self.first_path}",
                 self._counts_line(JUDGED, UNJUDGED)]
        if points:
            ci = self.win_rate_ci95()
            interval = (f", 95% CI {ci[0]:.1%} to {ci[1]:.1%} (t interval)" if ci
                        else ", no interval from one entry")
            consistent = sum(e.consistent for e in self.entries if e.status == JUDGED)
            lines += [f"the second: wins {self.verdicts(WIN)}, ties {self.verdicts(TIE)}, "
                      f"losses {self.verdicts(LOSS)}; win rate "
                      f"{statistics.fmean(points):.1%} (ties count half){interval}",
                      f"position consistency {consistent / len(points):.1%}: the same verdict "
                      f"in both orders for {consistent} of {len(points)}"]
        lines += self._failures()
        lines.append(f"written: {self.path}")
        return "\n".join(lines)


# --- Reading the responses ----------------------------------------------------------------------


def _shown(entry: dict[str, str]) -> str:
    """An entry's prompt, short enough for an error message."""
    text = entry["instruction"] if len(entry["instruction"]) <= 80 else (
        entry["instruction"][:77] + "...")
    return f"instruction {text!r}" + (f" with input {entry['input'][:40]!r}"
                                      if entry["input"] else "")


def pair_entries(first: Sequence[dict[str, str]], second: Sequence[dict[str, str]],
                 first_path: Path, second_path: Path) -> list[int]:
    """For each entry of ``first``, the index of the entry of ``second`` with the same
    ``(instruction, input)``, in whatever order the files hold them (a prompt that appears k
    times pairs in order of appearance); files that do not hold the same prompts are refused,
    naming both and a prompt that only one of them has."""
    waiting: dict[tuple[str, str], list[int]] = {}
    for j, entry in enumerate(second):
        waiting.setdefault((entry["instruction"], entry["input"]), []).append(j)
    why = (f"{first_path} ({len(first)} entries) and {second_path} ({len(second)} entries) do "
           "not hold the same prompts, so their responses cannot be compared: ")
    advice = ("; pairwise mode compares two runs' responses to the same test prompts (each "
              "run's test-responses.json from the same data)")
    pairs = []
    for i, entry in enumerate(first):
        matches = waiting.get((entry["instruction"], entry["input"]))
        if not matches:
            raise JudgeError(f"{why}entry {i} of {first_path} ({_shown(entry)}) is not in "
                             f"{second_path}{advice}")
        pairs.append(matches.pop(0))
    left = sorted(j for matches in waiting.values() for j in matches)
    if left:
        raise JudgeError(f"{why}entry {left[0]} of {second_path} ({_shown(second[left[0]])}) "
                         f"is not in {first_path}{advice}")
    return pairs


# --- Asking the judge ---------------------------------------------------------------------------


def judge_pair(client: JudgeClient, first: dict[str, str], second: dict[str, str], index: int,
               second_index: int) -> PairedEntry:
    """Ask the judge about two responses to one prompt (the task and reference: ``first``'s) in
    both orders, the first's response as A, then the second's; one re-ask for an answer
    without a verdict. A verdict for the second: :func:`combine_verdicts`."""
    paired = PairedEntry(index, first["instruction"], second_index)
    try:
        for shown in ((first["response"], second["response"]),
                      (second["response"], first["response"])):
            paired.answers.append([])
            paired.orders.append(ask(client, pairwise_prompt(first, *shown), parse_verdict,
                                     PAIRWISE_REASK, paired.answers[-1]))
    except Failed as err:
        paired.status, paired.error = FAILED, str(err)
        return paired
    order_a, order_b = paired.orders
    if order_a is None or order_b is None:
        paired.status = UNJUDGED
    else:
        paired.status, paired.verdict = JUDGED, combine_verdicts(order_a, order_b)
    return paired


def default_out(second_path: Path, judge_model: str, first_path: Path) -> Path:
    """``eval/judge-pairwise-<judge model>-vs-<first>.json`` beside the second responses (in
    their run directory), ``<first>`` the first file's run directory, or its file name (no
    suffix) when both files share one."""
    from scratchgpt.evaluation.records import EVAL_DIR, record_name

    other = first_path.stem if first_path.parent.resolve() == second_path.parent.resolve() else (
        first_path.resolve().parent.name)
    name = record_name("judge-pairwise", f"{judge_model}-vs-{other}")
    return second_path.parent / EVAL_DIR / f"{name}.json"


def judge_pairwise(first_path: str | Path, second_path: str | Path, settings: JudgeSettings,
                   out_path: str | Path | None = None, *, progress: bool = True,
                   command: str | None = None) -> PairwiseResult:
    """Judge the responses of ``second_path`` against those of ``first_path``, prompt by prompt
    and in both orders (see the module docstring; ``settings.mode`` must be ``pairwise``),
    resuming from ``out_path`` (default :func:`default_out`, in the second file's run
    directory) if an earlier run left it. On Ctrl-C the judged entries are saved and
    ``KeyboardInterrupt`` goes on up."""
    from scratchgpt.evaluation.records import data_fingerprint

    if settings.mode != "pairwise":
        raise JudgeError(f"judge_pairwise needs the pairwise mode, not {settings.mode!r}")
    first_path, second_path = Path(first_path), Path(second_path)
    first, second = load_responses(first_path), load_responses(second_path)
    pairs = pair_entries(first, second, first_path, second_path)
    out = output_path(out_path, default_out(second_path, settings.model, first_path))
    result = PairwiseResult(settings, resolve_endpoint(settings.url, settings.protocol),
                            second_path, [PairedEntry(i, e["instruction"], pairs[i])
                                          for i, e in enumerate(first)],
                            out, data_fingerprint([first_path, second_path]), command,
                            first_path=first_path)
    judge(result, lambda client, i: judge_pair(client, first[i], second[pairs[i]], i,
                                               pairs[i]), progress)
    return result
