"""How a conversation becomes a prompt: one notion that a prompt style and a chat template share.

A model answers best when prompted in the layout it was tuned on. That layout comes from one of
two places: a :class:`~scratchgpt.data.prompt_styles.PromptStyle` (a run of ``finetune
instruct`` records the one it trained with), or a Hugging Face model directory's own
:class:`~scratchgpt.data.chat_templates.ChatTemplate`. Both satisfy :class:`PromptFormat`, so
``generate --instruction``, ``chat`` and ``serve`` take either.

Both also cut a conversation into :class:`~scratchgpt.data.prompt_styles.Segment` s, the
answers marked trained, so ``finetune instruct`` trains in either (``--prompt-style template``:
the model's own).

One difference stays: a prompt style is plain text, any marker in it spelled as ordinary
tokens, while a chat template writes the model's special tokens (``<|im_start|>``, a BOS) as
their text, to be read back as those tokens, as transformers' ``apply_chat_template`` does.
:func:`encode_prompt` encodes each as it is meant, prompts and training segments alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from scratchgpt.data.chat_templates import ChatTemplate
from scratchgpt.data.prompt_styles import Segment
from scratchgpt.tokenizers import Tokenizer


class PromptFormat(Protocol):
    """What renders a conversation into the text a model continues, and what ends an answer."""

    @property
    def name(self) -> str:
        """Its name: a prompt style's (``alpaca``), or ``chat_template``."""

    @property
    def stop(self) -> tuple[str, ...]:
        """Strings that end an answer, besides the end-of-turn tokens."""

    @property
    def default_system(self) -> str | None:
        """The system prompt used when the messages have none (None: none, or the template's
        own)."""

    def render(self, messages: Sequence[Mapping[str, Any]],
               add_generation_prompt: bool = True) -> str:
        """The text of ``messages``, ending where the assistant's answer begins."""

    def instruction_prompt(self, instruction: str, input: str = "") -> str:
        """The prompt of one user message: the instruction, then its input if any."""

    @property
    def append_end_of_text(self) -> bool:
        """Whether a training example ends with the tokenizer's end-of-text token (a prompt
        style's), rather than with how the format itself closes an answer (a template's)."""

    def segments(self, messages: Sequence[Mapping[str, Any]]) -> list[Segment]:
        """The text of a conversation that ends with an answer, its answers marked trained."""

    def instruction_segments(self, instruction: str, input: str, output: str) -> list[Segment]:
        """The text of an instruction record, its output marked trained."""


def describe(prompt_format: PromptFormat) -> str:
    """How messages to the user name it: ``prompt format: the model's chat template``, or
    ``prompt style alpaca``."""
    if isinstance(prompt_format, ChatTemplate):
        return "prompt format: the model's chat template"
    return f"prompt style {prompt_format.name}"


def encode_prompt(prompt_format: PromptFormat, tokenizer: Tokenizer, text: str) -> list[int]:
    """The ids of a prompt (or a segment) ``prompt_format`` rendered: a chat template's
    special tokens as themselves (and no BOS added: the template writes it), a prompt style's
    text as text."""
    if isinstance(prompt_format, ChatTemplate):
        return tokenizer.encode(text, allowed_special="all")
    return tokenizer.encode_ordinary(text)
