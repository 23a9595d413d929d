"""Prompt styles: exact strings for each style, the training segments agree with the prompts,
and each chat template renders as render() does under Hugging Face's apply_chat_template."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchgpt.data.prompt_styles import (
    PROMPT_STYLES,
    Message,
    Segment,
    check_messages,
    get_prompt_style,
)

STYLES = sorted(PROMPT_STYLES)
PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)


def user(content: str) -> Message:
    return {"role": "user", "content": content}


def assistant(content: str) -> Message:
    return {"role": "assistant", "content": content}


def system(content: str) -> Message:
    return {"role": "system", "content": content}


MULTI_TURN = [system("Be brief."), user("2+2?"), assistant("4"), user("And 3+3?")]

# --- Exact strings --------------------------------------------------------------------------------


def test_alpaca_is_the_books_prompt() -> None:
    alpaca = get_prompt_style("alpaca")
    assert alpaca.instruction_prompt("Name a prime.") == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nName a prime.\n\n### Response:\n"
    )
    assert alpaca.instruction_prompt("Fix the spelling.", "freind") == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nFix the spelling.\n\n### Input:\nfreind"
        "\n\n### Response:\n"
    )
    assert alpaca.render(MULTI_TURN) == (
        "Be brief.\n\n### Instruction:\n2+2?\n\n### Response:\n4"
        "\n\n### Instruction:\nAnd 3+3?\n\n### Response:\n"
    )
    assert alpaca.render([user("Hi"), assistant("Hello")], add_generation_prompt=False) == (
        f"{PREAMBLE}\n\n### Instruction:\nHi\n\n### Response:\nHello"
    )
    assert (alpaca.end_of_turn, alpaca.default_system) == ("", PREAMBLE)
    assert alpaca.stop == ("### Instruction:", "### Input:", "### Response:")


def test_phi3_strings() -> None:
    phi3 = get_prompt_style("phi3")
    assert phi3.instruction_prompt("Name a prime.") == (
        "<|user|>\nName a prime.<|end|>\n<|assistant|>\n"
    )
    assert phi3.instruction_prompt("Fix the spelling.", "freind") == (
        "<|user|>\nFix the spelling.\n\nfreind<|end|>\n<|assistant|>\n"
    )
    assert phi3.render(MULTI_TURN) == (
        "<|system|>\nBe brief.<|end|>\n<|user|>\n2+2?<|end|>\n<|assistant|>\n4<|end|>\n"
        "<|user|>\nAnd 3+3?<|end|>\n<|assistant|>\n"
    )
    assert phi3.render([user("Hi"), assistant("Hello")], add_generation_prompt=False) == (
        "<|user|>\nHi<|end|>\n<|assistant|>\nHello<|end|>\n"
    )
    assert (phi3.end_of_turn, phi3.default_system, phi3.stop) == (
        "<|end|>",
        None,
        ("<|end|>", "<|user|>"),
    )


def test_chatml_strings() -> None:
    chatml = get_prompt_style("chatml")
    assert chatml.instruction_prompt("Name a prime.") == (
        "<|im_start|>user\nName a prime.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert chatml.instruction_prompt("Fix the spelling.", "freind") == (
        "<|im_start|>user\nFix the spelling.\n\nfreind<|im_end|>\n<|im_start|>assistant\n"
    )
    assert chatml.render(MULTI_TURN) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert chatml.render([user("Hi"), assistant("Hello")], add_generation_prompt=False) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
    )
    assert (chatml.end_of_turn, chatml.default_system, chatml.stop) == (
        "<|im_end|>",
        None,
        ("<|im_end|>", "<|im_start|>"),
    )


def test_segments_of_a_conversation_mark_only_the_answers() -> None:
    conversation = [user("2+2?"), assistant("4"), user("And 3+3?"), assistant("6")]
    assert get_prompt_style("chatml").segments(conversation) == [
        Segment("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n", False),
        Segment("4<|im_end|>", True),
        Segment("\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n", False),
        Segment("6<|im_end|>", True),
    ]
    assert get_prompt_style("alpaca").segments(conversation) == [
        Segment(f"{PREAMBLE}\n\n### Instruction:\n2+2?\n\n### Response:\n", False),
        Segment("4", True),
        Segment("\n\n### Instruction:\nAnd 3+3?\n\n### Response:\n", False),
        Segment("6", True),
    ]


@pytest.mark.parametrize("name", STYLES)
def test_an_instruction_without_input_is_a_one_message_conversation(name: str) -> None:
    style = PROMPT_STYLES[name]
    assert style.instruction_prompt("Name a prime.") == style.render([user("Name a prime.")])
    assert style.name == name


def test_an_unknown_style_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown prompt style 'llama'.*alpaca, chatml, phi3"):
        get_prompt_style("llama")


# --- Segments agree with render ---------------------------------------------------------------

contents = st.text(max_size=12)


@st.composite
def conversations(draw: st.DrawFn) -> list[Message]:
    """An optional system message, then user and assistant turns, ending with an answer."""
    messages = [system(draw(contents))] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 3))):
        messages += [user(draw(contents)), assistant(draw(contents))]
    return messages


@pytest.mark.parametrize("name", STYLES)
@given(messages=conversations())
def test_the_text_before_each_answer_is_the_prompt_render_writes(
    name: str, messages: list[Message]
) -> None:
    style = PROMPT_STYLES[name]
    segments = style.segments(messages)
    text = "".join(s.text for s in segments)
    assert text == style.render(messages[:-1]) + messages[-1]["content"] + style.end_of_turn
    assert text + style.after_turn == style.render(messages, add_generation_prompt=False)
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    trained = [(i, s) for i, s in enumerate(segments) if s.trained]
    assert [s.text for _, s in trained] == [
        messages[i]["content"] + style.end_of_turn for i in answers
    ]
    for (position, _), index in zip(trained, answers, strict=True):
        prefix = "".join(s.text for s in segments[:position])
        assert prefix == style.render(messages[:index])
    assert all(s.text for s in segments if not s.trained)


# --- Validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([], "no messages"),
        ([user("a"), user("b")], "message 1 has role 'user' where 'assistant' is expected"),
        ([assistant("a")], "message 0 has role 'assistant' where 'user' is expected"),
        ([user("a"), system("b")], "message 1 has role 'system' where 'assistant'"),
        ([system("a"), system("b")], "message 1 has role 'system' where 'user'"),
        ([user("a"), {"role": "bot", "content": "b"}], "message 1 has role 'bot'; a role is one"),
        ([user("a"), {"role": "assistant"}], "message 1 has no field 'content'"),
        ([{"role": "user", "content": 5}], "message 0: field 'content' is 5, not a string"),
        (["hello"], "message 0 is a str, not an object"),
    ],
)
def test_a_message_out_of_place_is_named_by_its_index(messages: list, error: str) -> None:
    for style in PROMPT_STYLES.values():
        with pytest.raises(ValueError, match=error):
            style.render(messages)


def test_training_needs_a_conversation_that_ends_with_an_answer() -> None:
    with pytest.raises(ValueError, match="message 2 has role 'user'.*must end with an assistant"):
        get_prompt_style("phi3").segments([user("a"), assistant("b"), user("c")])
    check_messages([system("s"), user("a"), assistant("b")], ends_with_answer=True)


# --- Chat templates, against Hugging Face ------------------------------------------------------


@pytest.fixture(scope="module")
def hf_tokenizer():
    """A Hugging Face tokenizer with an empty vocabulary: only its chat template matters."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    model = tokenizers.models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizers.Tokenizer(model))


