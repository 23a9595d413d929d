"""Decoding: greedy, sampling, KV cache vs none, context cropping, stop conditions, streaming."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
import torch

from scratchgpt.config import ModelConfig
from scratchgpt.generation import generate_text, generate_tokens, sample_next_token
from scratchgpt.model import GPTModel

TINY = ModelConfig(vocab_size=101, context_length=16, emb_dim=32, n_heads=4, n_layers=2)
PROMPT = [5, 17, 42, 8, 99]


def random_model(pos_encoding: str = "learned") -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(TINY.replace(pos_encoding=pos_encoding)).eval()


# -- a model and tokenizer that spell out a known text -------------------------------------
TEXT = "Héllo, wörld! 世界 ok"
TEXT_BYTES = TEXT.encode()  # 25 bytes: é and ö take 2, 世 and 界 take 3


class ByteTokenizer:
    """Token ``i`` is the ``i``-th byte of TEXT; the id after the last is <|endoftext|>."""

    eot_id = len(TEXT_BYTES)

    def encode(self, text: str) -> list[int]:
        assert TEXT_BYTES.startswith(text.encode())
        return list(range(len(text.encode())))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return b"".join(TEXT_BYTES[i : i + 1] for i in ids)


def script_model() -> GPTModel:
    """A real GPTModel whose weights make token ``i`` always followed by ``i + 1``.

    Blocks write nothing into the residual stream (zero output projections), positions are
    zero, token ``i`` embeds as a spike in dimension ``i``, and the output layer's row
    ``i + 1`` reads dimension ``i``: the argmax of the logits is ``i + 1`` (eot -> 0).
    """
    vocab = len(TEXT_BYTES) + 1
    config = ModelConfig(vocab_size=vocab, context_length=8, emb_dim=32, n_heads=2,
                         n_layers=1, tie_weights=False)
    model = GPTModel(config).eval()
    with torch.no_grad():
        model.tok_emb.weight.zero_()
        model.tok_emb.weight[:, :vocab] = 10 * torch.eye(vocab)
        model.pos_emb.weight.zero_()
        for proj in (model.blocks[0].att.out_proj, model.blocks[0].ff.out_proj):
            proj.weight.zero_()
            proj.bias.zero_()
        model.out_head.weight.zero_()
        model.out_head.weight[:, :vocab] = torch.eye(vocab).roll(-1, dims=1)
    return model


def test_script_model_and_eos() -> None:
    model, eot = script_model(), ByteTokenizer.eot_id
    assert list(generate_tokens(model, [0], 100, eos_id=eot)) == list(range(1, eot))
    assert list(generate_tokens(model, [0], eot + 2)) == [*range(1, eot + 1), 0, 1]
    assert list(generate_tokens(model, [0], 3, eos_id=eot)) == [1, 2, 3]
    assert list(generate_tokens(model, [0], 0)) == []


def test_text_streams_whole_characters() -> None:
    pieces = list(generate_text(script_model(), ByteTokenizer(), "H", max_new_tokens=100))
    assert "".join(pieces) == TEXT[1:]
    assert all(piece and "\ufffd" not in piece for piece in pieces)
    assert "世" in pieces and "界" in pieces  # three tokens each, one piece each
    naive = [ByteTokenizer().decode_bytes([i]).decode(errors="replace") for i in range(25)]
    assert "\ufffd" in "".join(naive)  # what per-token decoding would have produced


def test_text_is_yielded_as_it_is_generated() -> None:
    stream = generate_text(script_model(), ByteTokenizer(), "H", max_new_tokens=100)
    assert next(stream) == "é"
    assert next(stream) == "l"


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ("wö", "éllo, "),  # stop string starts with a 2-byte character
        ("界 o", "éllo, wörld! 世"),  # spans several tokens and pieces
        (["ld", "o,"], "éll"),  # the first stop string to appear wins
        ("é", ""),  # right at the start: nothing is yielded
        ("wörx", TEXT[1:]),  # a prefix appears but the stop never completes
    ],
)
def test_stop_strings(stop: str | list[str], expected: str) -> None:
    pieces = list(generate_text(script_model(), ByteTokenizer(), "H", 100, stop=stop))
    assert "".join(pieces) == expected


# -- random models ---------------------------------------------------------------------------
def argmax_loop(model: GPTModel, prompt: list[int], steps: int) -> list[int]:
    """Greedy decoding the slow, obvious way: full forward pass, crop, argmax."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([ids[-TINY.context_length :]]))
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt) :]


