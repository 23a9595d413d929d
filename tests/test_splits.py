"""Train/validation/test splits: stratified, seeded, no text in two splits, balanced on request
with the natural test mix kept, and saved to and loaded from a run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scratchgpt.data.labelled import LabelledTexts, load_labelled
from scratchgpt.data.splits import Splits, balance, load_splits, save_splits, split

SMS_UNIQUE = {"ham": 4518, "spam": 653}  # the collection's 5,574 texts less 403 re-sent ones


@pytest.fixture(scope="module")
def sms(shared_assets: Path) -> LabelledTexts:
    return load_labelled(shared_assets / "sms-spam" / "SMSSpamCollection")


@pytest.fixture(scope="module")
def sms_splits(sms: LabelledTexts) -> Splits:
    return split(sms, seed=1)


def texts(data: LabelledTexts) -> set[str]:
    return set(data.texts)


def test_duplicates_removed_and_reported(sms: LabelledTexts, sms_splits: Splits) -> None:
    assert sms_splits.duplicates_removed == 403 == len(sms) - len(texts(sms))
    parts = (sms_splits.train, sms_splits.val, sms_splits.test)
    assert sum(len(part) for part in parts) == sum(SMS_UNIQUE.values())
    for part in parts:
        assert len(texts(part)) == len(part)  # one copy of each text


def test_no_text_in_two_splits(sms_splits: Splits) -> None:
    train, val, test = texts(sms_splits.train), texts(sms_splits.val), texts(sms_splits.test)
    natural = texts(sms_splits.test_natural)
    assert not train & val and not train & test and not val & test
    assert not natural & train and not natural & val


def test_stratified(sms_splits: Splits) -> None:
    """Each class is cut by the fractions: within one text of the target in every split."""
    for name, fraction in zip(("train", "val", "test"), sms_splits.fractions, strict=True):
        counts = getattr(sms_splits, name).counts()
        for label, total in SMS_UNIQUE.items():
            assert abs(counts[label] - total * fraction) <= 1, (name, label)
    assert sms_splits.test_natural == sms_splits.test  # not balanced: the same split
    assert sms_splits.counts()["train"] == {"ham": 3163, "spam": 457}


def test_seeded(sms: LabelledTexts, sms_splits: Splits) -> None:
    assert split(sms, seed=1) == sms_splits
    other = split(sms, seed=2)
    assert other.train.counts() == sms_splits.train.counts()
    assert other.train.texts != sms_splits.train.texts


def test_balanced_inside_each_split(sms: LabelledTexts, sms_splits: Splits) -> None:
    balanced = split(sms, seed=1, balance=True)
    for name in ("train", "val", "test"):
        counts = getattr(balanced, name).counts()
        assert counts["ham"] == counts["spam"] == getattr(sms_splits, name).counts()["spam"]
        assert texts(getattr(balanced, name)) <= texts(getattr(sms_splits, name))
    # the natural test split is the test split before balancing, at the corpus's class mix
    assert balanced.test_natural == sms_splits.test
    assert texts(balanced.test) <= texts(balanced.test_natural)
    natural = texts(balanced.test_natural)
    assert not natural & texts(balanced.train) and not natural & texts(balanced.val)
    assert balanced.balanced and not sms_splits.balanced


def test_balance_undersamples_to_the_smallest_class() -> None:
    data = LabelledTexts([f"text {i}" for i in range(10)], ["a"] * 6 + ["b"] * 3 + ["c"], "made up")
    balanced = balance(data, seed=0)
    assert balanced.counts() == {"a": 1, "b": 1, "c": 1}
    assert balanced.texts[-1] == "text 9"  # the smallest class whole, the order kept
    assert balance(data, seed=0) == balanced
    picks = {tuple(balance(data, seed).texts) for seed in range(20)}
    assert len(picks) > 1  # the seed chooses


def test_many_classes_and_duplicates_with_other_labels() -> None:
    labels = ["x", "y", "z"] * 40
    data = LabelledTexts([f"text {i % 100}" for i in range(120)], labels, "made up")
    splits = split(data, fractions=(0.5, 0.25, 0.25), seed=3)
    assert splits.duplicates_removed == 20
    all_texts = splits.train.texts + splits.val.texts + splits.test.texts
    assert sorted(all_texts) == sorted(set(data.texts))
    for part in (splits.train, splits.val, splits.test):
        assert part.label_names == ["x", "y", "z"]
        for text, label in zip(part.texts, part.labels, strict=True):
            assert label == labels[data.texts.index(text)]  # the first copy's label


def test_bad_fractions(sms: LabelledTexts) -> None:
    for fractions in ((0.7, 0.2, 0.2), (0.8, 0.3, -0.1), (0.9, 0.1, 0.0), (0.8, 0.2)):
        with pytest.raises(ValueError, match="three positive numbers .* that sum to 1, got"):
            split(sms, fractions=fractions)  # type: ignore[arg-type]


def test_class_too_small_for_every_split() -> None:
    labels = ["ham"] * 20 + ["rare"] * 2 + ["odd"] * 4
    data = LabelledTexts([str(i) for i in range(len(labels))], labels, "x")
    with pytest.raises(
        ValueError,
        match=r"x: too few texts of class 'odd' \(4 texts\), 'rare' "
        r"\(2 texts\) to appear in train, validation and test",
    ):
        split(data)
    with pytest.raises(ValueError, match="x: every text has the label 'ham'"):
        split(LabelledTexts(["a", "b", "c"], ["ham"] * 3, "x"))


def test_save_and_load(sms: LabelledTexts, tmp_path: Path) -> None:
    splits = split(sms, seed=7, balance=True)
    save_splits(splits, tmp_path / "run" / "split")
    directory = tmp_path / "run" / "split"
    assert sorted(p.name for p in directory.iterdir()) == [
        "split.json",
        "test.jsonl",
        "test_natural.jsonl",
        "train.jsonl",
        "val.jsonl",
    ]
    first = json.loads((directory / "train.jsonl").read_text(encoding="utf-8").split("\n")[0])
    assert first == {"text": splits.train.texts[0], "label": splits.train.labels[0]}
    report = json.loads((directory / "split.json").read_text(encoding="utf-8"))
    assert report == {
        "source": sms.source,
        "seed": 7,
        "fractions": [0.7, 0.1, 0.2],
        "balanced": True,
        "duplicates_removed": 403,
        "counts": splits.counts(),
    }
    assert load_splits(directory) == splits
    assert "403 duplicate texts removed" in splits.summary()


def test_save_and_load_awkward_texts(tmp_path: Path) -> None:
    odd = ['quote " and \\ backslash', "line\nbreak", "U+2028 \u2028 inside", "emoji 🎉", " pad "]
    data = LabelledTexts(odd * 2, ["a"] * 5 + ["b"] * 5, "made up")
    data = LabelledTexts([f"{t} {i}" for i, t in enumerate(data.texts)], data.labels, "made up")
    splits = split(data, fractions=(0.6, 0.2, 0.2))
    save_splits(splits, tmp_path)
    assert load_splits(tmp_path) == splits


def test_load_from_a_directory_without_a_split(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no split.json in .*: it holds no saved split"):
        load_splits(tmp_path)
