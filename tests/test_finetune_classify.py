"""``scratchgpt finetune classify``, ``classify`` and ``evaluate classify``, run for real.

Tiny models (the ``nano`` preset) on a few hundred real messages of the SMS Spam Collection:
the point is the whole path — split, training, checkpoints, resume, test report, use — not
a good classifier (bench/bench_classify.py measures that). A Ctrl-C and a kill are sent to a
real process; the runs that need neither run in this process (``run_here``).
"""

from __future__ import annotations

import json
import mailbox
import shutil
import signal
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from pretrain_runs import (
    kill_after_step_0,
    pretrain_here,
    read_metrics,
    run_env,
    run_here,
    write_corpus,
)
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from scratchgpt.classify import Classifier
from scratchgpt.cli import main
from scratchgpt.config_files import load_toml
from scratchgpt.data.splits import load_splits
from scratchgpt.evaluation.records import RECORD_KEYS
from scratchgpt.finetune.classification import ClassifyData, read_labelled
from scratchgpt.training.checkpoints import step_dirs

TINY = ["--model", "preset:nano", "--tokenizer", "bpe:400", "--epochs", "1", "--batch-size", "8",
        "--eval-every", "10", "--eval-batches", "2"]


@pytest.fixture(scope="module")
def messages(shared_assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 300 lines of the SMS Spam Collection, in its own format."""
    lines = (shared_assets / "sms-spam" / "SMSSpamCollection").read_text(
        encoding="utf-8").splitlines()
    path = tmp_path_factory.mktemp("sms") / "SMSSpamCollection"
    path.write_text("\n".join(lines[:300]) + "\n", encoding="utf-8")
    return path


def _finetune_args(messages: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["finetune", "classify", "--data", str(messages), "--out", str(run_dir), *TINY,
            *extra]


def _finetune(messages: Path, run_dir: Path, *extra: str,
              cache: Path) -> subprocess.CompletedProcess[str]:
    return run_here(_finetune_args(messages, run_dir, *extra), cache)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def trained(messages: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "spam"
    done = _finetune(messages, run_dir, "--epochs", "2", cache=cache)
    assert done.returncode == 0, done.stderr
    return run_dir


@pytest.fixture(scope="module")
def language_model(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A (barely) pretrained language model: a run directory of `scratchgpt pretrain`."""
    corpus = write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", chars=20_000)
    run_dir = tmp_path_factory.mktemp("runs") / "lm"
    done = pretrain_here(corpus, run_dir, cache, "--max-steps", "2", "--eval-every", "2")
    assert done.returncode == 0, done.stderr
    return run_dir


def test_a_run_directory_holds_the_split_the_model_and_the_test_report(trained: Path) -> None:
    config = load_toml(trained / "config.toml")
    assert config["head"]["kind"] == "classifier"
    assert config["head"]["labels"] == ["ham", "spam"]
    assert config["train"]["lr"] == 5e-5 and config["train"]["schedule"] == "constant"
    for name in ("tokenizer.json", "metrics.jsonl", "loss.png", "eval.json", "confusion.png",
                 "errors.jsonl", "split/train.jsonl", "split/test.jsonl", "split/split.json"):
        assert (trained / name).is_file(), name
    assert (trained / "checkpoints" / "best").is_dir()
    metrics = read_metrics(trained)
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy"} <= metrics[-1].keys()
    splits = load_splits(trained / "split")
    texts = [set(getattr(splits, name).texts) for name in ("train", "val", "test")]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    # 2 epochs of the training split at batch 8
    assert metrics[-1]["step"] == -(-2 * len(splits.train) // 8)


def test_eval_json_agrees_with_scikit_learn_on_the_test_split(trained: Path) -> None:
    report = json.loads((trained / "eval.json").read_text(encoding="utf-8"))
    test = load_splits(trained / "split").test
    predicted = [p.label for p in Classifier.from_run(trained).predict(test.texts)]
    labels = ["ham", "spam"]
    assert report["accuracy"] == pytest.approx(accuracy_score(test.labels, predicted))
    precision, recall, f1, _ = precision_recall_fscore_support(
        test.labels, predicted, labels=labels, zero_division=0)
    for i, label in enumerate(labels):
        assert report["precision"][label] == pytest.approx(precision[i])
        assert report["recall"][label] == pytest.approx(recall[i])
        assert report["f1"][label] == pytest.approx(f1[i])
    assert report["f1"]["macro"] == pytest.approx(f1.mean())
    assert report["confusion"] == {
        "labels": labels,
        "matrix": confusion_matrix(test.labels, predicted, labels=labels).tolist()}
    assert 0.0 <= report["roc_auc"] <= 1.0
    errors = [json.loads(line) for line in (trained / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == sum(t != p for t, p in zip(test.labels, predicted, strict=True))
    assert all(e["label"] != e["predicted"] for e in errors)


def test_evaluate_classify_json_is_the_eval_json_object_as_a_record(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test_split = trained / "split" / "test.jsonl"
    assert main(["evaluate", "classify", "--model", str(trained), "--data", str(test_split),
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = {k: v for k, v in printed.items() if k not in RECORD_KEYS}
    assert metrics == json.loads((trained / "eval.json").read_text(encoding="utf-8"))
    assert (printed["evaluation"], printed["data"]["path"]) == ("classify", str(test_split))
    saved = trained / "eval" / "classify-test.json"  # where `evaluate compare` finds it
    assert json.loads(saved.read_text(encoding="utf-8")) == printed


def test_classify_prints_one_json_line_per_text(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = ["WINNER!! Claim your free prize now, call 09061701461", "ok see you at 5", "?"]
    assert main(["classify", "--model", str(trained), "--json", *texts]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for line in lines:
        record = json.loads(line)
        assert set(record) == {"label", "probabilities"}
        assert set(record["probabilities"]) == {"ham", "spam"}
        assert sum(record["probabilities"].values()) == pytest.approx(1.0)
        assert record["label"] == max(record["probabilities"], key=record["probabilities"].get)


def test_a_threshold_trades_recall_for_precision(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    classifier = Classifier.from_run(trained)
    texts = load_splits(trained / "split").test.texts
    spam = {t: sum(p.label == "spam" for p in classifier.predict(texts, t))
            for t in (0.0, 0.5, 1.0)}
    assert spam[0.0] == len(texts) >= spam[0.5] >= spam[1.0]
    assert main(["classify", "--model", str(trained), "--threshold", "0", "hello"]) == 0
    assert capsys.readouterr().out.startswith("spam\t")


def test_classify_reads_a_file_that_is_not_utf8_as_the_error_advises(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 ouvert\nfree entry\n".encode("latin-1"))
    command = ["classify", "--model", str(trained), "--file", str(latin1)]
    assert main(command) == 2
    assert "byte 3 (0xe9) is not valid UTF-8" in capsys.readouterr().err
    assert main([*command, "--encoding-errors", "replace"]) == 0
    assert "caf\ufffd ouvert" in capsys.readouterr().out


def test_classify_reads_lines_an_email_and_a_mailbox(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = tmp_path / "messages.txt"
    lines.write_text("first message\n\nsecond message\n", encoding="utf-8")
    message = EmailMessage()
    message["Subject"] = "Cheap meds"
    message.set_content("Buy now!")
    eml = tmp_path / "one.eml"
    eml.write_bytes(bytes(message))
    box = mailbox.mbox(tmp_path / "inbox.mbox")
    for _ in range(3):
        box.add(message)
    box.flush()
    for path, count in ((lines, 2), (eml, 1), (tmp_path / "inbox.mbox", 3)):
        assert main(["classify", "--model", str(trained), "--file", str(path), "--json"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == count
    single = Classifier.from_run(trained).predict(["Cheap meds\n\nBuy now!"])[0]
    assert main(["classify", "--model", str(trained), "--file", str(eml), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["probabilities"] == pytest.approx(
        single.probabilities)


def test_classify_refuses_a_language_model_and_generate_refuses_a_classifier(
    trained: Path, language_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lm = language_model
    assert main(["classify", "--model", str(lm), "hello"]) == 2
    assert f"{lm} is not a classifier but a language model" in capsys.readouterr().err
    assert main(["generate", "--model", str(trained), "--prompt", "Hi"]) == 2
    captured = capsys.readouterr()
    assert f"{trained} is a classifier run, not a language model" in captured.err
    assert captured.out == ""


def test_fine_tuning_starts_from_a_pretraining_run(
    messages: Path, cache: Path, language_model: Path, tmp_path: Path
) -> None:
    lm = language_model
    run_dir = tmp_path / "from-lm"
    done = _finetune(messages, run_dir, "--model", str(lm), "--train", "lora", cache=cache)
    assert done.returncode == 0, done.stderr
    assert "training lora" in done.stderr
    config = load_toml(run_dir / "config.toml")
    assert config["resolved_model"] == load_toml(lm / "config.toml")["resolved_model"]
    assert (run_dir / "tokenizer.json").read_text() == (lm / "tokenizer.json").read_text()
    assert len(Classifier.from_run(run_dir).predict(["hello", "win a prize"])) == 2


def test_ctrl_c_then_resume_matches_an_uninterrupted_run(
    messages: Path, cache: Path, trained: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "interrupted"
    command = [sys.executable, "-m", "scratchgpt.cli",
               *_finetune_args(messages, run_dir, "--epochs", "2")]
    process = subprocess.Popen(command, env=run_env(cache), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not step_dirs(run_dir / "checkpoints"):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before Ctrl-C arrived")
    assert process.returncode == 130, stderr
    assert "continue with: scratchgpt finetune classify --out" in stderr
    assert not (run_dir / "eval.json").exists()  # tested only once trained
    resumed = run_here(["finetune", "classify", "--out", str(run_dir), "--resume"], cache)
    assert resumed.returncode == 0, resumed.stderr
    assert read_metrics(run_dir) == read_metrics(trained)
    assert json.loads((run_dir / "eval.json").read_text()) == json.loads(
        (trained / "eval.json").read_text())


@pytest.mark.parametrize(("content", "message"), [
    ("text,label\nhello,ham\nbye,ham\n", "every text has the label 'ham'"),
    ("text,label\nhello,\n", ":2: the label (field 'label') is empty"),
    ("message,label\nhello,ham\n", "no column 'text' (found columns: 'message', 'label')"),
])
def test_bad_labelled_data_is_named_and_leaves_no_run(
    content: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.csv"
    data.write_text(content, encoding="utf-8")
    run_dir = tmp_path / "run"
    assert main(["finetune", "classify", "--data", str(data), "--out", str(run_dir),
                 *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("scratchgpt finetune classify: error: ")
    assert str(data) in err and message in err
    assert not run_dir.exists()


def test_a_shipped_dataset_that_is_not_downloaded_says_how_to_get_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path / "empty-cache"))
    assert main(["finetune", "classify", "--data", "sms-spam", "--out", str(tmp_path / "r"),
                 *TINY]) == 2
    assert "run: scratchgpt download sms-spam" in capsys.readouterr().err


def test_evaluate_classify_reads_named_columns_and_refuses_unknown_labels(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "mail.csv"
    data.write_text('body,kind\n"Win cash now, text WIN",spam\nhi there,ham\n', encoding="utf-8")
    report = tmp_path / "report"
    assert main(["evaluate", "classify", "--model", str(trained), "--data", str(data),
                 "--text-field", "body", "--label-field", "kind", "--out", str(report)]) == 0
    assert "2 texts of" in capsys.readouterr().out
    assert json.loads((report / "eval.json").read_text())["count"] == 2
    assert (report / "confusion.png").stat().st_size > 0
    other = tmp_path / "other.csv"
    other.write_text("text,label\na,ham\nb,eggs\n", encoding="utf-8")
    assert main(["evaluate", "classify", "--model", str(trained), "--data", str(other)]) == 2
    assert "label(s) 'eggs' are not among the classifier's (ham, spam)" in (
        capsys.readouterr().err)


def test_a_bad_setting_is_named_before_anything_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    for flags, message in ((["--tokenizer", "bpe:x"], "--tokenizer: 'bpe:x' is not bpe:VOCAB"),
                           (["--train", "some"], "--train: must be head, last-block"),
                           (["--val-fraction", "0.5", "--test-fraction", "0.5"],
                            "--test-fraction: val_fraction + test_fraction must leave texts")):
        assert main(["finetune", "classify", "--out", str(run_dir), *flags]) == 2
        assert message in capsys.readouterr().err
    assert not run_dir.exists()


def test_resume_before_the_first_checkpoint_starts_from_the_model_it_was_given(
    messages: Path, cache: Path, language_model: Path, tmp_path: Path
) -> None:
    """Killed after its step-0 evaluation and before any checkpoint, a run resumed starts over
    from its --model (not from random weights): the figures of an uninterrupted run."""
    start = ["--model", str(language_model), "--epochs", "0"]
    killed = tmp_path / "killed"
    kill_after_step_0(
        [sys.executable, "-m", "scratchgpt.cli", "finetune", "classify", "--data", str(messages),
         "--out", str(killed), *TINY, *start, "--max-steps", "100000", "--eval-every", "100000"],
        cache)
    assert (killed / "config.toml").exists() and not step_dirs(killed / "checkpoints")
    resumed = run_here(["finetune", "classify", "--out", str(killed), "--resume",
                        "--max-steps", "4", "--eval-every", "2"], cache)
    assert resumed.returncode == 0, resumed.stderr
    assert "holds no checkpoint yet" in resumed.stderr

    fresh = tmp_path / "fresh"
    done = _finetune(messages, fresh, *start, "--max-steps", "4", "--eval-every", "2",
                     cache=cache)
    assert done.returncode == 0, done.stderr
    assert [m["step"] for m in read_metrics(killed)] == [0, 2, 4]
    assert read_metrics(killed) == read_metrics(fresh)  # step 0 too: the same start
    assert (json.loads((killed / "eval.json").read_text())
            == json.loads((fresh / "eval.json").read_text()))


def test_resume_says_what_a_run_directory_holds(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (["finetune", "instruct"], ["pretrain"]):
        assert main([*command, "--out", str(trained), "--resume"]) == 2
        assert (f"{trained} is a `finetune classify` run, not a `{' '.join(command)}` one: "
                f"resume it with `scratchgpt finetune classify --out {trained} --resume`"
                ) in capsys.readouterr().err
    missing = tmp_path / "no-such-run"
    assert main(["finetune", "classify", "--out", str(missing), "--resume"]) == 2
    assert (f"--resume: the run directory {missing} does not exist; start one with "
            f"`scratchgpt finetune classify --out {missing}` (without --resume)"
            ) in capsys.readouterr().err
    assert not missing.exists()


def test_a_directory_of_the_sms_collection_is_read_and_another_says_what_it_lacks(
    messages: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A directory holding the SMS Spam Collection's file reads as that file; a directory of
    something else says what a directory may hold."""
    folder = tmp_path / "sms"
    folder.mkdir()
    shutil.copyfile(messages, folder / "SMSSpamCollection")
    from_folder = read_labelled(ClassifyData(data=str(folder)))
    from_file = read_labelled(ClassifyData(data=str(messages)))
    assert (from_folder.texts, from_folder.labels) == (from_file.texts, from_file.labels)

    other = tmp_path / "other"
    other.mkdir()
    (other / "mail.csv").write_text("text,label\nhi,ham\nwin,spam\n", encoding="utf-8")
    assert main(["finetune", "classify", "--data", str(other), "--out", str(tmp_path / "r"),
                 *TINY]) == 2
    assert (f"{other}: holds no SpamAssassin groups: expected .tar.bz2 tarballs or their "
            "extracted folders (easy_ham/, spam/, ...), or the SMS Spam Collection's "
            "SMSSpamCollection file; a .csv, .tsv, .jsonl or .zip file is read when named "
            "itself") in capsys.readouterr().err
