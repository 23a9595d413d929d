"""LoRA: adapters that start as a no-op, compute their formula, merge into the weights, and
leave only themselves (and a classifier's head) to train (scratchgpt.model.lora)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.config import get_preset, with_architecture
from scratchgpt.model import (
    GPTClassifier,
    GPTModel,
    LoRALinear,
    apply_lora,
    lora_state_dict,
    merge_lora,
    set_trainable,
)
from scratchgpt.model.linear import Linear
from scratchgpt.model.lora import default_targets

NANO = get_preset("nano").replace(vocab_size=97)  # emb_dim 64, 2 layers, context 64


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def randomise_adapters(model: nn.Module) -> None:
    """Stand-in for training: B moves away from zero, A changes too."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.A.normal_(std=0.1)
                module.B.normal_(std=0.1)


# -- one layer ---------------------------------------------------------------------------
def test_a_new_adapter_computes_exactly_what_its_base_does() -> None:
    base = nn.Linear(16, 24)
    layer = LoRALinear(base, rank=4, alpha=8)
    assert layer.A.shape == (16, 4) and layer.B.shape == (4, 24) and layer.scaling == 2.0
    assert torch.count_nonzero(layer.B) == 0 and torch.count_nonzero(layer.A) > 0
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert layer.A.requires_grad and layer.B.requires_grad
    x = torch.randn(3, 5, 16)
    assert torch.equal(layer(x), base(x))


def test_an_adapter_adds_alpha_over_rank_times_x_a_b() -> None:
    base = nn.Linear(16, 24)
    layer = LoRALinear(base, rank=4, alpha=2)
    randomise_adapters(layer)
    x = torch.randn(3, 16)
    expected = x @ base.weight.T + base.bias + 0.5 * x @ layer.A @ layer.B
    torch.testing.assert_close(layer(x), expected)


def test_dropout_acts_on_the_adapters_input_only() -> None:
    base = nn.Linear(16, 24)
    layer = LoRALinear(base, rank=4, alpha=4, dropout=0.5).train()
    randomise_adapters(layer)
    x = torch.randn(8, 16)
    torch.manual_seed(1)
    expected = base(x) + F.dropout(x, 0.5, training=True) @ layer.A @ layer.B
    torch.manual_seed(1)
    torch.testing.assert_close(layer(x), expected)
    layer.eval()
    torch.testing.assert_close(layer(x), base(x) + x @ layer.A @ layer.B)


def test_a_merged_layer_is_the_base_with_the_update_folded_in() -> None:
    base = nn.Linear(16, 24)
    weight = base.weight.detach().clone()
    layer = LoRALinear(base, rank=4, alpha=8)
    randomise_adapters(layer)
    x = torch.randn(3, 16)
    before = layer(x)
    merged = layer.merged()
    assert merged is base  # the base layer itself, its weight updated in place
    torch.testing.assert_close(merged.weight, weight + 2.0 * (layer.A @ layer.B).T)
    torch.testing.assert_close(merged(x), before, atol=1e-5, rtol=0)


# -- a whole model -----------------------------------------------------------------------
def test_apply_lora_wraps_every_blocks_projections_and_freezes_the_rest() -> None:
    model = GPTModel(NANO).eval()
    ids = torch.randint(0, NANO.vocab_size, (2, 12))
    before = model(ids)
    wrapped = apply_lora(model, rank=8, alpha=16)
    assert wrapped == [f"blocks.{i}.{target}" for i in range(NANO.n_layers)
                       for target in ("att.qkv", "att.out_proj", "ff.fc", "ff.out_proj")]
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == [f"{name}.{adapter}" for name in wrapped for adapter in ("A", "B")]
    assert torch.equal(model(ids), before)  # B = 0: the model is unchanged


def test_apply_lora_takes_a_subset_of_targets() -> None:
    model = GPTModel(NANO)
    assert apply_lora(model, 4, 4, targets=("qkv",)) == ["blocks.0.att.qkv", "blocks.1.att.qkv"]
    assert type(model.blocks[0].ff.fc) is Linear
    model = GPTModel(NANO)
    assert apply_lora(model, 4, 4, targets="q, v,down") == [
        f"blocks.{i}.{path}" for i in range(2) for path in ("att.qkv", "ff.out_proj")]
    assert model.blocks[0].att.qkv.parts == {"q": slice(0, 64), "v": slice(128, 192)}


def test_each_part_adapts_its_own_rows_of_a_fused_layer() -> None:
    """Adapters on q and v of a grouped-query qkv (q 32 rows, k and v 16 each) change those
    rows only, each by its own low-rank product, and merge into those rows."""
    torch.manual_seed(0)
    base = nn.Linear(8, 64)
    layer = LoRALinear(base, rank=2, alpha=4, parts={"q": slice(0, 32), "v": slice(48, 64)})
    for name in ("q", "v"):
        layer.B[name].data.normal_()
    x = torch.randn(3, 8)
    with torch.no_grad():
        plain = base(x)
        expected = plain.clone()
        expected[:, :32] += 2 * x @ layer.A["q"] @ layer.B["q"]
        expected[:, 48:] += 2 * x @ layer.A["v"] @ layer.B["v"]
    out = layer(x)
    torch.testing.assert_close(out, expected)
    assert torch.equal(out[:, 32:48], plain[:, 32:48])  # k: untouched
    out.sum().backward()
    assert base.weight.grad is None and layer.A["q"].grad is not None
    torch.testing.assert_close(layer.merged()(x), expected, atol=1e-5, rtol=0)


