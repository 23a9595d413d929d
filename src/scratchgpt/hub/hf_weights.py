"""Convert weights between Hugging Face's ``GPT2LMHeadModel`` and our ``GPTModel``.

The two models compute the same function; only names and one layout differ:

=====================================  ==========================================
Hugging Face (``transformer.`` prefix)  scratchgpt
=====================================  ==========================================
``wte.weight``                          ``tok_emb.weight``
``wpe.weight``                          ``pos_emb.weight``
``h.N.ln_1.weight`` / ``.bias``         ``blocks.N.norm1.scale`` / ``.shift``
``h.N.attn.c_attn.weight`` / ``.bias``  ``blocks.N.att.qkv.weight`` / ``.bias``
``h.N.attn.c_proj.weight`` / ``.bias``  ``blocks.N.att.out_proj.weight`` / ``.bias``
``h.N.ln_2.weight`` / ``.bias``         ``blocks.N.norm2.scale`` / ``.shift``
``h.N.mlp.c_fc.weight`` / ``.bias``     ``blocks.N.ff.fc.weight`` / ``.bias``
``h.N.mlp.c_proj.weight`` / ``.bias``   ``blocks.N.ff.out_proj.weight`` / ``.bias``
``ln_f.weight`` / ``.bias``             ``final_norm.scale`` / ``.shift``
``lm_head.weight`` (no prefix)          ``out_head.weight``
=====================================  ==========================================

GPT-2 stores its linear layers as ``Conv1D`` modules whose weight is ``[in, out]``, the
transpose of ``nn.Linear``'s ``[out, in]``; those four matrices per block are transposed.
Nothing here imports ``transformers``: state dicts are plain ``{name: tensor}`` dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from scratchgpt.config import ModelConfig

_CONV1D_WEIGHTS = (  # stored as [in, out]
    "attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight",
)

_BLOCK_NAMES = {  # Hugging Face name inside h.N -> our name inside blocks.N
    "ln_1.weight": "norm1.scale",
    "ln_1.bias": "norm1.shift",
    "attn.c_attn.weight": "att.qkv.weight",
    "attn.c_attn.bias": "att.qkv.bias",
    "attn.c_proj.weight": "att.out_proj.weight",
    "attn.c_proj.bias": "att.out_proj.bias",
    "ln_2.weight": "norm2.scale",
    "ln_2.bias": "norm2.shift",
    "mlp.c_fc.weight": "ff.fc.weight",
    "mlp.c_fc.bias": "ff.fc.bias",
    "mlp.c_proj.weight": "ff.out_proj.weight",
    "mlp.c_proj.bias": "ff.out_proj.bias",
}


# What sets today's open families apart (ModelConfig's switches, and the derived widths):
# GPT-2 has the value of a default ModelConfig of the same width and heads for each one.
GPT2_DESIGN = ("norm", "ffn", "ffn_dim", "kv_heads", "head_dim", "proj_bias", "qk_norm",
               "query_pre_attn_scalar", "sliding_window", "scale_embeddings", "norms_per_block")


def _check_convertible(config: ModelConfig) -> None:
    """Refuse, before anything is written, a model whose design GPT-2 lacks: its weights or
    its computation would be lost in a GPT2LMHeadModel."""
    if config.pos_encoding != "learned":
        raise ValueError(
            f"GPT-2 has learned positional embeddings; a {config.pos_encoding!r} model "
            "cannot be expressed as a GPT2LMHeadModel"
        )
    if not config.qkv_bias:
        raise ValueError("GPT-2 has query/key/value biases; the config has qkv_bias=False")
    gpt2 = ModelConfig(emb_dim=config.emb_dim, n_heads=config.n_heads)
    changed = [f"{name}={getattr(config, name)!r}" for name in GPT2_DESIGN
               if getattr(config, name) != getattr(gpt2, name)]
    if changed:
        raise ValueError(f"GPT-2 has none of {', '.join(changed)}: this model cannot be "
                         "expressed as a GPT2LMHeadModel")


def _name_map(config: ModelConfig) -> dict[str, str]:
    """Hugging Face name (without the ``transformer.`` prefix) -> our name."""
    names = {
        "wte.weight": "tok_emb.weight",
        "wpe.weight": "pos_emb.weight",
        "ln_f.weight": "final_norm.scale",
        "ln_f.bias": "final_norm.shift",
    }
    for layer in range(config.n_layers):
        for hf_name, our_name in _BLOCK_NAMES.items():
            names[f"h.{layer}.{hf_name}"] = f"blocks.{layer}.{our_name}"
    return names


def _expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Our tensor shapes, by our name (as ``GPTModel(config).state_dict()`` has them)."""
    d, hidden = config.emb_dim, 4 * config.emb_dim
    shapes: dict[str, tuple[int, ...]] = {
        "tok_emb.weight": (config.vocab_size, d),
        "pos_emb.weight": (config.context_length, d),
        "final_norm.scale": (d,),
        "final_norm.shift": (d,),
        "out_head.weight": (config.vocab_size, d),
    }
    block = {
        "norm1.scale": (d,), "norm1.shift": (d,), "norm2.scale": (d,), "norm2.shift": (d,),
        "att.qkv.weight": (3 * d, d), "att.qkv.bias": (3 * d,),
        "att.out_proj.weight": (d, d), "att.out_proj.bias": (d,),
        "ff.fc.weight": (hidden, d), "ff.fc.bias": (hidden,),
        "ff.out_proj.weight": (d, hidden), "ff.out_proj.bias": (d,),
    }
    for layer in range(config.n_layers):
        for name, shape in block.items():
            shapes[f"blocks.{layer}.{name}"] = shape
    return shapes


