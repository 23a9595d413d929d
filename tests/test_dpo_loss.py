"""The DPO loss (scratchgpt.training.dpo) computes what TRL's DPOTrainer computes.

TRL is a test-only oracle. In TRL 1.16 the loss is written inline in
``DPOTrainer._compute_loss``; we run that very method on a stand-in trainer (no model, data
set or accelerator needed) whose "model" returns the per-token log-probabilities we choose,
with the reference log-probabilities given as precomputed (``ref_chosen_logps``,
``ref_rejected_logps``, as with ``precompute_ref_log_probs``), and read the loss and the
metrics it logs: ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``,
``rewards/accuracies`` (batch means).

TRL 1.16's ``loss_type="sigmoid"`` has no label smoothing (its ``label_smoothing`` acts on
other loss types), so conservative DPO is checked through its meaning: with the labels flipped
with probability ε, the loss is ``(1−ε)`` times TRL's loss on the pairs plus ``ε`` times TRL's
loss on the same pairs with chosen and rejected swapped.

The answers' log-probabilities are checked against TRL's two ways of computing them: the fused
LM head DPOTrainer puts on its models (``add_fused_lm_head``, called with ``labels`` that are
``-100`` outside the completion), and ``selective_log_softmax`` on random logits.
"""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from trl import DPOTrainer
from trl.trainer.utils import add_fused_lm_head, selective_log_softmax

from scratchgpt.data.instruction_batches import IGNORE_INDEX
from scratchgpt.training.dpo import answer_log_probs, dpo_loss

BETAS = [0.01, 0.1, 0.5, 2.0]
SMOOTHINGS = [0.0, 0.1, 0.3]


class GivenLogProbs:
    """Stands in for a model under TRL's fused LM head: returns the per-token log-probs given."""

    training = True

    def __init__(self, per_token: torch.Tensor) -> None:
        self.per_token = per_token

    def __call__(self, **kwargs: object) -> SimpleNamespace:
        zeros = torch.zeros_like(self.per_token)
        return SimpleNamespace(log_probs=self.per_token, entropy=zeros, mean_logits=zeros,
                               is_top1=zeros.bool())


def trl_dpo(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
            reference_chosen: torch.Tensor, reference_rejected: torch.Tensor,
            beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """TRL's sigmoid DPO loss of a batch of pairs, and the reward metrics it logs."""
    trainer = object.__new__(DPOTrainer)  # skips __init__: only _compute_loss's state is set
    trainer.accelerator = SimpleNamespace(device=torch.device("cpu"), gather=lambda t: t,
                                          gather_for_metrics=lambda t: t)
    trainer.beta, trainer.label_smoothing = beta, 0.0
    trainer.loss_types, trainer.loss_weights = ["sigmoid"], [1.0]
    trainer.f_divergence_type, trainer.ld_alpha = "reverse_kl", None
    trainer.precompute_ref_logps = True  # the reference's log-probs come with the inputs
    trainer.use_weighting, trainer.aux_loss_enabled = False, False
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer._total_train_tokens, trainer._tp_size = 0, 1
    # One completion token per sequence, whose log-prob is the whole answer's; [chosen, rejected].
    per_token = torch.cat([policy_chosen, policy_rejected]).unsqueeze(1)
    trainer.model = GivenLogProbs(per_token)
    ids = torch.zeros(per_token.shape[0], 2, dtype=torch.long)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "completion_mask": torch.ones_like(ids),
              "ref_chosen_logps": reference_chosen, "ref_rejected_logps": reference_rejected}
    loss = trainer._compute_loss(trainer.model, inputs, return_outputs=False)
    return loss, {name: values[0] for name, values in trainer._metrics["train"].items()}


