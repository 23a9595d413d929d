"""The ``scratchgpt`` command: one verb per stage. It parses arguments and calls the library.

    scratchgpt info --preset gpt2-small          how big is a model?
    scratchgpt train-tokenizer FILE --vocab-size N --out tok.json
    scratchgpt tokenize --tokenizer SPEC FILE    text -> token ids
    scratchgpt pretrain                          train a small GPT on the built-in corpus
    scratchgpt generate --model RUN_DIR --prompt "The"
    scratchgpt download gpt2 --size 124M         fetch OpenAI's GPT-2 (Hugging Face's copy)
    scratchgpt generate --model gpt2-124M --prompt "Every effort moves you"
    scratchgpt export RUN_DIR --format hf --out DIR   for transformers and the hub
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from scratchgpt import __version__
from scratchgpt.pretraining import DataConfig, ModelChoice
from scratchgpt.training.checkpoints import CheckpointError
from scratchgpt.training.config import TrainConfig

EXAMPLES = __doc__.split("\n\n", 1)[1]
MODEL_SPEC_HELP = ("a run directory from `scratchgpt pretrain`, a downloaded model (gpt2-124M, "
                   "gpt2-355M, ...), or a Hugging Face or OpenAI GPT-2 directory")


def _info(args: argparse.Namespace) -> int:
    from scratchgpt.config import get_preset
    from scratchgpt.model.summary import describe, explain_parameters

    config = get_preset(args.preset)
    if args.vocab_size:
        config = config.replace(vocab_size=args.vocab_size)
    facts = describe(config)
    print(facts["parameters"])
    print(f"preset: {args.preset}")
    for name, value in config.to_dict().items():
        print(f"{name}: {value}")
    for line in explain_parameters(facts):
        print(line)
    print(f"size fp32: {facts['fp32_bytes'] / 2**20:,.1f} MiB")
    print(f"size bf16: {facts['bf16_bytes'] / 2**20:,.1f} MiB")
    print(f"training FLOPs per token: {facts['train_flops_per_token']:,}")
    return 0


def _tokenize(args: argparse.Namespace) -> int:
    import numpy as np

    from scratchgpt.data import read_text_file
    from scratchgpt.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    text = read_text_file(Path(args.file), args.encoding_errors)
    ids = tokenizer.encode(text, allowed_special="all" if args.allow_special else ())
    if args.ids_out:
        np.save(args.ids_out, np.asarray(ids, dtype=np.int64))
    print(len(ids))
    return 0


def _train_tokenizer(args: argparse.Namespace) -> int:
    from scratchgpt.data import read_text_file
    from scratchgpt.tokenizers import train_bpe

    texts = [read_text_file(Path(f), args.encoding_errors) for f in args.files]
    tokenizer = train_bpe(texts, args.vocab_size, special_tokens=args.special)
    tokenizer.save(args.out)
    print(f"trained a BPE vocabulary of {tokenizer.vocab_size} tokens; saved to {args.out}",
          file=sys.stderr)
    return 0


def _add_encoding_errors_flag(parser: argparse.ArgumentParser) -> None:
    """``--encoding-errors``, which the UTF-8 error of ``read_text_file`` tells the user to pass."""
    parser.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict",
                        help="strict: stop at bytes that are not UTF-8 (default); replace: "
                             "read them as U+FFFD")


def _add_config_flags(parser: argparse.ArgumentParser, section: str, cls: type) -> None:
    """One flag per field of the dataclass ``cls`` (``--batch-size`` for ``batch_size``).

    Defaults are None so that only flags given on the command line override the config file.
    """
    group = parser.add_argument_group(f"[{section}] settings (also in --config FILE.toml)")
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "")
        if field.default is not None:
            help_text += f" (default: {field.default})"
        kind = field.type if isinstance(field.type, str) else field.type.__name__
        dest = f"{section}.{field.name}"
        if "bool" in kind:
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        else:
            convert = int if "int" in kind else float if "float" in kind else str
            group.add_argument(flag, dest=dest, type=convert, default=None,
                               metavar=field.name.upper(), help=help_text)


def _pretrain(args: argparse.Namespace) -> int:
    from scratchgpt.pretraining import default_run_dir, load_config, pretrain

    overrides: dict[str, dict[str, object]] = {}
    for key, value in vars(args).items():
        if "." in key and value is not None:
            section, name = key.split(".", 1)
            overrides.setdefault(section, {})[name] = value
    run_dir = Path(args.out) if args.out else default_run_dir()
    config_file = args.config
    if args.resume and config_file is None:
        config_file = run_dir / "config.toml"
    config = load_config(config_file, overrides)
    result = pretrain(config, run_dir, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from the first process
        print(f"run directory: {run_dir}", file=sys.stderr)
    return 130 if result.interrupted else 0


def _generate(args: argparse.Namespace) -> int:
    import time

    from scratchgpt.generation import generate_text
    from scratchgpt.hub.gpt2 import load_gpt2

    start = time.perf_counter()
    model, tokenizer = load_gpt2(args.model)
    print(f"loaded {args.model} ({model.num_parameters():,} parameters) in "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    pieces = generate_text(  # checks every argument before the prompt is printed
        model, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
        stop=args.stop or (),
    )
    sys.stdout.write(args.prompt)
    sys.stdout.flush()
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _download(args: argparse.Namespace) -> int:
    from scratchgpt.hub.datasets import download_dataset
    from scratchgpt.hub.download import download_gpt2

    if args.name == "gpt2":
        directory = download_gpt2(args.size or "124M", args.format or "hf", args.dir,
                                  base_url=args.base_url, source_dir=args.source_dir)
    elif args.size or args.format:
        raise ValueError(f"--size and --format choose a GPT-2; {args.name} has neither")
    else:
        directory = download_dataset(args.name, args.dir, base_url=args.base_url,
                                     source_dir=args.source_dir)
    print(directory)
    return 0


def _export(args: argparse.Namespace) -> int:
    from scratchgpt.hub.export import export_hf
    from scratchgpt.hub.gpt2 import load_gpt2

    model, tokenizer = load_gpt2(args.model)
    for path in export_hf(model, tokenizer, args.out):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _add_command(commands: argparse._SubParsersAction, name: str, help: str,
                 description: str, examples: Sequence[str]) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` ends with example command lines, kept line by line."""
    return commands.add_parser(
        name, help=help, description=textwrap.fill(description, 78),
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scratchgpt",
        description="Build a GPT-style language model from scratch.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"scratchgpt {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = _add_command(
        commands, "info", help="parameter count and size of a model preset",
        description="Print a preset's parameter count (first line, the bare number), its "
                    "settings, its size in memory and its training FLOPs per token.",
        examples=["scratchgpt info --preset gpt2-small",
                  "scratchgpt info --preset micro --vocab-size 2048"],
    )
    info.add_argument("--preset", default="gpt2-small",
                      help="gpt2-small|medium|large|xl, or the CPU presets nano, micro, mini "
                           "(default: gpt2-small)")
    info.add_argument("--vocab-size", type=int,
                      help="use this vocabulary size instead, such as your tokenizer's "
                           "(default: the preset's)")
    info.set_defaults(func=_info)

    tok = _add_command(
        commands, "tokenize", help="turn a text file into token ids",
        description="Encode FILE (UTF-8) and print the number of tokens.",
        examples=["scratchgpt tokenize --tokenizer tok.json book.txt --ids-out book.npy",
                  "scratchgpt tokenize --tokenizer ~/.cache/scratchgpt/models/gpt2-124M-hf "
                  "book.txt"],
    )
    tok.add_argument("--tokenizer", required=True, metavar="SPEC",
                     help="a directory with encoder.json+vocab.bpe or vocab.json+merges.txt, "
                          "a tiktoken rank file, or a file saved by train-tokenizer")
    tok.add_argument("file", metavar="FILE", help="the text to encode, in UTF-8")
    _add_encoding_errors_flag(tok)
    tok.add_argument("--ids-out", metavar="OUT.npy", help="write the ids as a 1-D numpy array")
    tok.add_argument("--allow-special", action="store_true",
                     help="encode special-token text such as <|endoftext|> as its special id "
                          "(by default such text is an error)")
    tok.set_defaults(func=_tokenize)

    train_tok = _add_command(
        commands, "train-tokenizer", help="train a byte-level BPE vocabulary on text files",
        description="Learn byte-pair merges from FILEs with GPT-2's pre-tokenization.",
        examples=["scratchgpt train-tokenizer book.txt --vocab-size 512 --out tok.json",
                  "scratchgpt train-tokenizer a.txt b.txt --vocab-size 4096 --out tok.json "
                  "--encoding-errors replace"],
    )
    train_tok.add_argument("files", nargs="+", metavar="FILE",
                           help="UTF-8 text files to learn from")
    train_tok.add_argument("--vocab-size", type=int, required=True,
                           help="size of the vocabulary: 256 bytes + merges + special tokens")
    train_tok.add_argument("--out", required=True, metavar="TOKENIZER_FILE",
                           help="where to write the tokenizer, as JSON (any name; "
                                "`tokenize --tokenizer` and `pretrain --tokenizer` read it)")
    _add_encoding_errors_flag(train_tok)
    train_tok.add_argument("--special", nargs="*", default=["<|endoftext|>"], metavar="TOKEN",
                           help="special tokens (default: <|endoftext|>)")
    train_tok.set_defaults(func=_train_tokenizer)

    pre = _add_command(
        commands, "pretrain",
        help="train a GPT from scratch (no arguments: a small one, built-in corpus)",
        description="Pretrain a GPT on text. With no arguments it trains the `micro` preset on "
                    "the English Python documentation that ships with CPython, in about five "
                    "minutes on two CPU cores, and leaves a run directory under runs/.",
        examples=["scratchgpt pretrain",
                  "scratchgpt pretrain --data book.txt --preset nano --max-steps 500 "
                  "--out runs/book",
                  "scratchgpt pretrain --out runs/book --resume"],
    )
    pre.add_argument("--config", metavar="FILE.toml", help="settings file (flags override it)")
    pre.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/pretrain-TIME)")
    pre.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its latest checkpoint")
    _add_config_flags(pre, "data", DataConfig)
    _add_config_flags(pre, "model", ModelChoice)
    _add_config_flags(pre, "train", TrainConfig)
    pre.set_defaults(func=_pretrain)

    gen = _add_command(
        commands, "generate", help="continue a prompt with a trained or downloaded model",
        description="Stream a continuation of --prompt to stdout (the prompt, then the new "
                    "text, nothing else). A prompt longer than the model's context is cropped "
                    "from the left.",
        examples=["scratchgpt generate --model runs/book --prompt \"The\"",
                  "scratchgpt generate --model gpt2-124M --prompt \"Every effort moves you\" "
                  "--temperature 0.8 --top-k 40 --seed 1"],
    )
    gen.add_argument("--model", required=True, metavar="SPEC", help=MODEL_SPEC_HELP)
    gen.add_argument("--prompt", required=True, metavar="TEXT",
                     help="the text to continue (printed first)")
    gen.add_argument("--max-new-tokens", type=int, default=50, metavar="N",
                     help="stop after this many new tokens (default: 50), or earlier at "
                          "<|endoftext|> or a --stop text")
    gen.add_argument("--temperature", type=float, default=0.0,
                     help="0 = greedy (default); 1 = the model's own distribution; higher = "
                          "more random")
    gen.add_argument("--top-k", type=int, metavar="K",
                     help="sample among the K most likely tokens (default: all; needs "
                          "--temperature above 0)")
    gen.add_argument("--top-p", type=float, metavar="P",
                     help="sample among the most likely tokens holding probability P, "
                          "in (0, 1] (default: 1, all; needs --temperature above 0)")
    gen.add_argument("--seed", type=int,
                     help="makes sampling reproducible (default: a different sample each run)")
    gen.add_argument("--stop", action="append", metavar="TEXT",
                     help="stop before this text (may be repeated)")
    gen.set_defaults(func=_generate)

    down = _add_command(
        commands, "download", help="fetch OpenAI's pretrained GPT-2 weights, or a dataset",
        description="Download GPT-2 or a dataset into the cache ($SCRATCHGPT_CACHE/models/"
                    "gpt2-SIZE-FORMAT or $SCRATCHGPT_CACHE/datasets/NAME, default "
                    "~/.cache/scratchgpt) or --dir, resuming interrupted files and verifying "
                    "each one's size, checksums and content. Prints the directory.",
        examples=["scratchgpt download gpt2 --size 124M",
                  "scratchgpt download gpt2 --size 355M --format openai --dir gpt2-355M",
                  "scratchgpt download sms-spam"],
    )
    down.add_argument("name", choices=["gpt2", "sms-spam", "spamassassin"], metavar="NAME",
                      help="gpt2 (OpenAI's GPT-2), sms-spam (UCI's SMS Spam Collection) or "
                           "spamassassin (the SpamAssassin public mail corpus)")
    down.add_argument("--size", choices=["124M", "355M", "774M", "1558M"],
                      help="gpt2's parameters: 124M (gpt2, the default), 355M (medium), 774M "
                           "(large), 1558M (xl)")
    down.add_argument("--format", choices=["hf", "openai"],
                      help="gpt2's files: hf, Hugging Face's safetensors copy (the default); "
                           "openai, OpenAI's original TensorFlow checkpoint")
    down.add_argument("--dir", metavar="DIR", help="put the files here instead of the cache")
    down.add_argument("--base-url", metavar="URL",
                      help="replace the scheme and host of every URL, keeping its path, for a "
                           "mirror (also: environment variable SCRATCHGPT_BASE_URL)")
    down.add_argument("--from", dest="source_dir", metavar="DIR",
                      help="copy the files from this local directory instead of downloading")
    down.set_defaults(func=_download)

    export = _add_command(
        commands, "export", help="write a model in another format (Hugging Face's GPT-2)",
        description="Write MODEL as a directory that transformers' "
                    "GPT2LMHeadModel.from_pretrained(DIR) loads with identical logits.",
        examples=["scratchgpt export runs/book --format hf --out book-hf"],
    )
    export.add_argument("model", metavar="MODEL", help=MODEL_SPEC_HELP)
    export.add_argument("--format", choices=["hf"], default="hf",
                        help="hf: Hugging Face's GPT-2 layout, config.json + model.safetensors "
                             "+ vocab.json + merges.txt (default, and the only one so far)")
    export.add_argument("--out", required=True, metavar="DIR",
                        help="the directory to write (created if missing)")
    export.set_defaults(func=_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader went away (`scratchgpt ... | head`): not an error
        # Point stdout at /dev/null so that flushing it at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError, KeyError, CheckpointError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"scratchgpt {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
