"""Each building block of Llama 3, Qwen3 and Gemma 3, proven equal to ``transformers``' module
of the same role: same weights, random inputs, fp32, ``atol`` 1e-5."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from scratchgpt.config import ModelConfig
from scratchgpt.model.attention import MultiHeadAttention
from scratchgpt.model.kv_cache import KVCache
from scratchgpt.model.layers import GatedFeedForward, ScaledEmbedding, TransformerBlock
from scratchgpt.model.norms import RMSNorm, RMSNormPlusOne
from scratchgpt.model.positional import RotaryEmbedding

transformers = pytest.importorskip("transformers")
from transformers.models.gemma3 import modeling_gemma3 as gemma3  # noqa: E402
from transformers.models.llama import modeling_llama as llama  # noqa: E402
from transformers.models.qwen3 import modeling_qwen3 as qwen3  # noqa: E402

ATOL = 1e-5
EMB, HEADS, T = 32, 4, 11


def close(got: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``module`` with every parameter drawn at random (norm gains far from their init)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return module.eval()


def inputs(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def gemma_config(**changes: object) -> transformers.Gemma3TextConfig:
    settings = {"hidden_size": EMB, "intermediate_size": 48, "num_attention_heads": HEADS,
                "num_key_value_heads": 2, "head_dim": 12, "query_pre_attn_scalar": 20,
                "sliding_window": 4, "num_hidden_layers": 6, "max_position_embeddings": 32}
    return transformers.Gemma3TextConfig(**{**settings, **changes})


@pytest.mark.parametrize(("ours", "theirs"), [
    (RMSNorm, llama.LlamaRMSNorm),
    (RMSNormPlusOne, gemma3.Gemma3RMSNorm),
])
def test_rms_norms_equal_transformers(ours: type, theirs: type) -> None:
    reference = randomised(theirs(EMB, eps=1e-6))
    norm = ours(EMB, eps=1e-6)
    norm.load_state_dict({"scale": reference.weight})
    x = inputs(3, T, EMB) * 5
    close(norm(x), reference(x))


def test_gemma_norm_starts_as_the_identity_gain() -> None:
    """Gemma's gain is ``1 + scale`` and ``scale`` starts at 0: a plain RMS normalisation."""
    x = inputs(2, EMB)
    close(RMSNormPlusOne(EMB)(x), x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt())


@pytest.mark.parametrize(("kind", "reference"), [
    ("swiglu", lambda: llama.LlamaMLP(transformers.LlamaConfig(hidden_size=EMB,
                                                              intermediate_size=48))),
    ("geglu", lambda: gemma3.Gemma3MLP(gemma_config())),
])
def test_gated_feed_forward_equals_transformers(kind: str, reference: object) -> None:
    mlp = randomised(reference())
    ff = GatedFeedForward(EMB, 48, kind)
    ff.load_state_dict({"fc.weight": torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]),
                        "out_proj.weight": mlp.down_proj.weight})
    x = inputs(2, T, EMB)
    close(ff(x), mlp(x))


def test_scaled_embedding_equals_gemma_in_the_weights_dtype() -> None:
    """sqrt(640) rounds to 25.25 in bf16, and both multiply by that."""
    theirs = gemma3.Gemma3TextScaledWordEmbedding(50, 640, padding_idx=0,
                                                  embed_scale=640**0.5).to(torch.bfloat16)
    ours = ScaledEmbedding(50, 640).to(torch.bfloat16)
    ours.load_state_dict(theirs.state_dict())
    idx = torch.randint(0, 50, (2, 7))
    assert torch.equal(ours(idx), theirs(idx))


def llama3_rope_config() -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        hidden_size=EMB, num_attention_heads=2, head_dim=16, max_position_embeddings=64,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 16})


@pytest.mark.parametrize("scaling", ["none", "llama3"])
def test_rotary_tables_equal_transformers(scaling: str) -> None:
    """Our cos/sin tables at every position; the llama3 stretch changes them (a check that
    the comparison can fail) and transformers' own llama3 tables agree."""
    config = llama3_rope_config()
    if scaling == "none":
        config.rope_parameters = {"rope_type": "default", "rope_theta": 500000.0}
    theirs = llama.LlamaRotaryEmbedding(config)
    ours = RotaryEmbedding(16, 64, 500000.0, scaling, 8.0, 1.0, 4.0, 16)
    positions = torch.arange(64)[None]
    cos, sin = theirs(torch.zeros(1, dtype=torch.float32), positions)
    ours_cos, ours_sin = ours.tables(64)
    close(ours_cos, cos[0])
    close(ours_sin, sin[0])
    plain = RotaryEmbedding(16, 64, 500000.0)
    assert torch.equal(plain.tables(64)[0], ours_cos) == (scaling == "none")


