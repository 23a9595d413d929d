"""The GPT model and its parts: attention variants, positional encodings, layers, KV cache."""

from scratchgpt.model.attention import (
    CausalAttention,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    SelfAttention,
    SimplifiedSelfAttention,
)
from scratchgpt.model.gpt import GPTModel
from scratchgpt.model.kv_cache import KVCache
from scratchgpt.model.layers import GELU, FeedForward, LayerNorm, TransformerBlock
from scratchgpt.model.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
)

__all__ = [
    "GELU",
    "CausalAttention",
    "FeedForward",
    "GPTModel",
    "KVCache",
    "LayerNorm",
    "LearnedPositionalEmbedding",
    "MultiHeadAttention",
    "MultiHeadAttentionWrapper",
    "RotaryEmbedding",
    "SelfAttention",
    "SimplifiedSelfAttention",
    "SinusoidalPositionalEncoding",
    "TransformerBlock",
]
