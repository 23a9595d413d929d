"""ModelConfig: the handful of numbers that fix a GPT's shape, and named presets.

The four ``gpt2-*`` presets are OpenAI's GPT-2 sizes (124M, 355M, 774M, 1558M parameters
with tied embeddings). The small presets train on a laptop CPU in minutes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

PositionalEncoding = Literal["learned", "sinusoidal", "rope"]
Initialisation = Literal["gpt2", "pytorch"]


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a GPTModel. Field names follow "Build a Large Language Model (From Scratch)"."""

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.0
    qkv_bias: bool = True
    tie_weights: bool = True
    pos_encoding: PositionalEncoding = "learned"
    layer_norm_eps: float = 1e-5
    init: Initialisation = "gpt2"  # starting weights; see GPTModel._init_weights

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        if self.emb_dim % self.n_heads:
            raise ValueError(
                f"ModelConfig.emb_dim ({self.emb_dim}) must be divisible by "
                f"n_heads ({self.n_heads})"
            )
        if self.pos_encoding not in ("learned", "sinusoidal", "rope"):
            raise ValueError(
                f"ModelConfig.pos_encoding must be 'learned', 'sinusoidal' or 'rope', "
                f"got {self.pos_encoding!r}"
            )
        if self.init not in ("gpt2", "pytorch"):
            raise ValueError(f"ModelConfig.init must be 'gpt2' or 'pytorch', got {self.init!r}")
        if self.pos_encoding == "rope" and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head size, got {self.head_dim}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"ModelConfig.drop_rate must be in [0, 1), got {self.drop_rate}")

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (e.g. ``vocab_size`` to match a tokenizer)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**data)


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
