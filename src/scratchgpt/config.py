"""ModelConfig: the handful of numbers that fix a GPT's shape, and named presets.

The four ``gpt2-*`` presets are OpenAI's GPT-2 sizes (124M, 355M, 774M, 1558M parameters
with tied embeddings). The small presets train on a laptop CPU in minutes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from scratchgpt.settings import (
    DECAY,
    POSITIVE,
    SettingError,
    build_settings,
    check_settings,
    knob,
)

PositionalEncoding = Literal["learned", "sinusoidal", "rope"]
Initialisation = Literal["gpt2", "pytorch"]


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a GPTModel. Field names follow "Build a Large Language Model (From Scratch)"."""

    vocab_size: int = knob(50257, "tokens in the vocabulary", POSITIVE)
    context_length: int = knob(1024, "tokens the model sees at once", POSITIVE)
    emb_dim: int = knob(768, "width of the token vectors", POSITIVE)
    n_heads: int = knob(12, "attention heads per layer", POSITIVE)
    n_layers: int = knob(12, "transformer blocks", POSITIVE)
    drop_rate: float = knob(0.0, "dropout probability", DECAY)
    qkv_bias: bool = knob(True, "biases in the query/key/value projections")
    tie_weights: bool = knob(True, "share the token embedding with the output layer")
    pos_encoding: PositionalEncoding = knob("learned", "learned, sinusoidal or rope")
    layer_norm_eps: float = knob(1e-5, "added to the variance in LayerNorm", POSITIVE)
    init: Initialisation = knob("gpt2", "starting weights; see GPTModel._init_weights")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.emb_dim % self.n_heads:
            raise SettingError("n_heads", f"emb_dim ({self.emb_dim}) must be divisible by "
                                          f"n_heads ({self.n_heads})")
        if self.pos_encoding == "rope" and self.head_dim % 2:
            raise SettingError("pos_encoding", "rotary positions need an even head size "
                                               f"(emb_dim / n_heads), got {self.head_dim}")

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (e.g. ``vocab_size`` to match a tokenizer)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "ModelConfig") -> ModelConfig:
        """Inverse of :meth:`to_dict`; errors name ``where`` the table came from."""
        return build_settings(cls, data, where)


PRESETS: dict[str, ModelConfig] = {
    # OpenAI's GPT-2 family.
    "gpt2-small": ModelConfig(emb_dim=768, n_heads=12, n_layers=12),
    "gpt2-medium": ModelConfig(emb_dim=1024, n_heads=16, n_layers=24),
    "gpt2-large": ModelConfig(emb_dim=1280, n_heads=20, n_layers=36),
    "gpt2-xl": ModelConfig(emb_dim=1600, n_heads=25, n_layers=48),
    # Small models for CPUs (vocab_size is usually replaced by the tokenizer's).
    "nano": ModelConfig(context_length=64, emb_dim=64, n_heads=4, n_layers=2),
    "micro": ModelConfig(context_length=128, emb_dim=128, n_heads=4, n_layers=4),
    "mini": ModelConfig(context_length=256, emb_dim=256, n_heads=8, n_layers=6),
}


def get_preset(name: str) -> ModelConfig:
    """The preset called ``name``; the error lists the choices."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}"
        ) from None
