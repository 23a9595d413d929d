"""Activation checkpointing (``--activation-checkpointing``): each transformer block keeps only
its input and runs its forward again in backward. The loss and every gradient come out
bit-identical (dropout included), far fewer bytes wait for backward, and nothing changes where
no backward follows (evaluation, generation with a KV cache)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pretrain_runs import pretrain_here, read_metrics
from torch import nn
from torch.autograd.graph import saved_tensors_hooks

import scratchgpt.model.gpt as gpt_module
from scratchgpt.cli import build_parser
from scratchgpt.config import ARCHITECTURES, ModelConfig, get_preset, with_architecture
from scratchgpt.config_files import load_toml
from scratchgpt.model.classifier import GPTClassifier
from scratchgpt.model.gpt import GPTModel, set_activation_checkpointing
from scratchgpt.model.lora import apply_lora
from scratchgpt.model.trainable import set_trainable
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.trainer import Trainer

VOCAB, TOKENS, BATCH = 97, 32, 2


def tiny(arch: str, n_layers: int = 3, drop_rate: float = 0.1) -> ModelConfig:
    """The nano preset built as ``arch`` (Gemma's has sliding-window and global layers)."""
    config = get_preset("nano").replace(vocab_size=VOCAB, context_length=TOKENS,
                                        n_layers=n_layers, drop_rate=drop_rate)
    return with_architecture(config, arch)


def tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (BATCH, TOKENS), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def recomputed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times GPTModel checkpointed a block (calls of its ``checkpoint``)."""
    calls = [0]

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return torch.utils.checkpoint.checkpoint(*args, **kwargs)

    monkeypatch.setattr(gpt_module, "checkpoint", counting)
    return calls


def loss_and_grads(model: nn.Module, loss_of: Callable[[], torch.Tensor], checkpointing: bool,
                   seed: int = 7) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss and every trainable parameter's gradient, from the same random state."""
    set_activation_checkpointing(model, checkpointing)
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the dropout masks
    loss = loss_of()
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert grads and all(grad is not None for grad in grads.values())
    return loss.detach(), grads


def assert_identical(model: nn.Module, loss_of: Callable[[], torch.Tensor],
                     recomputed: list[int]) -> None:
    loss, grads = loss_and_grads(model, loss_of, checkpointing=False)
    assert recomputed[0] == 0
    loss_ckpt, grads_ckpt = loss_and_grads(model, loss_of, checkpointing=True)
    assert recomputed[0] == sum(len(m.blocks) for m in model.modules() if isinstance(m, GPTModel))
    assert torch.equal(loss_ckpt, loss)
    assert grads_ckpt.keys() == grads.keys()
    for name, grad in grads.items():
        assert torch.equal(grads_ckpt[name], grad), name


def lm_loss(model: nn.Module, idx: torch.Tensor) -> Callable[[], torch.Tensor]:
    return lambda: F.cross_entropy(model(idx).flatten(0, 1), idx.roll(-1, dims=1).flatten())


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_loss_and_every_gradient_are_bit_identical_with_dropout(
        arch: str, recomputed: list[int]) -> None:
    torch.manual_seed(0)
    model = GPTModel(tiny(arch))
    idx = tokens()
    assert_identical(model, lm_loss(model, idx), recomputed)
    # dropout is really on: another random state gives another loss; the recompute replayed it
    other, _ = loss_and_grads(model, lm_loss(model, idx), checkpointing=True, seed=8)
    assert not torch.equal(other, loss_and_grads(model, lm_loss(model, idx), True)[0])


def test_lora_adapters_get_the_same_gradients(recomputed: list[int]) -> None:
    torch.manual_seed(0)
    model = GPTModel(tiny("llama3"))
    apply_lora(model, rank=4, alpha=8, dropout=0.1, targets="q,v,gate,down")
    assert_identical(model, lm_loss(model, tokens()), recomputed)


def test_a_classifier_checkpoints_its_backbone(recomputed: list[int]) -> None:
    # Only the last block learns: the first block's input needs no gradient, which
    # non-reentrant checkpointing handles (the reentrant kind would drop the gradients).
    torch.manual_seed(0)
    classifier = GPTClassifier(tiny("gpt2"), num_classes=3)
    set_trainable(classifier, "last-block")
    idx, lengths, labels = tokens(), torch.tensor([TOKENS, 20]), torch.tensor([0, 2])
    assert_identical(classifier, lambda: F.cross_entropy(classifier(idx, lengths), labels),
                     recomputed)


def saved_for_backward(model: GPTModel, checkpointing: bool) -> int:
    """Bytes of activations a training forward keeps for backward (weights not counted)."""
    set_activation_checkpointing(model, checkpointing)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        if tensor.untyped_storage().data_ptr() not in weights:
            saved += tensor.numel() * tensor.element_size()
        return tensor

    with saved_tensors_hooks(pack, lambda tensor: tensor):
        model.train().hidden_states(tokens())
    return saved


@pytest.mark.parametrize("arch", ["gpt2", "llama3"])
def test_a_checkpointed_block_keeps_only_its_input(arch: str) -> None:
    # Two more blocks add what two blocks keep for backward: their input alone when
    # checkpointed ([batch, tokens, emb_dim] floats), otherwise dozens of times that.
    config = tiny(arch, n_layers=2)
    torch.manual_seed(0)
    small, deep = GPTModel(config), GPTModel(config.replace(n_layers=4))
    block_input = BATCH * TOKENS * config.emb_dim * 4
    per_block = {ckpt: (saved_for_backward(deep, ckpt) - saved_for_backward(small, ckpt)) / 2
                 for ckpt in (False, True)}
    assert per_block[True] == block_input
    assert per_block[False] > 20 * block_input


@pytest.fixture
def model_on() -> GPTModel:
    torch.manual_seed(0)
    model = GPTModel(tiny("gemma3", drop_rate=0.0))
    keys = list(model.state_dict())
    set_activation_checkpointing(model)
    assert list(model.state_dict()) == keys  # an attribute, not a wrapper: same names
    return model


def test_nothing_is_recomputed_in_eval_or_without_gradients(
        model_on: GPTModel, recomputed: list[int]) -> None:
    idx = tokens()
    model_on.eval()
    model_on(idx)
    model_on.train()
    with torch.no_grad():
        model_on(idx)
    assert recomputed[0] == 0


def test_nothing_is_recomputed_with_a_kv_cache(model_on: GPTModel,
                                               recomputed: list[int]) -> None:
    # A recompute would write the cache again at positions it has moved past.
    idx = tokens()
    model_on.train()
    cache = model_on.new_kv_cache(BATCH)
    cached = torch.cat([model_on(idx[:, :20], cache), model_on(idx[:, 20:], cache)], dim=1)
    masked = model_on(idx, attention_mask=torch.ones_like(idx))  # runs with a cache of its own
    assert recomputed[0] == 0
    full = model_on(idx)
    assert recomputed[0] == len(model_on.blocks)
    torch.testing.assert_close(cached, full)
    torch.testing.assert_close(masked, full)


def test_a_model_without_a_gpt_is_refused(tmp_path: Path) -> None:
    set_activation_checkpointing(nn.Linear(2, 2), False)  # off: nothing to do, no error
    with pytest.raises(ValueError, match="activation checkpointing needs a GPTModel, and this "
                                         "Linear has none"):
        set_activation_checkpointing(nn.Linear(2, 2))
    config = TrainConfig(device="cpu", activation_checkpointing=True)
    with pytest.raises(ValueError, match="train without --activation-checkpointing"):
        Trainer(nn.Linear(2, 2), None, config, tmp_path)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", [["pretrain"], ["finetune", "classify"],
                                     ["finetune", "instruct"], ["finetune", "dpo"]])
