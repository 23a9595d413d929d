"""Sliding-window perplexity, checked against the transformers documentation's own loop, and
the Kneser-Ney n-gram baseline.

The reference is the loop of "Perplexity of fixed-length models" (transformers docs), run here
on a ``GPT2LMHeadModel`` holding the same weights that our ``load_model`` reads from its
``save_pretrained`` directory. On disjoint windows (``stride == context``) it is compared
verbatim. With overlapping windows the loop's token count is off by one per window (see
``scratchgpt.evaluation.perplexity``), so there it is compared with that one count corrected:
the number of targets the loss really averages over, ``(target_ids[:, 1:] != -100).sum()``.

The random GPT-2 has large weights (std 0.3): its predictions are peaked and depend on the
context, so the perplexity moves by far more than the 1e-4 tolerance when the windows do.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from scratchgpt.evaluation.ngram import KneserNeyLM
from scratchgpt.evaluation.perplexity import (
    PerplexityResult,
    file_perplexity,
    sliding_window_nll,
    sliding_windows,
)
from scratchgpt.hub.models import load_model
from scratchgpt.tokenizers import (
    CharTokenizer,
    SpecialTokenError,
    load_gpt2_tokenizer,
    save_gpt2_files,
)

CONTEXT = 64
RTOL = 1e-4


@pytest.fixture(scope="module")
def gpt2_tokenizer(shared_assets: Path):
    return load_gpt2_tokenizer(shared_assets / "gpt2-tokenizer")


@pytest.fixture(scope="module")
def verdict(shared_assets: Path) -> str:
    return (shared_assets / "corpora" / "the-verdict.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def hf_model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=CONTEXT, vocab_size=50257,
                        initializer_range=0.3)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def ours(hf_model: GPT2LMHeadModel, gpt2_tokenizer, tmp_path_factory):
    directory = tmp_path_factory.mktemp("gpt2-shaped")
    hf_model.save_pretrained(directory)
    save_gpt2_files(gpt2_tokenizer, directory)
    return load_model(directory)


@pytest.fixture(scope="module")
def ids(gpt2_tokenizer, verdict: str) -> list[int]:
    return gpt2_tokenizer.encode(verdict)[:400]  # 400 = 6 * 64 + 16: not a multiple of 64


def documented_perplexity(model: GPT2LMHeadModel, ids: list[int], max_length: int,
                          stride: int, corrected: bool = False) -> tuple[float, int]:
    """transformers' documented loop ("Perplexity of fixed-length models"), as written there
    (``corrected``: counting the targets the loss averages over); (perplexity, tokens)."""
    encodings_input_ids = torch.tensor([ids])
    seq_len = encodings_input_ids.size(1)
    nll_sum = 0.0
    n_tokens = 0
    prev_end_loc = 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc  # may be different from stride on last loop
        input_ids = encodings_input_ids[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            outputs = model(input_ids, labels=target_ids)
            neg_log_likelihood = outputs.loss
        num_valid_tokens = (target_ids != -100).sum().item()
        batch_size = target_ids.size(0)
        num_loss_tokens = num_valid_tokens - batch_size
        if corrected:
            num_loss_tokens = (target_ids[:, 1:] != -100).sum().item()
        nll_sum += neg_log_likelihood * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    avg_nll = nll_sum / n_tokens
    return torch.exp(avg_nll).item(), n_tokens


# -- against transformers -----------------------------------------------------------------------
@pytest.mark.parametrize("length", [384, 400])  # 6 windows exactly; 6 and a part
def test_disjoint_windows_equal_the_documented_loop(ours, hf_model, ids, length: int) -> None:
    model, _ = ours
    result = sliding_window_nll(model, ids[:length], CONTEXT, CONTEXT, progress=False)
    expected, tokens = documented_perplexity(hf_model, ids[:length], CONTEXT, CONTEXT)
    assert result.perplexity == pytest.approx(expected, rel=RTOL)
    assert result.tokens == tokens == length - math.ceil(length / CONTEXT)
    assert result.windows == math.ceil(length / CONTEXT)
    assert result.perplexity == pytest.approx(math.exp(result.nll))


@pytest.mark.parametrize("stride", [32, 24, 13])  # 400 tokens: a multiple of none of them
def test_strided_windows_equal_the_documented_loop(ours, hf_model, ids, stride: int) -> None:
    model, _ = ours
    result = sliding_window_nll(model, ids, CONTEXT, stride, progress=False)
    expected, tokens = documented_perplexity(hf_model, ids, CONTEXT, stride, corrected=True)
    assert result.perplexity == pytest.approx(expected, rel=RTOL)
    assert result.tokens == tokens == len(ids) - 1  # every token but the first, once
    assert (result.context_length, result.stride) == (CONTEXT, stride)


def test_the_stride_matters_more_than_the_tolerance(ours, ids) -> None:
    """Otherwise agreeing within 1e-4 would prove nothing about the windows."""
    model, _ = ours
    values = [sliding_window_nll(model, ids, CONTEXT, stride, progress=False).perplexity
              for stride in (64, 32, 13)]
    for a, b in zip(values, values[1:], strict=False):
        assert abs(a - b) / b > 100 * RTOL


def test_batching_and_defaults(ours, ids) -> None:
    model, _ = ours
    one = sliding_window_nll(model, ids[:200], CONTEXT, 24, batch_size=1, progress=False)
    many = sliding_window_nll(model, ids[:200], CONTEXT, 24, batch_size=5, progress=False)
    assert many.perplexity == pytest.approx(one.perplexity, rel=1e-5)  # float32 sums
    default = sliding_window_nll(model, torch.tensor([ids[:100]]), progress=False)  # [1, n]
    assert (default.context_length, default.stride) == (CONTEXT, CONTEXT // 2)


def test_any_model_that_returns_logits(hf_model, ids) -> None:
    """A transformers model (no ``hidden_states``): the plain path, logits of every position."""
    result = sliding_window_nll(hf_model, ids[:200], CONTEXT, 32, batch_size=3, progress=False)
    expected, _ = documented_perplexity(hf_model, ids[:200], CONTEXT, 32, corrected=True)
    assert result.perplexity == pytest.approx(expected, rel=RTOL)


def test_file_perplexity(ours, verdict: str, tmp_path: Path) -> None:
    model, tokenizer = ours
    path = tmp_path / "held-out.txt"
    path.write_text(verdict[:1000], encoding="utf-8")
    result = file_perplexity(model, tokenizer, path, stride=16, progress=False)
    direct = sliding_window_nll(model, tokenizer.encode(verdict[:1000]), stride=16,
                                progress=False)
    assert result == direct
    record = result.to_dict()
    assert record["perplexity"] == result.perplexity and record["tokens"] == result.tokens
    assert isinstance(result, PerplexityResult)


def test_windows_score_every_token_once() -> None:
    for n, context, stride in [(10, 4, 2), (11, 4, 4), (9, 4, 4), (30, 8, 3), (8, 8, 1)]:
        windows = sliding_windows(n, context, stride)
        scored = [t for w in windows for t in range(w.first_target, w.end)]
        assert len(scored) == len(set(scored))
        assert all(w.end - w.begin <= context and w.first_target > w.begin for w in windows)
        assert all(w.end - w.begin == context for w in windows[:-1])
        if stride < context:
            assert scored == list(range(1, n))
    # disjoint windows; the last holds one token, nothing to score: left out (transformers'
    # loop would divide 0 by 0 there)
    assert [(w.begin, w.end) for w in sliding_windows(9, 4, 4)] == [(0, 4), (4, 8)]


# -- bad input ----------------------------------------------------------------------------------
def test_a_file_shorter_than_one_window(ours, tmp_path: Path) -> None:
    model, tokenizer = ours
    path = tmp_path / "short.txt"
    path.write_text("Every effort moves you.", encoding="utf-8")
    n = len(tokenizer.encode(path.read_text()))
    with pytest.raises(ValueError, match=rf"short.txt has {n} tokens, fewer than one window of "
                                         rf"64 .*--context {n} or less"):
        file_perplexity(model, tokenizer, path, progress=False)
    assert file_perplexity(model, tokenizer, path, context_length=n, progress=False).tokens == n - 1


def test_bad_files(ours, tmp_path: Path) -> None:
    model, tokenizer = ours
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        file_perplexity(model, tokenizer, empty)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café ".encode("latin-1") * 100)
    with pytest.raises(ValueError, match=r"latin1.txt: byte 3 \(0xe9\) is not valid UTF-8"):
        file_perplexity(model, tokenizer, latin1)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        file_perplexity(model, tokenizer, tmp_path / "missing.txt")
    special = tmp_path / "special.txt"
    special.write_text("one text<|endoftext|>another " * 20, encoding="utf-8")
    with pytest.raises(SpecialTokenError, match="special.txt: .*<|endoftext|>"):
        file_perplexity(model, tokenizer, special)
    assert file_perplexity(model, tokenizer, special, context_length=32, allowed_special="all",
                           progress=False).tokens > 0


def test_bad_windows(ours, ids) -> None:
    model, _ = ours
    for stride in (0, -1, CONTEXT + 1):
        with pytest.raises(ValueError, match=rf"stride must be between 1 and the context "
                                             rf"length \(64\), got {stride}"):
            sliding_window_nll(model, ids, CONTEXT, stride)
    with pytest.raises(ValueError, match="exceeds the model's 64; pass --context 64 or less"):
        sliding_window_nll(model, ids, 65)
    with pytest.raises(ValueError, match="context length must be at least 2"):
        sliding_window_nll(model, ids, 1, 1)
    with pytest.raises(ValueError, match="token id 50257 is outside the model's vocabulary"):
        sliding_window_nll(model, [*ids[:63], 50257], CONTEXT)
    with pytest.raises(ValueError, match="expected a 1-D sequence"):
        sliding_window_nll(model, torch.zeros(2, 64, dtype=torch.long))
    with pytest.raises(ValueError, match="1 tokens, fewer than one window .* at least 2 tokens"):
        sliding_window_nll(model, ids[:1], 2)


# -- the n-gram baseline ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chars(verdict: str) -> tuple[CharTokenizer, np.ndarray]:
    tokenizer = CharTokenizer.from_texts(verdict + "~")  # "~": in the vocabulary, not the text
    return tokenizer, np.array(tokenizer.encode(verdict))


@pytest.mark.parametrize("order", [1, 2, 3])
def test_ngram_next_token_probabilities_sum_to_one(chars, order: int) -> None:
    tokenizer, ids = chars
    lm = KneserNeyLM(tokenizer.vocab_size, order).fit(ids[:15_000])
    unseen = tokenizer.encode("~")[0]
    for history in ("", "t", "th", " q", "~~", "e~", "zzzz"):
        probs = lm.next_token_probs(tokenizer.encode(history))
        assert probs.shape == (tokenizer.vocab_size,)
        assert probs.sum() == pytest.approx(1.0, abs=1e-9)
        assert probs.min() > 0 and probs[unseen] > 0
    held_out = ids[15_000:]
    assert 1 < lm.perplexity(held_out) < tokenizer.vocab_size
    # log_probs: the same numbers as next_token_probs, token by token
    logs = lm.log_probs(held_out[:20])
    for i in range(1, 20):
        expected = lm.next_token_probs(held_out[max(0, i - order + 1):i])[held_out[i]]
        assert logs[i - 1] == pytest.approx(math.log(expected), abs=1e-12)


def test_ngram_orders_improve_on_real_text(chars) -> None:
    tokenizer, ids = chars
    values = [KneserNeyLM(tokenizer.vocab_size, order).fit(ids[:15_000]).perplexity(ids[15_000:])
              for order in (1, 2, 3)]
    assert values[0] > values[1] > values[2]


def test_ngram_by_hand() -> None:
    """Bigram on 0 1 0 2 (vocabulary 3): continuation counts 1, 1, 1 of 3 distinct bigrams,
    so P_uni = (1 - .75 + .75 * 3 / 3) / 3 = 1/3; history 0 was seen twice, before 2 types:
    P(1 | 0) = (1 - .75 + .75 * 2 * 1/3) / 2 = 0.375, P(0 | 0) = (.75 * 2 * 1/3) / 2 = 0.25."""
    lm = KneserNeyLM(3, order=2).fit([0, 1, 0, 2])
    assert lm.next_token_probs([0]) == pytest.approx([0.25, 0.375, 0.375])
    assert lm.next_token_probs([2]) == pytest.approx([1 / 3] * 3)  # 2 never had a successor


def test_ngram_repeated_pattern_is_near_certain() -> None:
    lm = KneserNeyLM(5, order=3).fit([0, 1, 2, 3, 4] * 400)
    assert lm.perplexity([0, 1, 2, 3, 4] * 40) < 1.05
    assert lm.perplexity([4, 3, 2, 1, 0] * 40) > 2  # never seen in this order


def test_ngram_bad_input() -> None:
    with pytest.raises(ValueError, match="has not been fitted"):
        KneserNeyLM(5).perplexity([0, 1, 2])
    with pytest.raises(ValueError, match="2 tokens are too few for an order-3 model"):
        KneserNeyLM(5, order=3).fit([0, 1])
    with pytest.raises(ValueError, match="0 tokens are too few"):
        KneserNeyLM(5, order=2).fit([])
    lm = KneserNeyLM(5, order=2).fit([0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="token id 5 is outside the vocabulary 0..4"):
        lm.perplexity([0, 5])
    with pytest.raises(ValueError, match="token id -1 is outside"):
        lm.fit([0, -1, 2])
    with pytest.raises(ValueError, match="1 token.*at least 2"):
        lm.perplexity([3])
    with pytest.raises(ValueError, match="order must be at least 1"):
        KneserNeyLM(5, order=0)
    with pytest.raises(ValueError, match=r"discount must be in \(0, 1\]"):
        KneserNeyLM(5, discount=0.0)
    with pytest.raises(ValueError, match="too large for order 5"):
        KneserNeyLM(50257, order=5)


def test_evaluate_perplexity_command_records_the_result(hf_model, gpt2_tokenizer, ours,
                                                        verdict: str, tmp_path: Path,
                                                        capsys) -> None:
    import json

    from scratchgpt.cli import main

    directory = tmp_path / "model"
    hf_model.save_pretrained(directory)
    save_gpt2_files(gpt2_tokenizer, directory)
    text = tmp_path / "held-out.txt"
    text.write_text(verdict[:1000], encoding="utf-8")
    assert main(["evaluate", "perplexity", "--model", str(directory), "--data", str(text),
                 "--stride", "16", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    expected = file_perplexity(*ours, text, stride=16, progress=False)
    assert (record["evaluation"], record["perplexity"], record["tokens"]) == (
        "perplexity", expected.perplexity, expected.tokens)
    saved = directory / "eval" / "perplexity-held-out.json"
    assert json.loads(saved.read_text(encoding="utf-8")) == record
    text.write_text("Too short.", encoding="utf-8")
    assert main(["evaluate", "perplexity", "--model", str(directory), "--data", str(text)]) == 2
    assert "fewer than one window" in capsys.readouterr().err
