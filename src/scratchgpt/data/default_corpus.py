"""The built-in corpus: English documentation that ships inside every CPython.

``scratchgpt pretrain`` with no ``--data`` trains on text that is already on any machine with
Python, so it needs no download and copies nobody's text into this repository:

* the language reference topics behind ``help("assert")`` and friends (``pydoc_data.topics``),
* the docstrings of the standard library's top-level modules, read with :mod:`ast` from their
  source files (nothing is imported, so no module's import-time side effects run).

About 1.4 million characters on CPython 3.11 (the exact text follows the Python version). Both
are part of Python's documentation, under the Python Software Foundation License.
"""

from __future__ import annotations

import ast
import sysconfig
from functools import cache
from pathlib import Path
from pydoc_data.topics import topics

DEFAULT_CORPUS_NAME = "cpython-docs"


def _docstrings(source: Path) -> list[str]:
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return [doc for node in ast.walk(tree) if isinstance(node, kinds)
            if (doc := ast.get_docstring(node))]


@cache
def default_documents() -> tuple[str, ...]:
    """The built-in corpus as documents: one per reference topic, one per stdlib module.

    Read once per process: parsing the standard library takes a few seconds.
    """
    documents = [topics[name] for name in sorted(topics)]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for source in sorted(stdlib.glob("*.py")):
        docs = _docstrings(source)
        if docs:
            documents.append("\n\n".join(docs))
    return tuple(documents)
