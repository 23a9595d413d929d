"""The GPT model and its parts: attention variants, positional encodings, norms, layers, KV cache;
the classifier built on it, LoRA adapters, and the choice of weights to fine-tune."""

from scratchgpt.model.attention import (
    CausalAttention,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    SelfAttention,
    SimplifiedSelfAttention,
)
from scratchgpt.model.classifier import GPTClassifier
from scratchgpt.model.gpt import GPTModel
from scratchgpt.model.kv_cache import KVCache
from scratchgpt.model.layers import (
    GELU,
    FeedForward,
    GatedFeedForward,
    LayerNorm,
    ScaledEmbedding,
    TransformerBlock,
)
from scratchgpt.model.lora import LoRALinear, apply_lora, lora_state_dict, merge_lora
from scratchgpt.model.norms import RMSNorm, RMSNormPlusOne
from scratchgpt.model.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
)
from scratchgpt.model.trainable import TRAINABLE_CHOICES, TrainableSummary, set_trainable

__all__ = [
    "GELU",
    "TRAINABLE_CHOICES",
    "CausalAttention",
    "FeedForward",
    "GatedFeedForward",
    "GPTClassifier",
    "GPTModel",
    "KVCache",
    "LayerNorm",
    "LearnedPositionalEmbedding",
    "LoRALinear",
    "MultiHeadAttention",
    "MultiHeadAttentionWrapper",
    "RMSNorm",
    "RMSNormPlusOne",
    "RotaryEmbedding",
    "ScaledEmbedding",
    "SelfAttention",
    "SimplifiedSelfAttention",
    "SinusoidalPositionalEncoding",
    "TrainableSummary",
    "TransformerBlock",
    "apply_lora",
    "lora_state_dict",
    "merge_lora",
    "set_trainable",
]
