"""Attention maps: the weights recorded from the model as it computes equal the teaching
classes', recording changes nothing, and the pictures show every head with the tokens on the
axes and the future masked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scratchgpt.config import ModelConfig
from scratchgpt.hub.export import export_hf
from scratchgpt.hub.models import load_model
from scratchgpt.model import GPTClassifier, GPTModel, MultiHeadAttention, MultiHeadAttentionWrapper
from scratchgpt.model.attention import record_attention
from scratchgpt.tokenizers import Tokenizer, load_gpt2_tokenizer
from scratchgpt.viz.attention import (
    MAX_TOKENS,
    AttentionMaps,
    attention_maps,
    plot_attention,
    token_label,
)

# GPT-2's vocabulary, a model small enough to run in milliseconds.
CONFIG = ModelConfig(vocab_size=50257, context_length=64, emb_dim=24, n_heads=3, n_layers=2,
                     init="pytorch")  # large random weights: attention far from uniform
TEXT = "Every effort moves you, and you"
TOKENS = ["Every", "␣effort", "␣moves", "␣you", ",", "␣and", "␣you"]


@pytest.fixture(scope="module")
def tokenizer(shared_assets: Path) -> Tokenizer:
    return load_gpt2_tokenizer(shared_assets / "gpt2-tokenizer")


@pytest.fixture(scope="module")
def model() -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(CONFIG).eval()


def teaching_copy(fused: MultiHeadAttention, context_length: int) -> MultiHeadAttentionWrapper:
    """The book's wrapper of ``CausalAttention`` heads holding ``fused``'s weights: the fused
    qkv matrix is cut into queries, keys and values, and each of those into one slice per head."""
    d_out, heads, head_dim = fused.d_out, fused.num_heads, fused.head_dim
    wrapper = MultiHeadAttentionWrapper(d_out, d_out, context_length, 0.0, heads, qkv_bias=True)
    wrapper = wrapper.to(fused.qkv.weight.dtype)
    with torch.no_grad():
        for part, name in enumerate(("W_query", "W_key", "W_value")):
            for h, head in enumerate(wrapper.heads):
                rows = slice(part * d_out + h * head_dim, part * d_out + (h + 1) * head_dim)
                getattr(head, name).weight.copy_(fused.qkv.weight[rows])
                getattr(head, name).bias.copy_(fused.qkv.bias[rows])
        wrapper.out_proj.load_state_dict(fused.out_proj.state_dict())
    return wrapper.eval()


# -- recording ------------------------------------------------------------------------------
def test_recorded_weights_equal_the_teaching_classes() -> None:
    """Each layer's recorded [B, H, T, T] equals what CausalAttention heads with the same
    query/key/value weights compute from that layer's input (caught with a pre-hook)."""
    torch.manual_seed(1)
    model = GPTModel(CONFIG.replace(vocab_size=97)).double().eval()
    idx = torch.randint(0, 97, (2, 9))
    inputs: list[torch.Tensor] = []
    hooks = [block.att.register_forward_pre_hook(lambda _, args: inputs.append(args[0]))
             for block in model.blocks]
    try:
        with torch.no_grad(), record_attention(model) as recorded:
            model(idx)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(recorded) == CONFIG.n_layers
    for layer, (block, x) in enumerate(zip(model.blocks, inputs, strict=True)):
        wrapper = teaching_copy(block.att, CONFIG.context_length)
        with torch.no_grad():
            expected_out, expected = wrapper(x, return_weights=True)
            out = block.att(x)
        assert recorded[layer].shape == (2, CONFIG.n_heads, 9, 9)
        torch.testing.assert_close(recorded[layer], expected, atol=1e-12, rtol=0)
        torch.testing.assert_close(out, expected_out, atol=1e-12, rtol=0)


