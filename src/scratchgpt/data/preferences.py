"""Preference data: one prompt, two answers, and which of them people prefer (DPO's data).

Direct Preference Optimization (the bonus of the book's chapter 7) teaches a model which of two
answers is the better one, without a reward model: a record is a context and two answers to
it, ``chosen`` (preferred) and ``rejected``. Two shapes of record are read:

- the book's (``instruction-data-with-preference.json``): ``instruction``, ``input``
  (optional), ``chosen`` and ``rejected``; its ``output``, the answer of the instruction data,
  is ignored;
- the conversational shape of TRL's data sets: the context in ``prompt`` (a string, the user's
  message, or a list of messages) or in ``messages``, ending with the user's message; then
  ``chosen`` and ``rejected``, each a string or a list holding the assistant's message.
  Without a context field, ``chosen`` and ``rejected`` may be whole conversations that differ
  only in their last message (TRL's "implicit prompt"): what they share is the context.

Each answer, with its context, is an instruction record (:mod:`scratchgpt.data.instructions`),
the very record ``finetune instruct`` learns from: a pair renders in a prompt style or the
model's chat template exactly as instruction tuning renders it, so a DPO run goes on in the
layout its instruction-tuned model learned (:mod:`scratchgpt.data.preference_batches` makes
the tokens). Files are read, checked (errors name the file, the record and the field) and split
by the instruction data's own pieces. A record whose chosen answer equals its rejected one
teaches nothing (its two log-ratios cancel): it is dropped, and counted for the caller to say.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from scratchgpt.data.instructions import (
    Conversation,
    InstructionDataError,
    InstructionRecord,
    InstructionSplits,
    Record,
    json_type,
    load_instruction_splits,
    parse_messages,
    read_json_records,
    record_reference,
    save_instruction_splits,
    split_records,
    text_fields,
)
from scratchgpt.data.prompt_styles import Message

PREFERENCE_SHAPES = (
    "an object with a 'chosen' and a 'rejected' answer to an 'instruction' (and optionally an "
    "'input'), to a 'prompt' (a string or a list of messages) or to 'messages'; or one whose "
    "'chosen' and 'rejected' are whole conversations that differ only in their last message"
)
CONTEXT_FIELDS = ("instruction", "prompt", "messages")
ANSWER_FIELDS = ("chosen", "rejected")


@dataclass(frozen=True)
class PreferenceRecord:
    """A context answered two ways: ``chosen``, the answer people preferred, and ``rejected``.

    Each is the instruction record of the context with that answer (an
    :class:`~scratchgpt.data.instructions.InstructionRecord` or a
    :class:`~scratchgpt.data.instructions.Conversation` ending with it), so each renders as
    instruction tuning renders it."""

    chosen: Record
    rejected: Record

    def __post_init__(self) -> None:
        if _context(self.chosen) != _context(self.rejected):
            raise ValueError("chosen and rejected answer different contexts; a preference "
                             "record is one context answered two ways")

    @property
    def answers(self) -> tuple[str, str]:
        """The chosen answer and the rejected one."""
        return record_reference(self.chosen), record_reference(self.rejected)


def _context(record: Record) -> tuple[Any, ...]:
    """What a record's final answer answers: its instruction and input, or the messages
    before it."""
    if isinstance(record, Conversation):
        return record.messages[:-1]
    return (record.instruction, record.input)


def preference_json(pair: PreferenceRecord) -> dict[str, Any]:
    """The record as a JSON object that :func:`load_preferences` reads back: the book's fields,
    or TRL's conversational ones (``prompt`` messages, each answer a one-message list)."""
    chosen, rejected = pair.answers
    if isinstance(pair.chosen, Conversation):
        return {"prompt": [dict(message) for message in pair.chosen.messages[:-1]],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}]}
    return {"instruction": pair.chosen.instruction, "input": pair.chosen.input,
            "chosen": chosen, "rejected": rejected}


# --- Reading ------------------------------------------------------------------------------------


class Preferences(NamedTuple):
    """The pairs of a file, and how many of its records were dropped because their chosen
    answer equals their rejected one (the book's file has 6 such)."""

    pairs: list[PreferenceRecord]
    identical: int


def load_preferences(path: str | Path) -> Preferences:
    """The preference records of a JSON list or JSON Lines file (as :func:`~scratchgpt.data.
    instructions.load_instructions` reads instruction records; numbered the same way in
    errors), less those whose ``chosen`` equals their ``rejected``, which are counted."""
    pairs = [parse_preference(value, where)
             for where, value in read_json_records(path, "preference", PREFERENCE_SHAPES)]
    kept = [pair for pair in pairs if pair.answers[0] != pair.answers[1]]
    if not kept:
        raise InstructionDataError(
            f"{path}: in all {len(pairs)} records 'chosen' equals 'rejected': there is no "
            "preference to learn"
        )
    return Preferences(kept, len(pairs) - len(kept))


