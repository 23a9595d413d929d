"""Today's open model families as data: Llama 3, Qwen3 and Gemma 3 in our :class:`GPTModel`.

For each Hugging Face ``model_type`` a :class:`Family` says how its ``config.json`` maps onto
:class:`ModelConfig` (the switches that set it apart from GPT-2) and how its weight names map
onto ours. The model itself knows nothing of families; adding one is adding an entry here.

==========================================  ==============================================
Hugging Face (``model.`` prefix)            scratchgpt
==========================================  ==============================================
``embed_tokens.weight``                     ``tok_emb.weight``
``layers.N.input_layernorm.weight``         ``blocks.N.norm1.scale``
``layers.N.self_attn.{q,k,v}_proj.weight``  ``blocks.N.att.qkv.weight`` (stacked: q, k, v)
``layers.N.self_attn.o_proj.weight``        ``blocks.N.att.out_proj.weight``
``layers.N.self_attn.{q,k}_norm.weight``    ``blocks.N.att.{q,k}_norm.scale`` (Qwen3, Gemma 3)
``layers.N.mlp.{gate,up}_proj.weight``      ``blocks.N.ff.fc.weight`` (stacked: gate, up)
``layers.N.mlp.down_proj.weight``           ``blocks.N.ff.out_proj.weight``
``layers.N.<the block's norms>.weight``     per family, below
``norm.weight``                             ``final_norm.scale``
``lm_head.weight`` (no prefix)              ``out_head.weight`` (absent when tied)
==========================================  ==============================================

Both name ``nn.Linear`` weights ``[out, in]``: every tensor is passed on as it is, except the
stacked ones, which are concatenated (one copy, of the attention and gated projections).
Nothing here imports ``transformers``: configs are dicts, state dicts ``{name: tensor}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from scratchgpt.config import ModelConfig


@dataclass(frozen=True)
class Family:
    """One Hugging Face ``model_type``: its ModelConfig switches and its block norms' names."""

    model_type: str
    activation: str  # the feed-forward activation its config.json must name
    switches: Callable[[Mapping[str, Any]], dict[str, Any]]  # config.json -> ModelConfig fields
    block_norms: dict[str, str]  # HF name in a layer -> our name in a block


def _llama(hf: Mapping[str, Any]) -> dict[str, Any]:
    """Llama 3: RMSNorm, SwiGLU, grouped-query attention, rotary base 500,000 scaled "llama3"."""
    return {"norm": "rmsnorm", "ffn": "swiglu", **_rope(_rope_table(hf, "full_attention"))}


def _qwen3(hf: Mapping[str, Any]) -> dict[str, Any]:
    """Qwen3: Llama's block plus QK-norm; rotary base 1,000,000; small models tie embeddings."""
    if hf.get("use_sliding_window"):
        raise ValueError("config.json: Qwen3 with use_sliding_window is not supported")
    return {"norm": "rmsnorm", "ffn": "swiglu", "qk_norm": True,
            **_rope(_rope_table(hf, "full_attention"))}


def _gemma3(hf: Mapping[str, Any]) -> dict[str, Any]:
    """Gemma 3: RMSNorm scaled by ``1 + weight``, four norms per block, GeGLU, QK-norm,
    embeddings times sqrt(emb_dim), scores scaled by ``query_pre_attn_scalar``, and five local
    (sliding-window) layers to one global one, each kind with its own rotary base."""
    for cap in ("final_logit_softcapping", "attn_logit_softcapping"):
        if hf.get(cap) is not None:
            raise ValueError(f"config.json: {cap} = {hf[cap]} is not supported (null only)")
    if hf.get("use_bidirectional_attention"):
        raise ValueError("config.json: use_bidirectional_attention is not supported")
    local = _rope_table(hf, "sliding_attention")
    return {
        "norm": "rmsnorm_plus_one", "ffn": "geglu", "qk_norm": True, "norms_per_block": 4,
        "scale_embeddings": True, "query_pre_attn_scalar": float(hf["query_pre_attn_scalar"]),
        **_sliding_layers(hf), "rope_local_base": float(local.get("rope_theta", 10000.0)),
        **_rope(_rope_table(hf, "full_attention")),
    }


