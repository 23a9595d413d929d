"""``scratchgpt finetune classify``: a GPT taught to sort texts into classes (chapter 6).

The steps, each a library call of its own:

1. read labelled texts (:mod:`scratchgpt.data.labelled`: the SMS Spam Collection, the
   SpamAssassin corpus, or any CSV, TSV or JSONL file),
2. split them, stratified and seeded, into train, validation and test, with no text in two
   splits (:mod:`scratchgpt.data.splits`); the split is saved in the run directory,
3. start from a language model (:mod:`.init_from`) and put a class head on it in place of its
   vocabulary head (:class:`~scratchgpt.model.classifier.GPTClassifier`),
4. choose which weights train (:mod:`scratchgpt.model.trainable`: the head, the last blocks,
   all of them, or LoRA adapters),
5. train with the same :class:`~scratchgpt.training.trainer.Trainer` as pretraining, on the
   :class:`ClassificationTask` (cross-entropy over the classes), through
   :func:`~scratchgpt.training.runner.run_job`,
6. evaluate the best checkpoint on the test split (:mod:`scratchgpt.evaluation.report`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.data.batches import ShuffledBatches, evaluation_batches
from scratchgpt.data.labelled import LabelledTexts, load_labelled
from scratchgpt.data.splits import Splits, load_splits, save_splits, split
from scratchgpt.data.text_batches import TokenizedTexts
from scratchgpt.evaluation.report import evaluate_run
from scratchgpt.finetune.config import (  # the settings, kept free of PyTorch
    ClassifyConfig,
    ClassifyData,
    ClassifyModel,  # noqa: F401  (re-exported: scratchgpt.finetune.classification.ClassifyModel)
    split_fractions,
)
from scratchgpt.finetune.init_from import start_model
from scratchgpt.hub.datasets import dataset_path
from scratchgpt.model import GPTClassifier
from scratchgpt.model.device import compute_device
from scratchgpt.model.trainable import set_trainable
from scratchgpt.run_dir import HEAD, RESOLVED_MODEL, SPLIT_DIR
from scratchgpt.training import distributed
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.runner import Setup, log, run_job
from scratchgpt.training.trainer import Batch, FitResult


def read_labelled(config: ClassifyData) -> LabelledTexts:
    """The labelled texts ``config.data`` names: a shipped dataset from the download cache, or
    a path."""
    return load_labelled(dataset_path(config.data, "labelled"), text_field=config.text_field,
                         label_field=config.label_field)


class ClassificationTask:
    """Cross-entropy over the classes; loss and accuracy on fixed train and validation texts.

    The best checkpoint is the one with the highest validation accuracy.
    """

    best_metric = "val_accuracy"
    higher_is_better = True
    progress_metrics = ("val_accuracy",)

    def __init__(self, train: TokenizedTexts, val: TokenizedTexts, *, batch_size: int,
                 eval_texts: int, seed: int, class_weights: torch.Tensor | None = None) -> None:
        self.data = {"train": train, "val": val}
        self.batch_size = batch_size
        self.seed = seed
        self.class_weights = class_weights
        self.eval_sets = {name: evaluation_batches(data, eval_texts, batch_size)
                          for name, data in self.data.items()}

    def train_stream(self, rank: int, world_size: int) -> ShuffledBatches:
        return ShuffledBatches(self.data["train"], self.batch_size, seed=self.seed, rank=rank,
                               world_size=world_size)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        inputs, lengths, labels = batch
        weight = None if self.class_weights is None else self.class_weights.to(inputs.device)
        return F.cross_entropy(model(inputs, lengths).float(), labels, weight=weight)

    def loss_terms(self, batch: Batch) -> torch.Tensor | int:
        """The texts; with class weights, their weights (the mean cross-entropy divides by
        them)."""
        labels = batch[2]
        if self.class_weights is None:
            return labels.numel()
        return self.class_weights.to(labels.device)[labels].sum()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        device = compute_device(model)
        metrics = {}
        for name, data in self.data.items():
            loss, correct, count = 0.0, 0, 0
            for indices in self.eval_sets[name]:
                inputs, lengths, labels = (t.to(device) for t in data.batch(indices))
                logits = model(inputs, lengths).float()
                loss += float(F.cross_entropy(logits, labels, reduction="sum"))
                correct += int((logits.argmax(-1) == labels).sum())
                count += len(labels)
            metrics[f"{name}_loss"] = loss / count
            metrics[f"{name}_accuracy"] = correct / count
        return metrics

    def sample(self, model: nn.Module) -> str | None:
        return None


def inverse_frequency(labels: list[int], num_classes: int) -> torch.Tensor:
    """Class weights ``n / (num_classes * n_c)``: each class weighs as much in the loss."""
    counts = torch.bincount(torch.tensor(labels), minlength=num_classes).float()
    return len(labels) / (num_classes * counts.clamp(min=1))


@dataclass
class ClassifyJob:
    """Fine-tuning a language model into a classifier (a :class:`~.runner.Job`)."""

    config: ClassifyConfig
    command = "finetune classify"

    @property
    def train(self) -> TrainConfig:
        return self.config.train

    def setup(self, process: distributed.ProcessInfo, resume_dir: Path | None) -> Setup:
        data, choice, train = self.config.data, self.config.model, self.config.train
        splits = (load_splits(resume_dir / SPLIT_DIR) if resume_dir is not None  # the run's own
                  else split(read_labelled(data), seed=train.seed, balance=data.balance,
                             fractions=split_fractions(data)))
        gpt, tokenizer = start_model(choice.model, tokenizer=choice.tokenizer, seed=train.seed,
                                     resume_dir=resume_dir, texts=lambda: splits.train.texts)
        if process.is_main:
            log(splits.summary())
        labels = splits.train.label_names
        model = GPTClassifier.from_language_model(gpt, len(labels), choice.pooling)
        summary = set_trainable(model, choice.train, **choice.lora())
        if process.is_main:
            log(str(summary))

        context = gpt.config.context_length
        max_length = min(data.max_length or context, context)
        index = {label: i for i, label in enumerate(labels)}

        def encode(part: LabelledTexts) -> TokenizedTexts:
            return TokenizedTexts(part.texts, [index[label] for label in part.labels],
                                  tokenizer, max_length, data.truncate)

        train_texts, val_texts = encode(splits.train), encode(splits.val)
        if data.epochs > 0:
            train.max_steps = train.steps_for_epochs(data.epochs, len(train_texts),
                                                     process.world_size)
        eval_texts = train.eval_batches * train.global_batch(process.world_size)
        weights = (inverse_frequency(train_texts.labels.tolist(), len(labels))
                   if data.class_weights else None)
        task = ClassificationTask(train_texts, val_texts, batch_size=train.batch_size,
                                  eval_texts=eval_texts, seed=train.seed,
                                  class_weights=weights)
        head = {"kind": "classifier", "labels": labels, "pooling": choice.pooling,
                "trainable": choice.train, **choice.lora(), "max_length": max_length,
                "truncate": data.truncate}
        tables = {**self.config.to_tables(), RESOLVED_MODEL: gpt.config.to_dict(), HEAD: head}
        return Setup(model, task, tokenizer, tables,
                     write=lambda run_dir: _save_split(splits, run_dir))


def _save_split(splits: Splits, run_dir: Path) -> None:
    save_splits(splits, run_dir / SPLIT_DIR)


def finetune_classifier(config: ClassifyConfig, run_dir: Path, *, resume: bool = False,
                        show_progress: bool = True) -> FitResult:
    """Fine-tune (or, with ``resume``, continue) a classifier in ``run_dir``, then evaluate
    its best checkpoint on the test split (``eval.json``, ``confusion.png``,
    ``errors.jsonl``)."""
    result = run_job(ClassifyJob(config), run_dir, resume=resume, show_progress=show_progress)
    if not result.interrupted and distributed.is_main_process():
        report = evaluate_run(run_dir)
        log(report.summary())
    return result
