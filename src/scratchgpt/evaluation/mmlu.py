"""MMLU (Hendrycks et al., 2021, "Measuring Massive Multitask Language Understanding"): 57
subjects of four-choice questions, scored exactly as lm-evaluation-harness's ``mmlu`` task.

**The data.** The original release (``data.tar``, ``scratchgpt download mmlu``) has one
headerless CSV per subject and split: ``data/dev/SUBJECT_dev.csv`` (5 questions, the few-shot
examples), ``data/test/SUBJECT_test.csv`` (the questions scored); a row is ``question, A, B,
C, D, answer letter``. Hugging Face's ``cais/mmlu`` holds the same as parquet files
(``all/test-*.parquet`` or ``SUBJECT/test-*.parquet``, columns ``question``, ``subject``,
``choices``, ``answer`` 0-3). :func:`load_mmlu` reads either.

**The prompt** (:func:`mmlu_prompt`). A header naming the subject, the first ``shots`` dev
questions in file order with their answers, then the question::

    The following are multiple choice questions (with answers) about astronomy.

    What is true for a type-Ia supernova?
    A. This type occurs in binary systems.
    ...
    D. This type occurs in young galaxies.
    Answer: A

    Why isn't there a planet where the asteroid belt is located?
    A. ...
    Answer:

**The score.** No text is generated. The model is asked how likely each answer letter is as
the continuation — the log-probability of the tokens of ``" A"``, ``" B"``, ``" C"``,
``" D"`` after the prompt — and the most likely letter is its answer (the first, in a tie).
The prompt's ids are those the model's own tokenizer gives, as transformers' does: Llama 3's
and Gemma 3's begin with their BOS token (:func:`encode`). A prompt longer than the model's
context loses tokens from its start, as lm-evaluation-harness trims it. Four choices make 25%
the accuracy of guessing; GPT-2 124M scores about 26%.

**The numbers.** Accuracy per subject; per category (STEM, humanities, social sciences,
other: lm-evaluation-harness's groups), over all of its questions; and overall both *micro*
(every question counts once: lm-evaluation-harness's ``mmlu`` figure) and *macro* (the mean
of the subject accuracies: every subject counts once, as the MMLU paper averages).

:func:`score_continuations` is the general piece underneath: the log-likelihood of any
continuation after any context, batched. :mod:`.lm_eval_model` serves it to
lm-evaluation-harness, so every task of that harness can run on our models.
"""

from __future__ import annotations

import csv
import difflib
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from scratchgpt.model import GPTModel
from scratchgpt.model.device import compute_device
from scratchgpt.progress import progress_bar
from scratchgpt.tokenizers.base import Tokenizer

LETTERS = "ABCD"
CSV_COLUMNS = "question, A, B, C, D, answer letter"
PARQUET_COLUMNS = ("question", "choices", "answer")
CHANCE = 0.25
# lm-evaluation-harness's groups (tasks/mmlu/_generate_configs.py), from the MMLU paper's
# categories; a subject outside the 57 belongs to no category.
CATEGORY_NAMES = ("stem", "humanities", "social_sciences", "other")
CATEGORY_TITLES = {"stem": "STEM", "humanities": "humanities",
                   "social_sciences": "social sciences", "other": "other"}
CATEGORIES: dict[str, str] = {
    **dict.fromkeys((
        "abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry",
        "college_computer_science", "college_mathematics", "college_physics",
        "computer_security", "conceptual_physics", "electrical_engineering",
        "elementary_mathematics", "high_school_biology", "high_school_chemistry",
        "high_school_computer_science", "high_school_mathematics", "high_school_physics",
        "high_school_statistics", "machine_learning"), "stem"),
    **dict.fromkeys((
        "formal_logic", "high_school_european_history", "high_school_us_history",
        "high_school_world_history", "international_law", "jurisprudence",
        "logical_fallacies", "moral_disputes", "moral_scenarios", "philosophy", "prehistory",
        "professional_law", "world_religions"), "humanities"),
    **dict.fromkeys((
        "econometrics", "high_school_geography", "high_school_government_and_politics",
        "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology",
        "human_sexuality", "professional_psychology", "public_relations", "security_studies",
        "sociology", "us_foreign_policy"), "social_sciences"),
    **dict.fromkeys((
        "business_ethics", "clinical_knowledge", "college_medicine", "global_facts",
        "human_aging", "management", "marketing", "medical_genetics", "miscellaneous",
        "nutrition", "professional_accounting", "professional_medicine", "virology"), "other"),
}