def attention_mask(num_tokens: int, window: int | None = None) -> torch.Tensor:
    """transformers' additive mask for eager attention: key ``k`` visible from query ``q``
    when ``k <= q`` (and ``q - k < window`` in a sliding-window layer)."""
    q, k = torch.arange(num_tokens)[:, None], torch.arange(num_tokens)[None, :]
    visible = (k <= q) & ((q - k < window) if window else True)
    return torch.zeros(num_tokens, num_tokens).masked_fill(~visible, float("-inf"))[None, None]


def copy_attention(ours: MultiHeadAttention, theirs: torch.nn.Module) -> None:
    state = {"qkv.weight": torch.cat([theirs.q_proj.weight, theirs.k_proj.weight,
                                      theirs.v_proj.weight]),
             "out_proj.weight": theirs.o_proj.weight}
    if hasattr(theirs, "q_norm"):
        state |= {"q_norm.scale": theirs.q_norm.weight, "k_norm.scale": theirs.k_norm.weight}
    ours.load_state_dict(state)


@pytest.mark.parametrize("kv_heads", [HEADS, 2, 1], ids=["multi-head", "grouped", "multi-query"])
def test_grouped_query_attention_equals_llama(kv_heads: int) -> None:
    """GQA with its two ends, and a head size (12) apart from emb_dim / n_heads (8)."""
    config = llama3_rope_config()
    config.num_attention_heads, config.num_key_value_heads, config.head_dim = HEADS, kv_heads, 12
    config.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
    config._attn_implementation = "eager"
    theirs = randomised(llama.LlamaAttention(config, layer_idx=0))
    rope = RotaryEmbedding(12, 64)
    ours = MultiHeadAttention(EMB, EMB, HEADS, rope=rope, num_kv_heads=kv_heads, head_dim=12,
                              out_bias=False).eval()
    copy_attention(ours, theirs)
    x = inputs(2, T, EMB)
    cos, sin = llama.LlamaRotaryEmbedding(config)(x, torch.arange(T)[None])
    expected, _ = theirs(x, (cos, sin), attention_mask(T))
    close(ours(x), expected)
    # the explicit path (attention maps) computes the same, one map per query head
    got, weights = ours(x, return_weights=True)
    close(got, expected)
    assert weights.shape == (2, HEADS, T, T)


def test_qk_norm_attention_equals_qwen3() -> None:
    config = transformers.Qwen3Config(hidden_size=EMB, num_attention_heads=HEADS,
                                      num_key_value_heads=2, head_dim=16, num_hidden_layers=1)
    config._attn_implementation = "eager"
    theirs = randomised(qwen3.Qwen3Attention(config, layer_idx=0))
    ours = MultiHeadAttention(EMB, EMB, HEADS, rope=RotaryEmbedding(16, 64), num_kv_heads=2,
                              head_dim=16, out_bias=False,
                              qk_norm=partial(RMSNorm, eps=config.rms_norm_eps)).eval()
    copy_attention(ours, theirs)
    x = inputs(2, T, EMB)
    cos, sin = qwen3.Qwen3RotaryEmbedding(config)(x, torch.arange(T)[None])
    expected, _ = theirs(x, (cos, sin), attention_mask(T))
    close(ours(x), expected)


