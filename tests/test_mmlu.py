"""MMLU: reading both layouts, the prompt, the scores, and agreement with lm-evaluation-harness.

A tiny random GPT with GPT-2's vocabulary answers a small MMLU written here in the original
release's layout (five subjects in the four categories, five dev questions each, awkward
CSV: quoted commas, newlines, numbers that look like numbers, empty choices, stray
whitespace). Its context (160 tokens) is shorter than a 5-shot prompt, so the left trimming
is exercised too.

The cross-check runs ``lm_eval.simple_evaluate`` on our model wrapped as an lm_eval ``LM``
(:mod:`scratchgpt.evaluation.lm_eval_model`) with task definitions written here that include
lm_eval's own ``mmlu`` YAML files (prompt template, few-shot sampler, group aggregation) and
change only where the data comes from: these CSV files, read by Hugging Face ``datasets``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import random
import re
import shutil
import tarfile
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import lm_eval
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from file_server import Route, file_servers
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model
from lm_eval.tasks import TaskManager

from scratchgpt.config import ModelConfig
from scratchgpt.evaluation.lm_eval_model import ScratchGPTLM
from scratchgpt.evaluation.mmlu import (
    CATEGORIES,
    LETTERS,
    MMLUItem,
    MMLUResult,
    Question,
    encode_pair,
    evaluate_mmlu,
    load_mmlu,
    mmlu_prompt,
    score_continuations,
)
from scratchgpt.hub import datasets as hub_datasets
from scratchgpt.hub.datasets import DATASETS, download_dataset, find_dataset
from scratchgpt.hub.download import DownloadError, read_manifest
from scratchgpt.hub.export import export_hf
from scratchgpt.model import GPTModel
from scratchgpt.tokenizers import load_gpt2_tokenizer

SUBJECTS = {"astronomy": 5, "anatomy": 2, "philosophy": 4, "sociology": 4,  # test questions
            "virology": 3}
WORDS = ("star", "planet", "orbit", "mass", "the", "of", "is", "which", "moral", "duty",
         "society", "norm", "virus", "cell", "host", "what", "a", "not", "most", "best")
ODD_CHOICES = ("04", "1.50", "", "None", "NA", "1,000", 'say "yes"', "two\nlines", "  padded ",
               "Ångström — 世界", "<b>bold</b>", "True")


# -- the data ------------------------------------------------------------------------------------
def make_rows(rng: random.Random, count: int, answers: str,
              odd: Iterator[str]) -> list[list[str]]:
    """``count`` rows of question, A-D, answer letter; an odd field in each row, in turn in
    every column."""
    rows = []
    for n in range(count):
        words = rng.choices(WORDS, k=rng.randint(3, 45))
        question = " ".join(words).capitalize() + "?"
        if n % 3 == 0:
            question = f"  {question}, really?\n "  # stripped in the prompt
        choices = [" ".join(rng.choices(WORDS, k=rng.randint(1, 6))) for _ in range(4)]
        choices[n % 4] = next(odd)
        rows.append([question, *choices, answers[n % len(answers)]])
    return rows


def write_csv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as stream:
        csv.writer(stream).writerows(rows)


@pytest.fixture(scope="module")
def rows() -> dict[str, dict[str, list[list[str]]]]:
    """``{split: {subject: rows}}`` for the dev and test splits."""
    rng, odd = random.Random(13), itertools.cycle(ODD_CHOICES)
    return {"dev": {s: make_rows(rng, 5, "BADCA", odd) for s in SUBJECTS},
            "test": {s: make_rows(rng, n, "CABDDBAC", odd) for s, n in SUBJECTS.items()}}


@pytest.fixture(scope="module")
def mmlu_dir(rows, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The original release's layout: ``data/dev/S_dev.csv``, ``data/test/S_test.csv``."""
    root = tmp_path_factory.mktemp("mmlu")
    for split, by_subject in rows.items():
        for subject, subject_rows in by_subject.items():
            write_csv(root / "data" / split / f"{subject}_{split}.csv", subject_rows)
    return root


