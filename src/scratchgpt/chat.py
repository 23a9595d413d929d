"""``scratchgpt chat``: talk to a model in the terminal, the way chapter 7's model is meant
to be used.

A chat is a list of messages (``system``, then ``user`` and ``assistant`` turns) that the
model's prompt format (:mod:`scratchgpt.data.prompt_format`: the run's prompt style, or a
Hugging Face model's own chat template) renders into one prompt, the same layout the model was
tuned on, ending where the assistant's answer begins. The answer streams out as it is decoded,
and stops at any of the model's end-of-turn tokens or the style's stop strings.

The model sees at most its context: when the conversation would not leave room for an answer,
the oldest turns are dropped (never the system prompt), and the user is told. The terminal
loop adds commands (``/reset``, ``/system TEXT``, ``/save FILE``, ``/exit``), lets Ctrl-C
stop an answer without ending the chat, and reads piped standard input for scripting.

``/save`` writes the conversation whole or not at all; a path it cannot write (a missing
directory, a directory, no permission) is reported and the chat goes on, the conversation
intact. Piped, each line is a message (or a command), and the transcript on standard output
reads as a log: for each message a line ``> MESSAGE``, then the answer, then a blank line.
Notes go to standard error.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from scratchgpt.data.prompt_format import PromptFormat, encode_prompt
from scratchgpt.data.prompt_styles import Message
from scratchgpt.generation import generate_text
from scratchgpt.model import GPTModel
from scratchgpt.tokenizers import Tokenizer

COMMANDS = "/reset, /system TEXT, /save FILE, /exit"


@dataclass
class Sampling:
    """How each answer is decoded (see :mod:`scratchgpt.generation`)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    seed: int | None = None


