"""Every subcommand's ``--help`` explains its options and ends with examples that work."""

from __future__ import annotations

import argparse
import shlex
import shutil
from pathlib import Path

import pytest

from scratchgpt.cli import build_parser, main

VIZ_TASKS = ["attention", "embeddings", "tokens", "run"]
EVALUATE_TASKS = ["classify", "judge", "mmlu", "perplexity", "review", "compare"]
COMMANDS = ["info", "tokenize", "train-tokenizer", "pretrain", "generate", "download", "export",
            "chat", "serve"]


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def examples(help_out: str, command: str) -> list[str]:
    """The lines of the help that are example command lines for ``command``."""
    lines = [line.strip() for line in help_out.splitlines()]
    return [line for line in lines if (line + " ").startswith(f"scratchgpt {command} ")]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """The subcommand parsers by name (argparse has no public way to reach them)."""
    parser = build_parser()
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_examples_that_parse(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    lines = examples(help_text(capsys, command), command)
    assert 1 <= len(lines) <= 3, lines
    for line in lines:  # each one is a command line this parser accepts, as written
        args = build_parser().parse_args(shlex.split(line, comments=True)[1:])
        assert args.command == command


def test_top_level_help_keeps_its_examples(capsys: pytest.CaptureFixture[str]) -> None:
    out = help_text(capsys)
    assert "scratchgpt info --preset gpt2-small" in out
    assert "scratchgpt download gpt2 --size 124M" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_argument_is_explained_and_shows_its_default(command: str) -> None:
    for action in subcommands()[command]._actions:
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"
        shows_default = action.default not in (None, False, argparse.SUPPRESS)
        if shows_default and action.option_strings:
            assert "default" in action.help, f"{command} {action.option_strings}"


@pytest.mark.parametrize(
    ("command", "option", "words"),
    [
        ("train-tokenizer", "--out", "where to write the tokenizer"),
        ("generate", "--prompt", "the text to continue"),
        ("generate", "--max-new-tokens", "(default: 50)"),
        ("export", "--format", "Hugging Face"),
        ("export", "--out", "the directory to write"),
        ("tokenize", "--encoding-errors", "replace"),
        ("train-tokenizer", "--encoding-errors", "replace"),
    ],
)
def test_named_options_have_help_text(
    capsys: pytest.CaptureFixture[str], command: str, option: str, words: str
) -> None:
    out = " ".join(help_text(capsys, command).split())  # undo argparse's line wrapping
    assert option in out and words in out


def test_the_tokenizer_examples_run_as_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, shared_assets: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(shared_assets / "corpora" / "the-verdict.txt", "book.txt")
    for command in ("info", "train-tokenizer", "tokenize"):
        line = examples(help_text(capsys, command), command)[0]
        assert main(shlex.split(line)[1:]) == 0, line
        capsys.readouterr()
    assert Path("tok.json").is_file() and Path("book.npy").is_file()


@pytest.mark.parametrize("argv", [["finetune", "classify"], ["finetune", "instruct"],
                                  ["finetune", "dpo"],
                                  *(["evaluate", task] for task in EVALUATE_TASKS),
                                  *(["viz", task] for task in VIZ_TASKS),
                                  ["classify"]])
def test_each_task_has_examples_that_parse_and_explains_every_flag(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    command = " ".join(argv)
    lines = examples(help_text(capsys, *argv), command)
    assert 1 <= len(lines) <= 3, lines
    for line in lines:
        args = build_parser().parse_args(shlex.split(line, comments=True)[1:])
        assert " ".join(shlex.split(line)[1:1 + len(argv)]) == command
        assert args.func is not None
    parser = subcommands()[argv[0]]
    if len(argv) == 2:
        (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[argv[1]]
    for action in parser._actions:
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"


def test_the_judge_is_the_books_unless_told() -> None:
    """llama3 in Ollama on this machine, as chapter 7 of the book judges."""
    args = build_parser().parse_args(["evaluate", "judge", "--responses", "r.json"])
    assert (args.judge_url, args.judge_model) == ("http://localhost:11434", "llama3")
