"""`info` for Llama 3, Qwen3 and Gemma 3: presets with the published shapes, parameter counts
equal to transformers' (both models built on the meta device: no memory), training FLOPs and
KV-cache bytes per token for grouped-query attention, and rotary tables that grow on demand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from flop_counts import matrix_product_flops

from scratchgpt.cli import main
from scratchgpt.config import ModelConfig, get_preset
from scratchgpt.hub.families import model_config_from_hf
from scratchgpt.hub.model_from_weights import model_from_weights
from scratchgpt.model import GPTModel
from scratchgpt.model.positional import RotaryEmbedding
from scratchgpt.model.summary import describe, kv_cache_bytes_per_token, training_flops_per_token

transformers = pytest.importorskip("transformers")

# The published config.json of each model (the fields that fix its shape).
QWEN3_0_6B = {
    "model_type": "qwen3", "hidden_act": "silu", "attention_bias": False, "head_dim": 128,
    "hidden_size": 1024, "intermediate_size": 3072, "max_position_embeddings": 40960,
    "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None,
    "use_sliding_window": False, "tie_word_embeddings": True, "vocab_size": 151936,
}
LLAMA_3_2_1B = {
    "model_type": "llama", "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
    "head_dim": 64, "hidden_size": 2048, "intermediate_size": 8192,
    "max_position_embeddings": 131072, "num_attention_heads": 32, "num_hidden_layers": 16,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": True, "vocab_size": 128256,
}
GEMMA_3_270M = {
    "model_type": "gemma3_text", "hidden_activation": "gelu_pytorch_tanh",
    "attention_bias": False, "head_dim": 256, "hidden_size": 640, "intermediate_size": 2048,
    "max_position_embeddings": 32768, "num_attention_heads": 4, "num_hidden_layers": 18,
    "num_key_value_heads": 1, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
    "rope_local_base_freq": 10000.0, "rope_scaling": None, "rope_theta": 1000000.0,
    "sliding_window": 512, "final_logit_softcapping": None, "attn_logit_softcapping": None,
    "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                    for i in range(18)],
    "tie_word_embeddings": True, "vocab_size": 262144,
}
PUBLISHED = {"qwen3-0.6b": QWEN3_0_6B, "llama-3.2-1b": LLAMA_3_2_1B,
             "gemma-3-270m": GEMMA_3_270M}
# Their model cards' sizes, as transformers' num_parameters() counts them.
PARAMETERS = {"qwen3-0.6b": 596_049_920, "llama-3.2-1b": 1_235_814_400,
              "gemma-3-270m": 268_098_176}


def transformers_parameters(hf: dict[str, Any]) -> int:
    """transformers' own count, its model built on the meta device (shapes, no storage)."""
    config = transformers.AutoConfig.for_model(**hf)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return model.num_parameters()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> str:
    assert main([str(a) for a in argv]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_preset_has_the_published_shape_and_transformers_parameter_count(name: str) -> None:
    preset = get_preset(name)
    # the shape config.json gives; a preset starts from GPT-2's initialisation, a checkpoint
    # from its own weights
    assert preset == model_config_from_hf(PUBLISHED[name]).replace(init="gpt2")
    theirs = transformers_parameters(PUBLISHED[name])
    assert theirs == PARAMETERS[name]
    assert describe(preset)["parameters"] == theirs


def test_info_preset_prints_qwen3s_parameters_and_kv_cache(
        capsys: pytest.CaptureFixture[str]) -> None:
    lines = run_cli(capsys, "info", "--preset", "qwen3-0.6b").splitlines()
    assert lines[0] == str(PARAMETERS["qwen3-0.6b"])
    # 2 x 28 layers x 8 key/value heads x 128 x 2 bytes; 16 query heads would need twice that
    assert any(line.startswith("KV cache per token (bf16): 114,688 bytes") for line in lines)
    assert any("2x less than multi-head attention's 229,376 bytes" in line for line in lines)
    assert not any(line.startswith("sliding window") for line in lines)


def small_hf_configs() -> dict[str, Any]:
    """Small shapes of each family: GQA 4:1 and head_dim apart from hidden / heads (Llama,
    untied), GQA 2:1 with QK-norm (Qwen3), multi-query with a sliding window (Gemma 3)."""
    return {
        "llama": transformers.LlamaConfig(
            vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
            num_attention_heads=8, num_key_value_heads=2, head_dim=24,
            max_position_embeddings=128, tie_word_embeddings=False),
        "qwen3": transformers.Qwen3Config(
            vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            max_position_embeddings=128, tie_word_embeddings=True),
        "gemma3": transformers.Gemma3TextConfig(
            vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=7,
            num_attention_heads=4, num_key_value_heads=1, head_dim=32,
            max_position_embeddings=128, sliding_window=16, query_pre_attn_scalar=24),
    }


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3"])
def test_info_model_reads_a_hugging_face_directory_without_weights(
        family: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hf = small_hf_configs()[family]
    hf.save_pretrained(tmp_path)  # config.json alone: no weights to read
    lines = run_cli(capsys, "info", "--model", tmp_path).splitlines()
    assert lines[0] == str(transformers_parameters(hf.to_dict()))
    config = model_config_from_hf(json.loads((tmp_path / "config.json").read_text()))
    per_token = 2 * config.n_layers * config.kv_heads * config.head_dim * 2
    assert f"KV cache per token (bf16): {per_token:,} bytes" in lines[-3 if family == "gemma3"
                                                                    else -2]
    if family == "gemma3":  # 7 layers: 5 local, 1 global, 1 local
        assert lines[-1].startswith("sliding window: 6 of the 7 layers keep only the latest 16")


def test_info_model_names_the_file_of_an_unknown_family(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    assert main(["info", "--model", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert f"{tmp_path / 'config.json'}: model_type 'mamba' is not supported" in err


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3"])
def test_kv_cache_bytes_per_token_are_what_the_cache_allocates(family: str) -> None:
    config = model_config_from_hf(small_hf_configs()[family].to_dict())
    model = GPTModel(config)
    cache = model.new_kv_cache(batch_size=1, max_len=10)
    allocated = sum(t.numel() * t.element_size() for t in cache.keys + cache.values)
    assert allocated == 10 * kv_cache_bytes_per_token(config, torch.float32)
    assert describe(config)["kv_cache_bytes_per_token"] == allocated // 10 // 2  # bf16


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3"])
def test_training_flops_match_pytorchs_count_of_matrix_products(family: str) -> None:
    # As for GPT-2 (test_model.py): every matrix product of a forward and backward, counted by
    # PyTorch, equals the formula less attention's own term and 6 per vector parameter.
    config = model_config_from_hf(small_hf_configs()[family].to_dict()).replace(
        context_length=24)
    model = GPTModel(config)
    products = matrix_product_flops(model)
    attention = 12 * config.n_layers * config.context_length * config.n_heads * config.head_dim
    if config.sliding_window is not None:  # 6 local layers see 16 keys, not 24
        attention -= 12 * 6 * (24 - 16) * config.n_heads * config.head_dim
    vectors = sum(p.numel() for p in model.parameters() if p.dim() == 1)
    formula = training_flops_per_token(model) - attention - 6 * vectors
    assert products == formula * 2 * config.context_length  # tokens: 2 sequences


def test_rotary_tables_grow_on_demand_with_the_same_numbers() -> None:
    config = get_preset("llama-3.2-1b").replace(
        vocab_size=64, emb_dim=64, n_heads=4, n_kv_heads=2, head_size=16, hidden_dim=64,
        n_layers=1)
    model = GPTModel(config)
    rope = model.blocks[0].att.rope
    assert rope.cos.numel() == 0  # not 131,072 positions at once
    model(torch.randint(0, 64, (1, 5)))
    assert 5 <= rope.cos.shape[0] <= 8
    # far positions: the rows asked for, computed as a whole table would give them
    x = torch.randn(1, 2, 3, 16)
    far = rope(x, offset=100_000)
    assert rope.cos.shape[0] == 131_072
    whole = RotaryEmbedding(16, 131_072, 500000.0, "llama3", 32.0, 1.0, 4.0, 8192)
    cos, sin = whole.tables(131_072)
    cos, sin = cos[100_000:100_003], sin[100_000:100_003]
    x1, x2 = x.chunk(2, dim=-1)
    assert torch.equal(far, x * cos + torch.cat((-x2, x1), dim=-1) * sin)
    assert not any("cos" in name or "sin" in name for name in model.state_dict())


def test_rotary_tables_built_on_meta_are_rebuilt_on_the_input_device() -> None:
    with torch.device("meta"):  # as a loader builds a model before assigning its weights
        on_meta = RotaryEmbedding(16, 64, 500000.0, "llama3", 8.0, 1.0, 4.0, 16)
    plain = RotaryEmbedding(16, 64, 500000.0, "llama3", 8.0, 1.0, 4.0, 16)
    x = torch.randn(2, 4, 9, 16)
    assert torch.equal(on_meta(x, offset=3), plain(x, offset=3))
    assert on_meta.cos.device == x.device


def test_a_model_from_assigned_weights_runs_its_rotary_positions() -> None:
    config = ModelConfig(vocab_size=64, context_length=32, emb_dim=32, n_heads=4, n_layers=2,
                         pos_encoding="rope")
    model = GPTModel(config).eval()
    idx = torch.randint(0, 64, (2, 9))
    assigned = model_from_weights(config, dict(model.state_dict()))  # parameters on meta
    assert torch.equal(assigned(idx), model(idx))
