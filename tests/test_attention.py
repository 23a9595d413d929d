"""The attention variants compute the same function, are causal, and RoPE is relative."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchgpt.model import (
    CausalAttention,
    KVCache,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    RotaryEmbedding,
    SelfAttention,
    SimplifiedSelfAttention,
)

B, T, D, HEADS, CTX = 2, 7, 8, 2, 10
ATOL = 1e-6


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def x64(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64)


def fused_copy_of(wrapper: MultiHeadAttentionWrapper, **kwargs) -> MultiHeadAttention:
    """A MultiHeadAttention holding the wrapper's weights: the per-head query/key/value
    matrices are stacked (heads side by side) into the fused qkv layer."""
    d_out = wrapper.out_proj.out_features
    fused = MultiHeadAttention(D, d_out, len(wrapper.heads), qkv_bias=True, **kwargs).double()
    with torch.no_grad():
        for part, name in enumerate(("W_query", "W_key", "W_value")):
            rows = slice(part * d_out, (part + 1) * d_out)
            fused.qkv.weight[rows] = torch.cat([getattr(h, name).weight for h in wrapper.heads])
            fused.qkv.bias[rows] = torch.cat([getattr(h, name).bias for h in wrapper.heads])
        fused.out_proj.load_state_dict(wrapper.out_proj.state_dict())
    return fused


def test_simplified_equals_self_attention_with_identity_projections() -> None:
    # softmax(X X^T) X == softmax((X c)(X c)^T / sqrt(d)) X  when c = d^(1/4).
    x = x64(B, T, D)
    trained = SelfAttention(D, D).double()
    with torch.no_grad():
        trained.W_query.weight.copy_(torch.eye(D) * D**0.25)
        trained.W_key.weight.copy_(torch.eye(D) * D**0.25)
        trained.W_value.weight.copy_(torch.eye(D))
    out, weights = SimplifiedSelfAttention()(x, return_weights=True)
    out2, weights2 = trained(x, return_weights=True)
    torch.testing.assert_close(out, out2, atol=ATOL, rtol=0)
    torch.testing.assert_close(weights, weights2, atol=ATOL, rtol=0)


def test_simplified_matches_the_book_loop() -> None:
    x = x64(T, D)
    context = torch.zeros(T, D, dtype=torch.float64)
    for i in range(T):
        scores = torch.tensor([x[i] @ x[j] for j in range(T)])
        context[i] = (torch.softmax(scores, dim=0)[:, None] * x).sum(dim=0)
    torch.testing.assert_close(SimplifiedSelfAttention()(x), context, atol=ATOL, rtol=0)


def test_causal_attention_is_self_attention_on_each_prefix() -> None:
    x = x64(B, T, D)
    causal = CausalAttention(D, 4, CTX, dropout=0.0).double()
    plain = SelfAttention(D, 4).double()
    plain.load_state_dict(causal.state_dict())
    out = causal(x)
    for t in range(T):
        torch.testing.assert_close(out[:, t], plain(x[:, : t + 1])[:, -1], atol=ATOL, rtol=0)


def test_wrapper_with_one_head_is_causal_attention_plus_projection() -> None:
    x = x64(B, T, D)
    wrapper = MultiHeadAttentionWrapper(D, D, CTX, 0.0, num_heads=1).double()
    expected = wrapper.out_proj(wrapper.heads[0](x))
    torch.testing.assert_close(wrapper(x), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_wrapper_and_fused_attention_agree(dtype: torch.dtype) -> None:
    x = torch.randn(B, T, D, dtype=dtype)
    wrapper = MultiHeadAttentionWrapper(D, D, CTX, 0.0, HEADS, qkv_bias=True).double()
    fused = fused_copy_of(wrapper)
    wrapper, fused = wrapper.to(dtype), fused.to(dtype)
    out, weights = wrapper(x, return_weights=True)
    fast = fused(x)  # the scaled_dot_product_attention path
    explicit, explicit_weights = fused(x, return_weights=True)
    torch.testing.assert_close(fast, out, atol=ATOL, rtol=0)
    torch.testing.assert_close(explicit, out, atol=ATOL, rtol=0)
    torch.testing.assert_close(explicit_weights, weights, atol=ATOL, rtol=0)
    assert weights.shape == (B, HEADS, T, T)


def causal_variants() -> list[torch.nn.Module]:
    return [
        CausalAttention(D, D, CTX, 0.0).double(),
        MultiHeadAttentionWrapper(D, D, CTX, 0.0, HEADS).double(),
        MultiHeadAttention(D, D, HEADS).double(),
        MultiHeadAttention(D, D, HEADS, rope=RotaryEmbedding(D // HEADS, CTX)).double(),
    ]


@pytest.mark.parametrize("module", causal_variants(), ids=["causal", "wrapper", "mha", "rope"])
def test_output_at_t_ignores_later_tokens(module: torch.nn.Module) -> None:
    x = x64(B, T, D)
    changed = x.clone()
    changed[:, 4:] = x64(B, T - 4, D)
    out, out_changed = module(x), module(changed)
    torch.testing.assert_close(out[:, :4], out_changed[:, :4], atol=ATOL, rtol=0)
    assert not torch.allclose(out[:, 4:], out_changed[:, 4:])


@pytest.mark.parametrize("module", causal_variants(), ids=["causal", "wrapper", "mha", "rope"])
def test_weights_are_causal_and_rows_sum_to_one(module: torch.nn.Module) -> None:
    _, weights = module(x64(B, T, D), return_weights=True)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1], dtype=weights.dtype))
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    assert (weights[..., future] == 0).all()
    assert (weights[..., ~future] > 0).all()


def test_unmasked_weights_rows_sum_to_one() -> None:
    for module in (SimplifiedSelfAttention(), SelfAttention(D, 4).double()):
        _, weights = module(x64(B, T, D), return_weights=True)
        assert weights.shape == (B, T, T)
        torch.testing.assert_close(weights.sum(-1), torch.ones(B, T, dtype=torch.float64))


def test_attention_dropout_zeroes_weights_in_training_only() -> None:
    mha = MultiHeadAttention(D, D, HEADS, dropout=0.5).double()
    x = x64(B, T, D)
    _, weights = mha(x, return_weights=True)
    assert (weights[..., ~torch.triu(torch.ones(T, T, dtype=torch.bool), 1)] == 0).any()
    mha.eval()
    torch.testing.assert_close(mha(x), mha(x))


@pytest.mark.parametrize("rope", [False, True])
def test_kv_cache_matches_full_attention(rope: bool) -> None:
    """Feeding tokens in chunks (1 token, then several after a cached prefix) gives the
    outputs and weights of one full pass."""
    hd = D // HEADS
    mha = MultiHeadAttention(
        D, D, HEADS, qkv_bias=True, rope=RotaryEmbedding(hd, CTX) if rope else None
    ).double()
    x = x64(B, T, D)
    full, full_weights = mha(x, return_weights=True)
    cache = KVCache(1, B, HEADS, CTX, hd, dtype=torch.float64)
    pieces, start = [], 0
    for size in (3, 1, 3):
        pieces.append(mha(x[:, start : start + size], cache, layer_idx=0))
        cache.advance(size)
        start += size
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=ATOL, rtol=0)

    cache.reset()
    mha(x[:, :4], cache)
    cache.advance(4)
    out, weights = mha(x[:, 4:], cache, return_weights=True)
    torch.testing.assert_close(out, full[:, 4:], atol=ATOL, rtol=0)
    torch.testing.assert_close(weights, full_weights[:, :, 4:], atol=ATOL, rtol=0)


def test_kv_cache_refuses_to_overflow() -> None:
    cache = KVCache(1, 1, HEADS, 4, D // HEADS)
    keys = torch.zeros(1, HEADS, 5, D // HEADS)
    with pytest.raises(ValueError, match="KV cache is full"):
        cache.update(0, keys, keys)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(0, 40), n=st.integers(0, 40), shift=st.integers(0, 20))
def test_rope_scores_depend_only_on_relative_position(m: int, n: int, shift: int) -> None:
    rope = RotaryEmbedding(head_dim=8, context_length=64).double()
    gen = torch.Generator().manual_seed(m * 1000 + n)
    q, k = torch.randn(2, 1, 8, dtype=torch.float64, generator=gen)
    score = rope(q, offset=m) @ rope(k, offset=n).T
    shifted = rope(q, offset=m + shift) @ rope(k, offset=n + shift).T
    torch.testing.assert_close(score, shifted, atol=1e-6, rtol=0)  # float32 cos/sin tables
    torch.testing.assert_close(rope(q, offset=m).norm(), q.norm())  # a rotation


def test_rope_at_position_zero_is_identity_and_offsets_slice_the_table() -> None:
    rope = RotaryEmbedding(head_dim=8, context_length=16)
    x = torch.randn(1, 2, 5, 8)
    torch.testing.assert_close(rope(x[:, :, :1]), x[:, :, :1])
    torch.testing.assert_close(rope(x)[:, :, 3:], rope(x[:, :, 3:], offset=3))
