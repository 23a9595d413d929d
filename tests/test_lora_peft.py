"""Our LoRA (scratchgpt.model.lora) computes what Hugging Face's peft computes.

A small random GPT-2 in ``transformers`` and our GPTModel hold the same weights (through
``scratchgpt.hub.hf_weights``). peft puts adapters on ``c_attn``, ``c_proj`` and ``c_fc``: in
GPT-2 ``c_proj`` names both the attention output and the MLP output projection, so these are
exactly our four targets. peft's adapters are ``nn.Linear`` layers, ``lora_A.weight``
``[rank, in]`` and ``lora_B.weight`` ``[out, rank]``, adding ``scaling * x A^T B^T``; ours
are the plain matrices ``A`` ``[in, rank]`` and ``B`` ``[rank, out]``, adding
``scaling * x A B``: the same numbers, transposed.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from scratchgpt.hub.hf_weights import config_from_hf, hf_to_scratch
from scratchgpt.model import GPTModel, LoRALinear, apply_lora, merge_lora

SHAPE = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=101, n_positions=32)
PEFT_TARGETS = ["c_attn", "c_proj", "c_fc"]
OUR_NAME_FOR = {  # peft's layer inside transformer.h.N -> ours inside blocks.N
    "attn.c_attn": "att.qkv",
    "attn.c_proj": "att.out_proj",
    "mlp.c_fc": "ff.fc",
    "mlp.c_proj": "ff.out_proj",
}

# peft asks transformers 5 a question by its deprecated name; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")


def random_hf_model() -> GPT2LMHeadModel:
    """A GPT2LMHeadModel, dropout off, whose every tensor (biases, LayerNorms) is random."""
    config = GPT2Config(**SHAPE, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            is_norm_scale = ".ln_" in name and name.endswith("weight")
            param.normal_(1.0 if is_norm_scale else 0.0, 0.1 if is_norm_scale else 0.05)
    return model


def twins(rank: int, alpha: float) -> tuple[GPTModel, nn.Module, list[str]]:
    """Our GPTModel and a peft-wrapped GPT-2 with the same weights and the same adapters
    (``B`` random, not zero, so the adapters matter). Returns the wrapped layers' names."""
    torch.manual_seed(0)
    hf = random_hf_model()
    config = config_from_hf(hf.config.to_dict())
    ours = GPTModel(config)
    ours.load_state_dict(hf_to_scratch(hf.state_dict(), config))
    peft_config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=PEFT_TARGETS,
                             lora_dropout=0.0, fan_in_fan_out=True, bias="none")
    peft_model = get_peft_model(hf, peft_config)
    wrapped = apply_lora(ours, rank, alpha)
    with torch.no_grad():
        for ours_layer, peft_layer in layer_pairs(ours, peft_model):
            peft_layer.lora_B["default"].weight.normal_(std=0.1)
            ours_layer.A.copy_(peft_layer.lora_A["default"].weight.T)
            ours_layer.B.copy_(peft_layer.lora_B["default"].weight.T)
    return ours, peft_model, wrapped


def layer_pairs(ours: GPTModel, peft_model: nn.Module) -> list[tuple[LoRALinear, nn.Module]]:
    """(our LoRALinear, peft's lora layer) for every adapted layer, in module order."""
    hf = peft_model.get_base_model()
    pairs = []
    for layer in range(len(ours.blocks)):
        for hf_name, our_name in OUR_NAME_FOR.items():
            ours_layer = ours.blocks[layer].get_submodule(our_name)
            peft_layer = hf.transformer.h[layer].get_submodule(hf_name)
            assert isinstance(ours_layer, LoRALinear)
            assert peft_layer.scaling["default"] == ours_layer.scaling
            pairs.append((ours_layer, peft_layer))
    return pairs


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, SHAPE["vocab_size"], (3, SHAPE["n_positions"]),
                         generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("rank", "alpha"), [(8, 16), (4, 6), (1, 1)])
def test_logits_and_gradients_equal_peft(rank: int, alpha: float, ids: torch.Tensor) -> None:
    ours, peft_model, wrapped = twins(rank, alpha)
    assert len(wrapped) == 4 * SHAPE["n_layer"]
    ours.train()
    peft_model.train()  # dropout is 0 everywhere: train mode changes nothing but the mode

    our_logits = ours(ids)
    peft_logits = peft_model(input_ids=ids).logits
    torch.testing.assert_close(our_logits, peft_logits, atol=1e-5, rtol=0)

    # The same loss through both, one backward pass.
    targets = torch.roll(ids, -1, dims=1)
    for logits in (our_logits, peft_logits):
        nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
    for ours_layer, peft_layer in layer_pairs(ours, peft_model):
        torch.testing.assert_close(ours_layer.A.grad, peft_layer.lora_A["default"].weight.grad.T,
                                   atol=1e-6, rtol=0)
        torch.testing.assert_close(ours_layer.B.grad, peft_layer.lora_B["default"].weight.grad.T,
                                   atol=1e-6, rtol=0)

    # Only the adapters train, in both: the same count, and only they received gradients.
    e, n = SHAPE["n_embd"], SHAPE["n_layer"]
    per_block = rank * ((e + 3 * e) + (e + e) + (e + 4 * e) + (4 * e + e))
    assert trainable(ours) == trainable(peft_model) == n * per_block
    assert {name for name, p in ours.named_parameters() if p.grad is not None} == {
        f"{name}.{adapter}" for name in wrapped for adapter in ("A", "B")
    }