@pytest.mark.parametrize("pos_encoding", ["learned", "sinusoidal", "rope"])
def test_greedy_cached_and_uncached_equal_the_argmax_loop_past_the_context(
    pos_encoding: str,
) -> None:
    model = random_model(pos_encoding)
    steps = 2 * TINY.context_length  # runs well past the context window
    expected = argmax_loop(model, PROMPT, steps)
    assert list(generate_tokens(model, PROMPT, steps, use_cache=True)) == expected
    assert list(generate_tokens(model, PROMPT, steps, use_cache=False)) == expected


def test_decoding_follows_weights_changed_between_calls() -> None:
    # On the CPU, decoding keeps a transposed copy of the output layer: it must not go stale.
    model = random_model()
    before = list(generate_tokens(model, PROMPT, 8))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # an in-place update, as in training
    model(torch.tensor([PROMPT])).logsumexp(-1).sum().backward()
    optimizer.step()
    after = list(generate_tokens(model, PROMPT, 8))
    assert after == argmax_loop(model, PROMPT, 8) != before
    model.out_head.weight = torch.nn.Parameter(torch.randn_like(model.out_head.weight))
    assert list(generate_tokens(model, PROMPT, 8)) == argmax_loop(model, PROMPT, 8)


def test_seeded_sampling_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    model = random_model()
    state = torch.get_rng_state()

    def sample(seed: int, use_cache: bool = True) -> list[int]:
        return list(generate_tokens(model, PROMPT, 24, temperature=1.0, seed=seed,
                                    use_cache=use_cache))

    first = sample(seed=1)
    assert sample(seed=1) == first
    assert sample(seed=1, use_cache=False) == first
    assert sample(seed=2) != first
    assert torch.equal(torch.get_rng_state(), state)


def test_top_k_one_and_tiny_top_p_are_greedy() -> None:
    model = random_model()
    greedy = list(generate_tokens(model, PROMPT, 12))
    assert list(generate_tokens(model, PROMPT, 12, temperature=1.5, top_k=1, seed=0)) == greedy
    assert list(generate_tokens(model, PROMPT, 12, temperature=1.5, top_p=1e-6, seed=0)) == greedy


def draws(logits: torch.Tensor, n: int = 400, **options) -> set[int]:
    gen = torch.Generator().manual_seed(0)
    return {sample_next_token(logits, generator=gen, **options) for _ in range(n)}


def test_top_k_and_top_p_restrict_the_candidates() -> None:
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    assert draws(logits, temperature=1.0) == {0, 1, 2, 3}
    assert draws(logits, temperature=1.0, top_k=2) == {0, 1}
    assert draws(logits, temperature=1.0, top_p=0.75) == {0, 1}  # 0.5 < 0.75 <= 0.5 + 0.3
    assert draws(logits, temperature=1.0, top_p=0.85) == {0, 1, 2}
    assert draws(logits, temperature=0.0, top_k=3) == {0}


def test_temperature_sharpens_and_flattens() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0])
    gen = torch.Generator().manual_seed(0)

    def share_of_top(temperature: float) -> float:
        picks = [sample_next_token(logits, temperature, generator=gen) for _ in range(2000)]
        return picks.count(0) / len(picks)

    expected = torch.softmax(logits, dim=0)[0].item()  # 0.665 at temperature 1
    assert share_of_top(1.0) == pytest.approx(expected, abs=0.04)
    assert share_of_top(0.25) > 0.95
    assert share_of_top(10.0) < 0.45


def test_long_prompt_is_cropped_from_the_left() -> None:
    model = random_model()
    long_prompt = torch.randint(0, TINY.vocab_size, (3 * TINY.context_length,)).tolist()
    cropped = long_prompt[-TINY.context_length :]
    for use_cache in (True, False):
        assert list(generate_tokens(model, long_prompt, 6, use_cache=use_cache)) == list(
            generate_tokens(model, cropped, 6, use_cache=use_cache)
        )


def test_training_mode_is_restored() -> None:
    model = random_model().train()
    list(generate_tokens(model, PROMPT, 3))
    assert model.training
    assert not random_model().training


def test_bad_arguments_are_refused() -> None:
    model = random_model()
    for kwargs in ({"temperature": -1.0}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5},
                   {"max_new_tokens": -1}):
        with pytest.raises(ValueError):  # at the call, before the first token is asked for
            generate_tokens(model, PROMPT, **{"max_new_tokens": 2, **kwargs})
    with pytest.raises(ValueError, match="empty"):
        generate_tokens(model, [], 2)
    with pytest.raises(ValueError, match="top_k"):
        generate_text(script_model(), ByteTokenizer(), "H", 5, top_k=0)