def test_every_training_command_takes_the_flag(command: list[str]) -> None:
    for flag, value in (("--activation-checkpointing", True),
                        ("--no-activation-checkpointing", False)):
        args = build_parser().parse_args([*command, flag])
        assert vars(args)["train.activation_checkpointing"] is value
    assert TrainConfig().activation_checkpointing is False


def test_pretrain_with_the_flag_logs_the_same_losses_and_resumes_without_it(
        tmp_path: Path, recomputed: list[int]) -> None:
    corpus = tmp_path / "corpus.txt"  # any English will do: this repository's README
    corpus.write_text((Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8"))
    steps = ("--eval-every", "1", "--drop-rate", "0.1")
    plain = pretrain_here(corpus, tmp_path / "plain", tmp_path, "--max-steps", "2", *steps)
    assert plain.returncode == 0, plain.stderr
    assert recomputed[0] == 0

    run_dir = tmp_path / "ckpt"  # step 1 checkpointed, then resumed with it off for step 2
    first = pretrain_here(corpus, run_dir, tmp_path, "--max-steps", "1", *steps,
                          "--activation-checkpointing")
    assert first.returncode == 0, first.stderr
    assert recomputed[0] == get_preset("nano").n_layers  # one step, each block once
    assert load_toml(run_dir / "config.toml")["train"]["activation_checkpointing"] is True
    resumed = pretrain_here(corpus, run_dir, tmp_path, "--resume", "--max-steps", "2", *steps,
                            "--no-activation-checkpointing")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    assert recomputed[0] == get_preset("nano").n_layers  # the flag flipped: not recomputed

    assert read_metrics(run_dir) == read_metrics(tmp_path / "plain")
