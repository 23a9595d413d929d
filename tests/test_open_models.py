"""Llama 3, Qwen3 and Gemma 3 in our GPTModel, proven equal to ``transformers``.

For each family a small random model is built by ``transformers`` from its own config class;
its config dict and state dict go through ``scratchgpt.hub.families`` into our GPTModel, and
the two must give the same logits (fp32) on a plain batch, on a left-padded batch, token by
token through our KV cache, and the same greedy continuation as ``generate``.
"""

from __future__ import annotations

import pytest
import torch
from open_model_dirs import llama, qwen3

from scratchgpt.config import ModelConfig
from scratchgpt.generation import generate_batch, generate_tokens
from scratchgpt.hub.families import model_config_from_hf, state_dict_from_hf, state_dict_to_hf
from scratchgpt.model import GPTModel

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
VOCAB = 97


def llama_config() -> transformers.PretrainedConfig:
    return llama(VOCAB, context=64)


def qwen3_config() -> transformers.PretrainedConfig:
    return qwen3(VOCAB, context=64)


def gemma3_config() -> transformers.PretrainedConfig:
    """Sliding window 4 (the prompts are longer) on 5 local layers, then 1 global; 7 layers,
    so both kinds occur, and after the global layer a local one again; multi-query."""
    return transformers.Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=7,
        num_attention_heads=4, num_key_value_heads=1, head_dim=32, max_position_embeddings=64,
        sliding_window=4, query_pre_attn_scalar=24, pad_token_id=0, bos_token_id=1,
        eos_token_id=2,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}},
    )


MODELS = {
    "llama": (llama_config, "LlamaForCausalLM"),
    "qwen3": (qwen3_config, "Qwen3ForCausalLM"),
    "gemma3_text": (gemma3_config, "Gemma3ForCausalLM"),
}


@pytest.fixture(scope="module", params=list(MODELS))
def twins(request: pytest.FixtureRequest) -> tuple[torch.nn.Module, GPTModel]:
    """A random transformers model and our GPTModel holding its weights, both in eval mode."""
    make_config, class_name = MODELS[request.param]
    torch.manual_seed(0)
    hf_config = make_config()
    hf_config._attn_implementation = "eager"
    hf = getattr(transformers, class_name)(hf_config).eval()
    with torch.no_grad():  # random norm weights: a test of the scale, not of the init
        for name, param in hf.named_parameters():
            if name.endswith("norm.weight"):
                param.normal_(0.0 if "gemma" in class_name else 1.0, 0.2)
    config_dict = hf_config.to_dict()
    ours = GPTModel(model_config_from_hf(config_dict)).eval()
    ours.load_state_dict(state_dict_from_hf(hf.state_dict(), config_dict))
    return hf, ours


def real_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch as ``generate`` makes them (pads: 1)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def test_plain_batch_logits_equal(twins: tuple[torch.nn.Module, GPTModel]) -> None:
    hf, ours = twins
    idx = torch.randint(0, VOCAB, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(idx).logits
        torch.testing.assert_close(ours(idx), expected, atol=ATOL, rtol=0)


def test_a_training_step_has_transformers_loss_and_gradients(
        twins: tuple[torch.nn.Module, GPTModel]) -> None:
    """Next-token cross-entropy on one batch, and the gradient of every weight (ours mapped
    to transformers' names: q/k/v and gate/up split again, the tied embedding once)."""
    hf, ours = twins
    idx = torch.randint(0, VOCAB, (2, 13), generator=torch.Generator().manual_seed(7))
    loss = torch.nn.functional.cross_entropy(ours(idx)[:, :-1].flatten(0, 1),
                                             idx[:, 1:].flatten())
    expected = hf(idx, labels=idx).loss
    try:
        loss.backward()
        expected.backward()
        torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-6)
        grads = state_dict_to_hf({name: p.grad for name, p in ours.named_parameters()},
                                 ours.config)
        hf_grads = {name: p.grad for name, p in hf.named_parameters()}
        assert grads.keys() == hf_grads.keys()
        for name, grad in grads.items():  # fp32 sums in another order: relative to the norm
            error = (grad - hf_grads[name]).norm() / hf_grads[name].norm()
            assert error < 1e-4, f"{name}: relative error {error:.2e}"
    finally:
        ours.zero_grad(set_to_none=True)
        hf.zero_grad(set_to_none=True)


