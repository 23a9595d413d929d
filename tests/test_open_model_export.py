"""``scratchgpt export DIR --out OUT`` for Llama 3, Qwen3 and Gemma 3, checked by transformers.

Each source is what ``save_pretrained`` writes for a small random model (tests/open_model_dirs.py:
Llama in shards with llama3 rotary scaling, Qwen3 tied and in bf16, Gemma 3 with a sliding
window). The export must be what transformers loads as the same model: equal logits, the same
tokenizer ids and chat prompts, the same end-of-turn ids, the weights in their own dtype.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from open_model_dirs import FAMILIES, ModelDir, open_model_dir
from pretrain_runs import run_here
from safetensors import safe_open

from scratchgpt.config import PRESETS, ModelConfig
from scratchgpt.hub.export import export_hf
from scratchgpt.hub.families import (
    family_of_model,
    hf_config_from_model,
    model_config_from_hf,
)
from scratchgpt.hub.models import load_model
from scratchgpt.model import GPTModel

transformers = pytest.importorskip("transformers")

TEXTS = ["I had always thought Jack Gisburn", "  naïve café, 12345 tokens!\n\tend",
         "<|im_start|>user\nhi<|im_end|>"]
CONVERSATION = [{"role": "user", "content": "Name a painter."},
                {"role": "assistant", "content": "Gisburn."},
                {"role": "user", "content": "Another?"}]


def run_cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    return run_here(list(args), cache)


@dataclass
class Exported:
    source: ModelDir
    out: Path
    hf: torch.nn.Module  # transformers' model of the export, float32, eager attention
    hf_tokenizer: object  # transformers' AutoTokenizer of the export


@pytest.fixture(scope="module", params=list(FAMILIES))
def exported(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Exported:
    root = tmp_path_factory.mktemp("export")
    source = open_model_dir(root / request.param, request.param)
    out = root / "out"
    done = run_cli("export", str(source.directory), "--out", str(out), cache=root / "cache")
    assert done.returncode == 0, done.stderr
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        out, dtype=torch.float32, attn_implementation="eager").eval()
    return Exported(source, out, hf, transformers.AutoTokenizer.from_pretrained(out))


def test_transformers_loads_the_export_as_the_same_model(exported: Exported) -> None:
    assert type(exported.hf) is type(exported.source.hf)
    ids = torch.tensor([exported.source.hf_tokenizer(TEXTS[0])["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(exported.hf(ids).logits, exported.source.hf(ids).logits,
                                   atol=1e-5, rtol=0)


def test_transformers_reads_the_same_settings(exported: Exported) -> None:
    """Beyond the logits of one short prompt: the settings that matter further on (rotary
    scaling at long range, the window, the layer kinds) are the source's."""
    ours, theirs = exported.hf.config, exported.source.hf.config
    for name in ("rope_parameters", "layer_types", "sliding_window", "query_pre_attn_scalar",
                 "num_key_value_heads", "head_dim", "rms_norm_eps", "tie_word_embeddings",
                 "max_position_embeddings", "hidden_activation", "hidden_act"):
        assert getattr(ours, name, None) == getattr(theirs, name, None), name


def test_weights_keep_their_dtype_and_a_tied_tensor_is_written_once(
        exported: Exported) -> None:
    stored = FAMILIES[exported.source.directory.name].dtype
    with safe_open(exported.out / "model.safetensors", framework="pt") as f:
        names = set(f.keys())
        assert {f.get_tensor(name).dtype for name in names} == {stored}
    tied = exported.source.hf.config.tie_word_embeddings
    assert ("lm_head.weight" in names) == (not tied)
    assert names | {"lm_head.weight"} == set(exported.source.hf.state_dict()) | {
        "lm_head.weight"}
    config = json.loads((exported.out / "config.json").read_text())
    assert config["torch_dtype"] == str(stored).removeprefix("torch.")