# -- the data ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Question:
    """One four-choice question; ``answer`` is the index of the right choice (0 = A)."""

    question: str
    choices: tuple[str, str, str, str]
    answer: int


@dataclass(frozen=True)
class MMLUData:
    """The questions to score and the few-shot examples, by subject (sorted by name).

    ``test[s]`` is subject ``s``'s questions in file order (the first ``limit`` of them);
    ``dev[s]`` its few-shot examples (empty where the data has none); ``files`` every file
    read, for a fingerprint of the data.
    """

    test: dict[str, list[Question]]
    dev: dict[str, list[Question]]
    source: Path
    files: tuple[Path, ...] = ()

    @property
    def subjects(self) -> list[str]:
        return list(self.test)

    def __len__(self) -> int:
        return sum(len(questions) for questions in self.test.values())


def load_mmlu(
    path: str | Path, subjects: Sequence[str] | None = None, limit: int | None = None
) -> MMLUData:
    """Read MMLU from ``path``: the original release's ``data`` directory (or the directory
    holding it), or a directory of ``cais/mmlu`` parquet files.

    ``subjects`` picks some (all by default; an unknown one is a ``ValueError`` listing those
    there are); ``limit`` keeps the first ``limit`` test questions of each. A malformed row is
    a ``ValueError`` naming its file and line (CSV) or row (parquet).
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist: expected MMLU's data directory "
                                "(scratchgpt download mmlu)")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    csv_root = _csv_root(root)
    if csv_root is not None:
        return _load_csv(csv_root, subjects, limit)
    parquet = sorted(root.rglob("*.parquet")) if root.is_dir() else []
    if parquet:
        return _load_parquet(root, parquet, subjects, limit)
    raise FileNotFoundError(
        f"{root} holds no MMLU data: expected the original release's layout "
        "(data/test/SUBJECT_test.csv and data/dev/SUBJECT_dev.csv) or Hugging Face cais/mmlu "
        "parquet files (all/test-*.parquet and all/dev-*.parquet)")


def _csv_root(root: Path) -> Path | None:
    """The directory holding ``test/SUBJECT_test.csv``: ``root`` or ``root/data``."""
    for candidate in (root, root / "data"):
        if any((candidate / "test").glob("*_test.csv")):
            return candidate
    return None


def _pick_subjects(
    available: Iterable[str], wanted: Sequence[str] | None, where: Path
) -> list[str]:
    """``wanted`` (all of ``available`` if None), checked: an unknown subject is an error that
    lists the known ones (and the nearest name, for a typo)."""
    available = sorted(set(available))
    if wanted is None:
        return available
    unknown = [s for s in wanted if s not in available]
    if unknown:
        close = difflib.get_close_matches(unknown[0], available, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"no MMLU subject {', '.join(map(repr, unknown))} in {where}{hint}; "
                         f"the {len(available)} subjects there are: {', '.join(available)}")
    return sorted(set(wanted))


def _load_csv(root: Path, subjects: Sequence[str] | None, limit: int | None) -> MMLUData:
    tests = {p.name.removesuffix("_test.csv"): p for p in (root / "test").glob("*_test.csv")}
    chosen = _pick_subjects(tests, subjects, root)
    test, dev, files = {}, {}, []
    for subject in chosen:
        test[subject] = read_mmlu_csv(tests[subject])[:limit]
        files.append(tests[subject])
        dev_file = root / "dev" / f"{subject}_dev.csv"
        dev[subject] = read_mmlu_csv(dev_file) if dev_file.is_file() else []
        if dev_file.is_file():
            files.append(dev_file)
    return MMLUData(test, dev, root, tuple(files))


def read_mmlu_csv(path: str | Path) -> list[Question]:
    """The questions of one of the original release's CSV files: headerless rows of
    ``question, A, B, C, D, answer letter`` (a field may hold commas and newlines, in quotes).
    Errors name the file and the line the bad row starts on."""
    path = Path(path)
    questions: list[Question] = []
    with path.open(encoding="utf-8", newline="") as stream:
        reader = csv.reader(stream)
        line = 1
        try:
            for row in reader:
                if len(row) != 6:
                    raise ValueError(f"{path}, line {line}: expected 6 columns ({CSV_COLUMNS}), "
                                     f"found {len(row)}")
                if row[5] not in LETTERS:
                    raise ValueError(f"{path}, line {line}: the answer must be one of A, B, C, "
                                     f"D; found {row[5]!r}")
                questions.append(Question(row[0], (row[1], row[2], row[3], row[4]),
                                          LETTERS.index(row[5])))
                line = reader.line_num + 1  # a quoted field may span lines
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        except csv.Error as err:
            raise ValueError(f"{path}, line {line}: not valid CSV ({err})") from None
    if not questions:
        raise ValueError(f"{path} holds no questions")
    return questions


def _load_parquet(
    root: Path, files: list[Path], subjects: Sequence[str] | None, limit: int | None
) -> MMLUData:
    """cais/mmlu's parquet files: ``test-*`` and ``dev-*`` by file name, other splits
    ignored. The ``all`` directory holds every subject; where it is present, the per-subject
    directories beside it (the same questions) are not read again."""
    if any(p.parent.name == "all" for p in files):
        files = [p for p in files if p.parent.name == "all"]
    split_files: dict[str, list[Path]] = {"test": [], "dev": []}
    for file in files:
        split = file.name.split("-", 1)[0].removesuffix(".parquet")
        if split in split_files:
            split_files[split].append(file)
    if not split_files["test"]:
        raise FileNotFoundError(f"{root} holds parquet files but no test split "
                                "(test-*.parquet)")
    test = _read_parquet_files(split_files["test"])
    dev = _read_parquet_files(split_files["dev"])
    chosen = _pick_subjects(test, subjects, root)
    used = split_files["test"] + split_files["dev"]
    return MMLUData({s: test[s][:limit] for s in chosen}, {s: dev.get(s, []) for s in chosen},
                    root, tuple(used))


def _read_parquet_files(files: list[Path]) -> dict[str, list[Question]]:
    found: dict[str, list[Question]] = {}
    for file in files:
        for subject, question in read_mmlu_parquet(file):
            found.setdefault(subject, []).append(question)
    return found


def read_mmlu_parquet(path: str | Path) -> list[tuple[str, Question]]:
    """``(subject, question)`` for each row of a cais/mmlu parquet file. The subject is the
    row's ``subject`` where it has one, else the name of the file's directory (a per-subject
    download). Errors name the file and the row (counted from 1)."""
    import pyarrow.parquet as pq  # only the parquet layout needs pyarrow

    path = Path(path)
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises its own errors for a file that is not parquet
        raise ValueError(f"{path}: not a readable parquet file ({err})") from None
    missing = [c for c in PARQUET_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: expected columns {', '.join(PARQUET_COLUMNS)} (and subject), "
                         f"found {', '.join(table.column_names)}")
    rows = table.to_pylist()
    folder = path.parent.name
    result = []
    for number, row in enumerate(rows, start=1):
        where = f"{path}, row {number}"
        subject = row.get("subject") or (folder if folder != "all" else "")
        if not subject:
            raise ValueError(f"{where}: no subject (an empty subject column in all/)")
        choices = row["choices"]
        if not isinstance(choices, list) or len(choices) != 4:
            count = len(choices) if isinstance(choices, list) else type(choices).__name__
            raise ValueError(f"{where}: expected 4 choices, found {count}")
        answer = row["answer"]
        if not isinstance(answer, int) or not 0 <= answer <= 3:
            raise ValueError(f"{where}: the answer must be 0-3 (A-D); found {answer!r}")
        result.append((subject, Question(str(row["question"]), tuple(map(str, choices)),  # type: ignore[arg-type]
                                         answer)))
    return result


# -- the prompt ----------------------------------------------------------------------------------
def format_question(question: Question) -> str:
    """A question as the prompt shows it, up to ``Answer:`` (lm-evaluation-harness's
    ``doc_to_text``: the question is stripped of surrounding whitespace, the choices are not)."""
    a, b, c, d = question.choices
    return f"{question.question.strip()}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer:"


def mmlu_prompt(subject: str, question: Question, examples: Sequence[Question] = ()) -> str:
    """The whole prompt: the subject's header, each example answered (``" B"`` and a blank
    line after it), then ``question`` up to ``Answer:``; the letter is what gets scored."""
    header = (f"The following are multiple choice questions (with answers) about "
              f"{subject.replace('_', ' ')}.\n\n")
    shots = "".join(f"{format_question(e)} {LETTERS[e.answer]}\n\n" for e in examples)
    return header + shots + format_question(question)


def encode(tokenizer: Tokenizer, text: str, *, add_special_tokens: bool = True) -> list[int]:
    """``text`` as ids, as transformers' tokenizer (and so lm-evaluation-harness's ``hf``
    model) gives them: a special token's spelling in it becomes that token, and, with
    ``add_special_tokens``, the text is framed as the model's tokenizer frames it
    (:meth:`~scratchgpt.tokenizers.base.Tokenizer.post_process`: Llama's and Gemma's BOS
    first; GPT-2 and Qwen add nothing), unless it already starts with that BOS (as the
    harness checks)."""
    ids = tokenizer.encode(text, allowed_special="all")
    if add_special_tokens and (tokenizer.bos_id is None or ids[:1] != [tokenizer.bos_id]):
        ids = tokenizer.post_process(ids)
    return ids


def encode_choices(
    tokenizer: Tokenizer, context: str, continuations: Sequence[str]
) -> tuple[list[int], list[list[int]]]:
    """The context's ids, and each continuation's, split as lm-evaluation-harness splits
    them: whitespace at the end of the context moves to the continuation, context and
    continuation are encoded together, and the continuation is what follows the context's
    own encoding (so a token that would straddle the two is not split apart; the model's BOS,
    if it has one, is the context's first id). The context is encoded once for all the
    continuations."""
    cut = len(context.rstrip())
    context, moved = context[:cut], context[cut:]
    context_ids = encode(tokenizer, context)
    return context_ids, [encode(tokenizer, context + moved + continuation)[len(context_ids):]
                         for continuation in continuations]


def encode_pair(
    tokenizer: Tokenizer, context: str, continuation: str
) -> tuple[list[int], list[int]]:
    """One context and continuation as ids (see :func:`encode_choices`)."""
    context_ids, [continuation_ids] = encode_choices(tokenizer, context, [continuation])
    return context_ids, continuation_ids


# -- the score -----------------------------------------------------------------------------------
@torch.inference_mode()
def score_continuations(
    model: GPTModel,
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "log-likelihoods",
    unit: str = "request",
    bar: Any = None,
) -> list[tuple[float, bool]]:
    """For each ``(context ids, continuation ids)``: the log-probability the model gives the
    continuation after the context (the sum over its tokens), and whether greedy decoding
    would produce it (every token the most likely one).

    The model reads ``context + continuation`` without its last token, trimmed from the left
    to the model's context length, and the continuation's tokens are read off the last
    positions. Requests that make the same input (four answer letters after one prompt) share
    one forward pass. Inputs are batched longest first, left-padded and masked (so a padded
    row computes what it would alone), and only the continuation's positions go through the
    output layer. Results come back in the order of ``requests``.

    ``progress`` shows a bar (``desc``, counting ``unit``), or ``bar``, an open tqdm bar,
    is advanced by one for each request scored.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    context_length = model.config.context_length
    windows: dict[tuple[int, ...], list[int]] = {}  # model input -> the requests it serves
    for i, (context, continuation) in enumerate(requests):
        if not context or not continuation:
            raise ValueError(f"request {i}: the context and the continuation must each hold at "
                             "least one token")
        if len(continuation) > context_length:
            raise ValueError(f"request {i}: a continuation of {len(continuation)} tokens does "
                             f"not fit the model's context of {context_length}")
        whole = [*context, *continuation]
        windows.setdefault(tuple(whole[-(context_length + 1):-1]), []).append(i)
    order = sorted(windows, key=len, reverse=True)
    results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
    device = compute_device(model)
    was_training = model.training
    model.eval()
    own_bar = bar is None
    if own_bar:
        bar = progress_bar(total=len(requests), desc=desc, unit=unit, disable=not progress,
                           leave=False)
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            longest = len(batch[0])
            idx = torch.tensor([[0] * (longest - len(w)) + list(w) for w in batch],
                               device=device)
            mask = None  # rows of one length: the unpadded path
            if len(batch[-1]) < longest:
                mask = torch.tensor([[False] * (longest - len(w)) + [True] * len(w)
                                     for w in batch], device=device)
            hidden = model.hidden_states(idx, attention_mask=mask)
            for row, window in enumerate(batch):
                served = windows[window]
                width = max(len(requests[i][1]) for i in served)
                logprobs = torch.log_softmax(model.out_head(hidden[row, -width:]).float(), -1)
                for i in served:
                    target = torch.tensor(list(requests[i][1]), device=device)
                    own = logprobs[width - len(target):]
                    score = own.gather(-1, target[:, None]).double().sum().item()
                    greedy = bool((own.argmax(-1) == target).all())
                    results[i] = (score, greedy)
                bar.update(len(served))
    finally:
        if own_bar:
            bar.close()
        model.train(was_training)
    return results


@dataclass(frozen=True)
class MMLUItem:
    """One scored question: its subject, its position in the subject's test file (from 0),
    the right answer and the log-likelihood of each letter (index 0 = A)."""

    subject: str
    index: int
    answer: int
    loglikelihoods: tuple[float, ...]

    @property
    def predicted(self) -> int:
        """The most likely letter; the first of equals (as ``numpy.argmax``)."""
        return max(range(len(self.loglikelihoods)), key=self.loglikelihoods.__getitem__)

    @property
    def correct(self) -> bool:
        return self.predicted == self.answer

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "question": self.index,
                "answer": LETTERS[self.answer], "predicted": LETTERS[self.predicted],
                "correct": self.correct, "loglikelihoods": list(self.loglikelihoods)}


