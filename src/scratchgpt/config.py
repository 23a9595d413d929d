"""ModelConfig: the handful of numbers that fix a GPT's shape, and named presets.

The four ``gpt2-*`` presets are OpenAI's GPT-2 sizes (124M, 355M, 774M, 1558M parameters
with tied embeddings); ``qwen3-0.6b``, ``llama-3.2-1b`` and ``gemma-3-270m`` are the published
shapes of those open models. The small presets train on a laptop CPU in minutes.

The switches after ``init`` tell today's open families (Llama 3, Qwen3, Gemma 3) apart from
GPT-2; each one's default is GPT-2's, so a table without them is a GPT-2 and old runs' config
files load unchanged. ``scratchgpt.hub.families`` sets them from a Hugging Face config.json.
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
Norm = Literal["layernorm", "rmsnorm", "rmsnorm_plus_one"]
FeedForwardKind = Literal["gelu", "swiglu", "geglu"]
RopeScaling = Literal["none", "linear", "llama3"]


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
    # Beyond GPT-2 (Llama 3, Qwen3, Gemma 3); every default is GPT-2's.
    norm: Norm = knob("layernorm", "layernorm (GPT-2), rmsnorm (Llama, Qwen) or "
                                   "rmsnorm_plus_one (Gemma: scaled by 1 + weight)")
    ffn: FeedForwardKind = knob("gelu", "feed-forward: gelu (GPT-2), swiglu (Llama, Qwen) or "
                                        "geglu (Gemma)")
    hidden_dim: int | None = knob(None, "feed-forward width; None = 4 * emb_dim", POSITIVE)
    n_kv_heads: int | None = knob(None, "key/value heads (grouped-query attention); "
                                        "None = n_heads", POSITIVE)
    head_size: int | None = knob(None, "width of each attention head; None = emb_dim / n_heads "
                                       "(read it as head_dim)", POSITIVE)
    proj_bias: bool = knob(True, "biases in the attention output and feed-forward layers")
    qk_norm: bool = knob(False, "RMS-normalise each head's queries and keys (Qwen3, Gemma 3)")
    query_pre_attn_scalar: float | None = knob(
        None, "scores are scaled by this ** -0.5; None = head_dim (Gemma sets it)", POSITIVE)
    rope_base: float = knob(10000.0, "rotary base (theta)", POSITIVE)
    rope_scaling: RopeScaling = knob("none", "rotary frequency scaling: none, linear or llama3")
    rope_factor: float = knob(1.0, "rotary scaling: how much longer the context", POSITIVE)
    rope_low_freq_factor: float = knob(1.0, "llama3 rotary scaling: low_freq_factor", POSITIVE)
    rope_high_freq_factor: float = knob(4.0, "llama3 rotary scaling: high_freq_factor", POSITIVE)
    rope_original_context_length: int = knob(
        8192, "llama3 rotary scaling: original_max_position_embeddings", POSITIVE)
    sliding_window: int | None = knob(None, "local layers attend to this many latest tokens "
                                            "(Gemma 3); None = every layer is global", POSITIVE)
    global_layer_every: int = knob(1, "with sliding_window: every Nth layer is global, the "
                                      "others local (Gemma 3: 6)", POSITIVE)
    rope_local_base: float | None = knob(None, "rotary base of the local (sliding-window) "
                                               "layers; None = rope_base", POSITIVE)
    scale_embeddings: bool = knob(False, "multiply token vectors by sqrt(emb_dim) (Gemma)")
    norms_per_block: int = knob(2, "2: before attention and feed-forward (GPT-2); 4: also "
                                   "after each (Gemma)", POSITIVE)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.head_size is None and self.emb_dim % self.n_heads:
            raise SettingError("n_heads", f"emb_dim ({self.emb_dim}) must be divisible by "
                                          f"n_heads ({self.n_heads}), or set head_size")
        if self.n_heads % self.kv_heads:
            raise SettingError("n_kv_heads", f"n_heads ({self.n_heads}) must be a multiple of "
                                             f"n_kv_heads ({self.kv_heads})")
        if self.pos_encoding == "rope" and self.head_dim % 2:
            raise SettingError("pos_encoding", "rotary positions need an even head size "
                                               f"(head_dim), got {self.head_dim}")
        if self.norms_per_block not in (2, 4):
            raise SettingError("norms_per_block", f"must be 2 or 4, got {self.norms_per_block}")
        if self.rope_scaling != "none" and self.pos_encoding != "rope":
            raise SettingError("rope_scaling", "needs pos_encoding = rope")
        llama3 = self.rope_scaling == "llama3"
        if llama3 and self.rope_high_freq_factor <= self.rope_low_freq_factor:
            raise SettingError("rope_high_freq_factor", "must exceed rope_low_freq_factor")

    @property
    def head_dim(self) -> int:
        """Width of each attention head: ``head_size``, or ``emb_dim // n_heads`` unset."""
        return self.head_size if self.head_size is not None else self.emb_dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Key/value heads: ``n_kv_heads``, or ``n_heads`` (plain multi-head) unset."""
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def ffn_dim(self) -> int:
        """Feed-forward width: ``hidden_dim``, or GPT-2's ``4 * emb_dim`` unset."""
        return self.hidden_dim if self.hidden_dim is not None else 4 * self.emb_dim

    def is_local_layer(self, layer_idx: int) -> bool:
        """Whether layer ``layer_idx`` attends through a sliding window (Gemma 3: five local
        layers, then one global, ``global_layer_every = 6``)."""
        return self.sliding_window is not None and (layer_idx + 1) % self.global_layer_every != 0

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
    # Today's open models: the shapes of their published config.json files (the
    # fields scratchgpt.hub.families reads from them), for `info --preset` and for pretraining
    # from scratch (GPT-2's initialisation: a loaded checkpoint brings its own weights).
    "qwen3-0.6b": ModelConfig(
        vocab_size=151936, context_length=40960, emb_dim=1024, n_heads=16, n_layers=28,
        n_kv_heads=8, head_size=128, hidden_dim=3072, norm="rmsnorm", ffn="swiglu",
        qk_norm=True, qkv_bias=False, proj_bias=False, pos_encoding="rope",
        rope_base=1_000_000.0, layer_norm_eps=1e-6),
    "llama-3.2-1b": ModelConfig(
        vocab_size=128256, context_length=131072, emb_dim=2048, n_heads=32, n_layers=16,
        n_kv_heads=8, head_size=64, hidden_dim=8192, norm="rmsnorm", ffn="swiglu",
        qkv_bias=False, proj_bias=False, pos_encoding="rope", rope_base=500_000.0,
        rope_scaling="llama3", rope_factor=32.0, rope_low_freq_factor=1.0,
        rope_high_freq_factor=4.0, rope_original_context_length=8192),
    "gemma-3-270m": ModelConfig(
        vocab_size=262144, context_length=32768, emb_dim=640, n_heads=4, n_layers=18,
        n_kv_heads=1, head_size=256, hidden_dim=2048, norm="rmsnorm_plus_one", ffn="geglu",
        qk_norm=True, qkv_bias=False, proj_bias=False, pos_encoding="rope",
        rope_base=1_000_000.0, rope_local_base=10_000.0, sliding_window=512,
        global_layer_every=6, query_pre_attn_scalar=256.0, scale_embeddings=True,
        norms_per_block=4, layer_norm_eps=1e-6),
    # Small models for CPUs (vocab_size is usually replaced by the tokenizer's).
    "nano": ModelConfig(context_length=64, emb_dim=64, n_heads=4, n_layers=2),
    "micro": ModelConfig(context_length=128, emb_dim=128, n_heads=4, n_layers=4),
    "mini": ModelConfig(context_length=256, emb_dim=256, n_heads=8, n_layers=6),
}