def test_recording_leaves_the_output_unchanged_and_the_fast_path_back(
    model: GPTModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fused_calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: fused_calls.append(1) or sdpa(*a, **k))
    idx = torch.randint(0, CONFIG.vocab_size, (2, 11))
    with torch.no_grad():
        plain = model(idx)
        assert len(fused_calls) == CONFIG.n_layers
        with record_attention(model) as recorded:
            recording = model(idx)
        assert len(fused_calls) == CONFIG.n_layers  # the explicit path ran instead
        again = model(idx)
    assert len(fused_calls) == 2 * CONFIG.n_layers
    torch.testing.assert_close(recording, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, plain, atol=0, rtol=0)
    assert [w.shape for w in recorded] == [(2, CONFIG.n_heads, 11, 11)] * CONFIG.n_layers
    assert not any(w.requires_grad for w in recorded)


def test_recording_stops_after_an_error(model: GPTModel) -> None:
    with pytest.raises(ValueError, match="context_length"), record_attention(model) as recorded:
        model(torch.zeros(1, CONFIG.context_length + 1, dtype=torch.long))
    assert recorded == []
    assert all(block.att.recorder is None for block in model.blocks)
    with pytest.raises(ValueError, match="no MultiHeadAttention"), \
            record_attention(torch.nn.Linear(2, 2)):
        pass


# -- the maps ---------------------------------------------------------------------------------
def test_maps_hold_the_tokens_and_causal_weights(model: GPTModel, tokenizer: Tokenizer) -> None:
    maps = attention_maps(model, tokenizer, TEXT, name="tiny")
    T = len(TOKENS)
    assert maps.tokens == TOKENS  # GPT-2 glues the space to the word after it
    assert maps.token_ids == tokenizer.encode(TEXT)
    assert maps.weights.shape == (CONFIG.n_layers, CONFIG.n_heads, T, T)
    assert maps.layers == [0, 1] and maps.heads == [0, 1, 2] and not maps.truncated
    np.testing.assert_allclose(maps.weights.sum(-1), 1.0, atol=1e-5)
    future = np.triu(np.ones((T, T), dtype=bool), 1)
    assert (maps.weights[..., future] == 0).all()  # a token never looks ahead
    assert (maps.weights[..., ~future] > 0).all()
    one = attention_maps(model, tokenizer, TEXT, layer=1, head=2)
    assert one.weights.shape == (1, 1, T, T)
    np.testing.assert_array_equal(one.weights[0, 0], maps.weights[1, 2])
    assert model.training is False


def test_token_labels_make_bytes_and_spaces_visible() -> None:
    assert token_label(b" the") == "␣the"
    assert token_label(b"\n\n") == "↵↵"
    assert token_label("世".encode()[:2]) == "\\xe4\\xb8"  # half a character: BPE works on bytes
    assert token_label(b"") == "∅"


def test_a_long_text_is_cut_and_the_picture_says_so(
    model: GPTModel, tokenizer: Tokenizer, tmp_path: Path
) -> None:
    text = " word" * 50
    maps = attention_maps(model, tokenizer, text, layer=0, head=0)
    assert len(maps.tokens) == MAX_TOKENS and maps.total_tokens == 50 and maps.truncated
    short = attention_maps(model, tokenizer, text, layer=0, head=0, max_tokens=8)
    # the first 8 rows do not depend on the tokens after them
    np.testing.assert_allclose(short.weights[0, 0], maps.weights[0, 0, :8, :8], atol=1e-6)
    small = GPTModel(CONFIG.replace(context_length=16)).eval()
    assert len(attention_maps(small, tokenizer, text, layer=0).tokens) == 16  # the context
    fig = plot_attention(short, tmp_path / "cut.png")
    assert "only the first 8 of 50 tokens" in fig._suptitle.get_text()


def test_bad_inputs_name_the_valid_range(model: GPTModel, tokenizer: Tokenizer) -> None:
    with pytest.raises(ValueError, match="layer 2 is out of range.* 2 layers, numbered 0 to 1"):
        attention_maps(model, tokenizer, TEXT, layer=2)
    with pytest.raises(ValueError, match="head -1 is out of range.* 3 heads, numbered 0 to 2"):
        attention_maps(model, tokenizer, TEXT, head=-1)
    with pytest.raises(ValueError, match="the text is empty"):
        attention_maps(model, tokenizer, "")
    with pytest.raises(ValueError, match="max_tokens must be at least 1"):
        attention_maps(model, tokenizer, TEXT, max_tokens=0)
    classifier = GPTClassifier(CONFIG.replace(vocab_size=97, n_layers=1), num_classes=2)
    with pytest.raises(TypeError, match="need a GPTModel .*got GPTClassifier"):
        attention_maps(classifier, tokenizer, TEXT)