def write_parquet(path: Path, records: list[tuple[str, list[str]]]) -> None:
    """cais/mmlu's columns: question, subject, choices (a list of 4), answer (0-3)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "question": [row[0] for _, row in records],
        "subject": [subject for subject, _ in records],
        "choices": [row[1:5] for _, row in records],
        "answer": pa.array([LETTERS.index(row[5]) for _, row in records], pa.int64()),
    })
    pq.write_table(table, path)


# -- the model -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer(shared_assets: Path):
    return load_gpt2_tokenizer(shared_assets / "gpt2-tokenizer")


@pytest.fixture(scope="module")
def model() -> GPTModel:
    """Random, with PyTorch's larger initial weights: the four letters' scores differ clearly
    and depend on the prompt, so the predictions vary from question to question."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=50257, context_length=160, emb_dim=32, n_heads=4,
                         n_layers=2, init="pytorch")
    return GPTModel(config).eval()


@pytest.fixture(scope="module")
def results(model, tokenizer, mmlu_dir) -> dict[int, MMLUResult]:
    data = load_mmlu(mmlu_dir)
    return {shots: evaluate_mmlu(model, tokenizer, data, shots=shots, batch_size=3,
                                 progress=False) for shots in (0, 2, 5)}


# -- reading -------------------------------------------------------------------------------------
def test_load_the_original_layout(mmlu_dir: Path, rows) -> None:
    for path in (mmlu_dir, mmlu_dir / "data"):  # the directory holding data/, or data/ itself
        data = load_mmlu(path)
        assert data.subjects == sorted(SUBJECTS)
        assert len(data) == sum(SUBJECTS.values())
        for subject in SUBJECTS:
            assert data.test[subject] == [Question(r[0], tuple(r[1:5]), LETTERS.index(r[5]))
                                          for r in rows["test"][subject]]
            assert [q.answer for q in data.dev[subject]] == [1, 0, 3, 2, 0]
        assert len(data.files) == 2 * len(SUBJECTS)
    # the odd fields come back exactly as written
    choices = {c for qs in data.test.values() for q in qs for c in q.choices}
    assert {"04", "", "1,000", 'say "yes"', "two\nlines", "  padded "} <= choices

    some = load_mmlu(mmlu_dir, subjects=["virology", "astronomy"], limit=2)
    assert some.subjects == ["astronomy", "virology"]
    assert [len(some.test[s]) for s in some.subjects] == [2, 2]
    assert some.test["astronomy"] == data.test["astronomy"][:2]


def test_unknown_subject_lists_the_ones_there_are(mmlu_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"no MMLU subject 'astronomi' in \S+ \(did you mean "
                       r"'astronomy'\?\); the 5 subjects there are: anatomy, astronomy, "
                       r"philosophy, sociology, virology$"):
        load_mmlu(mmlu_dir, subjects=["astronomi"])
    with pytest.raises(ValueError, match=r"no MMLU subject 'law', 'art' in .*: anatomy, "):
        load_mmlu(mmlu_dir, subjects=["astronomy", "law", "art"])


BAD_ROWS = [  # the test file's text, the error
    pytest.param('Q1,a,b,c,d,A\n"Q2\nspans lines",a,b,c,d,B\nQ3,a,b,c,A\n',
                 r"astronomy_test.csv, line 4: expected 6 columns \(question, A, B, C, D, "
                 r"answer letter\), found 5", id="five-columns"),
    pytest.param("Q1,a,b,c,d,A\nQ2,a,b,c,d,e,B\n",
                 r"astronomy_test.csv, line 2: expected 6 columns .*, found 7", id="seven"),
    pytest.param("Q1,a,b,c,d,A\nQ2,a,b,c,d,E\n",
                 r"astronomy_test.csv, line 2: the answer must be one of A, B, C, D; found 'E'",
                 id="answer-E"),
    pytest.param("Q1,a,b,c,d,a\n",
                 r"astronomy_test.csv, line 1: the answer must be .*; found 'a'", id="lowercase"),
    pytest.param("Q1,a,b,c,d,A\n\nQ3,a,b,c,d,B\n",
                 r"astronomy_test.csv, line 2: expected 6 columns .*, found 0", id="blank-line"),
    pytest.param("", r"astronomy_test.csv holds no questions", id="empty"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_ROWS)
def test_a_bad_csv_row_names_the_file_and_line(text: str, expected: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "data" / "dev" / "astronomy_dev.csv", [["Q", "a", "b", "c", "d", "A"]])
    (tmp_path / "data" / "test" / "astronomy_test.csv").parent.mkdir(parents=True)
    (tmp_path / "data" / "test" / "astronomy_test.csv").write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=expected):
        load_mmlu(tmp_path)