# -- architectures: GPT-2's and today's, as the switches that set each apart --------------------
# Every switch's default is GPT-2's; each design lists what every model of that architecture
# has, whatever its size (scratchgpt.hub.families reads config.json files with them).
ARCHITECTURE_DESIGNS: dict[str, dict[str, Any]] = {
    "gpt2": {"pos_encoding": "learned", "norm": "layernorm", "ffn": "gelu", "qk_norm": False,
             "norms_per_block": 2, "scale_embeddings": False},
    "llama3": {"pos_encoding": "rope", "norm": "rmsnorm", "ffn": "swiglu", "qk_norm": False,
               "norms_per_block": 2, "scale_embeddings": False, "query_pre_attn_scalar": None,
               "sliding_window": None, "rope_local_base": None},
    "gemma3": {"pos_encoding": "rope", "norm": "rmsnorm_plus_one", "ffn": "geglu",
               "qk_norm": True, "norms_per_block": 4, "scale_embeddings": True,
               "qkv_bias": False, "proj_bias": False},
}
ARCHITECTURE_DESIGNS["qwen3"] = {**ARCHITECTURE_DESIGNS["llama3"], "qk_norm": True,
                                 "qkv_bias": False, "proj_bias": False}
ARCHITECTURES = ("gpt2", "llama3", "qwen3", "gemma3")


