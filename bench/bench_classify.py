"""Our fine-tuned GPT classifier against scikit-learn's TF-IDF + logistic regression.

Both learn from the same training split and are tested on the same test split (the split
``scratchgpt finetune classify`` makes and saves, seeded). Reported for each: test accuracy,
the positive class's F1 (``spam``), wall time to train, and classification throughput
(texts/s over the whole test split, the median of ``--repeats`` alternating turns, and the
ratio). With ``--random``, the same fine-tuning also starts from a random model of the same
shape and tokenizer: the gain from pretraining, the book's lesson.

    python bench/bench_classify.py --data sms-spam --model runs/pretrain-main
    python bench/bench_classify.py --data spamassassin --model runs/pretrain-main --random

``--data`` takes what ``finetune classify --data`` takes (``../shared/assets/sms-spam/
SMSSpamCollection`` works offline); ``--model`` a run directory of ``scratchgpt pretrain``, a
downloaded GPT-2 or ``preset:NAME``. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from timing import median_seconds

from scratchgpt.classify import Classifier
from scratchgpt.config_files import load_toml
from scratchgpt.data.splits import load_splits
from scratchgpt.evaluation.classification import classification_metrics
from scratchgpt.finetune.classification import ClassifyConfig, finetune_classifier


def fine_tune(args: argparse.Namespace, model: str, run_dir: Path,
              tokenizer: str | None = None) -> tuple[Classifier, float]:
    """Fine-tune ``model`` as the command line would; returns the classifier and seconds."""
    flags: dict[str, dict[str, Any]] = {
        "data": {"data": args.data, "epochs": args.epochs, "balance": args.balance,
                 "truncate": args.truncate},
        "model": {"model": model, "train": args.train, "pooling": args.pooling,
                  **({"tokenizer": tokenizer} if tokenizer else {})},
        "train": {"lr": args.lr, "batch_size": args.batch_size, "seed": args.seed,
                  "eval_every": args.eval_every, "device": "cpu"},
    }
    start = time.perf_counter()
    finetune_classifier(ClassifyConfig.from_sources(None, flags), run_dir, show_progress=False)
    return Classifier.from_run(run_dir), time.perf_counter() - start


def scores(true: list[str], predicted: list[str], labels: list[str]) -> dict[str, float]:
    metrics = classification_metrics(true, predicted, labels)
    return {"accuracy": metrics["accuracy"], "f1": metrics["f1"][labels[-1]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="sms-spam")
    parser.add_argument("--model", required=True, help="the pretrained model to fine-tune")
    parser.add_argument("--train", default="all", help="which weights learn (default: all)")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--balance", action="store_true")
    parser.add_argument("--truncate", default="head", help="keep a long text's head or tail")
    parser.add_argument("--pooling", default="last", help="last or mean")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--random", action="store_true",
                        help="also fine-tune a random model of the same shape and tokenizer")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="keep the run directories here")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-classify-"))

    ours, ours_seconds = fine_tune(args, args.model, out / "pretrained")
    splits = load_splits(out / "pretrained" / "split")
    train, test, labels = splits.train, splits.test, ours.labels
    rows = [("ours, pretrained", ours, ours_seconds)]
    if args.random:
        preset = load_toml(Path(args.model) / "config.toml")["model"]["preset"]
        random, random_seconds = fine_tune(args, f"preset:{preset}", out / "random",
                                           str(Path(args.model) / "tokenizer.json"))
        rows.append((f"ours, random {preset}", random, random_seconds))

    tfidf = make_pipeline(TfidfVectorizer(sublinear_tf=True), LogisticRegression(max_iter=1000))
    start = time.perf_counter()
    tfidf.fit(train.texts, train.labels)
    tfidf_seconds = time.perf_counter() - start

    ours_time, tfidf_time = median_seconds(
        [lambda: ours.probabilities(test.texts), lambda: tfidf.predict_proba(test.texts)],
        repeats=args.repeats, warmup=1)

    print(f"\n{args.data}: train {len(train):,}, test {len(test):,} texts "
          f"({', '.join(f'{k} {v}' for k, v in test.counts().items())}); positive class "
          f"{labels[-1]}; {torch.get_num_threads()} threads\n")
    print("| model | test accuracy | F1 | train time | texts/s |")
    print("|---|---|---|---|---|")
    for name, classifier, seconds in rows:
        result = scores(test.labels, [p.label for p in classifier.predict(test.texts)], labels)
        speed = f"{len(test) / ours_time:,.0f}" if classifier is ours else ""
        print(f"| {name} | {result['accuracy']:.4f} | {result['f1']:.4f} | {seconds:.0f} s | "
              f"{speed} |")
    result = scores(test.labels, list(tfidf.predict(test.texts)), labels)
    print(f"| TF-IDF + logistic regression | {result['accuracy']:.4f} | {result['f1']:.4f} | "
          f"{tfidf_seconds:.1f} s | {len(test) / tfidf_time:,.0f} |")
    print(f"\nclassification throughput, ours / TF-IDF: {tfidf_time / ours_time:.3f}x "
          f"(median of {args.repeats}); run directories in {out}")


if __name__ == "__main__":
    main()
