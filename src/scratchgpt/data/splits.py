"""Train, validation and test splits of labelled texts, and class balancing.

A classifier is trained on one part of the data, tuned on a second (validation) and judged on a
third (test) that it never saw. :func:`split` makes the three:

- **without leaks**: the corpora hold re-sent messages, and a text in both train and test would
  be judged by memory, so exact duplicates are removed first (the first copy is kept);
- **stratified**: each class is cut by the same fractions, so every split has the corpus's
  class mix, give or take one text;
- **seeded**: the same seed gives the same split.

Balancing by undersampling (the book's choice: every class cut to the size of the smallest)
happens after the split, separately inside each split, so the test split at the corpus's natural
class mix (``test_natural``: a spam filter meets 13% spam, not 50%) holds no text that train or
validation hold. :func:`save_splits` writes the splits into a run directory so that a run can be
reproduced and its test set is never trained on.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from scratchgpt.data.labelled import LabelledTexts, check_classes, load_labelled

SPLIT_NAMES = ("train", "val", "test", "test_natural")
REPORT_FILE = "split.json"


def balance(data: LabelledTexts, seed: int) -> LabelledTexts:
    """``data`` with every class undersampled to the size of the smallest (a seeded random
    choice of its texts), in their original order."""
    classes = sorted(by_class(data).items())
    size = min(len(indices) for _, indices in classes)
    rng = random.Random(seed)
    return select(data, sorted(i for _, indices in classes for i in rng.sample(indices, size)))


undersample = balance  # what split() calls it, since its own flag is named balance


def by_class(data: LabelledTexts) -> dict[str, list[int]]:
    """The indices of each class's texts."""
    indices: dict[str, list[int]] = {}
    for index, label in enumerate(data.labels):
        indices.setdefault(label, []).append(index)
    return indices


def select(data: LabelledTexts, indices: list[int]) -> LabelledTexts:
    """The texts of ``data`` at ``indices``, from the same source."""
    return LabelledTexts(
        [data.texts[i] for i in indices], [data.labels[i] for i in indices], data.source
    )


@dataclass(frozen=True)
class Splits:
    """Train, validation and test splits of one corpus, the test split at the corpus's natural
    class mix, and how they were made."""

    train: LabelledTexts
    val: LabelledTexts
    test: LabelledTexts
    test_natural: LabelledTexts  # the test split before balancing (equal to it without)
    seed: int
    fractions: tuple[float, float, float]
    balanced: bool
    duplicates_removed: int

    def counts(self) -> dict[str, dict[str, int]]:
        """Texts per class in each split: ``{"train": {"ham": 3163, "spam": 457}, ...}``."""
        return {name: getattr(self, name).counts() for name in SPLIT_NAMES}

    def report(self) -> dict:
        """How the splits were made, as ``split.json`` holds it."""
        return {
            "source": self.train.source,
            "seed": self.seed,
            "fractions": list(self.fractions),
            "balanced": self.balanced,
            "duplicates_removed": self.duplicates_removed,
            "counts": self.counts(),
        }

    def summary(self) -> str:
        """A few lines for a person: the size and class mix of each split."""
        lines = [
            f"{name:<12} {len(getattr(self, name)):>7,}  "
            + ", ".join(f"{label} {n:,}" for label, n in counts.items())
            for name, counts in self.counts().items()
        ]
        how = f"seed {self.seed}, {'balanced' if self.balanced else 'natural class mix'}"
        removed = f"{self.duplicates_removed:,} duplicate texts removed"
        return "\n".join([f"split of {self.train.source} ({how}; {removed})", *lines])


def split(
    data: LabelledTexts,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    seed: int = 123,
    balance: bool = False,
) -> Splits:
    """Stratified, seeded train/validation/test splits of ``data`` with no text in two splits;
    with ``balance``, each split is then undersampled to equal classes (see the module's
    docstring)."""
    if len(fractions) != 3 or min(fractions) <= 0 or not math.isclose(sum(fractions), 1):
        raise ValueError(
            f"fractions must be three positive numbers (train, validation, test) that sum to 1, "
            f"got {tuple(fractions)}"
        )
    unique = first_copies(check_classes(data))
    classes = sorted(by_class(unique).items())
    too_small = [
        f"{label!r} ({len(indices)} texts)"
        for label, indices in classes
        if min(split_sizes(len(indices), fractions)) == 0
    ]
    if too_small:
        raise ValueError(
            f"{data.source}: too few texts of class {', '.join(too_small)} to appear in train, "
            f"validation and test at fractions {tuple(fractions)}; add texts of the class, "
            "or leave it out"
        )
    rng = random.Random(seed)
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for _, indices in classes:
        n_train, n_val, _ = split_sizes(len(indices), fractions)
        rng.shuffle(indices)
        train += indices[:n_train]
        val += indices[n_train : n_train + n_val]
        test += indices[n_train + n_val :]
    parts = [select(unique, sorted(part)) for part in (train, val, test)]
    natural = parts[2]
    if balance:
        parts = [undersample(part, seed) for part in parts]
    removed = len(data) - len(unique)
    return Splits(*parts, natural, seed, tuple(fractions), balance, removed)


def split_sizes(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """How many of a class's ``n`` texts go to train, validation and test: the first two
    rounded (half up), the test split the rest; so each is within one text of its fraction."""
    n_train, n_val = (math.floor(n * f + 0.5) for f in fractions[:2])
    return n_train, n_val, n - n_train - n_val


def first_copies(data: LabelledTexts) -> LabelledTexts:
    """``data`` with each text kept once, where it first appears (with its first label)."""
    first: dict[str, int] = {}
    for index, text in enumerate(data.texts):
        first.setdefault(text, index)
    return select(data, sorted(first.values()))


def save_splits(splits: Splits, directory: str | Path) -> None:
    """Write each split to ``DIRECTORY/NAME.jsonl`` (``{"text": ..., "label": ...}`` per line)
    and how they were made to ``DIRECTORY/split.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in SPLIT_NAMES:
        part: LabelledTexts = getattr(splits, name)
        lines = (
            json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n"
            for text, label in zip(part.texts, part.labels, strict=True)
        )
        (directory / f"{name}.jsonl").write_text("".join(lines), encoding="utf-8")
    report = json.dumps(splits.report(), indent=2, ensure_ascii=False) + "\n"
    (directory / REPORT_FILE).write_text(report, encoding="utf-8")


def load_splits(directory: str | Path) -> Splits:
    """The splits that :func:`save_splits` wrote to ``directory``."""
    directory = Path(directory)
    report_path = directory / REPORT_FILE
    if not report_path.is_file():
        raise FileNotFoundError(f"no {REPORT_FILE} in {directory}: it holds no saved split")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    parts = {}
    for name in SPLIT_NAMES:
        part = load_labelled(directory / f"{name}.jsonl")
        parts[name] = LabelledTexts(part.texts, part.labels, report["source"])
    return Splits(
        **parts,
        seed=report["seed"],
        fractions=tuple(report["fractions"]),
        balanced=report["balanced"],
        duplicates_removed=report["duplicates_removed"],
    )