def has_design(config: ModelConfig, arch: str) -> bool:
    """Whether ``config`` has every switch of architecture ``arch``'s design."""
    return all(getattr(config, k) == v for k, v in ARCHITECTURE_DESIGNS[arch].items())


def with_architecture(config: ModelConfig, arch: str) -> ModelConfig:
    """``config``'s size (width, depth, heads, context, vocabulary) built as ``arch``.

    What a size preset (GPT-2's design) becomes, as the published models of each family do it:

    * ``llama3``: RMSNorm, SwiGLU, rotary positions (base 500,000), half as many key/value
      heads as query heads, no biases;
    * ``qwen3``: Llama's, with QK-norm and rotary base 1,000,000;
    * ``gemma3``: RMSNorm ``(1 + w)`` four times a block, GeGLU, QK-norm, scaled embeddings,
      sliding-window layers (a quarter of the context) with one global layer in six (or the
      last), rotary bases 10,000 (local) and 1,000,000 (global).

    The gated feed-forwards are ``8/3 * emb_dim`` wide (to a multiple of 32): three matrices
    that wide weigh what GPT-2's two ``4 * emb_dim`` ones do, so the architectures compare at
    about the same parameter count. A preset that already has a design (``qwen3-0.6b``) keeps
    it, and refuses another.
    """
    if arch not in ARCHITECTURE_DESIGNS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of: "
                         f"{', '.join(ARCHITECTURES)}")
    if has_design(config, arch):
        return config
    if not has_design(config, "gpt2"):
        own = next((name for name in ARCHITECTURES if has_design(config, name)), "another")
        raise ValueError(f"this preset is already a {own} model, not {arch}: leave out the "
                         "architecture, or pick a size preset (nano, micro, mini, gpt2-*)")
    if arch == "gpt2":
        return config
    sized: dict[str, Any] = {
        "n_kv_heads": max(1, config.n_heads // 2), "qkv_bias": False, "proj_bias": False,
        "hidden_dim": 32 * max(1, round(8 * config.emb_dim / 3 / 32)),
        "rope_base": 500_000.0 if arch == "llama3" else 1_000_000.0,
        "layer_norm_eps": 1e-5 if arch == "llama3" else 1e-6,
    }
    if arch == "gemma3":
        sized.update(sliding_window=max(1, config.context_length // 4),
                     global_layer_every=min(6, config.n_layers), rope_local_base=10_000.0,
                     query_pre_attn_scalar=float(config.head_dim))
    return config.replace(**{**sized, **ARCHITECTURE_DESIGNS[arch]})


def get_preset(name: str) -> ModelConfig:
    """The preset called ``name``; the error lists the choices."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}"
        ) from None