def test_bad_dev_rows_and_missing_data(tmp_path: Path) -> None:
    write_csv(tmp_path / "test" / "anatomy_test.csv", [["Q", "a", "b", "c", "d", "A"]])
    write_csv(tmp_path / "dev" / "anatomy_dev.csv", [["Q", "a", "b", "c", "d", "A"],
                                                     ["Q", "a", "b", "c", "d", "F"]])
    with pytest.raises(ValueError, match=r"anatomy_dev.csv, line 2: the answer must be one of "
                       r"A, B, C, D; found 'F'"):
        load_mmlu(tmp_path)
    (tmp_path / "dev" / "anatomy_test.csv").write_bytes(b"Q,a,b,c,d,\xff\n")
    (tmp_path / "dev" / "anatomy_dev.csv").write_bytes(b"Q,\xe9,b,c,d,A\n")
    with pytest.raises(ValueError, match=r"anatomy_dev.csv: not UTF-8 text"):
        load_mmlu(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"holds no MMLU data: expected the original "
                       r"release's layout \(data/test/SUBJECT_test.csv"):
        load_mmlu(tmp_path / "dev")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mmlu(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="limit must be at least 1"):
        load_mmlu(tmp_path, limit=0)


def test_parquet_layouts_read_the_same_questions(mmlu_dir: Path, rows, tmp_path: Path) -> None:
    """cais/mmlu's ``all/`` files (every subject, a subject column), and its per-subject
    directories (where ``all/`` is present too, only ``all/`` is read)."""
    expected = load_mmlu(mmlu_dir)
    for split in ("test", "dev"):
        records = [(s, r) for s in sorted(SUBJECTS) for r in rows[split][s]]
        write_parquet(tmp_path / "hf" / "all" / f"{split}-00000-of-00001.parquet", records)
        for subject in SUBJECTS:
            write_parquet(tmp_path / "hf" / subject / f"{split}-00000-of-00001.parquet",
                          [(subject, r) for r in rows[split][subject]])
    write_parquet(tmp_path / "hf" / "all" / "validation-00000-of-00001.parquet",
                  [("astronomy", rows["test"]["astronomy"][0])])  # another split: not read
    data = load_mmlu(tmp_path / "hf")
    assert (data.test, data.dev) == (expected.test, expected.dev)
    assert all(p.parent.name == "all" for p in data.files)
    one = load_mmlu(tmp_path / "hf" / "sociology", limit=3)  # one subject's directory
    assert (one.subjects, one.test["sociology"]) == (["sociology"],
                                                     expected.test["sociology"][:3])


def test_parquet_gives_the_same_result_as_csv(mmlu_dir, rows, tmp_path, model, tokenizer,
                                              results) -> None:
    for split in ("test", "dev"):
        records = [(s, r) for s in sorted(SUBJECTS) for r in rows[split][s]]
        write_parquet(tmp_path / "all" / f"{split}-00000-of-00001.parquet", records)
    # the fixture's batch size: the same sums in the same order, so equal to the last bit
    result = evaluate_mmlu(model, tokenizer, load_mmlu(tmp_path), shots=2, batch_size=3,
                           progress=False)
    assert result.to_dict() == results[2].to_dict()


def test_bad_parquet_rows_name_the_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "all" / "test-00000-of-00001.parquet"
    path.parent.mkdir()
    good = {"question": "Q", "subject": "anatomy", "choices": ["a", "b", "c", "d"], "answer": 0}
    for change, expected in [
        ({"answer": 4}, r"row 2: the answer must be 0-3 \(A-D\); found 4"),
        ({"choices": ["a", "b", "c"]}, r"row 2: expected 4 choices, found 3"),
        ({"subject": ""}, r"row 2: no subject"),
    ]:
        pq.write_table(pa.Table.from_pylist([good, {**good, **change}]), path)
        with pytest.raises(ValueError, match=rf"{re.escape(str(path))}, {expected}"):
            load_mmlu(tmp_path)
    pq.write_table(pa.table({"question": ["Q"], "answer": [0]}), path)
    with pytest.raises(ValueError, match=r"expected columns question, choices, answer \(and "
                       r"subject\), found question, answer"):
        load_mmlu(tmp_path)
    path.write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="not a readable parquet file"):
        load_mmlu(tmp_path)