@pytest.mark.parametrize("layer_idx", [0, 5], ids=["local", "global"])
def test_gemma3_attention_equals_transformers(layer_idx: int) -> None:
    """A local layer (window 4 of 11 tokens, its own rotary base) and a global one; queries
    scaled by query_pre_attn_scalar; QK-norm with Gemma's ``1 + weight``."""
    config = gemma_config()
    config._attn_implementation = "eager"
    theirs = randomised(gemma3.Gemma3Attention(config, layer_idx=layer_idx))
    local = config.layer_types[layer_idx] == "sliding_attention"
    base = config.rope_parameters[config.layer_types[layer_idx]]["rope_theta"]
    ours = MultiHeadAttention(
        EMB, EMB, HEADS, rope=RotaryEmbedding(12, 32, base), num_kv_heads=2, head_dim=12,
        out_bias=False, qk_norm=partial(RMSNormPlusOne, eps=config.rms_norm_eps),
        sliding_window=4 if local else None, scale=20**-0.5).eval()
    copy_attention(ours, theirs)
    x = inputs(2, T, EMB)
    cos, sin = gemma3.Gemma3RotaryEmbedding(config)(x, torch.arange(T)[None],
                                                     config.layer_types[layer_idx])
    expected, _ = theirs(x, (cos, sin), attention_mask(T, 4 if local else None))
    close(ours(x), expected)


def test_gemma3_block_with_four_norms_equals_decoder_layer() -> None:
    """Input, post-attention, pre-feed-forward and post-feed-forward norms (a global layer)."""
    hf = gemma_config()
    hf._attn_implementation = "eager"
    theirs = randomised(gemma3.Gemma3DecoderLayer(hf, layer_idx=5))
    config = ModelConfig(emb_dim=EMB, n_heads=HEADS, n_kv_heads=2, head_size=12,
                         hidden_dim=48, context_length=32, pos_encoding="rope",
                         norm="rmsnorm_plus_one", ffn="geglu", qk_norm=True, norms_per_block=4,
                         qkv_bias=False, proj_bias=False, query_pre_attn_scalar=20,
                         layer_norm_eps=hf.rms_norm_eps, rope_base=1e6)
    block = TransformerBlock(config, RotaryEmbedding(12, 32, 1e6)).eval()
    at = theirs.self_attn
    block.load_state_dict({
        "norm1.scale": theirs.input_layernorm.weight,
        "post_att_norm.scale": theirs.post_attention_layernorm.weight,
        "norm2.scale": theirs.pre_feedforward_layernorm.weight,
        "post_ff_norm.scale": theirs.post_feedforward_layernorm.weight,
        "att.qkv.weight": torch.cat([at.q_proj.weight, at.k_proj.weight, at.v_proj.weight]),
        "att.out_proj.weight": at.o_proj.weight,
        "att.q_norm.scale": at.q_norm.weight, "att.k_norm.scale": at.k_norm.weight,
        "ff.fc.weight": torch.cat([theirs.mlp.gate_proj.weight, theirs.mlp.up_proj.weight]),
        "ff.out_proj.weight": theirs.mlp.down_proj.weight,
    })
    x = inputs(2, T, EMB)
    cos, sin = gemma3.Gemma3RotaryEmbedding(hf)(x, torch.arange(T)[None], "full_attention")
    expected = theirs(x, (cos, sin), attention_mask(T))
    close(block(x), expected[0] if isinstance(expected, tuple) else expected)


def test_sliding_window_through_the_kv_cache() -> None:
    """Decoding token by token past the window gives what the whole sequence gives."""
    torch.manual_seed(0)
    attention = MultiHeadAttention(EMB, EMB, HEADS, rope=RotaryEmbedding(8, 32),
                                   num_kv_heads=2, sliding_window=3).eval()
    x = inputs(1, T, EMB)
    cache = KVCache(1, 1, 2, 32, 8)
    steps = []
    for t in range(T):
        cache.add_tokens(1)
        steps.append(attention(x[:, t : t + 1], cache))
        cache.advance(1)
    close(torch.cat(steps, dim=1), attention(x))
    full = MultiHeadAttention(EMB, EMB, HEADS, rope=RotaryEmbedding(8, 32), num_kv_heads=2)
    full.load_state_dict(attention.state_dict())
    assert not torch.allclose(full(x), attention(x))  # the window did hide something


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="n_kv_heads"):
        ModelConfig(n_heads=12, n_kv_heads=5)
    with pytest.raises(ValueError, match="norms_per_block"):
        ModelConfig(norms_per_block=3)
    with pytest.raises(ValueError, match="ffn"):
        ModelConfig.from_dict({"ffn": "relu"})
    with pytest.raises(ValueError, match="rope_scaling"):
        ModelConfig(rope_scaling="llama3")  # learned positions: nothing to scale
    assert ModelConfig(emb_dim=64, n_heads=3, head_size=24).head_dim == 24
