"""Today's open model families as data: Llama 3, Qwen3 and Gemma 3 in our :class:`GPTModel`.

For each Hugging Face ``model_type`` a :class:`Family` says how its ``config.json`` maps onto
:class:`ModelConfig` and back, and how its weight names map onto ours and back. The model
itself knows nothing of families; adding one is adding an entry here.

Each family is its *design*: the :class:`ModelConfig` switches every model of it has (Llama:
RMSNorm and SwiGLU; Qwen3: the same plus QK-norm; Gemma 3: RMSNorm scaled by ``1 + weight``,
GeGLU, four norms per block, ...). Reading a config.json sets them; a ModelConfig, which
records no family name, is of the one family whose design it has (:func:`family_of_model`),
which is how a model trained here (a run directory) is written back as a family.

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
stacked ones, which are concatenated as they load (one copy, of the attention and gated
projections) and split as they are written. :func:`_tensor_names` lists the pairs, for both
directions. Nothing here imports ``transformers``: configs are dicts, state dicts
``{name: tensor}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from scratchgpt.config import ARCHITECTURE_DESIGNS, ModelConfig, has_design


@dataclass(frozen=True)
class Family:
    """One Hugging Face ``model_type``: its design, what its config.json says beyond the
    shape every family shares (both ways), and its block norms' names."""

    model_type: str
    architecture: str  # config.json's "architectures": the transformers class that loads it
    arch: str  # our name of its design (config.ARCHITECTURE_DESIGNS): the fields all models share
    read: Callable[[Mapping[str, Any]], dict[str, Any]]  # config.json -> more ModelConfig
    write: Callable[[ModelConfig], dict[str, Any]]  # ModelConfig -> more config.json keys
    activation: tuple[str, str]  # the feed-forward activation: config.json key, its value
    block_norms: dict[str, str]  # HF name in a layer -> our name in a block

    @property
    def design(self) -> dict[str, Any]:
        """The ModelConfig fields every model of the family has."""
        return ARCHITECTURE_DESIGNS[self.arch]


# -- each family's own config.json keys (its design: config.ARCHITECTURE_DESIGNS) ------------
def _read_llama(hf: Mapping[str, Any]) -> dict[str, Any]:
    """Llama 3: RMSNorm, SwiGLU, grouped-query attention, rotary base 500,000 scaled "llama3"."""
    _full_attention_only(hf)
    return _rope(_rope_table(hf, "full_attention"))


def _write_llama(config: ModelConfig) -> dict[str, Any]:
    if config.qkv_bias != config.proj_bias:
        raise ValueError(f"Llama's attention_bias puts biases on q, k, v and o, and mlp_bias on "
                         f"the feed-forward; a model with qkv_bias={config.qkv_bias} and "
                         f"proj_bias={config.proj_bias} has them apart")
    return {"mlp_bias": config.proj_bias, **_rope_to_hf(config)}


def _read_qwen3(hf: Mapping[str, Any]) -> dict[str, Any]:
    """Qwen3: Llama's block plus QK-norm; rotary base 1,000,000; small models tie embeddings."""
    if hf.get("use_sliding_window"):
        raise ValueError("config.json: Qwen3 with use_sliding_window is not supported")
    _full_attention_only(hf)
    return _rope(_rope_table(hf, "full_attention"))


def _write_qwen3(config: ModelConfig) -> dict[str, Any]:
    return {"use_sliding_window": False, "sliding_window": None, **_rope_to_hf(config)}


def _read_gemma3(hf: Mapping[str, Any]) -> dict[str, Any]:
    """Gemma 3: RMSNorm scaled by ``1 + weight``, four norms per block, GeGLU, QK-norm,
    embeddings times sqrt(emb_dim), scores scaled by ``query_pre_attn_scalar``, and five local
    (sliding-window) layers to one global one, each kind with its own rotary base."""
    for cap in ("final_logit_softcapping", "attn_logit_softcapping"):
        if hf.get(cap) is not None:
            raise ValueError(f"config.json: {cap} = {hf[cap]} is not supported (null only)")
    if hf.get("use_bidirectional_attention"):
        raise ValueError("config.json: use_bidirectional_attention is not supported")
    local = _rope(_rope_table(hf, "sliding_attention"))
    if "rope_scaling" in local:
        raise ValueError(f"config.json: rope_type {local['rope_scaling']!r} for the "
                         "sliding_attention layers is not supported (their rotation is unscaled)")
    return {
        "query_pre_attn_scalar": float(hf["query_pre_attn_scalar"]), **_sliding_layers(hf),
        "rope_local_base": local["rope_base"],
        **_rope(_rope_table(hf, "full_attention")),
    }


