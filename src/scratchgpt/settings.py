"""Settings: dataclass fields that carry their help text and the values they accept.

Every knob of a run (``ModelConfig``, ``TrainConfig``, ``DataConfig``, ...) is declared once,
with :func:`knob`: its default, the sentence ``--help`` shows, and its valid range. The type
comes from the field's annotation (``int``, ``float | None``, ``Literal["learned", "rope"]``).
:func:`check_settings`, called from each dataclass's ``__post_init__``, checks every field in
this one place, so a setting is checked however it arrives: a flag, a TOML file, Python.

:func:`build_settings` makes a dataclass from a table of raw values and turns any problem into
an error that says where the value came from (``--lr`` or ``run.toml [train] lr``), and
:func:`load_sections` reads a whole configuration: defaults, a TOML file, then flags.
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from scratchgpt.config_files import load_toml

T = TypeVar("T")
S = TypeVar("S", bound="Sections")


class SettingError(ValueError):
    """A setting with a value it does not accept; ``field`` names it."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name
        self.problem = problem


@dataclass(frozen=True)
class Between:
    """A finite number between ``low`` and ``high`` (either may be open, or absent)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def problem(self, value: float) -> str | None:
        ok = math.isfinite(value)
        if self.low is not None:
            ok = ok and (value > self.low if self.low_open else value >= self.low)
        if self.high is not None:
            ok = ok and (value < self.high if self.high_open else value <= self.high)
        return None if ok else f"must be {self}, got {value}"

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return (f"in {'(' if self.low_open else '['}{self.low:g}, "
                f"{self.high:g}{')' if self.high_open else ']'}")


@dataclass(frozen=True)
class OneOf:
    """One of a few names."""

    choices: tuple[str, ...]

    def problem(self, value: str) -> str | None:
        if value in self.choices:
            return None
        return f"must be one of {', '.join(self.choices)}, got {value!r}"


@dataclass(frozen=True)
class Matches:
    """Text matching a regular expression, described for people by ``meaning``."""

    pattern: str
    meaning: str

    def problem(self, value: str) -> str | None:
        if re.fullmatch(self.pattern, value):
            return None
        return f"must be {self.meaning}, got {value!r}"


@dataclass(frozen=True)
class Parses:
    """A value that ``parse`` accepts; the ``ValueError`` it raises says what is wrong."""

    parse: Callable[[Any], object]

    def problem(self, value: Any) -> str | None:
        try:
            self.parse(value)
        except ValueError as err:
            return str(err)
        return None


POSITIVE = Between(0, low_open=True)
NON_NEGATIVE = Between(0)
FRACTION = Between(0, 1, low_open=True, high_open=True)  # strictly between 0 and 1
DECAY = Between(0, 1, high_open=True)  # a moving-average factor, or a dropout probability

Check = Between | OneOf | Matches | Parses


class Sections:
    """A whole configuration: one settings dataclass per field, one TOML table each."""

    @classmethod
    def load(cls: type[S], path: str | Path | None, overrides: Mapping[str, Mapping[str, Any]],
             ignore: Collection[str] = (),
             defaults: Mapping[str, Mapping[str, Any]] | None = None) -> S:
        """The configuration from defaults, a TOML file and flags (:func:`load_sections`),
        one table per field, each read as the field's type."""
        sections = {f.name: _types(cls)[f.name] for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**load_sections(sections, path, overrides, ignore, defaults))

    def to_tables(self) -> dict[str, dict[str, Any]]:
        """``{table: {setting: value}}``, as ``config.toml`` holds it."""
        return {f.name: asdict(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


def knob(default: Any, help: str, valid: Check | None = None) -> Any:
    """A settings field: its default, its ``--help`` text and the values it accepts."""
    return field(default=default, metadata={"help": help, "valid": valid})


# -- checking ------------------------------------------------------------------------------
@cache
def _types(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _kind(annotation: Any) -> tuple[Any, bool]:
    """The annotation without ``| None``, and whether None is allowed."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0], len(args) < len(get_args(annotation))
    return annotation, False


_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _coerce(value: Any, kind: Any) -> Any:
    """``value`` as ``kind``, or raise ``TypeError`` saying what was expected."""
    if get_origin(kind) is Literal:
        if value not in get_args(kind):
            raise TypeError(f"must be one of {', '.join(map(str, get_args(kind)))}, got {value!r}")
        return value
    fits = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[kind]
    if not fits:
        raise TypeError(f"expected {_NAMES[kind]}, got {value!r} ({_describe(value)})")
    return float(value) if kind is float else value


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        return "text"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def check_settings(settings: Any) -> None:
    """Check each field of the dataclass instance ``settings`` against its annotation and its
    knob's valid range (ints given for floats become floats); raise :class:`SettingError`."""
    hints = _types(type(settings))
    for f in fields(settings):
        value = getattr(settings, f.name)
        kind, optional = _kind(hints[f.name])
        if value is None:
            if optional:
                continue
            raise SettingError(f.name, f"a value is required ({_NAMES.get(kind, kind)})")
        try:
            value = _coerce(value, kind)
        except TypeError as err:
            raise SettingError(f.name, str(err)) from None
        object.__setattr__(settings, f.name, value)  # also for frozen dataclasses
        valid = f.metadata.get("valid")
        problem = valid.problem(value) if valid is not None else None
        if problem:
            raise SettingError(f.name, problem)


def build_settings(cls: type[T], table: Any, where: str,
                   labels: Mapping[str, str] | None = None) -> T:
    """``cls(**table)``, checked: ``where`` names the table (``run.toml [train]``) for keys
    ``cls`` does not know, and ``labels`` may name where a key's value came from (``--lr``);
    other keys are named ``where key``."""
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table of settings, got {table!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
        )
    try:
        return cls(**table)
    except SettingError as err:
        label = (labels or {}).get(err.field) or (f"{where} {err.field}" if err.field in table
                                                  else err.field)
        raise ValueError(f"{label}: {err.problem}") from None


def flag_name(field_name: str) -> str:
    """The command-line flag of a settings field: ``--batch-size`` for ``batch_size``."""
    return "--" + field_name.replace("_", "-")



def load_sections(sections: Mapping[str, type], path: str | Path | None,
                  overrides: Mapping[str, Mapping[str, Any]],
                  ignore: Collection[str] = (),
                  defaults: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """One settings object per ``[section]``: the classes' defaults, then ``defaults`` (a
    command's own, such as fine-tuning's learning rate), then the TOML file at ``path`` (if
    any), then ``overrides`` (the command line's flags, named as flags in errors). Tables in
    ``ignore`` (what a run directory's config.toml adds about the model) are skipped."""
    tables: dict[str, Any] = load_toml(path) if path else {}
    for name, values in (defaults or {}).items():
        if isinstance(tables.get(name, {}), dict):
            tables[name] = {**values, **tables.get(name, {})}
    source = str(path or "command line")
    unknown = sorted(set(tables) - {*sections, *ignore})
    if unknown:
        raise ValueError(f"{source}: unknown table(s) [{'], ['.join(unknown)}]; expected "
                         + ", ".join(f"[{name}]" for name in sections))
    built = {}
    for name, kind in sections.items():
        table = tables.get(name, {})
        flags = overrides.get(name, {})
        if isinstance(table, dict):
            table = {**table, **flags}
        built[name] = build_settings(kind, table, f"{source} [{name}]",
                                     {key: flag_name(key) for key in flags})
    return built