def test_left_padded_batch_logits_equal(twins: tuple[torch.nn.Module, GPTModel]) -> None:
    hf, ours = twins
    idx = torch.randint(3, VOCAB, (3, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(idx, dtype=torch.bool)
    mask[1, :5] = False
    mask[2, :9] = False
    idx = idx.masked_fill(~mask, 0)
    with torch.no_grad():
        expected = hf(idx, attention_mask=mask.long(), position_ids=real_positions(mask)).logits
        got = ours(idx, attention_mask=mask)
        torch.testing.assert_close(got[mask], expected[mask], atol=ATOL, rtol=0)
        # and each padded row computes what its prompt alone would
        alone = ours(idx[2:, 9:])
        torch.testing.assert_close(got[2, 9:], alone[0], atol=ATOL, rtol=0)


def test_kv_cached_decoding_token_by_token(twins: tuple[torch.nn.Module, GPTModel]) -> None:
    """Prefill a left-padded batch, then one token at a time: every step's logits equal those
    of transformers over the whole sequence. The cache holds only the key/value heads."""
    hf, ours = twins
    idx = torch.randint(3, VOCAB, (2, 14), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(idx, dtype=torch.bool)
    mask[0, :2] = False
    idx = idx.masked_fill(~mask, 0)
    prompt = 5
    with torch.no_grad():
        expected = hf(idx, attention_mask=mask.long(), position_ids=real_positions(mask)).logits
        cache = ours.new_kv_cache(batch_size=2)
        assert cache.keys[0].shape[1] == ours.config.kv_heads < ours.config.n_heads
        steps = [ours(idx[:, :prompt], cache, attention_mask=mask[:, :prompt])]
        steps += [ours(idx[:, t : t + 1], cache) for t in range(prompt, idx.shape[1])]
    got = torch.cat(steps, dim=1)
    torch.testing.assert_close(got[mask], expected[mask], atol=ATOL, rtol=0)


def test_greedy_text_equals_generate(twins: tuple[torch.nn.Module, GPTModel]) -> None:
    hf, ours = twins
    prompts = [[5, 17, 33, 8, 41, 60, 3], [9, 22, 71]]
    for prompt in prompts:
        with torch.no_grad():
            expected = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                                   pad_token_id=0, eos_token_id=None)[0, len(prompt):].tolist()
        assert list(generate_tokens(ours, prompt, 12)) == expected
    # the batch (left-padded prefill, then the cache) gives the same tokens as each alone
    batch = generate_batch(ours, prompts, 12)
    assert batch == [list(generate_tokens(ours, p, 12)) for p in prompts]


def test_config_maps_each_family_switch() -> None:
    llama = model_config_from_hf(llama_config().to_dict())
    assert (llama.norm, llama.ffn, llama.n_kv_heads, llama.head_dim) == ("rmsnorm", "swiglu",
                                                                          1, 24)
    assert (llama.rope_scaling, llama.rope_factor, llama.rope_base) == ("llama3", 8.0, 500000.0)
    assert not llama.tie_weights and not llama.qkv_bias and not llama.proj_bias
    qwen = model_config_from_hf(qwen3_config().to_dict())
    assert qwen.qk_norm and qwen.tie_weights and qwen.rope_base == 1e6
    gemma = model_config_from_hf(gemma3_config().to_dict())
    assert (gemma.norm, gemma.ffn, gemma.norms_per_block) == ("rmsnorm_plus_one", "geglu", 4)
    assert (gemma.sliding_window, gemma.global_layer_every) == (4, 6)
    assert [gemma.is_local_layer(i) for i in range(7)] == [True] * 5 + [False, True]
    assert (gemma.rope_local_base, gemma.rope_base) == (10000.0, 1e6)
    assert gemma.scale_embeddings and gemma.query_pre_attn_scalar == 24


def test_config_json_of_transformers_4_maps_alike() -> None:
    """Older config.json files spell rotary settings as rope_theta / rope_scaling /
    rope_local_base_freq and Gemma's pattern as sliding_window_pattern."""
    old_llama = {**llama_config().to_dict(), "rope_parameters": None, "rope_theta": 500000.0,
                 "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0,
                                  "original_max_position_embeddings": 8}}
    assert model_config_from_hf(old_llama) == model_config_from_hf(llama_config().to_dict())
    old_gemma = {**gemma3_config().to_dict(), "rope_parameters": None, "layer_types": None,
                 "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
                 "sliding_window_pattern": 6}
    assert model_config_from_hf(old_gemma) == model_config_from_hf(gemma3_config().to_dict())


@pytest.mark.parametrize(("change", "named"), [
    ({"model_type": "mistral"}, "model_type"),
    ({"hidden_act": "relu"}, "activation"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 2.0}}, "rope_type"),
])
def test_unsupported_config_json_is_named(change: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        model_config_from_hf({**llama_config().to_dict(), **change})


def test_unknown_weight_is_named() -> None:
    config = qwen3_config()
    state = transformers.Qwen3ForCausalLM(config).state_dict()
    state["model.layers.0.mlp.extra.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="model.layers.0.mlp.extra.weight"):
        state_dict_from_hf(state, config.to_dict())


def test_old_gpt2_config_table_still_loads() -> None:
    """A run's config.toml written before these switches existed is a GPT-2, as before."""
    old = {"vocab_size": 50257, "context_length": 1024, "emb_dim": 768, "n_heads": 12,
           "n_layers": 12, "drop_rate": 0.1, "qkv_bias": True, "tie_weights": True,
           "pos_encoding": "learned", "layer_norm_eps": 1e-5, "init": "gpt2"}
    config = ModelConfig.from_dict(old)
    assert config == ModelConfig(drop_rate=0.1)
    assert (config.head_dim, config.kv_heads, config.ffn_dim) == (64, 12, 3072)
    assert ModelConfig.from_dict(config.to_dict()) == config