@dataclass(frozen=True)
class MMLUResult:
    """Every scored question, and the accuracies they add up to."""

    items: tuple[MMLUItem, ...]
    shots: int
    subjects: tuple[str, ...] = field(default=())

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def accuracy(self) -> float:
        """Micro accuracy: the share of all questions answered right."""
        return _mean(item.correct for item in self.items)

    def subject_accuracy(self) -> dict[str, float]:
        return {s: _mean(i.correct for i in items) for s, items in self._by_subject().items()}

    @property
    def macro(self) -> float:
        """The mean of the subject accuracies: every subject counts once."""
        return statistics.fmean(self.subject_accuracy().values()) if self.items else 0.0

    def category_accuracy(self) -> dict[str, float]:
        """Accuracy over all questions of each category that has some (lm-evaluation-harness
        weighs its groups by size too)."""
        return {c: _mean(i.correct for i in items) for c, items in self._by_category().items()}

    def _by_subject(self) -> dict[str, list[MMLUItem]]:
        grouped: dict[str, list[MMLUItem]] = {s: [] for s in self.subjects}
        for item in self.items:
            grouped.setdefault(item.subject, []).append(item)
        return grouped

    def _by_category(self) -> dict[str, list[MMLUItem]]:
        grouped: dict[str, list[MMLUItem]] = {}
        for name in CATEGORY_NAMES:
            items = [i for i in self.items if CATEGORIES.get(i.subject) == name]
            if items:
                grouped[name] = items
        return grouped

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON: ``accuracy`` (micro), ``macro``, ``subjects`` and
        ``categories`` (name -> accuracy), their question counts, and every item."""
        return {
            "accuracy": self.accuracy, "macro": self.macro, "count": self.count,
            "correct": sum(i.correct for i in self.items), "shots": self.shots,
            "chance": CHANCE,
            "subjects": self.subject_accuracy(),
            "subject_counts": {s: len(i) for s, i in self._by_subject().items()},
            "categories": self.category_accuracy(),
            "category_counts": {c: len(i) for c, i in self._by_category().items()},
            "items": [item.to_dict() for item in self.items],
        }

    def summary(self, per_subject: bool = True) -> str:
        """A table for a person: each subject (if ``per_subject``), each category, overall."""
        subjects, categories = self._by_subject(), self._by_category()
        rows: list[tuple[str, float | None, int | None]] = []
        if per_subject:
            rows += [(s, _mean(i.correct for i in items), len(items))
                     for s, items in subjects.items()]
        rows += [(CATEGORY_TITLES[c], _mean(i.correct for i in items), len(items))
                 for c, items in categories.items()]
        rows += [("all questions (micro)", self.accuracy, self.count),
                 ("mean of subjects (macro)", self.macro, None)]
        width = max(len(name) for name, _, _ in rows) + 2
        lines = [f"MMLU {self.shots}-shot: {self.count:,} questions in {len(subjects)} "
                 f"subjects (chance: {CHANCE:.0%})",
                 f"  {'':<{width}}{'accuracy':>9}{'questions':>11}"]
        for name, accuracy, count in rows:
            lines.append(f"  {name:<{width}}{accuracy:>9.2%}"
                         + (f"{count:>11,}" if count is not None else ""))
        return "\n".join(lines)


def _mean(values: Iterable[bool]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def evaluate_mmlu(
    model: GPTModel,
    tokenizer: Tokenizer,
    data: MMLUData,
    *,
    shots: int = 0,
    batch_size: int = 8,
    progress: bool = True,
) -> MMLUResult:
    """Score every test question of ``data`` with ``shots`` examples from its subject's dev
    questions (the first ones, in file order), as lm-evaluation-harness's ``mmlu`` task."""
    if shots < 0:
        raise ValueError(f"shots must be 0 or more, got {shots}")
    for subject in data.subjects:
        if len(data.dev.get(subject, [])) < shots:
            raise ValueError(f"{shots}-shot prompts need {shots} dev questions of {subject}; "
                             f"{data.source} has {len(data.dev.get(subject, []))}")
    items: list[MMLUItem] = []
    bar = progress_bar(total=len(LETTERS) * len(data), desc=f"MMLU {shots}-shot", unit="choice",
                       disable=not progress)
    with bar:
        for subject, questions in data.test.items():  # a subject at a time: bounded memory
            examples = data.dev.get(subject, [])[:shots]
            requests: list[tuple[list[int], list[int]]] = []
            for question in questions:
                prompt = mmlu_prompt(subject, question, examples)
                context, answers = encode_choices(tokenizer, prompt, [f" {x}" for x in LETTERS])
                requests += [(context, answer) for answer in answers]
            scores = score_continuations(model, requests, batch_size=batch_size, bar=bar)
            items += [MMLUItem(subject, index, question.answer,
                               tuple(s for s, _ in scores[4 * index:4 * index + 4]))
                      for index, question in enumerate(questions)]
    return MMLUResult(tuple(items), shots, tuple(data.subjects))
