"""A model's own chat template: the prompt format shipped with its weights, rendered exactly.

An instruction-tuned model (Llama 3.x Instruct, Qwen3, Gemma 3 ...) learned one exact layout of
a conversation: its role markers, its special tokens, a system header with today's date, an
empty ``<think></think>`` block. Prompted in any other layout it answers worse, or not at all.
Its authors therefore ship the layout as a Jinja program, the *chat template*, in the model's
directory: ``chat_template.jinja`` (and ``additional_chat_templates/NAME.jinja``) in newer
directories, the ``chat_template`` field of ``tokenizer_config.json`` in older ones (a string,
or a list of ``{"name", "template"}``).

:func:`read_chat_template` reads it, and :meth:`ChatTemplate.render` renders it as
``transformers``' ``apply_chat_template(messages, tokenize=False)`` does, character for
character: the same Jinja settings and sandbox, and the same names in scope (``messages``,
``bos_token``, ``eos_token`` and the other special tokens, ``add_generation_prompt``, ``tools``,
``documents``, ``raise_exception``, ``strftime_now``, ``tojson``, and any extra keyword such as
Qwen3's ``enable_thinking``). Templates are code from the internet: they run in Jinja's
immutable sandbox, which refuses to reach Python's internals.

:func:`end_of_turn_ids` says which tokens end the model's answer, for generation to stop on.

To fine-tune in the template (``finetune instruct --prompt-style template``),
:meth:`ChatTemplate.segments` cuts a conversation's rendering into the answers, which are
learned, and the rest, which is not. It finds each answer from the rendering itself (what the
conversation up to the answer adds to the prompt before it), so it needs no ``{% generation
%}`` markers, which few templates have.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from scratchgpt.config_files import read_json_object
from scratchgpt.data.prompt_styles import PROMPT_STYLES, Message, Segment, check_messages

# The special tokens transformers puts in a template's scope (its SPECIAL_TOKENS_ATTRIBUTES).
SPECIAL_TOKEN_NAMES = (
    "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
)
# Names a message's reasoning may come under; transformers fills the first two from any of them.
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
# A Hugging Face directory's files on how its model is used: where its chat templates, their
# special tokens and its end-of-turn ids are read from (and its tokenizer's other settings).
USAGE_FILES = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
               "chat_template.jinja", "additional_chat_templates")
_STYLE_NAMES = ", ".join(PROMPT_STYLES)  # what to use instead of a template


class ChatTemplateError(ValueError):
    """A chat template that cannot be read, or that did not render the messages."""


class _Refusal(jinja2.TemplateError):
    """What the template's ``raise_exception(message)`` raises: it refuses these messages."""


def _raise_exception(message: str) -> None:
    raise _Refusal(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """transformers' ``tojson``: plain JSON, not Jinja's HTML-escaped one; non-ASCII kept."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    """Today's date (and time) as the template asks for it, e.g. Llama 3.x's system header."""
    return datetime.now().strftime(format)


class _TemplateDict:
    """``dict(...)`` and ``dict.fromkeys(...)`` without the ``dict`` type itself in scope."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """Jinja's ``namespace()``, refusing attributes that start with ``_`` (as transformers)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # Jinja's signature: namespace(self=...)
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"a namespace attribute may not start with '_' ({name!r})"
            )


class _GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}``: marks an answer (for transformers' assistant
    masks); its text renders as is."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Callable[[], str]) -> str:
        return caller()


@lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    """The template compiled as transformers compiles it (``_compile_jinja_template``)."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True,
        extensions=[_GenerationBlock, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now,
                       dict=_TemplateDict(), namespace=_Namespace)
    return env.from_string(source)


def _prepared(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The messages as transformers hands them to a template: fields that are None dropped,
    and a reasoning under any of its names also under ``reasoning_content`` and ``thinking``."""
    prepared = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ChatTemplateError(
                f"message {index} is a {type(message).__name__}, not an object with a 'role'"
            )
        message = {key: value for key, value in message.items() if value is not None}
        reasoning = next((message[key] for key in REASONING_FIELDS if key in message), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        prepared.append(message)
    return prepared


class ChatTemplate:
    """A model's chat template and the special tokens it may name; ``origin`` (the file it was
    read from) names it in errors. ``render`` has :class:`PromptStyle`'s signature; both are
    a :class:`~scratchgpt.data.prompt_format.PromptFormat`."""

    name = "chat_template"
    stop: tuple[str, ...] = ()  # answers end at the model's end-of-turn tokens, by id
    default_system: str | None = None  # the template writes its own default, if any
    append_end_of_text = False  # each answer ends as the template closes a turn, nothing added

    def __init__(self, source: str, special_tokens: Mapping[str, str] | None = None,
                 origin: str = "the chat template") -> None:
        self.source = source
        self.special_tokens = dict(special_tokens or {})
        self.origin = origin
        try:
            self._template = _compile(source)
        except jinja2.TemplateSyntaxError as error:
            raise ChatTemplateError(
                f"{origin}: line {error.lineno} of the chat template: {error.message}"
            ) from None

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
               tools: Sequence[Mapping[str, Any]] | None = None,
               documents: Sequence[Mapping[str, Any]] | None = None, **kwargs: Any) -> str:
        """The text of ``messages`` in the model's layout; with ``add_generation_prompt``,
        followed by the opening of the assistant's turn (its answer is what comes next).
        ``tools`` are JSON schemas; ``kwargs`` are the template's own switches (Qwen3's
        ``enable_thinking``, Llama's ``date_string``) and override special tokens of the same
        name. A template that refuses the messages (wrong role order, say) raises
        :class:`ChatTemplateError` with its reason."""
        if not messages:
            raise ChatTemplateError("no messages: a conversation needs at least one message")
        for name, items in (("tools", tools), ("documents", documents)):
            if items is not None and not all(isinstance(item, Mapping) for item in items):
                raise ChatTemplateError(f"each of {name} must be a JSON object")
        scope = {**self.special_tokens, **kwargs}
        try:
            return self._template.render(
                messages=_prepared(messages), tools=tools, documents=documents,
                add_generation_prompt=add_generation_prompt, **scope,
            )
        except _Refusal as refusal:
            raise ChatTemplateError(
                f"the chat template of {self.origin} refused the messages: {refusal}"
            ) from None
        except jinja2.exceptions.SecurityError as error:
            raise ChatTemplateError(
                f"the sandbox stopped the chat template of {self.origin}: {error} (templates run "
                "sandboxed: they may not reach Python's internals nor change their inputs)"
            ) from None
        except jinja2.TemplateError as error:
            raise ChatTemplateError(
                f"the chat template of {self.origin} failed on the messages: {error}"
            ) from None

    def instruction_prompt(self, instruction: str, input: str = "") -> str:
        """The prompt of one user message (the instruction, then its input if any)."""
        content = f"{instruction}\n\n{input}" if input else instruction
        return self.render([{"role": "user", "content": content}])

    def instruction_segments(self, instruction: str, input: str, output: str) -> list[Segment]:
        """The segments of an instruction record: the conversation of one user message (as
        :meth:`instruction_prompt` writes it) and the output as the assistant's answer."""
        content = f"{instruction}\n\n{input}" if input else instruction
        return self.segments([{"role": "user", "content": content},
                              {"role": "assistant", "content": output}])

    def segments(self, messages: Sequence[Message]) -> list[Segment]:
        """The rendering of a conversation that ends with an answer, to train on, cut into
        the answers (trained) and all else (not), as :meth:`PromptStyle.segments
        <scratchgpt.data.prompt_styles.PromptStyle.segments>` cuts its own.

        Where the template puts the answer of assistant message ``i`` is read off its
        renderings: ``P``, the messages before it with the generation prompt (what the model
        is given to answer), and ``F``, the messages up to it. The answer is what ``F`` adds to
        ``P``: the content and however the template closes the turn (its end-of-turn token, so
        that the model learns to stop). ``P`` and ``F`` must both begin the rendering of the
        whole conversation; a template that renders earlier turns differently once later ones
        follow (Qwen3's drops the reasoning of all but the last answer) cannot be cut so, and
        raises :class:`ChatTemplateError` with what differs and what to do."""
        check_messages(messages, ends_with_answer=True)
        whole = self.render(messages, add_generation_prompt=False)
        segments: list[Segment] = []
        done = 0  # the end of the last answer
        for index, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = self.render(messages[:index], add_generation_prompt=True)
            turn = self.render(messages[: index + 1], add_generation_prompt=False)
            self._check_start(prompt, whole, f"the prompt for message {index}")
            self._check_start(turn, whole, f"the conversation up to message {index}")
            if not done <= len(prompt) < len(turn):
                raise ChatTemplateError(
                    f"the chat template of {self.origin} writes nothing for the answer of "
                    f"message {index} after the prompt for it: there is no answer to learn; "
                    f"use a prompt style instead (--prompt-style {_STYLE_NAMES})"
                )
            if len(prompt) > done:
                segments.append(Segment(whole[done:len(prompt)], trained=False))
            segments.append(Segment(whole[len(prompt):len(turn)], trained=True))
            done = len(turn)
        if done < len(whole):
            segments.append(Segment(whole[done:], trained=False))
        return segments

    def _check_start(self, part: str, whole: str, what: str) -> None:
        """Refuse a rendering ``part`` that does not begin ``whole``, showing where they
        part."""
        if whole.startswith(part):
            return
        at = len(os.path.commonprefix([part, whole]))
        start = max(at - 20, 0)
        raise ChatTemplateError(
            f"the chat template of {self.origin} does not render {what} as the start of the "
            f"whole conversation: at character {at}, {what} reads {part[start:at + 30]!r} "
            f"where the whole conversation reads {whole[start:at + 30]!r}. The template "
            "renders earlier turns differently once later ones follow (Qwen3's, for one, drops "
            "the <think> block of all but the last answer), or its generation prompt is not "
            "how it begins an answer, so the answer's tokens cannot be found in the "
            "conversation it is trained in. Split the conversation into records that each end "
            "with one answer, or fine-tune in a prompt style instead (--prompt-style "
            f"{_STYLE_NAMES})"
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return read_json_object(path)
    except ValueError as error:
        raise ChatTemplateError(str(error)) from None


def _token_text(value: Any, path: Path, field: str) -> str:
    """A special token as tokenizer_config.json writes it: a string or ``{"content": ...}``."""
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    if isinstance(value, str):
        return value
    raise ChatTemplateError(
        f"{path}: field {field!r} is {value!r}; a special token is a string or an object "
        'with a "content" string'
    )


def read_special_tokens(model_dir: str | Path) -> dict[str, str]:
    """The named special tokens of ``tokenizer_config.json`` (``bos_token``, ``eos_token``
    ...; and those of an ``extra_special_tokens`` object, e.g. Gemma 3's ``image_token``),
    each as its text: the names transformers gives a template. Empty without the file."""
    path = Path(model_dir) / "tokenizer_config.json"
    if not path.is_file():
        return {}
    config = _read_json(path)
    named = {name: config.get(name) for name in SPECIAL_TOKEN_NAMES}
    if isinstance(config.get("extra_special_tokens"), Mapping):
        named.update(config["extra_special_tokens"])
    return {name: _token_text(value, path, name)
            for name, value in named.items() if value is not None}


def _templates_in(model_dir: Path) -> tuple[dict[str, str], str]:
    """Every chat template of the directory, by name, and where they were read from.

    As transformers: the ``.jinja`` files, when there are any, replace the config's field."""
    files = {"default": model_dir / "chat_template.jinja"}
    extra_dir = model_dir / "additional_chat_templates"
    if extra_dir.is_dir():
        files.update({path.stem: path for path in sorted(extra_dir.glob("*.jinja"))})
    found = {name: path.read_text(encoding="utf-8") for name, path in files.items()
             if path.is_file()}
    if found:
        return found, str(files["default"] if "default" in found else extra_dir)
    config_path = model_dir / "tokenizer_config.json"
    field = _read_json(config_path).get("chat_template") if config_path.is_file() else None
    if isinstance(field, str):
        return {"default": field}, str(config_path)
    if isinstance(field, list) and all(
        isinstance(item, Mapping) and isinstance(item.get("name"), str)
        and isinstance(item.get("template"), str) for item in field
    ):
        return {item["name"]: item["template"] for item in field}, str(config_path)
    if field is not None:
        raise ChatTemplateError(
            f"{config_path}: field 'chat_template' is neither a string nor a list of "
            '{"name": ..., "template": ...} objects'
        )
    raise ChatTemplateError(
        f"{model_dir} has no chat template (no chat_template.jinja, no 'chat_template' in "
        "tokenizer_config.json): is this a base model rather than an instruction-tuned one? "
        f"Use a prompt style instead ({_STYLE_NAMES})"
    )


def has_chat_template(model_dir: str | Path) -> bool:
    """Whether a directory holds a chat template for :func:`read_chat_template` to read."""
    model_dir = Path(model_dir)
    config = model_dir / "tokenizer_config.json"
    return ((model_dir / "chat_template.jinja").is_file()
            or (model_dir / "additional_chat_templates").is_dir()
            or (config.is_file() and "chat_template" in _read_json(config)))


def read_chat_template(model_dir: str | Path, name: str | None = None) -> ChatTemplate:
    """The chat template of a Hugging Face model directory, with its special tokens: the one
    called ``name`` where the directory has several, else the ``default`` one."""
    model_dir = Path(model_dir)
    templates, origin = _templates_in(model_dir)
    choice = name or "default"
    if choice not in templates:
        raise ChatTemplateError(
            f"{origin} has no chat template called {choice!r}; it has: "
            f"{', '.join(sorted(templates))}"
        )
    return ChatTemplate(templates[choice], read_special_tokens(model_dir), origin)


def copy_usage_files(source_dir: Path, target_dir: Path) -> list[Path]:
    """The :data:`USAGE_FILES` of ``source_dir`` that exist, copied as they are into
    ``target_dir`` (a directory read as ``source_dir`` is for its template and end-of-turn
    ids); the paths written."""
    copied = []
    for name in USAGE_FILES:
        source, target = source_dir / name, target_dir / name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copyfile(source, target)
        else:
            continue
        copied.append(target)
    return copied


def end_of_turn_ids(model_dir: str | Path, token_id: Callable[[str], int | None]) -> list[int]:
    """The ids that end the model's turn, for generation to stop at any of them: the
    ``eos_token_id`` of ``generation_config.json`` (an int or a list: Llama 3.x lists
    ``<|end_of_text|>``, ``<|eom_id|>`` and ``<|eot_id|>``), then the tokenizer's
    ``eos_token``, whose id ``token_id`` looks up (e.g. ``vocab.get``). In that order, without
    repeats; empty where the directory names none."""
    model_dir = Path(model_dir)
    ids: list[int] = []
    path = model_dir / "generation_config.json"
    value = _read_json(path).get("eos_token_id") if path.is_file() else None
    if value is not None:
        listed = value if isinstance(value, list) else [value]
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in listed):
            raise ChatTemplateError(
                f"{path}: field 'eos_token_id' is {value!r}; expected a token id or a list of ids"
            )
        ids += listed
    eos = read_special_tokens(model_dir).get("eos_token")
    if eos is not None:
        eos_id = token_id(eos)
        if eos_id is None:
            raise ChatTemplateError(
                f"{model_dir / 'tokenizer_config.json'}: the eos_token {eos!r} is not in the "
                "tokenizer's vocabulary"
            )
        ids.append(eos_id)
    return list(dict.fromkeys(ids))
