"""Which weights a fine-tuning updates (chapters 6 and 7, appendix E).

A :class:`GPTClassifier` (chapter 6) takes any of:

    head           the classification head only (a linear probe on the pretrained features)
    last-block     the book's choice: the last transformer block, the final LayerNorm, the head
    last-blocks:N  the same with the last N blocks
    all            every weight
    lora           low-rank adapters in every block's projections, and the head

A language model being instruction-tuned (chapter 7) takes ``all``, ``last-block`` (or
``last-blocks:N``: those blocks and the final norm) or ``lora`` (adapters only). Neither of the
last two trains the output layer: it is tied to, or as large as, the token embeddings.

``lora_targets`` says which projections get adapters: ``all`` of the block's, or some of
``q, k, v, o, gate, up, down`` (``qkv`` for GPT-2's fused layer; see :mod:`.lora`).

The fewer weights train, the faster a step and the less a small data set can overfit; the more,
the further the model can move from its pretraining. The rest are frozen
(``requires_grad=False``), and the optimizer only sees what trains.
"""

from __future__ import annotations

from dataclasses import dataclass

from scratchgpt.model.classifier import GPTClassifier
from scratchgpt.model.gpt import GPTModel
from scratchgpt.model.lora import apply_lora

TRAINABLE_CHOICES: tuple[str, ...] = ("head", "last-block", "last-blocks:N", "all", "lora")


@dataclass(frozen=True)
class TrainableSummary:
    """What :func:`set_trainable` left trainable, for the log."""

    choice: str
    trainable: int
    total: int

    def __str__(self) -> str:
        return (f"training {self.choice}: {self.trainable:,} of {self.total:,} parameters "
                f"({100 * self.trainable / self.total:.2f}%)")


def set_trainable(
    model: GPTClassifier | GPTModel,
    choice: str,
    *,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.0,
    lora_targets: str = "all",
) -> TrainableSummary:
    """Set ``requires_grad`` on ``model``'s weights by ``choice`` (see the module docstring).

    ``lora`` wraps the backbone's projections with adapters first (:func:`apply_lora`), which
    adds parameters and renames the wrapped weights (``...qkv.weight`` -> ``...qkv.base.weight``).
    An untied ``out_head`` is never trained: the classifier does not use it.
    ``total`` counts every distinct parameter, trainable or not.
    """
    lora = {"rank": lora_rank, "alpha": lora_alpha, "dropout": lora_dropout,
            "targets": lora_targets}
    if isinstance(model, GPTModel):
        if choice == "lora":
            apply_lora(model, **lora)
        elif choice == "all":
            model.requires_grad_(True)
        elif choice == "head":
            raise ValueError("a language model has no classification head: train all, "
                             "last-block, last-blocks:N or lora")
        else:
            _train_last_blocks(model, _blocks_to_train(model.config.n_layers, choice))
        return _summary(model, choice)
    backbone = model.backbone
    if choice == "lora":
        apply_lora(backbone, **lora)
        model.head.requires_grad_(True)
    elif choice == "all":
        model.requires_grad_(True)
        if not model.config.tie_weights:
            backbone.out_head.requires_grad_(False)
    else:
        n_blocks = _blocks_to_train(model.config.n_layers, choice)  # checked before changing
        model.requires_grad_(False)
        _train_last_blocks(backbone, n_blocks)
        model.head.requires_grad_(True)
    return _summary(model, choice)


def _train_last_blocks(model: GPTModel, n_blocks: int) -> None:
    """Freeze ``model``, then let its last ``n_blocks`` blocks and (if any) its final norm
    learn."""
    model.requires_grad_(False)
    for block in model.blocks[len(model.blocks) - n_blocks:]:
        block.requires_grad_(True)
    if n_blocks:
        model.final_norm.requires_grad_(True)


def _summary(model: GPTClassifier | GPTModel, choice: str) -> TrainableSummary:
    params = list(model.parameters())  # a tied (shared) tensor is yielded once
    return TrainableSummary(
        choice,
        trainable=sum(p.numel() for p in params if p.requires_grad),
        total=sum(p.numel() for p in params),
    )


def _blocks_to_train(n_layers: int, choice: str) -> int:
    """How many of the last transformer blocks ``choice`` trains (0 for ``head``)."""
    if choice == "head":
        return 0
    if choice == "last-block":
        return 1
    prefix = "last-blocks:"
    if not choice.startswith(prefix):
        raise ValueError(f"unknown choice of weights to train {choice!r}; "
                         f"choose one of: {', '.join(TRAINABLE_CHOICES)}")
    count = choice[len(prefix):]
    if not count.isdigit() or not 1 <= int(count) <= n_layers:
        raise ValueError(f"{choice!r}: N must be a whole number in 1..{n_layers} "
                         f"(the model's n_layers)")
    return int(count)