def test_merged_model_equals_peft_merge_and_unload(ids: torch.Tensor) -> None:
    ours, peft_model, _ = twins(8, 16)
    ours.eval()
    peft_model.eval()
    with torch.no_grad():
        adapted = ours(ids)
        merged_ours = merge_lora(ours)(ids)
        merged_hf = peft_model.merge_and_unload()
        assert type(merged_hf) is GPT2LMHeadModel
        merged_peft = merged_hf(input_ids=ids).logits
    torch.testing.assert_close(merged_ours, merged_peft, atol=1e-5, rtol=0)
    torch.testing.assert_close(merged_ours, adapted, atol=1e-5, rtol=0)
    # And the merged weights are the same matrices (Conv1D keeps GPT-2's [in, out] layout).
    hf_block = merged_hf.transformer.h[1]
    torch.testing.assert_close(ours.blocks[1].att.qkv.weight, hf_block.attn.c_attn.weight.T,
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.blocks[1].ff.out_proj.weight, hf_block.mlp.c_proj.weight.T,
                               atol=1e-6, rtol=0)


# -- Llama 3 and Qwen3: one adapter per published projection --------------------------------
# peft's layer inside model.layers.N -> our target (its layer in blocks.N, and its part there)
FAMILY_TARGETS = {"self_attn.q_proj": "q", "self_attn.k_proj": "k", "self_attn.v_proj": "v",
                  "self_attn.o_proj": "o", "mlp.gate_proj": "gate", "mlp.up_proj": "up",
                  "mlp.down_proj": "down"}
OUR_LAYER = {"q": "att.qkv", "k": "att.qkv", "v": "att.qkv", "o": "att.out_proj",
             "gate": "ff.fc", "up": "ff.fc", "down": "ff.out_proj"}


def our_adapter(ours: GPTModel, layer: int, target: str) -> tuple[nn.Parameter, nn.Parameter]:
    """Our ``A`` and ``B`` for ``target`` in block ``layer`` (a part's, or the layer's own)."""
    module = ours.blocks[layer].get_submodule(OUR_LAYER[target])
    assert isinstance(module, LoRALinear)
    if module.parts is None:
        return module.A, module.B
    return module.A[target], module.B[target]


def family_twins(family: str, targets: list[str]) -> tuple[GPTModel, nn.Module]:
    """A small random Llama 3 or Qwen3 (GQA, head_dim not emb / heads) with peft's adapters on
    ``targets`` (B random) and our GPTModel with the same weights and adapters."""
    import transformers
    from open_model_dirs import llama, qwen3

    from scratchgpt.hub.families import model_config_from_hf, state_dict_from_hf

    torch.manual_seed(0)
    hf_config = (llama if family == "llama" else qwen3)(SHAPE["vocab_size"], context=32)
    hf = transformers.AutoModelForCausalLM.from_config(hf_config)
    config_dict = hf_config.to_dict()
    ours = GPTModel(model_config_from_hf(config_dict))
    ours.load_state_dict(state_dict_from_hf(hf.state_dict(), config_dict))
    peft_names = [name.split(".")[1] for name, ours_name in FAMILY_TARGETS.items()
                  if ours_name in targets]
    peft_model = get_peft_model(hf, LoraConfig(r=4, lora_alpha=8, target_modules=peft_names,
                                               lora_dropout=0.0, bias="none"))
    apply_lora(ours, 4, 8, targets=targets)
    with torch.no_grad():
        for layer, hf_layer in enumerate(peft_model.get_base_model().model.layers):
            for hf_name, target in FAMILY_TARGETS.items():
                if target not in targets:
                    continue
                peft_layer = hf_layer.get_submodule(hf_name)
                peft_layer.lora_B["default"].weight.normal_(std=0.1)
                A, B = our_adapter(ours, layer, target)
                A.copy_(peft_layer.lora_A["default"].weight.T)
                B.copy_(peft_layer.lora_B["default"].weight.T)
    return ours, peft_model


@pytest.mark.parametrize(("family", "targets"), [
    ("qwen3", ["q", "k", "v", "o", "gate", "up", "down"]),
    ("llama", ["q", "v"]),  # peft's classic choice: two of the three parts of our qkv
    ("llama", ["k", "o", "up"]),
])
def test_family_adapters_equal_peft_on_each_projection(
        family: str, targets: list[str], ids: torch.Tensor) -> None:
    ours, peft_model = family_twins(family, targets)
    our_logits, peft_logits = ours(ids), peft_model(input_ids=ids).logits
    torch.testing.assert_close(our_logits, peft_logits, atol=1e-5, rtol=0)
    labels = torch.roll(ids, -1, dims=1)
    losses = [nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
              for logits in (our_logits, peft_logits)]
    torch.testing.assert_close(losses[0], losses[1], atol=1e-6, rtol=0)
    for loss in losses:
        loss.backward()
    for layer, hf_layer in enumerate(peft_model.get_base_model().model.layers):
        for hf_name, target in FAMILY_TARGETS.items():
            if target in targets:
                peft_layer = hf_layer.get_submodule(hf_name)
                A, B = our_adapter(ours, layer, target)
                torch.testing.assert_close(A.grad, peft_layer.lora_A["default"].weight.grad.T,
                                           atol=1e-6, rtol=1e-4)
                torch.testing.assert_close(B.grad, peft_layer.lora_B["default"].weight.grad.T,
                                           atol=1e-6, rtol=1e-4)
    assert trainable(ours) == trainable(peft_model)
    merged = merge_lora(ours)(ids)
    torch.testing.assert_close(merged, peft_model.merge_and_unload()(input_ids=ids).logits,
                               atol=1e-5, rtol=0)