def _write_gemma3(config: ModelConfig) -> dict[str, Any]:
    """Gemma's own keys; the rotary scaling, if any, is the global layers' (as in Gemma 3 4B)."""
    local_base = config.rope_local_base if config.rope_local_base is not None else config.rope_base
    layer_types = ["sliding_attention" if config.is_local_layer(i) else "full_attention"
                   for i in range(config.n_layers)]
    scalar = config.query_pre_attn_scalar or config.head_dim  # transformers 5 wants an int
    return {
        "query_pre_attn_scalar": int(scalar) if float(scalar).is_integer() else scalar,
        "sliding_window": config.sliding_window, "layer_types": layer_types,
        "sliding_window_pattern": config.global_layer_every,  # (transformers before 4.53)
        "rope_local_base_freq": local_base, **_rope_to_hf(config),
        "final_logit_softcapping": None, "attn_logit_softcapping": None,
    }


FAMILIES: dict[str, Family] = {
    "llama": Family("llama", "LlamaForCausalLM", "llama3", _read_llama,
                    _write_llama,
                    ("hidden_act", "silu"),
                    {"input_layernorm": "norm1", "post_attention_layernorm": "norm2"}),
    "qwen3": Family("qwen3", "Qwen3ForCausalLM", "qwen3", _read_qwen3,
                    _write_qwen3,
                    ("hidden_act", "silu"),
                    {"input_layernorm": "norm1", "post_attention_layernorm": "norm2"}),
    "gemma3_text": Family("gemma3_text", "Gemma3ForCausalLM",
                          "gemma3", _read_gemma3,
                          _write_gemma3, ("hidden_activation", "gelu_pytorch_tanh"),
                          {"input_layernorm": "norm1", "post_attention_layernorm": "post_att_norm",
                           "pre_feedforward_layernorm": "norm2",
                           "post_feedforward_layernorm": "post_ff_norm"}),
}


# config.json keys of what GPTModel does not implement: a config.json that sets one (to
# anything but null, 0, false or empty) is refused by name, never loaded as if it were unset.
UNIMPLEMENTED: dict[str, str] = {
    **dict.fromkeys(("num_experts", "num_local_experts", "n_routed_experts",
                     "num_experts_per_tok", "moe_intermediate_size"),
                    "scratchgpt implements no mixture of experts (a block has one dense "
                    "feed-forward); use a dense model"),
    "quantization_config": "scratchgpt reads no quantized weights; use the model's unquantized "
                           "release (bf16 or fp32)",
}


def family_of(hf_config: Mapping[str, Any]) -> Family:
    """The :class:`Family` of a config.json's ``model_type``; the error lists the known ones.
    A config.json setting a key of :data:`UNIMPLEMENTED` is refused, naming it."""
    model_type = hf_config.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(f"config.json: model_type {model_type!r} is not supported; "
                         f"supported: {', '.join(FAMILIES)}")
    for key, why in UNIMPLEMENTED.items():
        if hf_config.get(key) not in (None, 0, False, {}, []):
            raise ValueError(f"config.json: {key} = {json.dumps(hf_config[key])} is not "
                             f"supported: {why}")
    return FAMILIES[model_type]


def family_of_model(config: ModelConfig) -> Family:
    """The family whose design ``config`` has (a ModelConfig records no family name). The
    error says, for each family, which switches would have to change."""
    for family in FAMILIES.values():
        if has_design(config, family.arch):
            return family
    needs = "; ".join(
        f"{family.model_type} needs " + ", ".join(
            f"{field}={value!r} (not {getattr(config, field)!r})"
            for field, value in family.design.items() if getattr(config, field) != value)
        for family in FAMILIES.values())
    raise ValueError(f"no Hugging Face family has this model's design: {needs}")


