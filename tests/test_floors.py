"""The package's floors (see ``scratchgpt/__init__.py``): no import runs upward.

Every ``import`` of every module is read, those inside functions too, so a lazy import
cannot hide a dependency that points the wrong way.
"""

from __future__ import annotations

import ast
from pathlib import Path

import scratchgpt

PACKAGE = Path(scratchgpt.__file__).parent

# Each top-level module or subpackage of scratchgpt, and its floor (higher: built on lower).
FLOORS: dict[str, int] = {
    "__init__": 1, "lazy_exports": 1, "settings": 1, "config_files": 1, "config": 1, "progress": 1,
    "tokenizers": 2, "model": 2, "data": 2,
    "generation": 3, "plots": 3,
    "training": 4, "run_dir": 4,
    "hub": 5,
    "pretraining": 6, "pretraining_config": 6, "finetune": 6, "classify": 6, "chat": 6,
    "serving": 6, "evaluation": 6, "viz": 6,
    "cli": 7,
}


def unit(module: str) -> str:
    """``scratchgpt.model.attention`` -> ``model``; ``scratchgpt`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, module) for every scratchgpt module that ``source``, a module of ``package``,
    imports; relative imports resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            found.append((node.lineno, module))
    return [(line, module) for line, module in found
            if module == "scratchgpt" or module.startswith("scratchgpt.")]


def test_every_module_has_a_floor() -> None:
    units = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir()
             if (path.suffix == ".py" or (path / "__init__.py").exists())}
    assert units == set(FLOORS), "give new modules a floor in FLOORS (and the package docstring)"


def test_no_import_runs_upward() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        here = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        package = ".".join(("scratchgpt", *rel.parent.parts))
        for line, module in imported_modules(path.read_text(encoding="utf-8"), package):
            there = unit(module)
            if FLOORS[there] > FLOORS[here]:
                upward.append(f"{rel}:{line} ({here}, floor {FLOORS[here]}) imports {module} "
                              f"(floor {FLOORS[there]})")
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_the_reader_finds_every_import() -> None:
    """Imports at any depth, relative ones resolved, other packages left out."""
    source = ("import os\nfrom scratchgpt.cli import main\n\n\ndef f():\n"
              "    from ..training import trainer\n    from . import layers\n"
              "    import scratchgpt.hub.gpt2\n")
    found = imported_modules(source, "scratchgpt.model")
    assert found == [(2, "scratchgpt.cli"), (6, "scratchgpt.training"),
                     (7, "scratchgpt.model"), (8, "scratchgpt.hub.gpt2")]
    assert [unit(module) for _, module in found] == ["cli", "training", "model", "hub"]