FAMILIES: dict[str, Family] = {
    "llama": Family("llama", "silu", _llama,
                    {"input_layernorm": "norm1", "post_attention_layernorm": "norm2"}),
    "qwen3": Family("qwen3", "silu", _qwen3,
                    {"input_layernorm": "norm1", "post_attention_layernorm": "norm2"}),
    "gemma3_text": Family("gemma3_text", "gelu_pytorch_tanh", _gemma3,
                          {"input_layernorm": "norm1", "post_attention_layernorm": "post_att_norm",
                           "pre_feedforward_layernorm": "norm2",
                           "post_feedforward_layernorm": "post_ff_norm"}),
}


def family_of(hf_config: Mapping[str, Any]) -> Family:
    """The :class:`Family` of a config.json's ``model_type``; the error lists the known ones."""
    model_type = hf_config.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(f"config.json: model_type {model_type!r} is not supported; "
                         f"supported: {', '.join(FAMILIES)}")
    return FAMILIES[model_type]


def model_config_from_hf(hf_config: Mapping[str, Any]) -> ModelConfig:
    """The :class:`ModelConfig` of a Hugging Face config.json (as a dict) of a known family."""
    family = family_of(hf_config)
    hf = hf_config
    activation = hf.get("hidden_activation") or hf.get("hidden_act")
    if activation != family.activation:
        raise ValueError(f"config.json: activation {activation!r}; {family.model_type} "
                         f"models use {family.activation!r}")
    bias = bool(hf.get("attention_bias", False))
    if bool(hf.get("mlp_bias", False)) != bias:
        raise ValueError("config.json: attention_bias and mlp_bias must agree")
    heads = hf["num_attention_heads"]
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        context_length=hf["max_position_embeddings"],
        emb_dim=hf["hidden_size"],
        n_heads=heads,
        n_layers=hf["num_hidden_layers"],
        n_kv_heads=hf.get("num_key_value_heads") or heads,
        head_size=hf.get("head_dim") or hf["hidden_size"] // heads,
        hidden_dim=hf["intermediate_size"],
        layer_norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_weights=bool(hf.get("tie_word_embeddings", False)),
        qkv_bias=bias,
        proj_bias=bias,
        pos_encoding="rope",
        drop_rate=0.0,
        init="pytorch",  # the weights come from the checkpoint
        **family.switches(hf),
    )


def _rope_table(hf: Mapping[str, Any], layer_type: str) -> dict[str, Any]:
    """The rotary parameters of ``layer_type`` layers: transformers 5 writes them per layer
    type or once in ``rope_parameters``; earlier versions as ``rope_theta``, ``rope_scaling``
    and (Gemma 3) ``rope_local_base_freq``."""
    params = hf.get("rope_parameters")
    if params:
        return dict(params.get(layer_type, params))
    if layer_type == "sliding_attention":
        return {"rope_theta": hf.get("rope_local_base_freq", 10000.0)}
    return {"rope_theta": hf.get("rope_theta", 10000.0), **(hf.get("rope_scaling") or {})}


def _rope(params: Mapping[str, Any]) -> dict[str, Any]:
    """ModelConfig's rotary fields from one rotary table of config.json."""
    kind = params.get("rope_type", params.get("type", "default"))
    fields: dict[str, Any] = {"rope_base": float(params.get("rope_theta", 10000.0))}
    if kind == "linear":
        fields.update(rope_scaling="linear", rope_factor=float(params["factor"]))
    elif kind == "llama3":
        fields.update(
            rope_scaling="llama3", rope_factor=float(params["factor"]),
            rope_low_freq_factor=float(params["low_freq_factor"]),
            rope_high_freq_factor=float(params["high_freq_factor"]),
            rope_original_context_length=int(params["original_max_position_embeddings"]))
    elif kind != "default":
        raise ValueError(f"config.json: rope_type {kind!r} is not supported "
                         "(default, linear or llama3)")
    return fields