# -- config.json <-> ModelConfig -------------------------------------------------------------
def model_config_from_hf(hf_config: Mapping[str, Any]) -> ModelConfig:
    """The :class:`ModelConfig` of a Hugging Face config.json (as a dict) of a known family."""
    family = family_of(hf_config)
    hf = hf_config
    expected = family.activation[1]
    activation = hf.get("hidden_activation") or hf.get("hidden_act")
    if activation != expected:
        raise ValueError(f"config.json: activation {activation!r}; {family.model_type} "
                         f"models use {expected!r}")
    bias = bool(hf.get("attention_bias", False))
    if bool(hf.get("mlp_bias", False)) != bias:
        raise ValueError("config.json: attention_bias and mlp_bias must agree")
    heads = hf["num_attention_heads"]
    fields = {
        "vocab_size": hf["vocab_size"],
        "context_length": hf["max_position_embeddings"],
        "emb_dim": hf["hidden_size"],
        "n_heads": heads,
        "n_layers": hf["num_hidden_layers"],
        "n_kv_heads": hf.get("num_key_value_heads") or heads,
        "head_size": hf.get("head_dim") or hf["hidden_size"] // heads,
        "hidden_dim": hf["intermediate_size"],
        "layer_norm_eps": hf.get("rms_norm_eps", 1e-6),
        "tie_weights": bool(hf.get("tie_word_embeddings", False)),
        "qkv_bias": bias,
        "proj_bias": bias,
        "drop_rate": 0.0,
        "init": "pytorch",  # the weights come from the checkpoint
    }
    return ModelConfig(**{**fields, **family.design, **family.read(hf)})


def hf_config_from_model(config: ModelConfig) -> dict[str, Any]:
    """The config.json (as a dict) of ``config``'s family (:func:`family_of_model`), the
    inverse of :func:`model_config_from_hf`. Rotary settings are written as the published
    config.json files of these models write them (``rope_theta``, ``rope_scaling``, Gemma's
    ``rope_local_base_freq``), which transformers 4 reads and transformers 5 turns into its
    ``rope_parameters`` as it loads. Raises ``ValueError`` for a model no family expresses."""
    family = family_of_model(config)
    key, activation = family.activation
    return {
        "model_type": family.model_type,
        "architectures": [family.architecture],
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.context_length,
        "hidden_size": config.emb_dim,
        "num_attention_heads": config.n_heads,
        "num_hidden_layers": config.n_layers,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "intermediate_size": config.ffn_dim,
        "rms_norm_eps": config.layer_norm_eps,
        "tie_word_embeddings": config.tie_weights,
        "attention_bias": config.qkv_bias,
        key: activation,
        **family.write(config),
    }


# The rotary scalings: rope_type -> {its config.json key: our ModelConfig field}.
ROPE_SCALINGS: dict[str, dict[str, str]] = {
    "linear": {"factor": "rope_factor"},
    "llama3": {"factor": "rope_factor", "low_freq_factor": "rope_low_freq_factor",
               "high_freq_factor": "rope_high_freq_factor",
               "original_max_position_embeddings": "rope_original_context_length"},
}


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
    if kind == "default":
        return fields
    if kind not in ROPE_SCALINGS:
        raise ValueError(f"config.json: rope_type {kind!r} is not supported "
                         f"(default, {', '.join(ROPE_SCALINGS)})")
    fields["rope_scaling"] = kind
    for key, field in ROPE_SCALINGS[kind].items():
        number = int if field == "rope_original_context_length" else float
        fields[field] = number(params[key])
    return fields


def _rope_to_hf(config: ModelConfig) -> dict[str, Any]:
    """``rope_theta`` and ``rope_scaling`` (None, or the scaling's table) of ``config``."""
    scaling = None
    if config.rope_scaling != "none":
        scaling = {"rope_type": config.rope_scaling,
                   **{key: getattr(config, field)
                      for key, field in ROPE_SCALINGS[config.rope_scaling].items()}}
    return {"rope_theta": config.rope_base, "rope_scaling": scaling}


def _full_attention_only(hf: Mapping[str, Any]) -> None:
    """Refuse ``layer_types`` naming any layer but ``full_attention`` (a family without
    sliding-window layers)."""
    other = sorted(set(hf.get("layer_types") or ()) - {"full_attention"})
    if other:
        raise ValueError(f"config.json: layer_types {', '.join(map(repr, other))} are not "
                         "supported for this family (full_attention only)")


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