# -- the prompt and the score --------------------------------------------------------------------
def test_the_prompt_is_lm_eval_s() -> None:
    example = Question("What is 2 + 2?", ("3", "4", "5", "22"), 1)
    question = Question("  Which is a planet? \n", ("Sun", "Moon", "Mars", " Io"), 2)
    assert mmlu_prompt("college_physics", question, [example, example]) == (
        "The following are multiple choice questions (with answers) about college physics.\n\n"
        "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer: B\n\n"
        "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer: B\n\n"
        "Which is a planet?\nA. Sun\nB. Moon\nC. Mars\nD.  Io\nAnswer:")


def naive_logprob(model: GPTModel, context: list[int], continuation: list[int]) -> float:
    """The obvious way: one unbatched forward pass over the (left-trimmed) sequence."""
    whole = (context + continuation)[-(model.config.context_length + 1):]
    with torch.no_grad():
        logits = model(torch.tensor([whole[:-1]]))[0, -len(continuation):]
    logprobs = torch.log_softmax(logits.double(), -1)
    return sum(logprobs[k, token].item() for k, token in enumerate(continuation))


def test_scores_equal_the_naive_computation(model: GPTModel) -> None:
    """Batched, padded, shared inputs and trimmed ones: each score is what one unpadded forward
    pass gives; the greedy flag says whether every continuation token is the argmax."""
    rng = random.Random(0)
    requests = []
    for length in (3, 40, 159, 160, 161, 400, 7, 7):
        context = [rng.randrange(50257) for _ in range(length)]
        for continuation in ([317], [347], [rng.randrange(50257) for _ in range(5)]):
            requests.append((context, continuation))
    requests.append(([5], [6, 7]))
    requests.append(([5, 6], [7]))  # the same input as the one before: one pass serves both
    expected = [naive_logprob(model, context, continuation) for context, continuation in requests]
    for batch_size in (1, 4, 100):
        scores = [score for score, _ in score_continuations(model, requests,
                                                            batch_size=batch_size)]
        assert scores == pytest.approx(expected, abs=1e-4)

    with torch.no_grad():
        greedy_next = int(model(torch.tensor([[11, 12, 13]]))[0, -1].argmax())
    [(_, greedy), (_, not_greedy)] = score_continuations(
        model, [([11, 12, 13], [greedy_next]), ([11, 12, 13], [(greedy_next + 1) % 50257])])
    assert (greedy, not_greedy) == (True, False)
    with pytest.raises(ValueError, match="request 0: the context and the continuation must"):
        score_continuations(model, [([], [1])])
    with pytest.raises(ValueError, match="161 tokens does not fit the model's context of 160"):
        score_continuations(model, [([1], [2] * 161)])


def test_evaluate_scores_each_letter_after_the_prompt(model, tokenizer, mmlu_dir,
                                                     results) -> None:
    """Each item's four log-likelihoods are those of " A" .. " D" after its prompt, read the
    obvious way, and the prediction is the most likely letter."""
    data = load_mmlu(mmlu_dir)
    result = results[5]
    assert [(i.subject, i.index) for i in result.items] == [
        (s, n) for s in sorted(SUBJECTS) for n in range(SUBJECTS[s])]
    trimmed = 0
    for item in result.items:
        prompt = mmlu_prompt(item.subject, data.test[item.subject][item.index],
                             data.dev[item.subject][:5])
        pairs = [encode_pair(tokenizer, prompt, f" {letter}") for letter in LETTERS]
        context = pairs[0][0]
        assert context == tokenizer.encode(prompt)
        assert [c for _, c in pairs] == [tokenizer.encode(f" {x}") for x in LETTERS]  # 1 token
        with torch.no_grad():  # the four letters' scores: one pass over the trimmed prompt
            logits = model(torch.tensor([context[-model.config.context_length:]]))[0, -1]
        letters = [token for _, [token] in pairs]
        expected = torch.log_softmax(logits.double(), -1)[letters].tolist()
        assert list(item.loglikelihoods) == pytest.approx(expected, abs=1e-4)
        trimmed += len(context) >= model.config.context_length
        assert item.predicted == max(range(4), key=lambda k: item.loglikelihoods[k])
    assert trimmed == len(result.items)  # every 5-shot prompt is longer than the context
    predictions = {item.predicted for r in results.values() for item in r.items}
    assert len(predictions) >= 3  # the random model's answers vary: a real check

    with pytest.raises(ValueError, match=r"6-shot prompts need 6 dev questions of anatomy; "
                       r"\S+ has 5"):
        evaluate_mmlu(model, tokenizer, data, shots=6, progress=False)


