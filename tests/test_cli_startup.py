"""Help and argument errors answer without importing PyTorch (nor numpy, nor matplotlib).

Every help the command has (``scratchgpt --help``, each verb's and each task's) and the usual
argument errors run in one fresh Python process, one after another; after each, the process
reports which of the heavy packages it had imported by then, so the case that first imports
one is the one that fails. A second check runs the real entry point
(``python -m scratchgpt.cli``) under ``-X importtime``. No wall-clock assertion here:
``bench/bench_startup.py`` measures the time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from functools import cache
from typing import Any

import pytest

from scratchgpt.cli import build_parser

HEAVY = ("torch", "numpy", "matplotlib")

# In a fresh process: imports scratchgpt.cli, then runs main(argv) for each argv of its first
# argument (JSON); prints which packages of the second argument (JSON) were imported after the
# import and after each case, with each case's exit code and output.
RUNNER = """
import contextlib, io, json, sys
heavy = json.loads(sys.argv[2])
from scratchgpt.cli import main
imported = [name for name in heavy if name in sys.modules]
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
    results.append({"code": code, "out": out.getvalue(), "err": err.getvalue(),
                    "heavy": [name for name in heavy if name in sys.modules]})
print(json.dumps({"import": imported, "cases": results}))
"""


def command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
                  ) -> list[tuple[str, ...]]:
    """Every command and task of ``parser``: ``("pretrain",)``, ``("finetune",)``,
    ``("finetune", "classify")``, ... (argparse has no public way to reach them)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [(*path, name), *command_paths(sub, (*path, name))]
    return found


COMMANDS = command_paths(build_parser())

# (argv, exit code, text that stdout or stderr must hold)
ERRORS = [
    (["pretrain", "--lr", "notanumber"], 2, "argument --lr: invalid float value: 'notanumber'"),
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    (["serve"], 2, "the following arguments are required: --model"),
    (["finetune", "classify", "--epochs", "many"], 2,
     "argument --epochs: invalid float value: 'many'"),
    (["evaluate"], 2, "the following arguments are required: TASK"),
    ([], 2, "the following arguments are required: COMMAND"),
    (["--version"], 0, "scratchgpt "),
]
CASES = [[*path, "--help"] for path in [(), *COMMANDS]] + [argv for argv, _, _ in ERRORS]


@cache
def run_cases() -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The heavy packages ``import scratchgpt.cli`` brought; and every case of ``CASES``, run
    one after another in the same fresh process, by its command line, with those it brought
    (``new_heavy``)."""
    process = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(CASES), json.dumps(HEAVY)],
                             capture_output=True, text=True, timeout=300, check=True)
    ran = json.loads(process.stdout)
    before = ran["import"]
    by_argv = {}
    for argv, result in zip(CASES, ran["cases"], strict=True):
        result["new_heavy"] = [name for name in result["heavy"] if name not in before]
        before = result["heavy"]
        by_argv[" ".join(argv)] = result
    return ran["import"], by_argv


def results() -> dict[str, dict[str, Any]]:
    return run_cases()[1]


def test_importing_the_cli_imports_no_heavy_package() -> None:
    assert run_cases()[0] == []


def test_every_command_and_task_is_covered() -> None:
    assert {("pretrain",), ("serve",), ("finetune", "classify"), ("finetune", "instruct"),
            ("evaluate", "judge"), ("viz", "attention")} <= set(COMMANDS)
    assert len(COMMANDS) >= 25


@pytest.mark.parametrize("path", [(), *COMMANDS], ids=lambda p: " ".join(p) or "top")
def test_help_answers_without_heavy_imports(path: tuple[str, ...]) -> None:
    result = results()[" ".join([*path, "--help"])]
    assert result["code"] == 0, result["err"]
    out = result["out"]
    assert out.startswith(f"usage: {' '.join(('scratchgpt', *path))}"), out[:200]
    assert "-h, --help" in out
    assert not result["new_heavy"], f"`scratchgpt {' '.join(path)} --help` imported " \
                                    f"{', '.join(result['new_heavy'])}"


def test_top_level_help_lists_every_command() -> None:
    out = results()["--help"]["out"]
    for (name,) in (path for path in COMMANDS if len(path) == 1):
        assert f"\n    {name}" in out, name
    assert "scratchgpt info --preset gpt2-small" in out  # the examples stay


def test_settings_help_lists_every_knob_with_its_default() -> None:
    """The settings dataclasses moved to modules without PyTorch; the help shows them all."""
    pretrain = " ".join(results()["pretrain --help"]["out"].split())
    for words in ("[train] settings", "--lr LR peak learning rate (default: 0.001)",
                  "--preset PRESET", "--tokenizer TOKENIZER", "--optimizer OPTIMIZER"):
        assert words in pretrain, words
    classify = " ".join(results()["finetune classify --help"]["out"].split())
    assert "--lr LR peak learning rate (default: 5e-05)" in classify  # the book's
    assert "--balance" in classify and "--train TRAIN" in classify
    instruct = " ".join(results()["finetune instruct --help"]["out"].split())
    assert "--prompt-style PROMPT_STYLE" in instruct
    assert "--eval-batches EVAL_BATCHES batches per loss estimate (default: 5)" in instruct


@pytest.mark.parametrize(("argv", "code", "text"), ERRORS, ids=lambda v: str(v))
def test_argument_errors_answer_without_heavy_imports(argv: list[str], code: int,
                                                      text: str) -> None:
    result = results()[" ".join(argv)]
    assert result["code"] == code
    if code == 2:
        assert result["err"].startswith("usage: scratchgpt"), result["err"]
    assert text in result["out"] + result["err"]
    assert not result["new_heavy"], f"`scratchgpt {' '.join(argv)}` imported " \
                                    f"{', '.join(result['new_heavy'])}"


@pytest.mark.parametrize("argv", [["--help"], ["pretrain", "--lr", "notanumber"]])
def test_the_entry_point_imports_no_pytorch(argv: list[str]) -> None:
    """The real entry point, as a shell runs it; ``-X importtime`` lists every import."""
    process = subprocess.run([sys.executable, "-X", "importtime", "-m", "scratchgpt.cli", *argv],
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == (0 if argv == ["--help"] else 2)
    imported = {line.rsplit("|", 1)[1].strip() for line in process.stderr.splitlines()
                if line.startswith("import time:")}
    assert "scratchgpt.cli" in imported  # the listing is there
    assert not {name.split(".")[0] for name in imported} & set(HEAVY)