# -- the pictures -----------------------------------------------------------------------------
def tick_texts(labels) -> list[str]:
    return [label.get_text() for label in labels]


def test_one_layer_draws_every_head_with_tokens_and_the_mask(
    model: GPTModel, tokenizer: Tokenizer, tmp_path: Path
) -> None:
    maps = attention_maps(model, tokenizer, TEXT, layer=1, name="tiny")
    path = tmp_path / "layer.png"
    fig = plot_attention(maps, path)
    panels, colorbar = fig.axes[:-1], fig.axes[-1]
    assert len(panels) == CONFIG.n_heads and colorbar.get_ylabel().startswith("attention weight")
    assert [ax.get_title() for ax in panels] == [f"layer 1 · head {h}" for h in range(3)]
    assert "tiny: layer 1 of 0-1, all 3 heads" in fig._suptitle.get_text()
    for ax in panels:  # 3 heads in a 2 x 2 grid: every panel has a left or bottom edge
        assert tick_texts(ax.get_yticklabels()) in (TOKENS, [""] * len(TOKENS))
        assert tick_texts(ax.get_xticklabels()) in (TOKENS, [""] * len(TOKENS))
    assert tick_texts(panels[0].get_yticklabels()) == TOKENS  # query tokens label the rows
    assert tick_texts(panels[2].get_xticklabels()) == TOKENS  # key tokens the columns
    image = panels[0].images[0].get_array()
    future = np.triu(np.ones((len(TOKENS),) * 2, dtype=bool), 1)
    np.testing.assert_array_equal(np.ma.getmaskarray(image), future)  # drawn hatched, not as 0
    assert panels[0].patch.get_hatch() == "////"
    width, height = Image.open(path).size
    dpi = fig.get_dpi()
    assert (width, height) == pytest.approx(tuple(fig.get_size_inches() * dpi), abs=2)


def test_all_layers_make_a_grid_and_one_head_a_single_annotated_panel(
    model: GPTModel, tokenizer: Tokenizer, tmp_path: Path
) -> None:
    grid = plot_attention(attention_maps(model, tokenizer, TEXT), tmp_path / "all.png")
    panels = grid.axes[:-1]
    assert len(panels) == CONFIG.n_layers * CONFIG.n_heads
    assert panels[4].get_title() == "layer 1 · head 1"  # row = layer, column = head
    assert tick_texts(panels[3].get_yticklabels()) == TOKENS  # first column of layer 1
    assert tick_texts(panels[4].get_xticklabels()) == TOKENS  # bottom row
    assert tick_texts(panels[1].get_xticklabels()) == [""] * len(TOKENS)
    assert (tmp_path / "all.png").stat().st_size > 0

    one = plot_attention(attention_maps(model, tokenizer, TEXT, layer=0, head=1),
                         tmp_path / "one.png")
    assert len(one.axes) == 2
    T = len(TOKENS)
    assert len(one.axes[0].texts) == T * (T + 1) // 2  # a weight written in each visible cell


def test_a_downloaded_style_model_directory_end_to_end(tokenizer: Tokenizer,
                                                      tmp_path: Path) -> None:
    """What ``scratchgpt viz attention --model DIR`` does: load_model, maps, picture."""
    torch.manual_seed(2)
    export_hf(GPTModel(CONFIG.replace(emb_dim=12, n_layers=1, init="gpt2")), tokenizer, tmp_path)
    model, loaded_tokenizer = load_model(tmp_path)
    maps = attention_maps(model, loaded_tokenizer, "Hello, world", layer=0, name="exported")
    assert isinstance(maps, AttentionMaps) and maps.tokens == ["Hello", ",", "␣world"]
    plot_attention(maps, tmp_path / "attention.png")
    assert Image.open(tmp_path / "attention.png").format == "PNG"
