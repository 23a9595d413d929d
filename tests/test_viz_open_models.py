"""``viz attention`` on today's open models (tests/open_model_dirs.py): Llama 3 (4 query heads,
1 key/value head), Qwen3 (4 query heads, 2 key/value heads) and Gemma 3 (4 and 1; a sliding
window of 4 tokens on its local layers, shorter than the text).

The weights recorded per query head equal transformers' own (``output_attentions=True``, eager
attention) in every layer and head; the pictures say which query heads share a key/value head
(checked against transformers' ``repeat_kv``, which hands key/value heads to query heads) and
hatch what a local layer's window hides; the CLI writes the picture from a model directory and
from a downloaded ``ORG/NAME``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_tokenizer_families import llama3_like
from open_model_dirs import FAMILIES, ModelDir, open_model_dir
from PIL import Image
from pretrain_runs import run_here

from scratchgpt.config import ModelConfig
from scratchgpt.hub.hf_hub import download_model
from scratchgpt.hub.models import load_model
from scratchgpt.model import GPTModel
from scratchgpt.tokenizers import Tokenizer, read_hf_tokenizer
from scratchgpt.viz.attention import (
    AttentionMaps,
    attention_maps,
    grouping_text,
    head_label,
    plot_attention,
)

transformers = pytest.importorskip("transformers")
repeat_kv = pytest.importorskip("transformers.models.llama.modeling_llama").repeat_kv

TEXT = "I had always thought Jack Gisburn rather a cheap genius"  # longer than Gemma's window


@pytest.fixture(scope="module", params=list(FAMILIES))
def model_dir(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> ModelDir:
    return open_model_dir(tmp_path_factory.mktemp("open") / request.param, request.param)


@pytest.fixture(scope="module")
def maps(model_dir: ModelDir) -> AttentionMaps:
    """Every layer and head of the family's model over TEXT, as ``viz attention`` draws them."""
    model, tokenizer = load_model(model_dir.directory)
    return attention_maps(model, tokenizer, TEXT, name=model_dir.directory.name)


@pytest.fixture(scope="module")
def llama_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    llama3_like(path)
    return read_hf_tokenizer(path)


def transformers_weights(model_dir: ModelDir, ids: list[int]) -> np.ndarray:
    """transformers' attention weights of every layer, ``[layers, heads, T, T]``."""
    with torch.no_grad():
        out = model_dir.hf(torch.tensor([ids]), output_attentions=True)
    return torch.stack([layer[0] for layer in out.attentions]).numpy()


def hf_windows(model_dir: ModelDir) -> list[int | None]:
    """Each layer's sliding window by transformers' config (``layer_types``); None: global."""
    config = model_dir.hf.config
    types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    return [config.sliding_window if kind == "sliding_attention" else None for kind in types]