def parse_preference(value: Any, where: str) -> PreferenceRecord:
    """The preference record in the JSON ``value`` found at ``where`` (file and record or
    line)."""
    if not isinstance(value, dict):
        raise InstructionDataError(
            f"{where}: {json_type(value)} where a record is expected: {PREFERENCE_SHAPES}"
        )
    found = ", ".join(repr(key) for key in value) or "none"
    given = [name for name in CONTEXT_FIELDS if name in value]
    if len(given) > 1:
        raise InstructionDataError(
            f"{where}: fields {given[0]!r} and {given[1]!r} both give the context; a record has "
            f"one of {', '.join(repr(name) for name in CONTEXT_FIELDS)}"
        )
    for name in ANSWER_FIELDS:
        if name not in value:
            raise InstructionDataError(
                f"{where}: no field {name!r} (found fields: {found}); a record is "
                f"{PREFERENCE_SHAPES}"
            )
    if not given:
        return _implicit_prompt(value, where, found)
    chosen, rejected = (_answer(value[name], where, name) for name in ANSWER_FIELDS)
    if given == ["instruction"]:
        fields = text_fields(value, where, ("instruction", "input"), PREFERENCE_SHAPES)
        return PreferenceRecord(*(InstructionRecord(fields["instruction"], fields["input"], answer)
                                  for answer in (chosen, rejected)))
    context = _context_messages(value, where, given[0])
    return PreferenceRecord(*(Conversation((*context, {"role": "assistant", "content": answer}))
                              for answer in (chosen, rejected)))


def _context_messages(value: dict[str, Any], where: str, field: str) -> tuple[Message, ...]:
    """The context of a ``prompt`` (a string: one user message) or ``messages`` field: a
    conversation that ends with the user's message, which both answers answer."""
    if field == "prompt" and not isinstance(value[field], list):
        if not isinstance(value[field], str):
            raise InstructionDataError(
                f"{where}: field 'prompt' is {json_type(value[field])}, not a string (the "
                "user's message) or a list of {'role', 'content'} objects"
            )
        prompt = text_fields(value, where, ("prompt",), PREFERENCE_SHAPES)["prompt"]
        return ({"role": "user", "content": prompt},)
    messages = parse_messages(value[field], where, field, ends_with_answer=False)
    if messages[-1]["role"] != "user":
        raise InstructionDataError(
            f"{where}: field {field!r}: message {len(messages) - 1} has role "
            f"{messages[-1]['role']!r}: the context must end with the user's message, which "
            "'chosen' and 'rejected' answer"
        )
    return messages


def _answer(answer: Any, where: str, field: str) -> str:
    """The text of a ``chosen`` or ``rejected`` field: a string, or a list holding one
    ``{"role": "assistant", "content": ...}`` message."""
    if isinstance(answer, list):
        if len(answer) != 1:
            raise InstructionDataError(
                f"{where}: field {field!r} holds {len(answer)} messages; an answer is a string or "
                "a list holding one message, the assistant's (the turns before it are the "
                "context: 'prompt' or 'messages')"
            )
        message = answer[0]
        if not isinstance(message, dict):
            raise InstructionDataError(
                f"{where}: field {field!r}: message 0 is {json_type(message)}, not an object "
                "with a 'role' and a 'content'"
            )
        if message.get("role") != "assistant":
            raise InstructionDataError(
                f"{where}: field {field!r}: message 0 has role {message.get('role')!r}; an "
                "answer is the assistant's message ('role': 'assistant')"
            )
        answer = message.get("content")
        if not isinstance(answer, str):
            raise InstructionDataError(
                f"{where}: field {field!r}: message 0: field 'content' is {json_type(answer)}, "
                "not a string"
            )
    elif not isinstance(answer, str):
        raise InstructionDataError(
            f"{where}: field {field!r} is {json_type(answer)}, not a string or a list holding "
            "the assistant's message"
        )
    if not answer.strip():
        raise InstructionDataError(f"{where}: field {field!r} is empty; fill it in or drop the "
                                   "record")
    return answer


def _implicit_prompt(value: dict[str, Any], where: str, found: str) -> PreferenceRecord:
    """A record with no context field: ``chosen`` and ``rejected`` are whole conversations,
    the same but for their last message, the answer."""
    if not all(isinstance(value[name], list) and len(value[name]) > 1 for name in ANSWER_FIELDS):
        raise InstructionDataError(
            f"{where}: no field 'instruction', 'prompt' or 'messages' for the context (found "
            f"fields: {found}); a record is {PREFERENCE_SHAPES}"
        )
    chosen, rejected = (parse_messages(value[name], where, name, ends_with_answer=True)
                        for name in ANSWER_FIELDS)
    if chosen[:-1] != rejected[:-1]:
        raise InstructionDataError(
            f"{where}: fields 'chosen' and 'rejected' are whole conversations (the record has no "
            "'prompt'), so they must be the same but for their last message, the answer, and "
            "they differ before it; give the context in 'prompt' and the answers alone in "
            "'chosen' and 'rejected'"
        )
    return PreferenceRecord(Conversation(chosen), Conversation(rejected))


# --- Splitting ----------------------------------------------------------------------------------


def split_preferences(
    pairs: list[PreferenceRecord], seed: int,
    fractions: tuple[float, float, float] = (0.85, 0.05, 0.10),
) -> InstructionSplits[PreferenceRecord]:
    """Seeded train, validation and test splits of the pairs, as
    :func:`~scratchgpt.data.instructions.split_records` makes them (the book's fractions)."""
    return split_records(pairs, seed, fractions, what="preference records")


def save_preference_splits(splits: InstructionSplits[PreferenceRecord], directory: Path) -> None:
    """Write the splits into ``directory`` as the instruction splits are written, each pair in
    the shape of :func:`preference_json`."""
    save_instruction_splits(splits, directory, to_json=preference_json)


def load_preference_splits(directory: Path) -> InstructionSplits[PreferenceRecord]:
    """The splits that :func:`save_preference_splits` wrote into ``directory``."""
    return load_instruction_splits(directory, load=lambda path: load_preferences(path).pairs)
