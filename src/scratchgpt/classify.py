"""Using a fine-tuned classifier: ``Classifier.from_run(RUN).predict(texts)``.

A run of ``scratchgpt finetune classify`` holds everything needed: the weights (its best
checkpoint, LoRA adapters merged in), the tokenizer, the label names and how texts were read
(``max_length``, ``truncate``; the ``[head]`` table of ``config.toml``). Texts are classified
in batches, sorted by length so that little padding is computed.

An empty (or whitespace-only) text has nothing to label, so it is refused rather than given
a label the model would invent; :func:`read_texts` skips the blank lines of a file, and
says which.
"""

from __future__ import annotations

import mailbox
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from scratchgpt.config_files import load_toml
from scratchgpt.data.corpus import read_text_file, text_lines
from scratchgpt.data.labelled import SkippedEmail, email_text
from scratchgpt.data.text_batches import Truncate, encode_text, pad_batch
from scratchgpt.evaluation.classification import threshold_predictions
from scratchgpt.model import GPTClassifier
from scratchgpt.model.device import compute_device
from scratchgpt.run_dir import CONFIG_FILE, HEAD, load_run, model_tables
from scratchgpt.tokenizers import Tokenizer


@dataclass
class FileTexts:
    """The texts of a file, in order, and where each blank one was that was left out
    (``line 4``, ``message 2``): a blank line, or a message with no text."""

    texts: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(self, text: str, where: str) -> None:
        if text.strip():
            self.texts.append(text)
        else:
            self.skipped.append(where)

    def skipped_note(self, path: str | Path) -> str:
        """A line for the user saying what was skipped: ``FILE: skipped 2 blank: line 2,
        line 5``."""
        shown = ", ".join(self.skipped[:10]) + (", ..." if len(self.skipped) > 10 else "")
        return f"{path}: skipped {len(self.skipped)} blank: {shown}"


def read_texts(path: Path, encoding_errors: str = "strict") -> FileTexts:
    """The texts to classify in ``path``: an email (``.eml``: its subject and text body, as
    the SpamAssassin loader reads them), a mailbox (``.mbox``: one text per message), or else
    one text per line (UTF-8, ``encoding_errors="replace"`` reads bad bytes as U+FFFD). A line
    ends at ``\\n`` (or ``\\r\\n``) only (:func:`~scratchgpt.data.corpus.text_lines`): a form
    feed or U+2028 inside a text does not cut it in two. Blank lines and messages with no text
    are skipped, and listed in :attr:`FileTexts.skipped`."""
    found = FileTexts()
    if path.suffix == ".eml":
        found.add(_email(path.read_bytes()), "the email")
    elif path.suffix == ".mbox":
        if not path.is_file():
            raise FileNotFoundError(f"file not found: {path}")
        for number, message in enumerate(mailbox.mbox(path, create=False), start=1):
            found.add(_email(message.as_bytes()), f"message {number}")
    else:
        text = read_text_file(path, encoding_errors)
        for number, line in enumerate(text_lines(text), start=1):
            found.add(line, f"line {number}")
    return found


def _email(raw: bytes) -> str:
    """A message's text; one with none (or that cannot be parsed) is the empty text."""
    try:
        return email_text(raw)
    except SkippedEmail:
        return ""


@dataclass
class Prediction:
    """A text's label and the probability of each class."""

    label: str
    probabilities: dict[str, float]


class Classifier:
    """A :class:`GPTClassifier` with its tokenizer and labels, ready to label texts."""

    def __init__(self, model: GPTClassifier, tokenizer: Tokenizer, labels: Sequence[str], *,
                 max_length: int, truncate: Truncate = "head", batch_size: int = 32) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.max_length = max_length
        self.truncate = truncate
        self.batch_size = batch_size

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str = "best") -> Classifier:
        """The classifier a ``scratchgpt finetune classify`` run trained (its ``best``
        checkpoint, or ``latest``, or a ``step-NNNNNNNN`` name)."""
        run_dir = Path(run_dir)
        model, tokenizer = load_run(run_dir, checkpoint)
        if not isinstance(model, GPTClassifier):
            raise ValueError(f"{run_dir} is not a classifier but a language model (from "
                             "`scratchgpt pretrain`); classify with the run directory of "
                             "`scratchgpt finetune classify`, or use `scratchgpt generate`")
        head = model_tables(load_toml(run_dir / CONFIG_FILE))[HEAD]
        return cls(model, tokenizer, head["labels"], max_length=head["max_length"],
                   truncate=head["truncate"])

    @torch.no_grad()
    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), len(labels)]``: the softmax of the class logits of each text. An
        empty or whitespace-only text is a ``ValueError`` naming its index."""
        for index, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"text {index} (counting from 0) is empty: a classifier needs "
                                 "some text to label")
        device = compute_device(self.model)
        ids = [encode_text(self.tokenizer, text, self.max_length, self.truncate) for text in texts]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        result = np.zeros((len(ids), len(self.labels)), dtype=np.float64)
        pad_id = self.tokenizer.eot_id or 0
        for start in range(0, len(order), self.batch_size):
            chosen = order[start : start + self.batch_size]
            inputs, lengths = pad_batch([ids[i] for i in chosen], pad_id)
            logits = self.model(inputs.to(device), lengths.to(device)).float()
            result[chosen] = torch.softmax(logits, dim=-1).cpu().numpy()
        return result

    def predict(self, texts: Sequence[str], threshold: float | None = None) -> list[Prediction]:
        """The label of each text: the most probable class, or with two classes and a
        ``threshold``, the second label (``spam`` of ``ham, spam``) when its probability is
        at least ``threshold``. An empty text is refused (see :meth:`probabilities`)."""
        probabilities = self.probabilities(texts)
        labels = self.decide(probabilities, threshold)
        return [Prediction(label, dict(zip(self.labels, row.tolist(), strict=True)))
                for label, row in zip(labels, probabilities, strict=True)]

    def decide(self, probabilities: np.ndarray, threshold: float | None = None) -> list[str]:
        """Labels from :meth:`probabilities`, as :meth:`predict` chooses them."""
        if threshold is None:
            return [self.labels[i] for i in probabilities.argmax(axis=1)]
        return threshold_predictions(probabilities, self.labels, threshold)
