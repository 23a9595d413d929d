"""Facts about a model shape without building its weights (the ``meta`` device).

The figures hold for every family the model runs: GPT-2, and Llama 3, Qwen3 and Gemma 3 with
their grouped-query attention (``n_kv_heads`` key/value heads shared by ``n_heads`` query
heads), explicit ``head_dim`` and gated feed-forwards; the parameters are counted from the
model itself, so each switch is counted as built.
"""

from __future__ import annotations

from typing import Any

import torch

from scratchgpt.config import ModelConfig
from scratchgpt.model.gpt import GPTModel


def describe(config: ModelConfig) -> dict[str, Any]:
    """Parameter counts, sizes, training FLOPs and KV-cache bytes of a GPTModel of this shape,
    computed on the meta device.

    ``parameters`` counts each weight once: with ``tie_weights`` the output layer reuses the
    token embedding's matrix, so its ``output_layer_parameters`` are not counted again.
    ``kv_cache_bytes_per_token`` is what generation caches per token in bf16 (keys and
    values of every layer, :func:`kv_cache_bytes_per_token`); ``mha_kv_cache_bytes_per_token``
    what it would be with a key/value head per query head. With a sliding window, the
    ``local_layers`` keep only the latest ``sliding_window`` tokens.
    """
    with torch.device("meta"):
        model = GPTModel(config)
    local_layers = sum(config.is_local_layer(i) for i in range(config.n_layers))
    return {
        "parameters": model.num_parameters(),
        "output_layer_parameters": model.out_head.weight.numel(),
        "tie_weights": config.tie_weights,
        "fp32_bytes": model.size_bytes(torch.float32),
        "bf16_bytes": model.size_bytes(torch.bfloat16),
        "train_flops_per_token": training_flops_per_token(model),
        "n_layers": config.n_layers,
        "n_heads": config.n_heads,
        "kv_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "kv_cache_bytes_per_token": kv_cache_bytes_per_token(config),
        "mha_kv_cache_bytes_per_token": kv_cache_bytes_per_token(
            config.replace(n_kv_heads=config.n_heads)),
        "local_layers": local_layers,
        "sliding_window": config.sliding_window,
    }


def kv_cache_bytes_per_token(config: ModelConfig, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes a KV cache holds per cached token: a key and a value vector of ``head_dim`` for
    each key/value head of each layer, ``2 * n_layers * kv_heads * head_dim * itemsize``.

    Grouped-query attention shrinks it by ``n_heads / kv_heads``: query heads share the
    cached keys and values. (Sliding-window layers keep at most ``sliding_window`` tokens:
    past the window only the global layers grow; see :func:`explain_kv_cache`.)
    """
    return 2 * config.n_layers * config.kv_heads * config.head_dim * dtype.itemsize


def explain_parameters(facts: dict[str, Any]) -> list[str]:
    """Two lines on the parameter count of :func:`describe`'s ``facts``: what it includes,
    and what it would be with the output layer tied (or untied) the other way."""
    total, head = facts["parameters"], facts["output_layer_parameters"]
    if facts["tie_weights"]:
        return [f"parameters: {total:,} (the output layer shares the token embedding's weights)",
                f"without weight tying: {total + head:,} "
                f"(a separate {head:,}-parameter output layer)"]
    return [f"parameters: {total:,} (including a separate {head:,}-parameter output layer)",
            f"with weight tying: {total - head:,} "
            "(the output layer sharing the token embedding's weights)"]


def explain_kv_cache(facts: dict[str, Any]) -> list[str]:
    """Lines on the KV cache of :func:`describe`'s ``facts``: bytes per token in bf16, what
    grouped-query attention saves against a key/value head per query head, and (with a
    sliding window) what the local layers keep."""
    per_token, full = facts["kv_cache_bytes_per_token"], facts["mha_kv_cache_bytes_per_token"]
    layers, kv_heads, heads = facts["n_layers"], facts["kv_heads"], facts["n_heads"]
    kv_named = f"{kv_heads} key/value head" + ("s" if kv_heads > 1 else "")
    lines = [f"KV cache per token (bf16): {per_token:,} bytes = 2 (key, value) x {layers} "
             f"layers x {kv_named} x {facts['head_dim']} x 2 bytes"]
    if kv_heads < heads:
        kind = "multi-query" if kv_heads == 1 else "grouped-query"
        lines.append(f"{kind} attention: {heads} query heads share {kv_named}, "
                     f"{heads // kv_heads}x less than multi-head attention's "
                     f"{full:,} bytes per token")
    else:
        lines.append("multi-head attention: one key/value head per query head")
    local, window = facts["local_layers"], facts["sliding_window"]
    if local:
        global_bytes = per_token * (layers - local) // layers
        n_global = layers - local
        whose = "the global layer's" if n_global == 1 else f"the {n_global} global layers'"
        lines.append(f"sliding window: {local} of the {layers} layers keep only the latest "
                     f"{window:,} tokens; past them a token costs {whose} {global_bytes:,} "
                     "bytes")
    return lines


def training_flops_per_token(model: GPTModel, seq_len: int | None = None) -> int:
    """FLOPs of one training step per token, the numerator of model FLOPs utilisation (MFU).

    A weight that multiplies costs 2 FLOPs per token forward and 4 backward: 6 per weight
    (Kaplan et al., 2020); grouped-query and gated feed-forward layers are counted as built,
    so their smaller or extra matrices count as they are. Embedding tables are looked up, not
    multiplied, so a learned position table does not count, nor an untied token table; a tied
    one counts once, as the output layer. Attention adds ``12 * n_heads * head_dim`` per key a
    query sees, per layer: query-key scores and the weighted sum of values, forward and
    backward (PaLM, appendix B), with ``seq_len`` keys (the context length by default), or at
    most ``sliding_window`` in a local layer.
    """
    config = model.config
    multiplying = model.num_parameters()
    if model.pos_emb is not None:
        multiplying -= sum(p.numel() for p in model.pos_emb.parameters())
    if not config.tie_weights:
        multiplying -= model.tok_emb.weight.numel()
    seq_len = seq_len or config.context_length
    keys = sum(min(seq_len, config.sliding_window or seq_len) if config.is_local_layer(i)
               else seq_len for i in range(config.n_layers))
    return 6 * multiplying + 12 * keys * config.n_heads * config.head_dim
