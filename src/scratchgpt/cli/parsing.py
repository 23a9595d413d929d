"""What every subcommand's parser shares."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence

from scratchgpt.hub.names import TOKENIZER_SPECS

MODEL_SPEC_HELP = ("a run directory from `scratchgpt pretrain`, a downloaded model (gpt2-124M, "
                   "gpt2-355M, ..., or ORG/NAME), a Hugging Face or OpenAI GPT-2 directory, or "
                   "a Hugging Face Llama 3, Qwen3 or Gemma 3 directory")
DTYPES = ("auto", "fp32", "bf16", "fp16")  # scratchgpt.hub.hf_checkpoint.DTYPE_CHOICES
TOKENIZER_SPEC_HELP = f"the tokenizer: {TOKENIZER_SPECS}"


def add_dtype_flag(parser: argparse.ArgumentParser) -> None:
    """``--dtype``: what a Hugging Face Llama 3, Qwen3 or Gemma 3 directory's weights are cast
    to as they load (GPT-2 and runs load in float32)."""
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="the weights' dtype for a Llama 3, Qwen3 or Gemma 3 directory "
                             "(default: auto: bf16 on a GPU that has it, else fp32; a CPU "
                             "computes bf16 and fp16 far slower)")


def add_command(commands: argparse._SubParsersAction, name: str, help: str,
                description: str, examples: Sequence[str]) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` ends with example command lines, kept line by line."""
    return commands.add_parser(
        name, help=help, description=textwrap.fill(description, 78),
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_encoding_errors_flag(parser: argparse.ArgumentParser) -> None:
    """``--encoding-errors``, which the UTF-8 error of ``read_text_file`` tells the user to pass."""
    parser.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict",
                        help="strict: stop at bytes that are not UTF-8 (default); replace: "
                             "read them as U+FFFD")


def add_allow_special_flag(parser: argparse.ArgumentParser) -> None:
    """``--allow-special``: read ``<|endoftext|>`` in a text as the special token."""
    parser.add_argument("--allow-special", action="store_true",
                        help="encode special-token text such as <|endoftext|> as its special id "
                             "(by default such text is an error)")
