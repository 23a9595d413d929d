"""Batched generation: left padding with an attention mask, a KV cache per row, and the
repetition penalty. The rule throughout: a row of a batch computes what its prompt computes
alone, for every kind of positions."""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import permutations

import pytest
import torch
import torch.nn.functional as F
from decoding_models import TEXT, TINY, ByteTokenizer, random_model, script_model
from transformers import GPT2Config, GPT2LMHeadModel, RepetitionPenaltyLogitsProcessor

from scratchgpt.generation import (
    apply_repetition_penalty,
    generate_batch,
    generate_batch_text,
    generate_text,
    generate_tokens,
    sample_next_token,
)
from scratchgpt.hub.hf_weights import config_from_hf, hf_to_scratch
from scratchgpt.model import GPTModel, KVCache, MultiHeadAttention, RotaryEmbedding

POS_ENCODINGS = ["learned", "sinusoidal", "rope"]
# Different lengths; the last is longer than the context and is cropped from the left.
PROMPTS = [[5, 17, 42, 8, 99], [3], [7, 7, 1, 30, 2, 64, 11, 90, 45], list(range(40, 60))]


def talkative_model(pos_encoding: str) -> GPTModel:
    """Untied: a tied random model mostly repeats its last token, which tests little."""
    return random_model(pos_encoding, tie_weights=False)


def left_pad(prompts: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[B, T]`` right-aligned, and the mask ``[B, T]`` (True = real token)."""
    longest = max(len(p) for p in prompts)
    idx = torch.tensor([[pad_id] * (longest - len(p)) + p for p in prompts])
    mask = torch.tensor([[False] * (longest - len(p)) + [True] * len(p) for p in prompts])
    return idx, mask


def alone(model: GPTModel, prompts: list[list[int]], steps: int, seeds=None, **options):
    """What generate_tokens gives for each prompt on its own."""
    seeds = seeds if seeds is not None else [None] * len(prompts)
    return [list(generate_tokens(model, p, steps, seed=s, **options))
            for p, s in zip(prompts, seeds, strict=True)]


# -- the model: padded rows compute what they compute alone ---------------------------------
@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_left_padded_logits_equal_each_prompt_alone(pos_encoding: str) -> None:
    model = random_model(pos_encoding)
    prompts = [p[-TINY.context_length :] for p in PROMPTS]
    idx, mask = left_pad(prompts)
    with torch.no_grad():
        logits = model(idx, attention_mask=mask)
        as_ints = model(idx, attention_mask=mask.long())  # 0/1 works as well as bool
        assert torch.isfinite(logits).all()  # pad queries see no real key: still no NaN
        torch.testing.assert_close(as_ints, logits, atol=0, rtol=0)
        for row, prompt in enumerate(prompts):
            real = logits[row, idx.shape[1] - len(prompt) :]
            torch.testing.assert_close(real, model(torch.tensor([prompt]))[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_padded_cache_remembers_padding_and_positions(pos_encoding: str) -> None:
    """Prefill a padded batch, then single tokens and a chunk with no mask: every row's
    logits are those of its whole sequence run alone."""
    model = random_model(pos_encoding)
    prompts = [[5, 17, 42], [3], [7, 7, 1, 30, 2, 64]]
    later = torch.randint(0, TINY.vocab_size, (3, 5))
    idx, mask = left_pad(prompts)
    cache = model.new_kv_cache(batch_size=3)
    with torch.no_grad():
        steps = [model(idx, cache, mask)[:, -1:]]
        steps += [model(later[:, t : t + 1], cache) for t in range(2)]  # mask None: all real
        steps.append(model(later[:, 2:], cache, torch.ones(3, 3)))  # a chunk, mask all ones
        got = torch.cat(steps, dim=1)  # [3, 1 + 5, vocab]
        for row, prompt in enumerate(prompts):
            full = model(torch.tensor([prompt + later[row].tolist()]))[0, len(prompt) - 1 :]
            torch.testing.assert_close(got[row], full, atol=1e-5, rtol=0)
    assert cache.next_position.tolist() == [len(p) + 5 for p in prompts]


def test_padded_attention_weights_skip_padding_and_stay_finite() -> None:
    """The explicit path shows the mask: no weight on padding keys, and a pad query, which
    has no real key to its left, attends to itself rather than to nothing (a softmax over
    only -inf is NaN, and 0 * NaN in the next layer's weighted sum would reach real rows)."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 8, 2, rope=RotaryEmbedding(4, 10)).eval()
    x = torch.randn(2, 3, 8)
    cache = KVCache(1, 2, 2, 10, 4)
    cache.add_tokens(3, torch.tensor([[1, 1, 1], [0, 0, 1]]))
    out, weights = mha(x, cache, return_weights=True)
    assert torch.isfinite(weights).all() and torch.isfinite(out).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 3))
    assert (weights[1, :, 2, :2] == 0).all()  # row 1's real token ignores its padding
    assert (weights[1, :, 0, 0] == 1).all()  # the first pad sees itself only
    torch.testing.assert_close(out[1, 2], mha(x[1:, 2:])[0, 0])  # as if alone, at position 0