def random_pairs(seed: int, pairs: int = 6) -> list[torch.Tensor]:
    """Answer log-probs of policy and reference (chosen, rejected, each ``[pairs]``, float64):
    sums over a few dozen tokens, the policy a little away from the reference."""
    gen = torch.Generator().manual_seed(seed)
    reference = -torch.rand(2, pairs, generator=gen, dtype=torch.float64) * 60
    policy = reference + torch.randn(2, pairs, generator=gen, dtype=torch.float64) * 3
    return [policy[0], policy[1], reference[0], reference[1]]


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_loss_and_rewards_equal_trls(beta: float, smoothing: float) -> None:
    pc, pr, rc, rr = random_pairs(seed=int(beta * 100 + smoothing * 10))
    ours = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=smoothing)
    one = [(pc[i:i + 1], pr[i:i + 1], rc[i:i + 1], rr[i:i + 1]) for i in range(len(pc))]
    for i, (c, r, ref_c, ref_r) in enumerate(one):  # pair by pair: TRL logs batch means
        kept, metrics = trl_dpo(c, r, ref_c, ref_r, beta)
        flipped, _ = trl_dpo(r, c, ref_r, ref_c, beta)
        expected = (1 - smoothing) * kept + smoothing * flipped
        assert ours.losses[i].item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-15)
        assert ours.chosen_rewards[i].item() == pytest.approx(metrics["rewards/chosen"], rel=1e-12)
        assert ours.rejected_rewards[i].item() == pytest.approx(metrics["rewards/rejected"],
                                                                rel=1e-12)
        assert ours.reward_margins[i].item() == pytest.approx(metrics["rewards/margins"], rel=1e-12)
        assert ours.reward_accuracies[i].item() == metrics["rewards/accuracies"]
    # The whole batch at once: the mean loss, its gradient, and the means TRL logs.
    pc, pr = pc.clone().requires_grad_(), pr.clone().requires_grad_()
    kept, metrics = trl_dpo(pc, pr, rc, rr, beta)
    flipped, _ = trl_dpo(pr, pc, rr, rc, beta)
    expected = (1 - smoothing) * kept + smoothing * flipped
    expected_grads = torch.autograd.grad(expected, [pc, pr])
    ours = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=smoothing)
    torch.testing.assert_close(ours.loss, expected, rtol=1e-12, atol=1e-15)
    for got, want in zip(torch.autograd.grad(ours.loss, [pc, pr]), expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-15)
    for name, value in [("rewards/chosen", ours.chosen_rewards), ("rewards/margins",
                        ours.reward_margins), ("rewards/rejected", ours.rejected_rewards),
                        ("rewards/accuracies", ours.reward_accuracies)]:
        assert value.mean().item() == pytest.approx(metrics[name], rel=1e-12), name


def test_batches_with_wins_and_losses_count_them() -> None:
    """Accuracy is the share of pairs whose chosen answer earns more; a tie is no win."""
    policy_chosen = torch.tensor([-5.0, -9.0, -7.0, -4.0])
    policy_rejected = torch.tensor([-8.0, -6.0, -7.0, -6.0])
    reference = torch.full((4,), -7.0)
    out = dpo_loss(policy_chosen, policy_rejected, reference, reference, beta=0.1)
    assert out.reward_accuracies.tolist() == [1.0, 0.0, 0.0, 1.0]
    _, metrics = trl_dpo(policy_chosen, policy_rejected, reference, reference, beta=0.1)
    assert metrics["rewards/accuracies"] == 0.5 == out.reward_accuracies.mean().item()


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_policy_equal_to_reference_gives_log_2(smoothing: float) -> None:
    """At the start (π = π_ref) every log-ratio is 0: loss log 2, rewards 0, no wins."""
    logps = torch.tensor([-12.0, -30.5, -3.25])
    out = dpo_loss(logps, logps - 4, logps, logps - 4, beta=0.1, label_smoothing=smoothing)
    torch.testing.assert_close(out.losses, torch.full((3,), math.log(2)))
    assert out.chosen_rewards.tolist() == out.rejected_rewards.tolist() == [0.0, 0.0, 0.0]
    assert out.reward_accuracies.tolist() == [0.0, 0.0, 0.0]


def test_hand_computed_pair() -> None:
    """π_c − ref_c = 1, π_r − ref_r = −1: h = 2, β·h = 1, loss log(1 + e^−1)."""
    out = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
                   torch.tensor([-2.0]), beta=0.5)
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-1)), rel=1e-6)
    assert out.chosen_rewards.item() == 0.5
    assert out.rejected_rewards.item() == -0.5
    assert out.reward_margins.item() == 1.0
    assert out.reward_accuracies.item() == 1.0


def test_a_large_margin_gives_a_loss_near_0_and_a_reversed_one_a_large_loss() -> None:
    good = dpo_loss(torch.tensor([-1.0]), torch.tensor([-500.0]), torch.tensor([-100.0]),
                    torch.tensor([-100.0]), beta=0.1)  # β·h = 49.9
    assert 0 <= good.loss.item() < 1e-20
    bad = dpo_loss(torch.tensor([-500.0]), torch.tensor([-1.0]), torch.tensor([-100.0]),
                   torch.tensor([-100.0]), beta=0.1)
    assert bad.loss.item() == pytest.approx(49.9, rel=1e-6)  # −log σ(−x) → x
    assert bad.reward_accuracies.item() == 0.0


def test_label_smoothing_stops_the_margin_at_log_of_the_odds() -> None:
    """With ε, the loss is lowest (no gradient) at β·h = log((1−ε)/ε), not at β·h → ∞."""
    beta, smoothing = 0.1, 0.1
    h = math.log((1 - smoothing) / smoothing) / beta
    policy_chosen = torch.tensor([h], dtype=torch.float64, requires_grad=True)
    zero = torch.zeros(1, dtype=torch.float64)
    out = dpo_loss(policy_chosen, zero, zero, zero, beta=beta, label_smoothing=smoothing)
    (grad,) = torch.autograd.grad(out.loss, policy_chosen)
    assert abs(grad.item()) < 1e-12
    entropy = -(smoothing * math.log(smoothing) + (1 - smoothing) * math.log(1 - smoothing))
    assert out.loss.item() == pytest.approx(entropy, rel=1e-12)  # the labels' own uncertainty


