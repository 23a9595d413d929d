"""`scratchgpt.viz.embeddings`: word maps, nearest tokens and position similarity, checked on
tiny models whose vectors are set by hand, against scikit-learn's PCA and the sinusoidal
formula; GPT-2's real tokenizer from ../shared/assets."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA

from scratchgpt.config import ModelConfig
from scratchgpt.hub.models import load_model
from scratchgpt.model import GPTModel
from scratchgpt.tokenizers import Tokenizer, WordTokenizer, load_gpt2_tokenizer
from scratchgpt.viz.embeddings import (
    format_neighbours,
    nearest_tokens,
    pca_2d,
    plot_position_similarity,
    plot_word_map,
    position_similarity,
    tsne_2d,
    word_map_figure,
    word_vectors,
)

TINY = ModelConfig(vocab_size=50257, context_length=64, emb_dim=8, n_heads=2, n_layers=1)
WORDS = ["apple", "banana", "blueberry", "king", "queen"]


@pytest.fixture(scope="module")
def gpt2_tokenizer(shared_assets: Path) -> Tokenizer:
    return load_gpt2_tokenizer(shared_assets / "gpt2-tokenizer")


@pytest.fixture
def model() -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(TINY).eval()


def ids(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text)


def test_pca_equals_scikit_learns_up_to_sign() -> None:
    points = np.random.default_rng(0).normal(size=(12, 16)) * np.linspace(3, 0.1, 16)
    coords, explained = pca_2d(points)
    oracle = PCA(n_components=2).fit(points)
    expected = oracle.transform(points)
    for axis in range(2):
        sign = np.sign(coords[:, axis] @ expected[:, axis])
        np.testing.assert_allclose(coords[:, axis], sign * expected[:, axis], atol=1e-10)
    np.testing.assert_allclose(explained, oracle.explained_variance_ratio_, rtol=1e-10)
    assert (coords[np.abs(coords).argmax(axis=0), [0, 1]] > 0).all()  # signs fixed, not random


def test_a_word_of_several_tokens_is_the_mean_of_their_vectors(
    model: GPTModel, gpt2_tokenizer: Tokenizer
) -> None:
    table = model.tok_emb.weight.detach().double()
    found = word_vectors(model, gpt2_tokenizer, WORDS)
    assert found.words == tuple(WORDS) and found.leading_space
    for i, word in enumerate(WORDS):
        word_ids = ids(gpt2_tokenizer, " " + word)
        assert found.token_ids[i] == tuple(word_ids)
        np.testing.assert_allclose(found.vectors[i], table[word_ids].mean(0).numpy(), rtol=1e-12)
    # GPT-2: every word here is one token with its leading space except " blue" + "berry"
    assert [found.is_split(i) for i in range(len(WORDS))] == [False, False, True, False, False]
    assert found.split(2) == "blueberry = ' blue' + 'berry' (mean of 2)"
    assert found.split(0) == "apple = ' apple'"

    bare = word_vectors(model, gpt2_tokenizer, ["banana"], leading_space=False)
    assert bare.tokens == (("ban", "ana"),)
    assert bare.split(0) == "banana = 'ban' + 'ana' (mean of 2)"
    np.testing.assert_allclose(bare.vectors[0], table[ids(gpt2_tokenizer, "banana")].mean(0))


def test_nearest_tokens_on_hand_set_vectors(model: GPTModel, gpt2_tokenizer: Tokenizer) -> None:
    apple, banana, cherry = (ids(gpt2_tokenizer, " " + w)[0] for w in ("apple", "banana", "cherry"))
    with torch.no_grad():
        weight = model.tok_emb.weight
        weight[:, 0] = 0.0  # every other token is perpendicular to the first axis...
        weight[apple] = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0])
        weight[banana] = torch.tensor([1.0, 0.01, 0, 0, 0, 0, 0, 0])  # ...banana nearly parallel
        weight[cherry] = torch.tensor([1.0, 0, -0.3, 0, 0, 0, 0, 0])  # cherry less so
    found = nearest_tokens(model, gpt2_tokenizer, "apple", k=5)
    assert [text for text, _ in found[:2]] == [" banana", " cherry"]  # apple itself left out
    assert len(found) == 5
    sims = [s for _, s in found]
    assert sims == sorted(sims, reverse=True)
    table = weight.detach().double()
    expected = F.cosine_similarity(table[apple], table[banana], dim=0)
    assert found[0][1] == pytest.approx(float(expected), abs=1e-12)
    assert found[1][1] == pytest.approx(1 / np.sqrt(1.09), abs=1e-7)

    # A word of several tokens searches with their mean and leaves all of them out.
    blue, berry = ids(gpt2_tokenizer, " blueberry")
    with torch.no_grad():
        weight[blue] = torch.tensor([0, 0, 0, 0, 0, 0, 2.0, 0])
        weight[berry] = torch.tensor([0, 0, 0, 0, 0, 0, 0, 2.0])
        weight[apple] = torch.tensor([0, 0, 0, 0, 0, 0, 1.0, 1.01])
    top_text, top_similarity = nearest_tokens(model, gpt2_tokenizer, "blueberry", k=1)[0]
    assert top_text == " apple" and top_similarity > 0.9999

    text = format_neighbours("apple", found)
    assert text.splitlines()[0] == "tokens nearest to ' apple' by cosine similarity of their " \
                                   "embeddings:"
    assert "  1. +1.0000  ' banana'" in text


def test_nearest_tokens_search_only_the_tokenizers_ids(gpt2_tokenizer: Tokenizer) -> None:
    model = GPTModel(TINY.replace(vocab_size=50304))  # padded to a multiple of 64, as some do
    apple = ids(gpt2_tokenizer, " apple")[0]
    with torch.no_grad():
        model.tok_emb.weight[50300] = model.tok_emb.weight[apple]  # a row no text can reach
    found = nearest_tokens(model, gpt2_tokenizer, "apple", k=3)
    assert all(similarity < 0.9999 for _, similarity in found)


def test_sinusoidal_position_similarity_has_the_known_structure() -> None:
    emb_dim = 64
    model = GPTModel(TINY.replace(context_length=256, emb_dim=emb_dim, pos_encoding="sinusoidal"))
    similarity = position_similarity(model)
    assert similarity.shape == (256, 256)
    np.testing.assert_allclose(np.diag(similarity), 1.0, atol=1e-6)
    np.testing.assert_allclose(similarity, similarity.T, atol=1e-12)
    # Each (sin, cos) pair has length 1, so cos(PE_i, PE_j) = (2/d) * sum_k cos((i - j) w_k):
    # a function of the distance i - j alone.
    inv_freq = 10000.0 ** (-np.arange(0, emb_dim, 2) / emb_dim)
    distance = np.arange(256)[:, None] - np.arange(256)[None, :]
    formula = np.cos(distance[..., None] * inv_freq).mean(axis=-1)
    np.testing.assert_allclose(similarity, formula, atol=1e-5)
    for i in (0, 50, 100):
        assert similarity[i, i + 1] > similarity[i, i + 10] > similarity[i, i + 100]
    assert position_similarity(model, max_positions=10).shape == (10, 10)


def test_learned_position_similarity_comes_from_the_models_table() -> None:
    model = GPTModel(TINY.replace(context_length=6))
    table = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    table[3] = -2.5 * table[1]  # opposite directions, another length
    with torch.no_grad():
        model.pos_emb.weight.copy_(table)
    similarity = position_similarity(model)
    expected = F.cosine_similarity(table[:, None].double(), table[None, :].double(), dim=-1)
    np.testing.assert_allclose(similarity, expected.numpy(), atol=1e-12)
    assert similarity[1, 3] == pytest.approx(-1.0)
    np.testing.assert_allclose(position_similarity(model, max_positions=4), similarity[:4, :4])


def test_rotary_positions_have_no_table_to_draw(tmp_path: Path) -> None:
    model = GPTModel(TINY.replace(pos_encoding="rope"))
    with pytest.raises(ValueError, match="rotary.*no table"):
        position_similarity(model)
    with pytest.raises(ValueError, match="rotary"):
        plot_position_similarity(model, tmp_path / "positions.png")
    assert not (tmp_path / "positions.png").exists()


def test_word_map_png_and_its_axes(
    model: GPTModel, gpt2_tokenizer: Tokenizer, tmp_path: Path
) -> None:
    found = word_vectors(model, gpt2_tokenizer, WORDS)
    path = plot_word_map(found, tmp_path / "emb.png", title="tiny")
    assert path == tmp_path / "emb.png"
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (780, 960) and image.std() > 0  # 8 x 6.5 inches at 120 dpi

    fig = word_map_figure(found, title="tiny")
    ax = fig.axes[0]
    labels = [text.get_text() for text in ax.texts]
    assert labels == WORDS  # one label per word, by its point
    _, explained = pca_2d(found.vectors)
    assert ax.get_xlabel() == f"PC 1 ({100 * explained[0]:.1f}% of the variance)"
    assert ax.get_ylabel() == f"PC 2 ({100 * explained[1]:.1f}% of the variance)"
    assert ax.get_title().startswith("tiny: 5 words, PCA of the 8-dim vectors")
    assert len(ax.collections) == 2  # circles for one token, triangles for several
    footnote = fig._supxlabel.get_text()
    assert "blueberry = ' blue' + 'berry' (mean of 2)" in footnote
    assert "apple" not in footnote


def test_tsne_map_for_a_short_word_list(model: GPTModel, gpt2_tokenizer: Tokenizer,
                                        tmp_path: Path) -> None:
    found = word_vectors(model, gpt2_tokenizer, WORDS[:4])
    coords, perplexity = tsne_2d(found.vectors)
    assert coords.shape == (4, 2) and perplexity < 4  # scikit-learn's default, 30, would fail
    plot_word_map(found, tmp_path / "tsne.png", method="tsne")
    assert matplotlib.image.imread(tmp_path / "tsne.png").shape[:2] == (780, 960)


def test_tsne_without_scikit_learn_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        tsne_2d(np.eye(3))


def test_position_similarity_png(tmp_path: Path) -> None:
    model = GPTModel(TINY.replace(pos_encoding="sinusoidal"))
    path = plot_position_similarity(model, tmp_path / "positions.png", max_positions=32)
    assert matplotlib.image.imread(path).shape[:2] == (720, 840)  # 7 x 6 inches at 120 dpi


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ([], "no words given"),
        (["apple", " "], "empty word"),
        (["apple", "apple "], "more than once: apple"),
    ],
)
def test_bad_word_lists(model: GPTModel, gpt2_tokenizer: Tokenizer, words: list[str],
                        message: str) -> None:
    with pytest.raises(ValueError, match=message):
        word_vectors(model, gpt2_tokenizer, words)


def test_bad_inputs_to_maps_and_searches(model: GPTModel, gpt2_tokenizer: Tokenizer,
                                         tmp_path: Path) -> None:
    one = word_vectors(model, gpt2_tokenizer, ["apple"])
    with pytest.raises(ValueError, match="at least two points"):
        plot_word_map(one, tmp_path / "one.png")
    with pytest.raises(ValueError, match="at least two points"):
        tsne_2d(one.vectors)
    two = word_vectors(model, gpt2_tokenizer, ["apple", "king"])
    with pytest.raises(ValueError, match="unknown map method 'umap'"):
        plot_word_map(two, tmp_path / "x.png", method="umap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be at least 1"):
        nearest_tokens(model, gpt2_tokenizer, "apple", k=0)
    with pytest.raises(ValueError, match="empty word"):
        nearest_tokens(model, gpt2_tokenizer, "")
    with pytest.raises(ValueError, match="max_positions"):
        position_similarity(model, max_positions=0)
    small = GPTModel(TINY.replace(vocab_size=1000))
    with pytest.raises(ValueError, match="not this model's"):
        word_vectors(small, gpt2_tokenizer, ["apple"])  # " apple" is id 17180
    words = WordTokenizer(["apple", "banana"])
    with pytest.raises(ValueError, match="'cherry' is not in the tokenizer's vocabulary"):
        word_vectors(GPTModel(TINY.replace(vocab_size=words.vocab_size)), words, ["cherry"])


def test_an_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(FileNotFoundError, match="no-such-run is neither a directory nor"):
        load_model("no-such-run")