def test_accuracy_by_subject_category_micro_and_macro() -> None:
    def item(subject: str, answer: int, predicted: int) -> MMLUItem:
        lls = [-3.0] * 4
        lls[predicted] = -1.0
        return MMLUItem(subject, 0, answer, tuple(lls))

    items = ([item("astronomy", 0, 0)] * 3 + [item("astronomy", 1, 0)]  # stem: 3 of 4
             + [item("anatomy", 2, 2)] * 2                             # stem: 2 of 2
             + [item("philosophy", 3, 1)] * 3 + [item("philosophy", 3, 3)]  # humanities 1/4
             + [item("my_own_subject", 0, 0)])                         # no category
    result = MMLUResult(tuple(items), shots=5)
    assert result.subject_accuracy() == {"astronomy": 0.75, "anatomy": 1.0, "philosophy": 0.25,
                                         "my_own_subject": 1.0}
    assert result.category_accuracy() == {"stem": 5 / 6, "humanities": 0.25}
    assert result.accuracy == 7 / 11
    assert result.macro == (0.75 + 1.0 + 0.25 + 1.0) / 4
    summary = result.to_dict()
    assert summary["count"] == 11 and summary["correct"] == 7 and summary["shots"] == 5
    assert summary["subject_counts"] == {"astronomy": 4, "anatomy": 2, "philosophy": 4,
                                         "my_own_subject": 1}
    assert summary["category_counts"] == {"stem": 6, "humanities": 4}
    assert summary["items"][6] == {"subject": "philosophy", "question": 0, "answer": "D",
                                   "predicted": "B", "correct": False,
                                   "loglikelihoods": [-3.0, -1.0, -3.0, -3.0]}
    # a tie goes to the first letter, as numpy.argmax
    assert MMLUItem("anatomy", 0, 1, (-2.0, -1.0, -1.0, -5.0)).predicted == 1
    assert "all questions (micro)" in result.summary() and "humanities" in result.summary()
    assert len(CATEGORIES) == 57 and set(CATEGORIES.values()) == {
        "stem", "humanities", "social_sciences", "other"}


# -- lm-evaluation-harness -----------------------------------------------------------------------
LM_EVAL_MMLU = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"


