"""Prompt styles: how a conversation becomes the one text a language model reads and continues.

A model tuned to follow instructions learns one exact layout of the text around an answer, and
must be prompted in that same layout afterwards. Three are here:

- ``alpaca``: the layout of the book (chapter 7), plain text that any tokenizer can spell::

      Below is an instruction that describes a task. Write a response that ...

      ### Instruction:
      Name a prime number.

      ### Response:
      7

- ``phi3``: ``<|user|>\\nName a prime number.<|end|>\\n<|assistant|>\\n7<|end|>\\n``
- ``chatml``: ``<|im_start|>user\\nName a prime number.<|im_end|>\\n``, then
  ``<|im_start|>assistant\\n7<|im_end|>\\n``

The markers of the last two are ordinary text to a tokenizer that lacks them as special tokens
(GPT-2 spells ``<|im_end|>`` in several tokens), and a model learns them all the same.

:meth:`PromptStyle.render` writes the prompt of a conversation (what is generated from),
:meth:`PromptStyle.segments` the text of a whole conversation cut into pieces, each marked
trained or not (what is learned from: the answers), and :attr:`PromptStyle.chat_template` the
same layout in Jinja, for a Hugging Face ``tokenizer_config.json``.

A fourth choice, :data:`TEMPLATE` (``--prompt-style template``), is no layout of ours: it is the
model's own chat template (:class:`~scratchgpt.data.chat_templates.ChatTemplate`), which cuts a
conversation into the same kind of segments.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}

ROLES = ("system", "user", "assistant")
TEMPLATE = "template"  # the prompt style that is the model's own chat template


@dataclass(frozen=True)
class Segment:
    """A piece of a conversation's text, and whether the loss is on its tokens."""

    text: str
    trained: bool  # True: an assistant's answer (what the model learns to write)


def check_messages(messages: Sequence[Mapping[str, str]], ends_with_answer: bool = False) -> None:
    """A ValueError naming the message (by index) that is not a ``{"role", "content"}`` object
    or breaks the order of a conversation: an optional first system message, then user and
    assistant messages by turns, starting with the user; with ``ends_with_answer``, ending with
    the assistant's."""
    if not messages:
        raise ValueError("no messages: a conversation needs at least one user message")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(
                f"message {index} is a {type(message).__name__}, not an object with a 'role' "
                "and a 'content'"
            )
        for field in ("role", "content"):
            if field not in message:
                raise ValueError(f"message {index} has no field {field!r}")
            if not isinstance(message[field], str):
                raise ValueError(
                    f"message {index}: field {field!r} is {message[field]!r}, not a string"
                )
        if message["role"] not in ROLES:
            raise ValueError(
                f"message {index} has role {message['role']!r}; a role is one of {', '.join(ROLES)}"
            )
    first = 1 if messages[0]["role"] == "system" else 0
    for index in range(first, len(messages)):
        role, expected = messages[index]["role"], ("user", "assistant")[(index - first) % 2]
        if role != expected:
            raise ValueError(
                f"message {index} has role {role!r} where {expected!r} is expected: after an "
                "optional first system message, user and assistant messages take turns, "
                "starting with the user"
            )
    if ends_with_answer and messages[-1]["role"] != "assistant":
        raise ValueError(
            f"message {len(messages) - 1} has role {messages[-1]['role']!r}: the conversation "
            "must end with an assistant message, the answer to learn"
        )


class PromptStyle:
    """The layout of one style: the text of each kind of turn, and what ends an answer.

    A conversation's text is its system turn (``default_system`` when it has none), then each
    user turn, and each assistant turn as ``assistant_start + content + end_of_turn +
    after_turn``. The prompt to generate from ends with ``assistant_start``.
    """

    name: ClassVar[str]
    stop: ClassVar[tuple[str, ...]]  # strings that end an answer, besides the end-of-text token
    end_of_turn: ClassVar[str]  # appended to every assistant answer ("" for alpaca)
    default_system: ClassVar[str | None]  # the system prompt when the messages have none
    chat_template: ClassVar[str]  # Jinja that renders as render() does, for Hugging Face
    system_turn: ClassVar[str]  # the text of a system message, "{content}" standing for it
    user_turn: ClassVar[str]  # the text of a user message
    assistant_start: ClassVar[str]  # what precedes an answer: the end of every prompt
    after_turn: ClassVar[str]  # what follows end_of_turn when the conversation goes on
    append_end_of_text = True  # a training example ends with the end-of-text token (the book's)

    def instruction_prompt(self, instruction: str, input: str = "") -> str:
        """The prompt of one instruction (and its input, if any): it ends where the response
        begins. Without an input, it is the prompt of the one user message ``instruction``."""
        content = f"{instruction}\n\n{input}" if input else instruction
        return self.render([{"role": "user", "content": content}])

    def instruction_segments(self, instruction: str, input: str, output: str) -> list[Segment]:
        """The text of an instruction record, to train on: its prompt (not trained), then the
        output and the style's end of turn (trained)."""
        return [Segment(self.instruction_prompt(instruction, input), trained=False),
                Segment(output + self.end_of_turn, trained=True)]

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The text of ``messages``; with ``add_generation_prompt``, followed by the start of an
        assistant turn, so that the model's continuation is the answer."""
        check_messages(messages)
        text = "".join(text for text, _ in self._pieces(messages))
        return text + self.assistant_start if add_generation_prompt else text

    def segments(self, messages: Sequence[Message]) -> list[Segment]:
        """The text of a conversation that ends with an answer, to train on: each answer and its
        ``end_of_turn`` is a trained segment, all else (system, user turns, role markers) is
        not. The text before each answer is exactly the prompt :meth:`render` writes for the
        messages before it, so the model learns to answer the prompts it will be given. The
        text ends with the last ``end_of_turn`` (the end-of-text token follows it in training,
        not ``after_turn``)."""
        check_messages(messages, ends_with_answer=True)
        pieces = list(self._pieces(messages))[:-1]  # the last after_turn
        segments: list[Segment] = []
        for text, trained in pieces:
            if segments and not trained and not segments[-1].trained:
                segments[-1] = Segment(segments[-1].text + text, trained=False)
            elif text or trained:
                segments.append(Segment(text, trained))
        return segments

    def _pieces(self, messages: Sequence[Message]) -> Iterator[tuple[str, bool]]:
        """(text, is an answer) for each piece of the conversation's text, in order."""
        if messages[0]["role"] != "system" and self.default_system is not None:
            yield self.system_turn.format(content=self.default_system), False
        for message in messages:
            content = message["content"]
            if message["role"] == "assistant":
                yield self.assistant_start, False
                yield content + self.end_of_turn, True
                yield self.after_turn, False
            else:
                turn = self.system_turn if message["role"] == "system" else self.user_turn
                yield turn.format(content=content), False


ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)


