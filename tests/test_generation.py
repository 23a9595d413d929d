"""Decoding: greedy, sampling, KV cache vs none, context cropping, stop conditions, streaming,
and the ``generate`` command's checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from decoding_models import PROMPT, TEXT, TINY, ByteTokenizer, random_model, script_model

from scratchgpt.cli import main
from scratchgpt.config import ModelConfig
from scratchgpt.generation import generate_text, generate_tokens, sample_next_token
from scratchgpt.hub.export import export_hf
from scratchgpt.hub.models import load_model
from scratchgpt.model import GPTModel
from scratchgpt.tokenizers import train_bpe


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


def test_a_tiny_temperature_is_nearly_greedy_not_an_error() -> None:
    """Logits over a temperature of 1e-45 overflow to inf, and softmax(inf - inf) is nan:
    shifted by their largest first, the rest go to -inf instead."""
    logits = torch.tensor([1.0, 3.0, 2.0, -math.inf])
    gen = torch.Generator().manual_seed(0)
    for temperature in (1e-45, 1e-30, 1e-6):
        assert {sample_next_token(logits, temperature, generator=gen, top_k=3, top_p=0.9)
                for _ in range(20)} == {1}


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


BAD_ARGUMENTS = [
    ("temperature", -1.0), ("temperature", math.nan), ("temperature", math.inf),
    ("top_k", 0), ("top_p", 0.0), ("top_p", 1.5), ("top_p", math.nan), ("top_p", -math.inf),
    ("max_new_tokens", -1),
]


@pytest.mark.parametrize(("name", "value"), BAD_ARGUMENTS)
def test_bad_arguments_are_refused_at_the_call(name: str, value: float) -> None:
    # nan fails every comparison: "temperature < 0" let it through, to crash in softmax later.
    kwargs = {"max_new_tokens": 2, name: value}
    with pytest.raises(ValueError, match=f"^{name} must be .*, got {value}$"):
        generate_tokens(random_model(), PROMPT, **kwargs)  # before the first next()
    with pytest.raises(ValueError, match=f"^{name} must be"):
        generate_text(script_model(), ByteTokenizer(), "H", **kwargs)


def test_empty_prompts_are_refused() -> None:
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        generate_tokens(random_model(), [], 2)
    with pytest.raises(ValueError, match="^prompt is empty"):
        generate_text(script_model(), ByteTokenizer(), "", 2)


# -- the command line -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT with a byte-level BPE tokenizer, in Hugging Face's layout."""
    tokenizer = train_bpe("Hello world, hello there.", 260, progress=False)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=260, context_length=16, emb_dim=16, n_heads=2, n_layers=1)
    directory = tmp_path_factory.mktemp("model")
    export_hf(GPTModel(config), tokenizer, directory)
    return directory


def test_cli_generate_streams_the_prompt_then_the_continuation(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, tokenizer = load_model(model_dir)
    expected = "".join(generate_text(model, tokenizer, "Hello", max_new_tokens=5))
    assert main(["generate", "--model", str(model_dir), "--prompt", "Hello",
                 "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out == "Hello" + expected + "\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--temperature", "-1"], "temperature must be a finite number >= 0"),
        (["--temperature", "nan"], "temperature must be a finite number >= 0"),
        (["--temperature", "inf"], "temperature must be a finite number >= 0"),
        (["--top-k", "0"], "top_k must be 1 or more"),
        (["--top-p", "0"], "top_p must be a number in (0, 1]"),
        (["--top-p", "nan"], "top_p must be a number in (0, 1]"),
        (["--max-new-tokens", "-1"], "max_new_tokens must be 0 or more"),
        (["--max-new-tokens", "-5"], "max_new_tokens must be 0 or more"),
        (["--prompt", ""], "prompt is empty"),
    ],
)
def test_cli_generate_checks_arguments_before_printing_anything(
    model_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = main(["generate", "--model", str(model_dir), "--prompt", "Hello", *argv])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")  # the prompt used to be printed first
    assert err.splitlines()[-1].startswith(f"scratchgpt generate: error: {message}")
    assert "Traceback" not in err
