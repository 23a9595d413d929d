"""What every subcommand's parser shares."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence


def add_command(commands: argparse._SubParsersAction, name: str, help: str,
                description: str, examples: Sequence[str]) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` ends with example command lines, kept line by line."""
    return commands.add_parser(
        name, help=help, description=textwrap.fill(description, 78),
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