def sharing_heads(n_heads: int, n_kv_heads: int) -> list[int]:
    """The key/value head each query head reads, as transformers hands them out (repeat_kv)."""
    kv = torch.arange(n_kv_heads, dtype=torch.float32).reshape(1, n_kv_heads, 1, 1)
    return repeat_kv(kv, n_heads // n_kv_heads)[0, :, 0, 0].long().tolist()


# -- the weights --------------------------------------------------------------------------------
def test_weights_per_query_head_equal_transformers(model_dir: ModelDir,
                                                   maps: AttentionMaps) -> None:
    config = model_dir.hf.config
    ids = model_dir.hf_tokenizer(TEXT)["input_ids"]
    assert maps.token_ids == ids  # the BOS included where the family's tokenizer puts one
    T = len(ids)
    assert maps.weights.shape == (config.num_hidden_layers, config.num_attention_heads, T, T)
    assert (maps.n_heads, maps.n_kv_heads) == (config.num_attention_heads,
                                               config.num_key_value_heads)
    assert maps.n_kv_heads < maps.n_heads  # grouped: query heads share key/value heads
    np.testing.assert_allclose(maps.weights, transformers_weights(model_dir, ids), rtol=0,
                               atol=1e-5)
    assert maps.windows == hf_windows(model_dir)


def test_local_layers_see_only_their_window(model_dir: ModelDir, maps: AttentionMaps) -> None:
    """Gemma 3: on a local layer, a token draws from its latest 4 tokens only, and the text is
    long enough that the window hides some; the picture (of the first 8 tokens, to draw fast)
    hatches exactly the cells transformers gives no weight."""
    local = [i for i, window in enumerate(maps.windows) if window is not None]
    if model_dir.directory.name != "gemma3_text":
        assert local == []
        return
    assert 0 < len(local) < len(maps.layers) and len(maps.tokens) > 4
    hf = transformers_weights(model_dir, maps.token_ids)
    model, tokenizer = load_model(model_dir.directory)
    short = attention_maps(model, tokenizer, TEXT, max_tokens=8)
    fig = plot_attention(short, model_dir.directory.parent / "gemma.png")
    panels = fig.axes[:-1]
    q, k = np.indices(hf.shape[-2:])
    for i in range(len(maps.layers)):
        hidden = (k > q) | (k <= q - 4) if i in local else k > q
        assert (hf[i][:, hidden] == 0).all() and (hf[i][:, ~hidden] > 0).all()
        image = panels[i * maps.n_heads].images[0].get_array()
        np.testing.assert_array_equal(np.ma.getmaskarray(image), hidden[:8, :8])
        assert panels[i * maps.n_heads].get_title().endswith(" · window 4") == (i in local)
    title = fig._suptitle.get_text().replace("\n", " ")
    assert "local layers 0-4, 6: a sliding window, each token sees only the latest 4" in title
    assert "beyond the window" in title


# -- what the picture says ------------------------------------------------------------------------
@pytest.mark.parametrize(("n_heads", "n_kv_heads"), [(16, 4), (4, 2), (8, 1), (12, 12)])
def test_head_labels_say_which_query_heads_share_keys_and_values(n_heads: int,
                                                                 n_kv_heads: int) -> None:
    kv_of = sharing_heads(n_heads, n_kv_heads)
    for head in range(n_heads):
        label = head_label(head, n_heads, n_kv_heads)
        sharing = [h for h in range(n_heads) if kv_of[h] == kv_of[head]]
        if n_kv_heads == n_heads:  # plain multi-head attention: nothing is shared
            assert label == f"head {head} of 0-{n_heads - 1}"
        elif n_kv_heads == 1:
            assert label == (f"query head {head} of 0-{n_heads - 1} (kv head 0, the only one: "
                             f"shared by all heads 0-{n_heads - 1})")
        else:
            assert label == (f"query head {head} of 0-{n_heads - 1} (kv head {kv_of[head]} of "
                             f"0-{n_kv_heads - 1}; shares keys/values with heads "
                             f"{sharing[0]}-{sharing[-1]})")
    assert head_label(5, 16, 4) == ("query head 5 of 0-15 (kv head 1 of 0-3; shares "
                                    "keys/values with heads 4-7)")
    assert grouping_text(16, 4) == ("grouped-query attention: 16 query heads, 4 key/value "
                                    "heads; heads 0-3 share kv head 0, 4-7 kv head 1, ..., "
                                    "12-15 kv head 3")
    assert grouping_text(4, 2) == ("grouped-query attention: 4 query heads, 2 key/value heads; "
                                   "heads 0-1 share kv head 0, 2-3 kv head 1")
    assert grouping_text(8, 1) == ("multi-query attention: all 8 query heads share one "
                                   "key/value head")
    assert grouping_text(12, 12) is None


def test_pictures_say_the_grouping(model_dir: ModelDir, maps: AttentionMaps) -> None:
    model, tokenizer = load_model(model_dir.directory)
    out = model_dir.directory.parent / f"{model_dir.directory.name}-layer1.png"
    layer = plot_attention(attention_maps(model, tokenizer, TEXT, layer=1), out)
    kv_of = sharing_heads(maps.n_heads, maps.n_kv_heads)
    titles = [ax.get_title().split(" · window")[0] for ax in layer.axes[:-1]]
    if maps.n_kv_heads == 1:  # multi-query: the picture's title says that all share it
        assert titles == [f"layer 1 · head {h}" for h in range(maps.n_heads)]
    else:
        assert titles == [f"layer 1 · head {h} · kv {kv_of[h]}" for h in range(maps.n_heads)]
    grouping = grouping_text(maps.n_heads, maps.n_kv_heads)
    assert grouping is not None and grouping in layer._suptitle.get_text().replace("\n", " ")
    assert Image.open(out).format == "PNG"

    one = attention_maps(model, tokenizer, TEXT, layer=1, head=3, max_tokens=8)
    fig = plot_attention(one, model_dir.directory.parent / "one.png")
    assert head_label(3, maps.n_heads, maps.n_kv_heads) in fig._suptitle.get_text().replace(
        "\n", " ")
    visible = ~np.ma.getmaskarray(fig.axes[0].images[0].get_array())
    assert len(fig.axes[0].texts) == visible.sum()  # a weight written in each visible cell
    np.testing.assert_allclose(one.weights[0, 0], maps.weights[1, 3, :8, :8], atol=1e-6)


def test_a_layers_grid_keeps_each_kv_group_on_one_row(llama_tokenizer: Tokenizer,
                                                     tmp_path: Path) -> None:
    """8 query heads in 4 groups of 2: 4 columns (not the near-square 3), so no group wraps."""
    config = ModelConfig(vocab_size=llama_tokenizer.vocab_size, context_length=32, emb_dim=32,
                         n_heads=8, n_kv_heads=4, n_layers=1, pos_encoding="rope")
    torch.manual_seed(0)
    maps = attention_maps(GPTModel(config).eval(), llama_tokenizer, TEXT, layer=0)
    fig = plot_attention(maps, tmp_path / "grid.png")
    rows = [[ax.get_title() for ax in fig.axes[:-1] if ax.get_subplotspec().rowspan.start == r]
            for r in range(2)]
    assert rows == [[f"layer 0 · head {h} · kv {h // 2}" for h in range(4)],
                    [f"layer 0 · head {h} · kv {h // 2}" for h in range(4, 8)]]


# -- the command ----------------------------------------------------------------------------------
def run_cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    return run_here(list(args), cache)


def test_the_command_writes_the_picture(model_dir: ModelDir, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Llama from its directory, one head; Qwen3 in bf16, one layer; Gemma 3 downloaded as
    ``ORG/NAME`` (as ``download --from`` copies it), a local layer."""
    family = model_dir.directory.name
    out = tmp_path / "attention.png"
    options = {"llama": ["--head", "2", "--dtype", "fp32"],
               "qwen3": ["--layer", "1", "--dtype", "bf16"],
               "gemma3_text": ["--layer", "0"]}[family]
    spec = str(model_dir.directory)
    if family == "gemma3_text":
        spec = "test-org/gemma-3-tiny"
        monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path))
        download_model(spec, source_dir=model_dir.directory, progress=False)
    done = run_cli("viz", "attention", "--model", spec, "--text", TEXT, "--out", str(out),
                   *options, cache=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    picture = Image.open(out)
    assert picture.format == "PNG" and min(picture.size) > 300
