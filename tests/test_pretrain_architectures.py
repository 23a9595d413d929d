"""``scratchgpt pretrain --arch gpt2|llama3|qwen3|gemma3``: a size preset built in today's designs.

Each architecture is the design of its family (``config.ARCHITECTURE_DESIGNS``) put on the
preset's size; a run of it is a run like any other, and its export is what transformers loads
as that family, with our logits and our tokenizer's ids.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pretrain_runs import pretrain_here, run_here, write_corpus

from scratchgpt.config import (
    ARCHITECTURE_DESIGNS,
    ARCHITECTURES,
    get_preset,
    has_design,
    with_architecture,
)
from scratchgpt.config_files import load_toml
from scratchgpt.hub.families import family_of_model
from scratchgpt.hub.models import load_model
from scratchgpt.model import GPTModel
from scratchgpt.pretraining_config import ModelChoice

transformers = pytest.importorskip("transformers")

TEXT = "The cat sat on the mat, and the dog came in."


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_architecture_has_its_design_at_about_gpt2s_size(arch: str) -> None:
    micro = get_preset("micro").replace(vocab_size=4096)
    config = with_architecture(micro, arch)
    assert has_design(config, arch)
    assert (config.emb_dim, config.n_layers, config.n_heads, config.context_length) == (
        micro.emb_dim, micro.n_layers, micro.n_heads, micro.context_length)
    ours, gpt2 = GPTModel(config).num_parameters(), GPTModel(micro).num_parameters()
    assert abs(ours - gpt2) / gpt2 < 0.1  # gated feed-forwards 8/3 as wide; GQA a little less
    if arch != "gpt2":
        assert config.kv_heads == micro.n_heads // 2 and config.pos_encoding == "rope"
        assert family_of_model(config).design == ARCHITECTURE_DESIGNS[arch]


def test_gemma3s_window_is_a_quarter_of_the_context_given() -> None:
    config = ModelChoice(arch="gemma3", preset="nano", context_length=32).resolve(300)
    assert config.sliding_window == 8 and config.global_layer_every == 2
    assert [config.is_local_layer(i) for i in range(config.n_layers)] == [True, False]


@pytest.mark.parametrize(("preset", "arch"), [("qwen3-0.6b", "qwen3"),
                                              ("llama-3.2-1b", "llama3"),
                                              ("gemma-3-270m", "gemma3")])
def test_a_published_shape_keeps_its_design_and_refuses_another(preset: str, arch: str) -> None:
    assert with_architecture(get_preset(preset), arch) == get_preset(preset)
    with pytest.raises(ValueError, match=f"already a {arch} model, not gpt2"):
        ModelChoice(arch="gpt2", preset=preset)


def test_an_unknown_architecture_lists_the_known_ones(tmp_path: Path) -> None:
    done = run_here(["pretrain", "--arch", "mistral", "--out", str(tmp_path / "run")], tmp_path)
    assert done.returncode == 2
    assert "gpt2, llama3, qwen3, gemma3" in done.stderr and "mistral" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama3", "qwen3", "gemma3"])
def test_a_run_of_each_architecture_exports_what_transformers_loads(
        arch: str, tmp_path: Path) -> None:
    run_dir, out = tmp_path / "run", tmp_path / "hf"
    done = pretrain_here(write_corpus(tmp_path / "corpus.txt", 20_000), run_dir, tmp_path,
                         "--arch", arch, "--max-steps", "2")
    assert done.returncode == 0, done.stderr
    assert load_toml(run_dir / "config.toml")["model"]["arch"] == arch
    export = run_here(["export", str(run_dir), "--format", "hf", "--out", str(out)], tmp_path)
    assert export.returncode == 0, export.stderr

    ours, tokenizer = load_model(run_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        out, dtype=torch.float32, attn_implementation="eager").eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert hf.config.model_type == family_of_model(ours.config).model_type
    ids = tokenizer.encode(TEXT)
    assert hf_tokenizer(TEXT)["input_ids"] == ids
    if arch == "gemma3":  # the text outruns the window: local layers are exercised
        assert len(ids) > ours.config.sliding_window
    with torch.no_grad():
        torch.testing.assert_close(hf(torch.tensor([ids])).logits, ours(torch.tensor([ids])),
                                   atol=1e-5, rtol=1e-5)