@pytest.mark.parametrize("beta", [0.0, -0.1, math.inf, math.nan])
def test_beta_must_be_finite_and_positive(beta: float) -> None:
    x = torch.zeros(2)
    with pytest.raises(ValueError, match=r"beta must be a finite number > 0"):
        dpo_loss(x, x, x, x, beta=beta)


@pytest.mark.parametrize("smoothing", [-0.1, 0.5, 0.9, math.nan])
def test_label_smoothing_must_be_below_one_half(smoothing: float) -> None:
    x = torch.zeros(2)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 0.5\)"):
        dpo_loss(x, x, x, x, beta=0.1, label_smoothing=smoothing)


def test_log_probs_of_different_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"one shape \[B\]"):
        dpo_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2), beta=0.1)


# --- the answers' log-probabilities ------------------------------------------------------


def masked_batch(seed: int, batch: int = 5, length: int = 14, vocab: int = 97):
    """Token ids ``[B, L]`` of prompts, answers and right padding, with TRL's masks:
    ``attention_mask`` (real tokens) and ``completion_mask`` (answer tokens)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=gen)
    position = torch.arange(length)
    prompt = torch.randint(1, 6, (batch, 1), generator=gen)
    real = prompt + torch.randint(1, length - 5, (batch, 1), generator=gen)
    real[0] = length  # one row unpadded
    attention_mask = (position < real).long()
    completion_mask = ((position >= prompt) & (position < real)).long()
    return ids, attention_mask, completion_mask


@pytest.fixture(scope="module")
def tiny_gpt2() -> GPT2LMHeadModel:
    """A one-block random GPT-2 with TRL's fused LM head, its weights large enough that the
    next-token distributions are far from uniform."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=97,
                                       n_positions=32, resid_pdrop=0.0, embd_pdrop=0.0,
                                       attn_pdrop=0.0)).eval()
    with torch.no_grad():
        model.transformer.wte.weight.normal_(0.0, 1.0)  # tied to the LM head
    add_fused_lm_head(model)
    return model


def test_answer_log_probs_equal_trls_fused_lm_head(tiny_gpt2: GPT2LMHeadModel) -> None:
    """DPOTrainer's path: labels are the ids with -100 outside the completion; the fused head
    shifts them by one and scores the positions that are not -100."""
    ids, attention_mask, completion_mask = masked_batch(seed=1)
    labels = ids.masked_fill(completion_mask == 0, -100)
    with torch.no_grad():
        trl_per_token = tiny_gpt2(input_ids=ids, attention_mask=attention_mask, labels=labels,
                                  fused_lm_head=True).log_probs
        logits = tiny_gpt2(input_ids=ids, attention_mask=attention_mask).logits
    targets = labels[:, 1:]  # our targets: the inputs shifted by one, IGNORE_INDEX elsewhere
    assert IGNORE_INDEX == -100
    got = answer_log_probs(logits[:, :-1], targets)
    torch.testing.assert_close(got, trl_per_token.sum(dim=1), rtol=1e-5, atol=1e-5)
    assert got.min() < -30  # far from uniform: many tokens, each well below 0


def test_answer_log_probs_and_gradient_equal_selective_log_softmax() -> None:
    ids, _, completion_mask = masked_batch(seed=2)
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(*ids.shape, 97, generator=gen) * 4
    logits[:, 0, 0] = 1e4  # a prompt position (never an answer) may hold anything
    mask = completion_mask.bool()
    targets = ids.masked_fill(~mask, IGNORE_INDEX)
    ours_in = logits.clone().requires_grad_()
    trl_in = logits.clone().requires_grad_()
    got = answer_log_probs(ours_in, targets)
    expected = selective_log_softmax(trl_in, ids, row_mask=completion_mask).sum(dim=-1)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-5)
    weights = torch.randn(got.shape, generator=gen)
    (got_grad,) = torch.autograd.grad((got * weights).sum(), ours_in)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), trl_in)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-5, atol=1e-6)
    assert got_grad[~mask].abs().max() == 0  # no gradient reaches a prompt or padding position


def test_answer_log_probs_of_bf16_logits_are_computed_in_float32() -> None:
    ids, _, completion_mask = masked_batch(seed=4)
    logits = (torch.randn(*ids.shape, 97, generator=torch.Generator().manual_seed(5)) * 4)
    logits = logits.bfloat16()
    targets = ids.masked_fill(completion_mask == 0, IGNORE_INDEX)
    got = answer_log_probs(logits, targets)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, answer_log_probs(logits.float(), targets), rtol=0, atol=0)


def test_a_sequence_without_answer_tokens_has_log_prob_0() -> None:
    targets = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3], [IGNORE_INDEX] * 3])
    logits = torch.zeros(2, 3, 4)  # uniform over 4 tokens
    got = answer_log_probs(logits, targets)
    torch.testing.assert_close(got, torch.tensor([-math.log(4), 0.0]))


def test_logits_that_do_not_match_the_targets_are_refused() -> None:
    with pytest.raises(ValueError, match=r"do not match targets"):
        answer_log_probs(torch.zeros(2, 5, 7), torch.zeros(2, 4, dtype=torch.long))