@dataclass
class ChatSession:
    """A conversation with a model: its messages, and how to render and continue them."""

    model: GPTModel
    tokenizer: Tokenizer
    style: PromptFormat  # a prompt style, or the model's chat template
    system: str | None = None  # None: the style's default system prompt, if it has one
    sampling: Sampling = field(default_factory=Sampling)
    stop_ids: tuple[int, ...] | None = None  # end-of-turn ids; None: the tokenizer's eot
    turns: list[Message] = field(default_factory=list)  # user and assistant messages
    notes: list[str] = field(default_factory=list)  # what the user should be told

    def system_prompt(self) -> str | None:
        return self.system if self.system is not None else self.style.default_system

    def messages(self) -> list[Message]:
        """The whole conversation, the system prompt first (when there is one)."""
        system = self.system_prompt()
        return ([{"role": "system", "content": system}] if system else []) + self.turns

    def reset(self) -> None:
        self.turns.clear()

    def prompt_ids(self) -> list[int]:
        """The token ids of the rendered conversation, leaving room for an answer.

        The room is ``max_new_tokens``, at most half the context. While the prompt is too
        long, the oldest user turn and its answer are dropped (the system prompt and the
        newest message stay); a newest message too long by itself keeps only its end.
        Each cut is added to :attr:`notes`.
        """
        context = self.model.config.context_length
        budget = context - min(self.sampling.max_new_tokens, context // 2)
        dropped = 0
        ids = self._render_ids()
        while len(ids) > budget and len(self.turns) > 1:
            del self.turns[:2]  # the oldest user turn and the answer to it
            dropped += 1
            ids = self._render_ids()
        if dropped:
            self.notes.append(f"dropped the {dropped} oldest exchange(s) to fit the model's "
                              f"context of {context} tokens")
        if len(ids) > budget:
            self.notes.append(f"the prompt is {len(ids)} tokens, more than the {budget} that "
                              f"fit beside an answer: only its last {budget} are read")
            ids = ids[-budget:]
        return ids

    def _render_ids(self) -> list[int]:
        return encode_prompt(self.style, self.tokenizer, self.style.render(self.messages()))

    def reply(self, text: str) -> Iterator[str]:
        """Add the user's ``text`` and stream the assistant's answer, piece by piece. The
        answer joins the conversation when the stream ends, also when it is stopped early
        (closed, or Ctrl-C in the terminal): what was shown is what the model said."""
        self.turns.append({"role": "user", "content": text})
        sampling = self.sampling
        pieces = generate_text(
            self.model, self.tokenizer, self.prompt_ids(), sampling.max_new_tokens,
            temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
            repetition_penalty=sampling.repetition_penalty, seed=sampling.seed,
            stop=self.style.stop, stop_ids=self.stop_ids,
        )
        answer = ""
        try:
            for piece in pieces:
                answer += piece
                yield piece
        finally:
            self.turns.append({"role": "assistant", "content": answer.strip()})

    def save(self, path: str | Path) -> Path:
        """The conversation as JSON: ``{"prompt_style", "messages": [...]}`` in OpenAI's
        message shape, which ``finetune instruct --data`` also reads as a JSON Lines record.
        Written whole or not at all (:func:`_write_whole`); an ``OSError`` says why not. A
        leading ``~`` is the home directory, as in a shell."""
        path = Path(path).expanduser()
        _write_whole(path, json.dumps({"prompt_style": self.style.name,
                                      "messages": self.messages()}, indent=2,
                                     ensure_ascii=False) + "\n")
        return path


def _write_whole(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it, renamed into place: an
    existing file is replaced whole, and a failure (a full disk, Ctrl-C) leaves it as it was
    and no temporary file behind. A path that cannot be written is an ``OSError`` whose
    message says why: a missing directory, a directory, no permission."""
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a file name, such as "
                                f"{path / 'chat.json'}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: the directory {path.parent} does not exist; create "
                                "it, or save elsewhere")
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException as err:
        temporary.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise type(err)(err.errno, f"{path}: {err.strerror or err}") from None
        raise


def run_chat(session: ChatSession, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
             stderr: TextIO = sys.stderr, banner: str = "") -> None:
    """The terminal loop. In a terminal: a ``you>`` prompt, answers after ``assistant>``, and
    notes on stderr. From a pipe: each line is a message (or a command), and each message is
    printed as ``> MESSAGE``, its answer on the next line, then a blank line: a transcript
    that reads as a log and splits into turns at the ``> `` lines."""
    interactive = stdin.isatty()
    if interactive:
        print(f"{banner}commands: {COMMANDS}; Ctrl-C stops an answer, Ctrl-D leaves",
              file=stderr)
    while True:
        try:
            line = _read_line(stdin, stdout, interactive)
        except KeyboardInterrupt:  # at the prompt, as in a shell: a fresh line
            print(file=stdout)
            continue
        if line is None:
            return
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            if _command(session, text, stderr):
                return
            continue
        stdout.write("assistant> " if interactive else f"> {text}\n")
        try:
            for piece in session.reply(text):
                stdout.write(piece)
                stdout.flush()
        except KeyboardInterrupt:
            stdout.write(" [stopped]")
        stdout.write("\n" if interactive else "\n\n")
        stdout.flush()
        for note in session.notes:
            print(f"[{note}]", file=stderr)
        session.notes.clear()


def _read_line(stdin: TextIO, stdout: TextIO, interactive: bool) -> str | None:
    """The next line, or None at the end of the input (Ctrl-D)."""
    if interactive and stdin is sys.stdin and stdout is sys.stdout:
        try:
            return input("you> ")  # line editing and history when readline is there
        except EOFError:
            print(file=stdout)
            return None
    if interactive:
        stdout.write("you> ")
        stdout.flush()
    line = stdin.readline()
    return line or None


def _command(session: ChatSession, text: str, stderr: TextIO) -> bool:
    """Carry out a ``/command``; True when the chat should end."""
    name, _, argument = text.partition(" ")
    argument = argument.strip()
    if name in ("/exit", "/quit"):
        return True
    if name == "/reset":
        session.reset()
        print("[conversation cleared]", file=stderr)
    elif name == "/system":
        if argument:
            session.system = argument
        print(f"[system prompt: {session.system_prompt() or '(none)'}]", file=stderr)
    elif name == "/save":
        _save(session, argument, stderr)
    else:
        print(f"[unknown command {text!r}; commands: {COMMANDS}]", file=stderr)
    return False


def _save(session: ChatSession, argument: str, stderr: TextIO) -> None:
    """``/save FILE``: a path that cannot be written is reported, and the chat goes on."""
    if not argument:
        print("[/save needs a file name: /save FILE]", file=stderr)
        return
    try:
        print(f"[saved {session.save(argument)}]", file=stderr)
    except OSError as err:
        print(f"[not saved: {err.strerror or err}. The conversation is kept.]", file=stderr)