TEMPLATE_CASES = [
    [user("Name a prime.")],
    [system("Be brief."), user("Name a prime.")],
    [user("2+2?"), assistant("4"), user("And 3+3?")],
    MULTI_TURN,
    [system("Be brief."), user("2+2?"), assistant("4"), user("3+3?"), assistant("6")],
    [user("Quote {{ this }} and {% that %}, 'single' \"double\"\n\\n"), assistant("ok")],
]


@pytest.mark.parametrize("name", STYLES)
@pytest.mark.parametrize("messages", TEMPLATE_CASES)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_the_chat_template_renders_as_render_does(
    hf_tokenizer, name: str, messages: list[Message], add_generation_prompt: bool
) -> None:
    style = PROMPT_STYLES[name]
    hf_tokenizer.chat_template = style.chat_template
    rendered = hf_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert rendered == style.render(messages, add_generation_prompt=add_generation_prompt)


@pytest.mark.parametrize("name", STYLES)
@settings(max_examples=30, deadline=None)
@given(messages=conversations())
def test_the_chat_template_renders_any_conversation_as_render_does(
    hf_tokenizer, name: str, messages: list[Message]
) -> None:
    style = PROMPT_STYLES[name]
    hf_tokenizer.chat_template = style.chat_template
    for prompt in (messages, messages[:-1]):
        rendered = hf_tokenizer.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=prompt is not messages
        )
        assert rendered == style.render(prompt, add_generation_prompt=prompt is not messages)