def _sliding_layers(hf: Mapping[str, Any]) -> dict[str, Any]:
    """``sliding_window`` and ``global_layer_every`` from ``layer_types`` (or the older
    ``sliding_window_pattern``), which must be N-1 local layers then one global, repeated."""
    n_layers = hf["num_hidden_layers"]
    layer_types = hf.get("layer_types")
    if not layer_types:
        every = hf.get("sliding_window_pattern") or hf.get("_sliding_window_pattern") or 1
        return {"sliding_window": hf["sliding_window"], "global_layer_every": every}
    if "full_attention" not in layer_types:
        raise ValueError("config.json: layer_types has no full_attention layer")
    every = layer_types.index("full_attention") + 1
    expected = ["full_attention" if (i + 1) % every == 0 else "sliding_attention"
                for i in range(n_layers)]
    if list(layer_types) != expected:
        raise ValueError(f"config.json: layer_types must repeat {every - 1} sliding_attention "
                         "layers and one full_attention layer")
    return {"sliding_window": hf["sliding_window"] if every > 1 else None,
            "global_layer_every": every}


def state_dict_from_hf(
    hf_state: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """Our ``GPTModel`` state dict from a Hugging Face one of ``hf_config``'s family.

    Tensors are renamed, not copied, except that each layer's q/k/v projections and its
    gate/up projections are concatenated into our fused ``qkv`` and ``fc``. With tied
    embeddings ``out_head.weight`` is the token embedding itself. A name that maps nowhere,
    or one of ours left without a weight, is an error that names it.
    """
    family = family_of(hf_config)
    state = dict(hf_state)
    ours: dict[str, torch.Tensor] = {}

    def take(name: str) -> torch.Tensor:
        try:
            return state.pop(name)
        except KeyError:
            raise KeyError(f"{family.model_type} weights have no {name!r}") from None

    ours["tok_emb.weight"] = take("model.embed_tokens.weight")
    ours["final_norm.scale"] = take("model.norm.weight")
    lm_head = state.pop("lm_head.weight", None)
    if hf_config.get("tie_word_embeddings", False):
        ours["out_head.weight"] = ours["tok_emb.weight"]
    elif lm_head is None:
        raise KeyError(f"{family.model_type} weights have no 'lm_head.weight' (untied)")
    else:
        ours["out_head.weight"] = lm_head
    for i in range(hf_config["num_hidden_layers"]):
        hf, we = f"model.layers.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            if f"{hf}self_attn.q_proj.{kind}" in state:
                ours[f"{we}att.qkv.{kind}"] = torch.cat(
                    [take(f"{hf}self_attn.{p}_proj.{kind}") for p in "qkv"])
            if f"{hf}self_attn.o_proj.{kind}" in state:
                ours[f"{we}att.out_proj.{kind}"] = take(f"{hf}self_attn.o_proj.{kind}")
            if f"{hf}mlp.gate_proj.{kind}" in state:
                ours[f"{we}ff.fc.{kind}"] = torch.cat(
                    [take(f"{hf}mlp.gate_proj.{kind}"), take(f"{hf}mlp.up_proj.{kind}")])
            if f"{hf}mlp.down_proj.{kind}" in state:
                ours[f"{we}ff.out_proj.{kind}"] = take(f"{hf}mlp.down_proj.{kind}")
        for head in ("q", "k"):
            if f"{hf}self_attn.{head}_norm.weight" in state:
                ours[f"{we}att.{head}_norm.scale"] = take(f"{hf}self_attn.{head}_norm.weight")
        for hf_norm, our_norm in family.block_norms.items():
            ours[f"{we}{our_norm}.scale"] = take(f"{hf}{hf_norm}.weight")
    unused = [name for name in state if not name.endswith("rotary_emb.inv_freq")]
    if unused:
        raise KeyError(f"{family.model_type} weights not understood: {', '.join(unused[:5])}")
    return ours