# -- weights ---------------------------------------------------------------------------------
def _tensor_names(family: Family, config: ModelConfig) -> list[tuple[str, tuple[str, ...]]]:
    """Each tensor of a ``GPTModel(config)`` of ``family`` but the output layer, with the
    Hugging Face tensors it holds: one, or several stacked by rows in this order."""
    names = [("tok_emb.weight", ("model.embed_tokens.weight",)),
             ("final_norm.scale", ("model.norm.weight",))]
    kinds = ["weight", "bias"] if config.qkv_bias else ["weight"]
    for i in range(config.n_layers):
        we, hf = f"blocks.{i}.", f"model.layers.{i}."
        for kind in kinds:
            names += [
                (f"{we}att.qkv.{kind}", tuple(f"{hf}self_attn.{p}_proj.{kind}" for p in "qkv")),
                (f"{we}att.out_proj.{kind}", (f"{hf}self_attn.o_proj.{kind}",)),
                (f"{we}ff.fc.{kind}", (f"{hf}mlp.gate_proj.{kind}", f"{hf}mlp.up_proj.{kind}")),
                (f"{we}ff.out_proj.{kind}", (f"{hf}mlp.down_proj.{kind}",)),
            ]
        if config.qk_norm:
            names += [(f"{we}att.{h}_norm.scale", (f"{hf}self_attn.{h}_norm.weight",))
                      for h in "qk"]
        names += [(f"{we}{ours}.scale", (f"{hf}{theirs}.weight",))
                  for theirs, ours in family.block_norms.items()]
    return names


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

    def take(name: str) -> torch.Tensor:
        try:
            return state.pop(name)
        except KeyError:
            raise KeyError(f"{family.model_type} weights have no {name!r}") from None

    ours: dict[str, torch.Tensor] = {}
    for our_name, hf_names in _tensor_names(family, model_config_from_hf(hf_config)):
        parts = [take(name) for name in hf_names]
        ours[our_name] = parts[0] if len(parts) == 1 else torch.cat(parts)
    lm_head = state.pop("lm_head.weight", None)
    if hf_config.get("tie_word_embeddings", False):
        ours["out_head.weight"] = ours["tok_emb.weight"]
    elif lm_head is None:
        raise KeyError(f"{family.model_type} weights have no 'lm_head.weight' (untied)")
    else:
        ours["out_head.weight"] = lm_head
    unused = [name for name in state if not name.endswith("rotary_emb.inv_freq")]
    if unused:
        raise KeyError(f"{family.model_type} weights not understood: {', '.join(unused[:5])}")
    return ours


def state_dict_to_hf(
    state: Mapping[str, torch.Tensor], config: ModelConfig
) -> dict[str, torch.Tensor]:
    """The Hugging Face state dict of ``config``'s family (:func:`family_of_model`) from ours,
    the inverse of :func:`state_dict_from_hf`: ``qkv`` split into q (``n_heads * head_dim``
    rows), k and v (``kv_heads * head_dim`` each), ``fc`` into gate and up halves (copies, so
    that no two tensors share memory, which safetensors refuses). A tied output layer is left
    out: ``tie_word_embeddings`` ties it again. A tensor of ours missing is a ``KeyError``."""
    family = family_of_model(config)
    q_rows, kv_rows = config.n_heads * config.head_dim, config.kv_heads * config.head_dim

    def get(name: str) -> torch.Tensor:
        try:
            return state[name]
        except KeyError:
            raise KeyError(f"the model's state dict has no {name!r}") from None

    hf: dict[str, torch.Tensor] = {}
    for our_name, hf_names in _tensor_names(family, config):
        tensor = get(our_name)
        if len(hf_names) == 1:
            hf[hf_names[0]] = tensor
            continue
        rows = [q_rows, kv_rows, kv_rows] if len(hf_names) == 3 else [config.ffn_dim] * 2
        hf.update((name, part.clone()) for name, part in zip(hf_names, tensor.split(rows),
                                                              strict=True))
    if not config.tie_weights:
        hf["lm_head.weight"] = get("out_head.weight")
    return hf
