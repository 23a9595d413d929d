"""A package's names, imported from their modules only when first used (PEP 562).

``from scratchgpt.data import load_corpus`` should work, but importing ``scratchgpt.data``
should not import every module of it: some bring in PyTorch or numpy (seconds), and the
command line's ``--help`` reads settings from packages whose other modules it never runs.
A package lists where each of its names lives and hands that to :func:`lazy_exports`; the
module-level ``__getattr__`` it returns is what Python calls for a name the package does not
hold yet.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, where: Mapping[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose name ``NAME`` lives in its
    module ``where[NAME]``. Use: ``__getattr__, __dir__ = lazy_exports(__name__, _WHERE)``."""
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        namespace[name] = value  # the next lookup finds it without calling __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
