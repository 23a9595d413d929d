"""What every subcommand's parser shares."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence

from scratchgpt.hub.gpt2 import TOKENIZER_SPECS

MODEL_SPEC_HELP = ("a run directory from `scratchgpt pretrain`, a downloaded model (gpt2-124M, "
                   "gpt2-355M, ...), or a Hugging Face or OpenAI GPT-2 directory")
TOKENIZER_SPEC_HELP = f"the tokenizer: {TOKENIZER_SPECS}"


def add_command(commands: argparse._SubParsersAction, name: str, help: str,
                description: str, examples: Sequence[str]) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` ends with example command lines, kept line by line."""
    return commands.add_parser(
        name, help=help, description=textwrap.fill(description, 78),
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