def test_padding_gets_no_gradient_from_real_tokens() -> None:
    """Nothing real attends to padding: the pad token's embedding gets no gradient from the
    real positions' outputs, even in training mode (the throwaway-cache path keeps autograd)."""
    model = random_model(tie_weights=False).train()
    pad_id = TINY.vocab_size - 1  # used by no prompt
    idx, mask = left_pad([[5, 17, 42, 8], [3, 4]], pad_id=pad_id)
    model(idx, attention_mask=mask)[mask].square().sum().backward()
    assert model.tok_emb.weight.grad[5].abs().sum() > 0
    assert model.tok_emb.weight.grad[pad_id].abs().sum() == 0


def test_a_cache_with_one_row_per_prompt_can_drop_rows() -> None:
    model = random_model("rope")
    prompts = [[5, 17, 42], [3], [7, 7, 1, 30]]
    idx, mask = left_pad(prompts)
    cache = model.new_kv_cache(batch_size=3)
    with torch.no_grad():
        model(idx, cache, mask)
        cache.keep_rows([2, 0])  # row 1 retires; the others keep their keys and positions
        logits = model(torch.tensor([[9], [8]]), cache)[:, -1]
        for got, prompt in zip(logits, [[7, 7, 1, 30, 9], [5, 17, 42, 8]], strict=True):
            torch.testing.assert_close(got, model(torch.tensor([prompt]))[0, -1], atol=1e-5,
                                       rtol=0)
    assert cache.batch_size == 2 and cache.keys[0].shape[0] == 2


def test_kv_cache_keep_rows_keeps_unpadded_state() -> None:
    cache = KVCache(1, 3, 2, 4, 2)
    cache.keys[0][:, 0, 0, 0] = torch.tensor([0.0, 1.0, 2.0])
    cache.keep_rows([2, 1])
    assert cache.keys[0][:, 0, 0, 0].tolist() == [2.0, 1.0] and cache.real is None