def test_the_tokenizer_gives_the_same_ids_and_chat_prompts(exported: Exported) -> None:
    ours, theirs = exported.hf_tokenizer, exported.source.hf_tokenizer
    for text in TEXTS:
        assert ours(text)["input_ids"] == theirs(text)["input_ids"], text
        ids = theirs(text)["input_ids"]
        assert ours.decode(ids) == theirs.decode(ids)
    assert ours.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True) \
        == theirs.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)


def test_the_end_of_turn_ids_survive(exported: Exported) -> None:
    assert exported.hf.generation_config.eos_token_id == exported.source.eos_ids
    ids = exported.source.chat_ids("Name a painter.")
    with torch.no_grad():
        out = exported.hf.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                                   pad_token_id=exported.source.eos_ids[0])[0, len(ids):]
    expected = exported.source.greedy(ids, 8)  # cut before the first of the source's eos ids
    assert out.tolist()[:len(expected)] == expected
    assert all(token in exported.source.eos_ids for token in out.tolist()[len(expected):])


def test_our_loader_reads_the_export_back(exported: Exported) -> None:
    source, _ = load_model(exported.source.directory)
    back, tokenizer = load_model(exported.out)
    assert back.config == source.config
    ids = torch.tensor([tokenizer.post_process(tokenizer.encode(TEXTS[0]))])
    with torch.no_grad():
        assert torch.equal(back(ids), source(ids))


def test_a_model_of_ours_exports_with_the_tokenizer_it_holds(
        exported: Exported, tmp_path: Path) -> None:
    """A model without a source directory (a run fine-tuned from a family): tokenizer.json
    is written back from our tokenizer, tokenizer_config.json made for it."""
    model, tokenizer = load_model(exported.source.directory)
    export_hf(model, tokenizer, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS:
        assert hf_tokenizer(text)["input_ids"] == exported.source.hf_tokenizer(text)["input_ids"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, dtype=torch.float32, attn_implementation="eager").eval()
    ids = torch.tensor([exported.source.hf_tokenizer(TEXTS[0])["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, exported.source.hf(ids).logits,
                                   atol=1e-5, rtol=0)


# -- config.json <-> ModelConfig -------------------------------------------------------------
def test_config_round_trip_is_the_identity(exported: Exported) -> None:
    config = model_config_from_hf(json.loads(
        (exported.source.directory / "config.json").read_text()))
    assert family_of_model(config).model_type == exported.source.directory.name
    assert model_config_from_hf(hf_config_from_model(config)) == config


@pytest.mark.parametrize("preset", ["qwen3-0.6b", "llama-3.2-1b", "gemma-3-270m"])
def test_published_shapes_round_trip(preset: str) -> None:
    config = PRESETS[preset]
    assert model_config_from_hf(hf_config_from_model(config)) == config.replace(init="pytorch")


SMALL = {"vocab_size": 64, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 1,
         "pos_encoding": "rope", "qkv_bias": False, "proj_bias": False}


@pytest.mark.parametrize(("switches", "named"), [
    ({"norm": "rmsnorm", "ffn": "gelu"}, "llama needs ffn='swiglu' (not 'gelu')"),
    ({"norm": "rmsnorm_plus_one", "ffn": "swiglu"}, "gemma3_text needs ffn='geglu'"),
    ({"norm": "rmsnorm", "ffn": "swiglu", "qk_norm": True, "sliding_window": 8},
     "qwen3 needs sliding_window=None (not 8)"),
])
def test_a_design_no_family_has_is_refused_before_writing(
        switches: dict, named: str, tmp_path: Path) -> None:
    model = GPTModel(ModelConfig(**SMALL, **switches))
    with pytest.raises(ValueError, match=r"no Hugging Face family has this model's design") as err:
        export_hf(model, None, tmp_path / "out")
    assert named in str(err.value)
    assert not (tmp_path / "out").exists()


def test_llama_biases_must_cover_attention_and_feed_forward_alike() -> None:
    config = ModelConfig(**{**SMALL, "qkv_bias": True}, norm="rmsnorm", ffn="swiglu")
    with pytest.raises(ValueError, match="qkv_bias=True and proj_bias=False"):
        hf_config_from_model(config)