def _checked(name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    if tuple(tensor.shape) != shape:
        raise ValueError(
            f"tensor {name!r} has shape {tuple(tensor.shape)}, expected {shape} for this config"
        )
    return tensor


def hf_to_scratch(
    state_dict: Mapping[str, torch.Tensor], config: ModelConfig
) -> dict[str, torch.Tensor]:
    """A ``GPTModel(config)`` state dict from a GPT2LMHeadModel (or GPT2Model) state dict.

    Names may carry the ``transformer.`` prefix (GPT2LMHeadModel) or not (GPT2Model, and the
    hub's own ``model.safetensors``). Buffers Hugging Face may include (``attn.bias``,
    ``attn.masked_bias``) are ignored. Without ``lm_head.weight`` (tied checkpoints often omit
    it) the output layer is the token embedding. Raises ``KeyError`` for a missing tensor and
    ``ValueError`` for a wrong shape.

    Each tensor is looked up once, converted and dropped before the next, so ``state_dict``
    may be a lazy mapping that reads tensors from a file on access: peak memory is then the
    converted weights plus one tensor.
    """
    _check_convertible(config)
    shapes = _expected_shapes(config)
    ours: dict[str, torch.Tensor] = {}
    for hf_name, our_name in _name_map(config).items():
        tensor, shape = _lookup(state_dict, hf_name), shapes[our_name]
        if tensor is None:
            raise KeyError(f"Hugging Face state dict has no tensor {hf_name!r}")
        if hf_name.endswith(_CONV1D_WEIGHTS):
            tensor = _checked(hf_name, tensor, shape[::-1]).t()
        ours[our_name] = _checked(hf_name, tensor, shape).contiguous()
    head = _lookup(state_dict, "lm_head.weight")
    if head is None:
        head = ours["tok_emb.weight"]
    ours["out_head.weight"] = _checked("lm_head.weight", head, shapes["out_head.weight"])
    if config.tie_weights and not torch.equal(ours["out_head.weight"], ours["tok_emb.weight"]):
        raise ValueError("lm_head.weight differs from wte.weight but the config ties them")
    return ours


def _lookup(state_dict: Mapping[str, torch.Tensor], hf_name: str) -> torch.Tensor | None:
    """``hf_name`` with or without the ``transformer.`` prefix (``lm_head`` never has it)."""
    for key in (f"transformer.{hf_name}", hf_name):
        if key in state_dict:
            return state_dict[key]
    return None


def scratch_to_hf(
    state_dict: dict[str, torch.Tensor], config: ModelConfig
) -> dict[str, torch.Tensor]:
    """A GPT2LMHeadModel state dict from a ``GPTModel(config)`` state dict (inverse of
    :func:`hf_to_scratch`). Raises ``KeyError``/``ValueError`` naming the offending tensor."""
    _check_convertible(config)
    shapes = _expected_shapes(config)
    hf: dict[str, torch.Tensor] = {}
    for hf_name, our_name in _name_map(config).items():
        if our_name not in state_dict:
            raise KeyError(f"GPTModel state dict has no tensor {our_name!r}")
        tensor = _checked(our_name, state_dict[our_name], shapes[our_name])
        if hf_name.endswith(_CONV1D_WEIGHTS):
            tensor = tensor.t()
        hf[f"transformer.{hf_name}"] = tensor.contiguous()
    head = state_dict.get("out_head.weight", state_dict["tok_emb.weight"])
    hf["lm_head.weight"] = _checked("out_head.weight", head, shapes["out_head.weight"])
    return hf


def config_from_hf(hf_config: dict[str, Any]) -> ModelConfig:
    """A :class:`ModelConfig` from a GPT-2 ``config.json`` dict (``GPT2Config.to_dict()``).

    Raises ``ValueError`` for GPT-2 variants this model does not implement.
    """
    model_type = hf_config.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise ValueError(f"expected a GPT-2 config, got model_type {model_type!r}")
    n_embd = hf_config["n_embd"]
    unsupported = {
        "activation_function": (hf_config.get("activation_function", "gelu_new"),
                                ("gelu_new", "gelu_pytorch_tanh")),
        "n_inner": (hf_config.get("n_inner"), (None, 4 * n_embd)),
        "scale_attn_weights": (hf_config.get("scale_attn_weights", True), (True,)),
        "scale_attn_by_inverse_layer_idx": (
            hf_config.get("scale_attn_by_inverse_layer_idx", False), (False,)),
        "add_cross_attention": (hf_config.get("add_cross_attention", False), (False,)),
    }
    for key, (value, allowed) in unsupported.items():
        if value not in allowed:
            raise ValueError(f"GPT-2 config has {key}={value!r}; supported: {allowed}")
    return ModelConfig(
        vocab_size=hf_config["vocab_size"],
        context_length=hf_config["n_positions"],
        emb_dim=n_embd,
        n_heads=hf_config["n_head"],
        n_layers=hf_config["n_layer"],
        drop_rate=hf_config.get("resid_pdrop", 0.1),
        qkv_bias=True,
        tie_weights=hf_config.get("tie_word_embeddings", True),
        pos_encoding="learned",
        layer_norm_eps=hf_config.get("layer_norm_epsilon", 1e-5),
    )


def hf_config_from(config: ModelConfig) -> dict[str, Any]:
    """A GPT-2 ``config.json`` dict for ``config`` (``GPT2Config(**hf_config_from(c))``)."""
    _check_convertible(config)
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_embd": config.emb_dim,
        "n_head": config.n_heads,
        "n_layer": config.n_layers,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": config.drop_rate,
        "embd_pdrop": config.drop_rate,
        "attn_pdrop": config.drop_rate,
        "layer_norm_epsilon": config.layer_norm_eps,
        "tie_word_embeddings": config.tie_weights,
    }