def test_no_mask_means_the_causal_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a mask (training, single-sequence generation) nothing per-row is built and
    attention runs with is_causal=True, exactly as before padding existed."""
    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False):
        calls.append((attn_mask, is_causal))
        return sdpa(q, k, v, attn_mask, dropout_p, is_causal)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    model = random_model("rope")
    cache = model.new_kv_cache(batch_size=2)
    model(torch.randint(0, TINY.vocab_size, (2, 6)), cache)
    assert calls == [(None, True)] * TINY.n_layers
    assert cache.real is None and cache.next_position is None


def test_attention_mask_shape_is_checked() -> None:
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 3\), expected .*\(2, 4\)"):
        random_model()(torch.zeros(2, 4, dtype=torch.long), attention_mask=torch.ones(2, 3))


# -- generate_batch against generate_tokens ----------------------------------------------
@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_greedy_batch_equals_each_prompt_alone(pos_encoding: str) -> None:
    model = talkative_model(pos_encoding)
    steps = 2 * TINY.context_length  # rows run past the context: cropped and prefilled again
    free = alone(model, PROMPTS, steps)
    # An end-of-text id that one row soon says and another never does: the first retires
    # early, the second runs on past the context.
    eos_id, short, long = next((token, i, j) for i, j in permutations(range(len(PROMPTS)), 2)
                               for token in free[i][1:10] if token not in free[j])
    expected = alone(model, PROMPTS, steps, eos_id=eos_id)
    assert len(expected[short]) < 10 and len(expected[long]) == steps
    assert generate_batch(model, PROMPTS, steps, eos_id=eos_id) == expected


@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_seeded_sampling_per_row_equals_each_prompt_alone(pos_encoding: str) -> None:
    model = talkative_model(pos_encoding)
    options = dict(temperature=1.2, top_k=40, top_p=0.95, repetition_penalty=1.3)
    seeds = [11, 12, 13, 14]
    state = torch.get_rng_state()
    got = generate_batch(model, PROMPTS, 20, seed=seeds, **options)
    assert got == alone(model, PROMPTS, 20, seeds=seeds, **options)
    assert generate_batch(model, PROMPTS, 20, seed=7, **options) == alone(
        model, PROMPTS, 20, seeds=[7] * 4, **options)  # one int seeds every row alike
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone


def test_should_stop_retires_a_row_and_keeps_its_last_token() -> None:
    model = talkative_model("rope")
    free = alone(model, PROMPTS, 12)

    def even_after_three(tokens: list[int]) -> bool:
        return len(tokens) >= 3 and tokens[-1] % 2 == 0

    def cut(tokens: list[int]) -> list[int]:
        return next((tokens[: n + 1] for n in range(2, len(tokens)) if tokens[n] % 2 == 0),
                    tokens)

    got = generate_batch(model, PROMPTS, 12, should_stop=even_after_three)
    assert got == [cut(tokens) for tokens in free]
    assert any(len(tokens) < 12 for tokens in got)


def test_edge_cases_and_bad_arguments() -> None:
    model = random_model()
    assert generate_batch(model, [], 5) == []
    assert generate_batch(model, PROMPTS, 0) == [[], [], [], []]
    with pytest.raises(ValueError, match=r"^prompts\[1\] is empty"):
        generate_batch(model, [[1], []], 3)
    with pytest.raises(ValueError, match="one per prompt: got 1 seeds for 2 prompts"):
        generate_batch(model, [[1], [2]], 3, seed=[1])
    with pytest.raises(ValueError, match="^temperature must be"):
        generate_batch(model, [], 3, temperature=-1.0)
    model.train()
    generate_batch(model, PROMPTS, 2)
    assert model.training  # eval while generating, then restored


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf])
def test_bad_repetition_penalty_is_refused(value: float) -> None:
    model = random_model()
    message = f"^repetition_penalty must be a finite number > 0 .*, got {value}$"
    with pytest.raises(ValueError, match=message):
        generate_tokens(model, [1, 2], 3, repetition_penalty=value)  # before the first next()
    with pytest.raises(ValueError, match=message):
        generate_batch(model, [[1, 2]], 3, repetition_penalty=value)
    with pytest.raises(ValueError, match=message):
        generate_text(script_model(), ByteTokenizer(), "H", 3, repetition_penalty=value)
    with pytest.raises(ValueError, match=message):
        generate_batch_text(script_model(), ByteTokenizer(), ["H"], 3, repetition_penalty=value)


# -- repetition penalty ----------------------------------------------------------------------
@pytest.mark.parametrize("penalty", [0.5, 1.0, 1.3, 2.0])
def test_repetition_penalty_equals_hugging_face(penalty: float) -> None:
    torch.manual_seed(0)
    scores = torch.randn(3, 50) * 3
    input_ids = torch.randint(0, 50, (3, 12))  # repeats included: each counts once
    expected = RepetitionPenaltyLogitsProcessor(penalty)(input_ids, scores.clone())
    torch.testing.assert_close(apply_repetition_penalty(scores, input_ids, penalty), expected,
                               atol=0, rtol=0)
    for row in range(3):  # what sampling picks, greedily, with the same penalty
        picked = sample_next_token(scores[row], repetition_penalty=penalty,
                                   previous_ids=set(input_ids[row].tolist()))
        assert picked == int(expected[row].argmax())


def constant_logits_model(preferences: dict[int, float]) -> GPTModel:
    """A GPTModel whose logits are the same after any input: zero embeddings leave the
    residual stream at zero, the final LayerNorm turns it into its shift (one-hot in dimension
    0) and the output layer's column 0 holds each token's logit (-1 unless given)."""
    config = TINY.replace(tie_weights=False, n_layers=1)
    model = GPTModel(config).eval()
    with torch.no_grad():
        model.tok_emb.weight.zero_()
        model.pos_emb.weight.zero_()
        model.final_norm.shift.zero_()
        model.final_norm.shift[0] = 1.0
        model.out_head.weight.zero_()
        model.out_head.weight[:, 0] = -1.0
        for token, logit in preferences.items():
            model.out_head.weight[token, 0] = logit
    return model


def test_repetition_penalty_breaks_a_loop() -> None:
    model = constant_logits_model({7: 3.0, 9: 2.0})
    assert list(generate_tokens(model, [1, 2], 5)) == [7, 7, 7, 7, 7]
    # 7 seen: 3.0 / 2 = 1.5 < 2.0, so 9 once; then both are seen, 1.5 > 2.0 / 2: 7 again.
    assert list(generate_tokens(model, [1, 2], 5, repetition_penalty=2.0)) == [7, 9, 7, 7, 7]
    assert list(generate_tokens(model, [7, 2], 3, repetition_penalty=2.0)) == [9, 7, 7]  # prompt
    assert generate_batch(model, [[1, 2], [7]], 5, repetition_penalty=2.0) == [
        [7, 9, 7, 7, 7], [9, 7, 7, 7, 7]]


def test_greedy_batch_with_penalty_equals_hugging_face_generate() -> None:
    """Hugging Face's own left-padded batch generation, with its repetition penalty, on
    random GPT-2 weights: the same tokens."""
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=97,
                                    n_positions=32, bos_token_id=0, eos_token_id=0)).eval()
    with torch.no_grad():
        for name, param in hf.named_parameters():
            is_norm_scale = ".ln_" in name and name.endswith("weight")
            param.normal_(1.0 if is_norm_scale else 0.0, 0.1 if is_norm_scale else 0.3)
    config = config_from_hf(hf.config.to_dict())
    ours = GPTModel(config).eval()
    ours.load_state_dict(hf_to_scratch(hf.state_dict(), config))
    prompts = [[5, 17, 42, 8, 9], [3], [7, 7, 1, 30, 2, 64, 11, 90]]
    idx, mask = left_pad(prompts)
    out = hf.generate(idx, attention_mask=mask.long(), max_new_tokens=12, do_sample=False,
                      repetition_penalty=1.5, pad_token_id=0, eos_token_id=None)
    expected = out[:, idx.shape[1] :].tolist()
    assert generate_batch(ours, prompts, 12, repetition_penalty=1.5) == expected
    assert generate_batch(ours, prompts, 12) != expected  # the penalty did something


# -- text ------------------------------------------------------------------------------------
TEXT_PROMPTS = ["H", "Héllo", "Héllo, wö", "Héllo, wörld! 世"]


@pytest.mark.parametrize(
    "stop",
    [(), ("wö",), ("界 o",), ("ld", "o,"), ("é",), ("wörx",), ("!", "ok")],
)
def test_batch_text_equals_generate_text(stop: tuple[str, ...]) -> None:
    model, tokenizer = script_model(), ByteTokenizer()
    got = generate_batch_text(model, tokenizer, TEXT_PROMPTS, 100, stop=stop)
    assert got == ["".join(generate_text(model, tokenizer, p, 100, stop=stop))
                   for p in TEXT_PROMPTS]


def test_batch_text_cuts_at_stop_strings_and_keeps_characters_whole() -> None:
    model, tokenizer = script_model(), ByteTokenizer()
    got = generate_batch_text(model, tokenizer, TEXT_PROMPTS, 100, stop=["界 o", "wö"])
    assert got == ["éllo, ", ", ", "rld! 世", ""]  # row 2's "wö" is in its prompt: no stop
    assert generate_batch_text(model, tokenizer, TEXT_PROMPTS, 100) == [
        TEXT[len(p) :] for p in TEXT_PROMPTS]  # up to <|endoftext|>, multi-byte characters whole
    assert generate_batch_text(model, tokenizer, ["Héllo, wörld!"], 2) == [" \ufffd"]  # 世 cut
    assert generate_batch_text(model, tokenizer, [], 5, stop="x") == []
    with pytest.raises(ValueError, match=r"^prompts\[1\] is empty"):
        generate_batch_text(model, tokenizer, ["H", ""], 5)


def test_a_stop_string_ends_its_row_early() -> None:
    model, tokenizer = script_model(), ByteTokenizer()
    seen: list[list[int]] = []
    original = tokenizer.decode_bytes

    def counting_decode(ids: Iterable[int]) -> bytes:
        ids = list(ids)
        seen.append(ids)
        return original(ids)

    tokenizer.decode_bytes = counting_decode  # type: ignore[method-assign]
    generate_batch_text(model, tokenizer, ["H"], 100, stop="ll")
    longest_tail = max(len(ids) for ids in seen[:-1])  # the last call decodes the answer
    assert longest_tail <= len(b"ll")  # only the end of the row is decoded at each step
    assert seen[-1] == [1, 2, 3, 4]  # stopped right after "éll", not at <|endoftext|>
