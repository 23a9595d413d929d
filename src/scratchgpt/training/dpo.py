"""Direct Preference Optimization (DPO): learning which of two answers people prefer.

The data is pairs: a prompt ``x``, an answer people chose ``y_c`` and one they rejected
``y_r``. Reinforcement learning from human feedback would first fit a reward model to the
pairs, then train the policy ``π`` to earn reward while staying close (in KL divergence, with
a strength β) to the model it started from, the reference ``π_ref``. Rafailov et al. (2023)
noticed that the best policy of that objective is known in closed form,
``π(y|x) ∝ π_ref(y|x) · exp(r(x, y) / β)``, so every policy defines its own *implicit reward*

    r(x, y) = β · (log π(y|x) − log π_ref(y|x))    (up to a term of x alone)

and the preference model of the pairs (Bradley–Terry: ``P(y_c ≻ y_r) = σ(r_c − r_r)``, where
the term of ``x`` alone cancels) can be fitted to the policy directly, with no reward model:

    h    = (log π(y_c|x) − log π_ref(y_c|x)) − (log π(y_r|x) − log π_ref(y_r|x))
    loss = −log σ(β · h)

The pieces:

- ``log π(y|x)`` is the log-probability of the whole answer given the prompt: the sum of the
  answer tokens' log-probabilities (:func:`answer_log_probs`); the prompt's tokens are given,
  not scored. The reference's are the same sums under the frozen starting model, which need
  no gradient and can be computed once, before training.
- Each difference ``log π − log π_ref`` is a *log-ratio*: how much more likely the policy has
  made that answer than it was at the start. ``h`` is the chosen answer's log-ratio minus the
  rejected one's.
- β scales the rewards. A small β lets the policy move far from the reference for a given
  loss; a large one keeps it close (the book and TRL use 0.1).
- The gradient is ``−β σ(−βh) (∇log π(y_c|x) − ∇log π(y_r|x))``: the chosen answer is made
  more likely and the rejected one less, weighted by ``σ(−βh)``, how wrongly the implicit
  reward still ranks the pair.

At the start the policy is the reference, so ``h = 0`` and the loss is ``log 2 ≈ 0.693``.
What a run logs: the implicit rewards ``β (log π − log π_ref)`` of the chosen and the rejected
answer, the *reward margin* (chosen minus rejected, ``β·h``), and the *reward accuracy*, the
share of pairs whose chosen answer earns the higher reward (a tie is no win, so it starts at 0).

Label smoothing (conservative DPO, Mitchell 2023): if each label was flipped with probability
ε, the expected loss is ``−(1−ε) log σ(βh) − ε log σ(−βh)``. Its gradient vanishes at
``σ(βh) = 1 − ε``, so the margin stops growing at ``βh = log((1−ε)/ε)`` instead of forever.
ε must be below 0.5, where the pair would say nothing. TRL's ``loss_type="sigmoid"`` is
the ε = 0 case (its ``label_smoothing`` acts on other loss types).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scratchgpt.data.instruction_batches import IGNORE_INDEX


def answer_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The log-probability of each sequence's answer: ``[B]`` from ``logits [B, T, V]``.

    ``targets [B, T]`` are the inputs shifted by one, as in instruction tuning, with
    ``IGNORE_INDEX`` at every position that is not an answer token (the prompt, the padding);
    the result sums ``log softmax(logits)[target]`` over the others. Only the answer positions
    are scored, in float32 whatever the logits' dtype (bf16 cannot hold a log-softmax's
    precision over a large vocabulary).
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match targets "
                         f"{tuple(targets.shape)}: expected [B, T, V] and [B, T]")
    answer = targets != IGNORE_INDEX
    token_log_probs = -F.cross_entropy(logits[answer].float(), targets[answer], reduction="none")
    per_token = token_log_probs.new_zeros(answer.shape).masked_scatter(answer, token_log_probs)
    return per_token.sum(dim=-1)


@dataclass(frozen=True)
class DPOLoss:
    """The DPO loss of a batch of pairs and what is logged about them, each ``[B]``.

    ``losses`` carry the gradient; the rewards are detached (they are for logging).
    """

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    @property
    def loss(self) -> torch.Tensor:
        """The mean loss over the pairs: what training minimizes."""
        return self.losses.mean()

    @property
    def reward_margins(self) -> torch.Tensor:
        """Chosen minus rejected implicit reward: ``β·h`` for each pair."""
        return self.chosen_rewards - self.rejected_rewards

    @property
    def reward_accuracies(self) -> torch.Tensor:
        """1.0 where the chosen answer earns the higher reward, else 0.0 (ties too)."""
        return (self.chosen_rewards > self.rejected_rewards).float()


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> DPOLoss:
    """The DPO loss of pairs from the answers' log-probabilities (each ``[B]``, from
    :func:`answer_log_probs`) under the policy and the frozen reference.

    ``beta`` > 0 scales the implicit rewards; ``label_smoothing`` ε in [0, 0.5) is the
    probability that a pair's labels are flipped (conservative DPO; 0 is plain DPO).
    """
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0 (the book and TRL use 0.1), "
                         f"got {beta}")
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5) (0 is plain DPO; at 0.5 a pair "
                         f"says nothing), got {label_smoothing}")
    shapes = {tuple(t.shape) for t in (policy_chosen, policy_rejected,
                                       reference_chosen, reference_rejected)}
    if len(shapes) != 1:
        raise ValueError(f"the four log-probability tensors must have one shape [B], got "
                         f"{sorted(shapes)}")
    chosen_log_ratios = policy_chosen - reference_chosen
    rejected_log_ratios = policy_rejected - reference_rejected
    logits = beta * (chosen_log_ratios - rejected_log_ratios)  # β·h
    losses = (-(1 - label_smoothing) * F.logsigmoid(logits)
              - label_smoothing * F.logsigmoid(-logits))
    return DPOLoss(
        losses=losses,
        chosen_rewards=beta * chosen_log_ratios.detach(),
        rejected_rewards=beta * rejected_log_ratios.detach(),
    )