@pytest.fixture(scope="module")
def lm_eval_tasks(mmlu_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lm_eval's own MMLU task files, included whole, with the data taken from our CSVs: per
    subject ``mmlu_SUBJECT.yaml`` (its prompt header; the template of every subject with the
    prompt, the choices and the ``first_n`` few-shot sampler), and the groups of
    ``_mmlu.yaml`` and ``_mmlu_CATEGORY.yaml`` (accuracy weighted by size)."""
    tasks = tmp_path_factory.mktemp("lm-eval-tasks")
    cache = tmp_path_factory.mktemp("hf-datasets")
    (tasks / "local_utils.py").write_text(textwrap.dedent("""
        def process_docs(dataset):
            return dataset.map(lambda row: {
                "question": row["question"],
                "choices": [row["A"], row["B"], row["C"], row["D"]],
                "answer": "ABCD".index(row["letter"])},
                remove_columns=["A", "B", "C", "D", "letter"])
    """), encoding="utf-8")
    by_category: dict[str, list[str]] = {}
    for subject in SUBJECTS:
        data = {split: str(mmlu_dir / "data" / split / f"{subject}_{split}.csv")
                for split in ("test", "dev")}
        (tasks / f"local_{subject}.yaml").write_text(textwrap.dedent(f"""
            include: {LM_EVAL_MMLU / f"mmlu_{subject}.yaml"}
            task: local_mmlu_{subject}
            tag: []
            dataset_path: csv
            dataset_name: null
            dataset_kwargs:
              data_files: {{test: "{data['test']}", dev: "{data['dev']}"}}
              column_names: [question, A, B, C, D, letter]
              na_filter: false
              cache_dir: "{cache}"
            process_docs: !function local_utils.process_docs
        """), encoding="utf-8")
        by_category.setdefault(CATEGORIES[subject], []).append(f"local_mmlu_{subject}")
    for category, members in by_category.items():
        (tasks / f"local_{category}.yaml").write_text(textwrap.dedent(f"""
            include: {LM_EVAL_MMLU / f"_mmlu_{category}.yaml"}
            group: local_mmlu_{category}
            task: [{", ".join(members)}]
        """), encoding="utf-8")
    (tasks / "local_mmlu.yaml").write_text(textwrap.dedent(f"""
        include: {LM_EVAL_MMLU / "_mmlu.yaml"}
        group: local_mmlu
        task: [{", ".join(f"local_mmlu_{c}" for c in by_category)}]
    """), encoding="utf-8")
    return tasks


@pytest.mark.slow
@pytest.mark.parametrize("shots", [0, 2, 5])
def test_lm_eval_harness_agrees(shots: int, lm_eval_tasks: Path, model, tokenizer,
                                results) -> None:
    """Same accuracies (each subject, each category, overall) and the same choice on every
    question, log-likelihoods and all, as lm_eval's mmlu task run on our wrapped model. (STEM
    has two subjects: its figure weighs them by size, as ours does.)"""
    out = lm_eval.simple_evaluate(
        model=ScratchGPTLM(model=model, tokenizer=tokenizer, batch_size=5),
        tasks=["local_mmlu"], num_fewshot=shots, bootstrap_iters=0, log_samples=True,
        task_manager=TaskManager(include_path=str(lm_eval_tasks), include_defaults=False))
    assert out is not None
    ours = results[shots]
    accuracy = {name: value["acc,none"] for name, value in out["results"].items()}
    assert accuracy.pop("local_mmlu") == pytest.approx(ours.accuracy, abs=1e-12)
    assert {name.removeprefix("local_mmlu_"): value for name, value in accuracy.items()} \
        == pytest.approx({**ours.subject_accuracy(), **ours.category_accuracy()}, abs=1e-12)
    assert out["configs"]["local_mmlu_astronomy"]["num_fewshot"] == shots

    for subject in SUBJECTS:
        samples = sorted(out["samples"][f"local_mmlu_{subject}"], key=lambda s: s["doc_id"])
        items = [i for i in ours.items if i.subject == subject]
        assert [s["doc_id"] for s in samples] == [i.index for i in items]
        for sample, item in zip(samples, items, strict=True):
            theirs = [ll for ll, _ in sample["filtered_resps"]]
            assert theirs == pytest.approx(list(item.loglikelihoods), abs=1e-4)
            assert max(range(4), key=theirs.__getitem__) == item.predicted
            assert sample["target"] == item.answer
            assert sample["acc"] == float(item.correct)
    assert math.isclose(ours.macro, sum(ours.subject_accuracy().values()) / len(SUBJECTS))


def test_the_wrapper_s_other_requests(model, tokenizer) -> None:
    """loglikelihood_rolling: every token of a text scored once after <|endoftext|>, in
    windows of the context; generate_until: greedy text cut at the stop string."""
    lm = ScratchGPTLM(model=model, tokenizer=tokenizer, batch_size=2)
    text = " ".join(["the star of the planet"] * 80)  # 400 tokens: three windows
    ids = tokenizer.encode(text)
    assert len(ids) > 2 * model.config.context_length
    [rolling] = lm.loglikelihood_rolling(
        [Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)
    assert rolling == pytest.approx(expected_rolling(model, tokenizer.eot_id, ids), rel=1e-6)

    prompts = ["The star", "Which planet"]
    requests = [Instance("generate_until", {}, (p, {"until": ["\n"], "max_gen_toks": 5}), n)
                for n, p in enumerate(prompts)]
    outputs = lm.generate_until(requests, disable_tqdm=True)
    for prompt, output in zip(prompts, outputs, strict=True):
        context = tokenizer.encode(prompt)
        tokens = []
        with torch.no_grad():
            for _ in range(5):  # up to max_gen_toks, or the end-of-text token
                token = int(model(torch.tensor([context + tokens]))[0, -1].argmax())
                if token == tokenizer.eot_id:
                    break
                tokens.append(token)
        assert output == tokenizer.decode(tokens).split("\n")[0]


def expected_rolling(model: GPTModel, eot: int, ids: list[int]) -> float:
    """Each token's log-probability given as many tokens before it as fit (at most the
    context), which is what lm_eval's disjoint rolling windows compute."""
    length = model.config.context_length
    total, sequence = 0.0, [eot, *ids]
    start = 1
    while start < len(sequence):
        end = min(start + length, len(sequence))
        window_start = max(0, end - 1 - length)
        total += naive_logprob(model, sequence[window_start:start], sequence[start:end])
        start = end
    return total