def test_targets_follow_the_published_layers() -> None:
    gated = GPTModel(with_architecture(NANO, "llama3"))
    assert default_targets(gated.blocks[0]) == ("q", "k", "v", "o", "gate", "up", "down")
    assert default_targets(GPTModel(NANO).blocks[0]) == ("qkv", "o", "up", "down")
    apply_lora(gated, 4, 8)
    fc = gated.blocks[0].ff.fc
    hidden = gated.blocks[0].ff.hidden_dim
    assert fc.parts == {"gate": slice(0, hidden), "up": slice(hidden, None)}
    assert set(gated.blocks[0].att.qkv.parts) == {"q", "k", "v"}


def test_apply_lora_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="unknown LoRA targets.*q, k, v, qkv, o, up, down"):
        apply_lora(GPTModel(NANO), 8, 16, targets=("query",))
    with pytest.raises(ValueError, match="this model has no gate layer"):
        apply_lora(GPTModel(NANO), 8, 16, targets="gate,up")
    with pytest.raises(ValueError, match="either qkv or some of q, k, v"):
        apply_lora(GPTModel(NANO), 8, 16, targets="qkv,q")
    with pytest.raises(ValueError, match="no TransformerBlock"):
        apply_lora(nn.Linear(4, 4), 8, 16)
    model = GPTModel(NANO)
    apply_lora(model, 8, 16)
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model, 8, 16)
    with pytest.raises(ValueError, match="at least 1"):
        LoRALinear(nn.Linear(4, 4), rank=0, alpha=1)


def test_merging_keeps_the_outputs_and_restores_the_plain_structure() -> None:
    model = GPTModel(NANO).eval()
    ids = torch.randint(0, NANO.vocab_size, (2, 12))
    original = model(ids)
    apply_lora(model, rank=8, alpha=16)
    randomise_adapters(model)
    adapted = model(ids)
    assert (adapted - original).abs().max() > 1e-2  # the adapters do change the model
    merge_lora(model)
    torch.testing.assert_close(model(ids), adapted, atol=1e-5, rtol=0)
    assert list(model.state_dict()) == list(GPTModel(NANO).state_dict())
    assert not any(isinstance(module, LoRALinear) for module in model.modules())
    assert type(model.blocks[1].att.qkv) is Linear


def test_lora_state_dict_holds_the_adapters_in_module_order() -> None:
    model = GPTModel(NANO)
    wrapped = apply_lora(model, rank=4, alpha=8)
    adapters = lora_state_dict(model)
    assert list(adapters) == [f"{name}.{adapter}" for name in wrapped for adapter in ("A", "B")]
    assert adapters["blocks.0.att.qkv.A"].shape == (NANO.emb_dim, 4)
    assert adapters["blocks.0.att.qkv.B"].shape == (4, 3 * NANO.emb_dim)
    assert "blocks.0.att.qkv.base.weight" in model.state_dict()


# -- a classifier ------------------------------------------------------------------------
def test_a_lora_classifier_trains_only_the_adapters_and_the_head() -> None:
    model = GPTClassifier(NANO, 2)
    plain_total = sum(p.numel() for p in model.parameters())
    summary = set_trainable(model, "lora", lora_rank=8, lora_alpha=16)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(lora_state_dict(model)) | {"head.weight", "head.bias"}
    assert all(name.startswith("backbone.blocks.") for name in lora_state_dict(model))
    e = NANO.emb_dim
    per_block = 8 * ((e + 3 * e) + (e + e) + (e + 4 * e) + (4 * e + e))
    adapters = NANO.n_layers * per_block
    assert (summary.trainable, summary.total) == (adapters + e * 2 + 2, plain_total + adapters)

    ids = torch.randint(0, NANO.vocab_size, (2, 9))
    F.cross_entropy(model(ids, torch.tensor([9, 4])), torch.tensor([0, 1])).backward()
    assert {name for name, p in model.named_parameters() if p.grad is not None} == trainable


def test_a_merged_lora_classifier_has_the_plain_classifiers_keys() -> None:
    model = GPTClassifier(NANO, 2).eval()
    set_trainable(model, "lora", lora_rank=4, lora_alpha=8)
    randomise_adapters(model)
    ids, lengths = torch.randint(0, NANO.vocab_size, (2, 9)), torch.tensor([9, 4])
    adapted = model(ids, lengths)
    merge_lora(model)
    torch.testing.assert_close(model(ids, lengths), adapted, atol=1e-5, rtol=0)
    assert list(model.state_dict()) == list(GPTClassifier(NANO, 2).state_dict())