class Alpaca(PromptStyle):
    """The book's layout (Stanford Alpaca's): ``### Instruction:``, ``### Input:`` and
    ``### Response:`` headings after a preamble, which a system message replaces."""

    name = "alpaca"
    stop = ("### Instruction:", "### Input:", "### Response:")
    end_of_turn = ""
    default_system = ALPACA_PREAMBLE
    system_turn = "{content}"
    user_turn = "\n\n### Instruction:\n{content}"
    assistant_start = "\n\n### Response:\n"
    after_turn = ""
    chat_template = r"""
{%- if messages[0]['role'] == 'system' -%}
    {{- messages[0]['content'] -}}
{%- else -%}
    {{- 'Below is an instruction that describes a task. ' -}}
    {{- 'Write a response that appropriately completes the request.' -}}
{%- endif -%}
{%- for message in messages -%}
    {%- if message['role'] == 'user' -%}
        {{- '\n\n### Instruction:\n' + message['content'] -}}
    {%- elif message['role'] == 'assistant' -%}
        {{- '\n\n### Response:\n' + message['content'] -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '\n\n### Response:\n' -}}
{%- endif -%}
"""

    def instruction_prompt(self, instruction: str, input: str = "") -> str:
        """The book's prompt: the input, if any, under a heading of its own."""
        input_section = f"\n\n### Input:\n{input}" if input else ""
        return (
            f"{ALPACA_PREAMBLE}\n\n### Instruction:\n{instruction}{input_section}"
            "\n\n### Response:\n"
        )


class Phi3(PromptStyle):
    """Microsoft Phi-3's layout: each turn opens with ``<|role|>`` and closes with ``<|end|>``."""

    name = "phi3"
    stop = ("<|end|>", "<|user|>")
    end_of_turn = "<|end|>"
    default_system = None
    system_turn = "<|system|>\n{content}<|end|>\n"
    user_turn = "<|user|>\n{content}<|end|>\n"
    assistant_start = "<|assistant|>\n"
    after_turn = "\n"
    chat_template = r"""
{%- for message in messages -%}
    {%- if message['role'] == 'assistant' -%}
        {{- '<|assistant|>\n' + message['content'] + '<|end|>\n' -}}
    {%- else -%}
        {{- '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|assistant|>\n' -}}
{%- endif -%}
"""


class ChatML(PromptStyle):
    """OpenAI's ChatML (Qwen, SmolLM): ``<|im_start|>role``, the content, ``<|im_end|>``."""

    name = "chatml"
    stop = ("<|im_end|>", "<|im_start|>")
    end_of_turn = "<|im_end|>"
    default_system = None
    system_turn = "<|im_start|>system\n{content}<|im_end|>\n"
    user_turn = "<|im_start|>user\n{content}<|im_end|>\n"
    assistant_start = "<|im_start|>assistant\n"
    after_turn = "\n"
    chat_template = r"""
{%- for message in messages -%}
    {{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
"""


PROMPT_STYLES: dict[str, PromptStyle] = {
    style.name: style for style in (Alpaca(), Phi3(), ChatML())
}


def get_prompt_style(name: str) -> PromptStyle:
    """The prompt style called ``name``."""
    if name not in PROMPT_STYLES:
        raise ValueError(
            f"unknown prompt style {name!r}; choose one of: {', '.join(sorted(PROMPT_STYLES))}"
        )
    return PROMPT_STYLES[name]