# -- the download --------------------------------------------------------------------------------
def make_tar(mmlu_dir: Path, extra: dict[str, bytes] | None = None) -> bytes:
    """data.tar as published: ``data/dev``, ``data/test`` (and a ``data/val`` here)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(mmlu_dir / "data", arcname="data")
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def serve_tar():
    """``serve_tar(data)`` serves data.tar at its path on a loopback server; its URL."""
    with file_servers() as start:
        yield lambda data: start({"/~hendrycks/data.tar": Route(data)}).url


def test_download_extracts_data_tar_and_is_found(
    mmlu_dir: Path, serve_tar, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path / "cache"))
    assert DATASETS["mmlu"].urls == {"data.tar": "https://people.eecs.berkeley.edu/~hendrycks/"
                                                 "data.tar"}
    tar = make_tar(mmlu_dir, {"data/val/astronomy_val.csv": b"Q,a,b,c,d,A\n"})
    url = serve_tar(tar)

    # The real data.tar's sha256 is shipped: any other file fails it, and nothing is kept.
    with pytest.raises(DownloadError, match=r"data.tar from \S+ failed verification: expected "
                       r"sha256 bec563ba4bac1d6aaf04141cd7d1605d7a5ca833e38f994051e818489592989b, "
                       rf"got {hashlib.sha256(tar).hexdigest()}"):
        download_dataset("mmlu", base_url=url, progress=False)
    with pytest.raises(FileNotFoundError, match="mmlu has not been downloaded; run: scratchgpt "
                       "download mmlu"):
        find_dataset("mmlu")

    # This test's tar, with its own sha256 shipped in place of the real one.
    monkeypatch.setitem(DATASETS, "mmlu", replace(
        DATASETS["mmlu"], sha256={"data.tar": hashlib.sha256(tar).hexdigest()}))
    directory = download_dataset("mmlu", base_url=url, progress=False)
    assert directory == tmp_path / "cache" / "datasets" / "mmlu"
    assert find_dataset("mmlu") == directory / "data"
    assert hub_datasets.dataset_path("mmlu", "benchmark") == directory / "data"
    assert (directory / "data" / "val" / "astronomy_val.csv").read_bytes() == b"Q,a,b,c,d,A\n"
    assert read_manifest(directory)["data.tar"]["verified"] == ["size", "sha256", "content"]
    assert load_mmlu(find_dataset("mmlu")).test == load_mmlu(mmlu_dir).test
    assert sorted(p.name for p in directory.iterdir()) == ["data", "data.tar", "download.json"]

    # Deleted, the directory is extracted again from the kept tar; nothing is fetched.
    shutil.rmtree(directory / "data")
    with pytest.raises(FileNotFoundError, match=r"data is missing; run the download again: "
                       r"scratchgpt download mmlu"):
        find_dataset("mmlu")
    download_dataset("mmlu", base_url="http://127.0.0.1:9", progress=False)
    assert load_mmlu(find_dataset("mmlu")).test == load_mmlu(mmlu_dir).test


def test_a_tar_without_mmlu_is_refused(serve_tar, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("readme.txt")
        tar.addfile(info, io.BytesIO(b""))
    for data, expected in ((buffer.getvalue(), r"found none of data/test/\*_test.csv"),
                           (b"<html>moved</html>", r"found a file tar cannot read")):
        monkeypatch.setitem(DATASETS, "mmlu", replace(
            DATASETS["mmlu"], sha256={"data.tar": hashlib.sha256(data).hexdigest()}))
        url = serve_tar(data)
        with pytest.raises(DownloadError, match=r"data.tar from \S+ failed verification: "
                           rf"expected a tar archive of MMLU's CSV files.*{expected}"):
            download_dataset("mmlu", tmp_path / "mmlu", base_url=url, progress=False)
        assert not (tmp_path / "mmlu").exists()


@pytest.mark.slow
def test_lm_eval_s_hugging_face_model_agrees(lm_eval_tasks: Path, model, tokenizer, results,
                                             tmp_path: Path) -> None:
    """Nothing of ours but the weights: the model exported to Hugging Face's GPT-2 layout and
    run by lm_eval's own ``hf`` model (transformers' GPT-2, its tokenizer, lm_eval's batching
    and trimming) chooses as we do, with the same log-likelihoods."""
    export_hf(model, tokenizer, tmp_path / "hf")
    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={tmp_path / 'hf'},dtype=float32", batch_size=4,
        device="cpu", tasks=["local_mmlu"], num_fewshot=5, bootstrap_iters=0, log_samples=True,
        task_manager=TaskManager(include_path=str(lm_eval_tasks), include_defaults=False))
    assert out is not None
    ours = results[5]
    assert out["results"]["local_mmlu"]["acc,none"] == pytest.approx(ours.accuracy, abs=1e-12)
    for subject in SUBJECTS:
        samples = sorted(out["samples"][f"local_mmlu_{subject}"], key=lambda s: s["doc_id"])
        items = [i for i in ours.items if i.subject == subject]
        for sample, item in zip(samples, items, strict=True):
            theirs = [ll for ll, _ in sample["filtered_resps"]]
            assert theirs == pytest.approx(list(item.loglikelihoods), abs=1e-3)
            assert max(range(4), key=theirs.__getitem__) == item.predicted

    # The exported directory, loaded by name as lm_eval's command line would (--model
    # scratchgpt --model_args pretrained=DIR --batch_size auto), scores as the model did.
    lm = get_model("scratchgpt").create_from_arg_string(
        f"pretrained={tmp_path / 'hf'}", {"batch_size": "auto", "device": "cpu"})
    prompt = mmlu_prompt("virology", Question("Which?", ("a", "b", "c", "d"), 0))
    [(score, _)] = lm.loglikelihood([Instance("loglikelihood", {}, (prompt, " C"), 0)],
                                    disable_tqdm=True)
    [(expected, _)] = score_continuations(model, [encode_pair(tokenizer, prompt, " C")])
    assert score == pytest.approx(expected, abs=1e-5)


def test_evaluate_mmlu_command_records_the_contract_s_fields(model, tokenizer, mmlu_dir, results,
                                                             tmp_path: Path, capsys) -> None:
    from scratchgpt.cli import main

    export_hf(model, tokenizer, tmp_path / "model")
    argv = ["evaluate", "mmlu", "--model", str(tmp_path / "model"), "--data", str(mmlu_dir),
            "--shots", "2", "--batch-size", "4"]
    assert main([*argv, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    ours = results[2].to_dict()
    assert (record["evaluation"], record["accuracy"], record["macro"]) == (
        "mmlu", ours["accuracy"], ours["macro"])
    assert record["subjects"] == ours["subjects"]
    assert [(i["subject"], i["answer"], i["predicted"]) for i in record["items"]] == [
        (i["subject"], i["answer"], i["predicted"]) for i in ours["items"]]
    assert record["data"]["files"] == len(load_mmlu(mmlu_dir).files)
    saved = tmp_path / "model" / "eval" / "mmlu-2shot.json"
    assert json.loads(saved.read_text(encoding="utf-8")) == record
    assert main([*argv, "--subjects", "astronomi"]) == 2
    assert "astronomy" in capsys.readouterr().err  # the subjects there are, named
