"""The ``scratchgpt`` command: one verb per stage. It parses arguments and calls the library.

    scratchgpt info --preset gpt2-small          how big is a model?
    scratchgpt train-tokenizer FILE --vocab-size N --out tok.json
    scratchgpt tokenize --tokenizer SPEC FILE    text -> token ids
    scratchgpt pretrain                          train a small GPT on the built-in corpus
    scratchgpt generate --model RUN_DIR --prompt "The"
    scratchgpt download gpt2 --size 124M         fetch OpenAI's GPT-2 (Hugging Face's copy)
    scratchgpt generate --model gpt2-124M --prompt "Every effort moves you"
    scratchgpt export RUN_DIR --format hf --out DIR   for transformers and the hub
    scratchgpt download sms-spam                 the SMS Spam Collection
    scratchgpt finetune classify --data sms-spam --model gpt2-124M --out runs/spam
    scratchgpt classify --model runs/spam "WINNER! Claim your prize now"
    scratchgpt evaluate classify --model runs/spam --data messages.csv
    scratchgpt download instructions             the book's 1,100 instruction/response pairs
    scratchgpt finetune instruct --data instructions --model gpt2-124M --out runs/assistant
    scratchgpt download preferences              the same answered two ways, one preferred
    scratchgpt finetune dpo --data preferences --model runs/assistant --out runs/polite
    scratchgpt chat --model runs/assistant
    scratchgpt serve --model runs/assistant      OpenAI's (and Ollama's) API and a web page
    scratchgpt evaluate perplexity --model runs/first --data book.txt
    scratchgpt viz attention --model runs/first --text "The list" --out attention.png
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from scratchgpt import __version__
from scratchgpt.cli.evaluate import add_evaluate
from scratchgpt.cli.parsing import (
    MODEL_SPEC_HELP,
    TOKENIZER_SPEC_HELP,
    add_allow_special_flag,
    add_command,
    add_dtype_flag,
    add_encoding_errors_flag,
)
from scratchgpt.cli.viz import add_viz

# Settings only, without PyTorch: what the flags are made from (see build_parser).
from scratchgpt.finetune.config import (
    ClassifyConfig,
    ClassifyData,
    ClassifyModel,
    DPOConfig,
    DPOData,
    DPOModel,
    InstructConfig,
    InstructData,
    InstructModel,
)
from scratchgpt.pretraining_config import DataConfig, ModelChoice
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.errors import CheckpointError

EXAMPLES = __doc__.split("\n\n", 1)[1]


def _info(args: argparse.Namespace) -> int:
    from scratchgpt.config import get_preset
    from scratchgpt.hub.models import model_config
    from scratchgpt.model.summary import describe, explain_kv_cache, explain_parameters

    head: dict[str, object] = {}
    if args.model:
        config, head = model_config(args.model)
    else:
        config = get_preset(args.preset or "gpt2-small")
    if args.vocab_size:
        config = config.replace(vocab_size=args.vocab_size)
    facts = describe(config)
    print(facts["parameters"])
    print(f"model: {args.model}" if args.model else f"preset: {args.preset or 'gpt2-small'}")
    if head.get("kind") == "classifier":
        labels = ", ".join(map(str, head.get("labels", [])))
        print(f"a classifier ({labels}): the figures are its language model's, whose output "
              "layer a class head replaces")
    for name, value in config.to_dict().items():
        print(f"{name}: {value}")
    for line in explain_parameters(facts):
        print(line)
    print(f"size fp32: {facts['fp32_bytes'] / 2**20:,.1f} MiB")
    print(f"size bf16: {facts['bf16_bytes'] / 2**20:,.1f} MiB")
    print(f"training FLOPs per token: {facts['train_flops_per_token']:,}")
    for line in explain_kv_cache(facts):
        print(line)
    return 0


def _tokenize(args: argparse.Namespace) -> int:
    import numpy as np

    from scratchgpt.data.corpus import encode_text, read_text_file
    from scratchgpt.hub.models import resolve_tokenizer

    tokenizer = resolve_tokenizer(args.tokenizer)
    text = read_text_file(args.file, args.encoding_errors)
    ids = tokenizer.post_process(encode_text(
        tokenizer, text, source=args.file,
        allowed_special="all" if args.allow_special else frozenset()))  # a BOS, if it has one
    if args.ids_out:
        with open(args.ids_out, "wb") as out:  # this very name: np.save(NAME) would add .npy
            np.save(out, np.asarray(ids, dtype=np.int64))
        print(f"wrote {len(ids):,} token ids to {args.ids_out} (a 1-D numpy array of int64; "
              "np.load reads it)", file=sys.stderr)
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


def _add_config_flags(parser: argparse.ArgumentParser, section: str, cls: type,
                      defaults: Mapping[str, object] | None = None) -> None:
    """One flag per field of the dataclass ``cls`` (``--batch-size`` for ``batch_size``);
    ``defaults`` are the command's own where they differ from the class's.

    Defaults are None so that only flags given on the command line override the config file.
    """
    group = parser.add_argument_group(f"[{section}] settings (also in --config FILE.toml)")
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "").replace("%", "%%")  # argparse formats %
        default = (defaults or {}).get(field.name, field.default)
        if default is not None:
            help_text += f" (default: {default})"
        kind = field.type if isinstance(field.type, str) else field.type.__name__
        dest = f"{section}.{field.name}"
        if "bool" in kind:
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        else:
            convert = int if "int" in kind else float if "float" in kind else str
            group.add_argument(flag, dest=dest, type=convert, default=None,
                               metavar=field.name.upper(), help=help_text)


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """The settings given as flags, by section: ``--lr 0.1`` is ``{"train": {"lr": 0.1}}``."""
    overrides: dict[str, dict[str, object]] = {}
    for key, value in vars(args).items():
        if "." in key and value is not None:
            section, name = key.split(".", 1)
            overrides.setdefault(section, {})[name] = value
    return overrides


def _run_paths(args: argparse.Namespace, default: Path) -> tuple[Path, Path | None]:
    """The run directory, and the settings file: ``--config``, or on ``--resume`` the run's
    (once :func:`~scratchgpt.run_dir.check_run_dir` finds a run of this command there)."""
    from scratchgpt.run_dir import check_run_dir

    run_dir = Path(args.out) if args.out else default
    check_run_dir(run_dir, args.command, args.resume)
    if args.resume and args.config is None:
        return run_dir, run_dir / "config.toml"
    return run_dir, Path(args.config) if args.config else None


def _finished(run_dir: Path, interrupted: bool) -> int:
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from the first process
        print(f"run directory: {run_dir}", file=sys.stderr)
    return 130 if interrupted else 0


def _pretrain(args: argparse.Namespace) -> int:
    from scratchgpt.pretraining import default_run_dir, load_config, pretrain

    run_dir, config_file = _run_paths(args, default_run_dir())
    config = load_config(config_file, _overrides(args))
    return _finished(run_dir, pretrain(config, run_dir, resume=args.resume).interrupted)


def _finetune_classify(args: argparse.Namespace) -> int:
    from datetime import datetime

    from scratchgpt.finetune.classification import ClassifyConfig, finetune_classifier

    default = Path("runs") / datetime.now().strftime("classify-%Y%m%d-%H%M%S")
    run_dir, config_file = _run_paths(args, default)
    config = ClassifyConfig.from_sources(config_file, _overrides(args))
    return _finished(run_dir,
                     finetune_classifier(config, run_dir, resume=args.resume).interrupted)


def _finetune_instruct(args: argparse.Namespace) -> int:
    from datetime import datetime

    from scratchgpt.finetune.instruction import InstructConfig, finetune_instruct

    default = Path("runs") / datetime.now().strftime("instruct-%Y%m%d-%H%M%S")
    run_dir, config_file = _run_paths(args, default)
    config = InstructConfig.from_sources(config_file, _overrides(args))
    return _finished(run_dir, finetune_instruct(config, run_dir, resume=args.resume).interrupted)


def _finetune_dpo(args: argparse.Namespace) -> int:
    from datetime import datetime

    from scratchgpt.finetune.preference import DPOConfig, finetune_dpo

    default = Path("runs") / datetime.now().strftime("dpo-%Y%m%d-%H%M%S")
    run_dir, config_file = _run_paths(args, default)
    config = DPOConfig.from_sources(config_file, _overrides(args))
    return _finished(run_dir, finetune_dpo(config, run_dir, resume=args.resume).interrupted)


def _chat(args: argparse.Namespace) -> int:
    from scratchgpt.chat import ChatSession, Sampling, run_chat
    from scratchgpt.data.prompt_format import describe
    from scratchgpt.data.prompt_styles import get_prompt_style
    from scratchgpt.hub.models import load_model, model_prompt_format, model_stop_ids

    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                        top_k=args.top_k, top_p=args.top_p,
                        repetition_penalty=args.repetition_penalty, seed=args.seed)
    prompt_format = model_prompt_format(args.model)
    model, tokenizer = load_model(args.model, args.dtype)
    if prompt_format is None:
        print(f"warning: {args.model} was never instruction-tuned: a base model continues "
              "text rather than answering (prompts are in the alpaca style)", file=sys.stderr)
    session = ChatSession(model, tokenizer, prompt_format or get_prompt_style("alpaca"),
                          system=args.system, sampling=sampling,
                          stop_ids=model_stop_ids(args.model, tokenizer))
    run_chat(session, banner=f"chatting with {args.model} ({model.num_parameters():,} "
                             f"parameters, {describe(session.style)})\n")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from scratchgpt.serving.app import ServeSettings
    from scratchgpt.serving.server import serve

    for name in ("max_concurrency", "max_tokens", "max_queue", "max_body_bytes",
                 "max_classify_inputs", "threads"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "max_queue" else 1):
            raise ValueError(f"--{name.replace('_', '-')} cannot be {value}")
    settings = ServeSettings(api_key=args.api_key or os.environ.get("SCRATCHGPT_API_KEY"),
                             max_tokens=args.max_tokens, max_concurrency=args.max_concurrency,
                             max_queue=args.max_queue, max_body_bytes=args.max_body_bytes,
                             max_classify_inputs=args.max_classify_inputs,
                             cors_origin=args.cors_origin)
    serve(args.model, settings, host=args.host, port=args.port, threads=args.threads,
          dtype=args.dtype)
    return 0


def _classify(args: argparse.Namespace) -> int:
    import json

    from scratchgpt.classify import Classifier, read_texts

    if args.file and args.texts:
        raise ValueError("give the texts as TEXT arguments or in --file FILE, not both")
    if args.file:
        found = read_texts(Path(args.file), args.encoding_errors)
        if found.skipped:
            print(f"note: {found.skipped_note(args.file)}", file=sys.stderr)
        if not found.texts:
            raise ValueError(f"nothing to classify: {args.file} holds no text")
        texts = found.texts
    else:
        texts = args.texts
        if not texts:
            raise ValueError("nothing to classify: give TEXT arguments or --file FILE")
        for number, text in enumerate(texts, start=1):
            if not text.strip():
                raise ValueError(f"TEXT argument {number} is empty: an empty text has nothing "
                                 "to label; give each text some words")
    classifier = Classifier.from_run(args.model)
    for text, prediction in zip(texts, classifier.predict(texts, args.threshold), strict=True):
        if args.json:
            print(json.dumps({"label": prediction.label,
                              "probabilities": prediction.probabilities}))
        else:
            p = prediction.probabilities[prediction.label]
            print(f"{prediction.label}\t{p:.3f}\t{' '.join(text.split())[:70]}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    import time

    from scratchgpt.data.prompt_format import describe, encode_prompt
    from scratchgpt.data.prompt_styles import get_prompt_style
    from scratchgpt.generation import generate_text
    from scratchgpt.hub.models import load_model, model_prompt_format, model_stop_ids

    start = time.perf_counter()
    model, tokenizer = load_model(args.model, args.dtype)
    print(f"loaded {args.model} ({model.num_parameters():,} parameters) in "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    # the prompt's ids as the model's tokenizer would give them: with its BOS where it adds one
    prompt = tokenizer.post_process(tokenizer.encode(args.prompt))
    stop, shown = list(args.stop or ()), args.prompt
    if args.instruction:  # the prompt is an instruction: wrap it as the model was tuned
        prompt_format = model_prompt_format(args.model)
        if prompt_format is None:
            print(f"warning: {args.model} was never instruction-tuned; wrapping the "
                  "instruction in the alpaca style", file=sys.stderr)
            prompt_format = get_prompt_style("alpaca")
        else:
            print(describe(prompt_format), file=sys.stderr)
        text = prompt_format.instruction_prompt(args.prompt, args.input or "")
        prompt = encode_prompt(prompt_format, tokenizer, text)
        stop += prompt_format.stop
        shown = ""  # print the answer alone
    elif args.input:
        raise ValueError("--input goes with --instruction (the input of an instruction)")
    pieces = generate_text(  # checks every argument before the prompt is printed
        model, tokenizer, prompt, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, seed=args.seed, stop=stop,
        stop_ids=model_stop_ids(args.model, tokenizer),
    )
    sys.stdout.write(shown)
    sys.stdout.flush()
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _download(args: argparse.Namespace) -> int:
    from scratchgpt.hub.datasets import DATASETS, download_dataset
    from scratchgpt.hub.download import download_gpt2
    from scratchgpt.hub.hf_hub import download_model

    if "/" in args.name:
        if args.size or args.format:
            raise ValueError(f"--size and --format choose a GPT-2; {args.name} has neither")
        directory = download_model(args.name, args.dir, revision=args.revision or "main",
                                   token=args.token, base_url=args.base_url,
                                   source_dir=args.source_dir)
        print(directory)
        return 0
    if args.revision or args.token:
        raise ValueError(f"--revision and --token are for a Hugging Face model (ORG/NAME); "
                         f"{args.name} has neither")
    if args.name != "gpt2" and args.name not in DATASETS:
        raise ValueError(f"unknown download {args.name!r}; choose gpt2, "
                         f"{', '.join(DATASETS)} or a Hugging Face model ORG/NAME")
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
    from scratchgpt.hub.export import export_model

    for path in export_model(args.model, args.out, args.dtype):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, every verb and task with its flags and help.

    Building it imports settings and help text only, never PyTorch (nor numpy, nor
    matplotlib): the settings dataclasses live in modules of their own, and each handler
    (``_pretrain``, ``_chat``, ...) imports the library it calls when it runs. So ``--help``
    and argument errors answer in a fraction of a second rather than the seconds that
    ``import torch`` takes (``bench/bench_startup.py``; ``tests/test_cli_startup.py`` keeps
    it so): import anything heavy inside a handler, not at the top of a ``cli`` module.
    """
    parser = argparse.ArgumentParser(
        prog="scratchgpt",
        description="Build a GPT-style language model from scratch.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"scratchgpt {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = add_command(
        commands, "info", help="parameter count and size of a model preset, run or download",
        description="Print a model's parameter count (first line, the bare number), its "
                    "settings, its size in memory, its training FLOPs per token and its KV "
                    "cache per token (what grouped-query attention saves): a preset's, or with "
                    "--model a run's, a downloaded GPT-2's or a Hugging Face directory's "
                    "(Llama 3, Qwen3, Gemma 3), read from its settings (no weights are loaded).",
        examples=["scratchgpt info --preset qwen3-0.6b",
                  "scratchgpt info --preset micro --vocab-size 2048",
                  "scratchgpt info --model runs/first"],
    )
    which = info.add_mutually_exclusive_group()
    which.add_argument("--preset",
                       help="gpt2-small|medium|large|xl, qwen3-0.6b, llama-3.2-1b, "
                            "gemma-3-270m, or the CPU presets nano, micro, mini "
                            "(default: gpt2-small)")
    which.add_argument("--model", metavar="SPEC", help=MODEL_SPEC_HELP)
    info.add_argument("--vocab-size", type=int,
                      help="use this vocabulary size instead, such as your tokenizer's "
                           "(default: the preset's)")
    info.set_defaults(func=_info)

    tok = add_command(
        commands, "tokenize", help="turn a text file into token ids",
        description="Encode FILE (UTF-8) and print the number of tokens.",
        examples=["scratchgpt tokenize --tokenizer tok.json book.txt --ids-out book.npy",
                  "scratchgpt tokenize --tokenizer runs/first book.txt",
                  "scratchgpt tokenize --tokenizer ~/.cache/scratchgpt/models/gpt2-124M-hf "
                  "book.txt"],
    )
    tok.add_argument("--tokenizer", required=True, metavar="SPEC", help=TOKENIZER_SPEC_HELP)
    tok.add_argument("file", metavar="FILE", help="the text to encode, in UTF-8")
    add_encoding_errors_flag(tok)
    tok.add_argument("--ids-out", metavar="OUT.npy",
                     help="also write the ids to this file, as a 1-D numpy array of int64 "
                          "(stdout still prints the count; stderr says what was written)")
    add_allow_special_flag(tok)
    tok.set_defaults(func=_tokenize)

    train_tok = add_command(
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
    add_encoding_errors_flag(train_tok)
    train_tok.add_argument("--special", nargs="*", default=["<|endoftext|>"], metavar="TOKEN",
                           help="special tokens (default: <|endoftext|>)")
    train_tok.set_defaults(func=_train_tokenizer)

    pre = add_command(
        commands, "pretrain",
        help="train a GPT from scratch (no arguments: a small one, built-in corpus)",
        description="Pretrain a GPT on text. With no arguments it trains the `micro` preset on "
                    "the English Python documentation that ships with CPython, in about five "
                    "minutes on two CPU cores, and leaves a run directory under runs/.",
        examples=["scratchgpt pretrain",
                  "scratchgpt pretrain --arch qwen3 --data book.txt --preset nano "
                  "--max-steps 500 --out runs/book",
                  "scratchgpt pretrain --out runs/book --resume"],
    )
    _add_run_flags(pre, "runs/pretrain-TIME")
    _add_config_flags(pre, "data", DataConfig)
    _add_config_flags(pre, "model", ModelChoice)
    _add_config_flags(pre, "train", TrainConfig)
    pre.set_defaults(func=_pretrain)

    gen = add_command(
        commands, "generate", help="continue a prompt with a trained or downloaded model",
        description="Stream a continuation of --prompt to stdout (the prompt, then the new "
                    "text, nothing else). A prompt longer than the model's context is cropped "
                    "from the left. With --instruction the prompt is an instruction, wrapped in "
                    "the prompt style the run was fine-tuned with (or a Hugging Face model "
                    "directory's own chat template), and only the answer is printed. "
                    "Generation stops at every end-of-turn id the model names "
                    "(generation_config.json's eos_token_id).",
        examples=["scratchgpt generate --model runs/book --prompt \"The\"",
                  "scratchgpt generate --model gpt2-124M --prompt \"Every effort moves you\" "
                  "--temperature 0.8 --top-k 40 --seed 1",
                  "scratchgpt generate --model runs/assistant --instruction "
                  "--prompt \"Rewrite the sentence in the passive voice.\" "
                  "--input \"The chef cooked the meal.\""],
    )
    gen.add_argument("--model", required=True, metavar="SPEC", help=MODEL_SPEC_HELP)
    add_dtype_flag(gen)
    gen.add_argument("--prompt", required=True, metavar="TEXT",
                     help="the text to continue (printed first)")
    gen.add_argument("--instruction", action="store_true",
                     help="--prompt is an instruction: wrap it in the run's prompt style or "
                          "the model directory's chat template (alpaca for a base model), "
                          "stop at the style's stop strings, and print the answer alone")
    gen.add_argument("--input", metavar="TEXT",
                     help="with --instruction: the instruction's input (the text it acts on)")
    _add_sampling_flags(gen, max_new_tokens=50)
    gen.add_argument("--stop", action="append", metavar="TEXT",
                     help="stop before this text (may be repeated)")
    gen.set_defaults(func=_generate)

    down = add_command(
        commands, "download",
        help="fetch a Hugging Face model, OpenAI's pretrained GPT-2 weights, or a dataset",
        description="Download a Hugging Face hub model, GPT-2 or a dataset into the cache "
                    "($SCRATCHGPT_CACHE/models/ORG--NAME, $SCRATCHGPT_CACHE/models/"
                    "gpt2-SIZE-FORMAT or $SCRATCHGPT_CACHE/datasets/NAME, default "
                    "~/.cache/scratchgpt) or --dir, resuming interrupted files and verifying "
                    "each one's size, checksums and content. Prints the directory. A hub model "
                    "brings the files a model needs (config, safetensors weights, tokenizer, "
                    "chat template, licence) and is then named by --model ORG/NAME everywhere "
                    "(an existing local path of that name comes first).",
        examples=["scratchgpt download Qwen/Qwen3-0.6B",
                  "scratchgpt download meta-llama/Llama-3.2-1B-Instruct --token hf_...",
                  "scratchgpt download gpt2 --size 355M --format openai --dir gpt2-355M"],
    )
    down.add_argument("name", metavar="NAME",
                      help="a Hugging Face model ORG/NAME (Qwen/Qwen3-0.6B, "
                           "google/gemma-3-270m-it), gpt2 (OpenAI's GPT-2), sms-spam (UCI's SMS "
                           "Spam Collection), spamassassin (the SpamAssassin public mail "
                           "corpus), instructions (the book's 1,100 instruction/response pairs), "
                           "preferences (the same with chosen/rejected answers, for DPO), "
                           "alpaca (Stanford Alpaca's 52,002) or mmlu (the MMLU benchmark's "
                           "original data.tar)")
    down.add_argument("--revision", metavar="REV",
                      help="a hub model's branch, tag or commit (default: main); another than "
                           "main is cached as ORG--NAME@REV and named ORG/NAME@REV")
    down.add_argument("--token", metavar="TOKEN",
                      help="a Hugging Face access token for a gated or private model, sent as "
                           "'Authorization: Bearer' (default: environment variable HF_TOKEN); "
                           "accept a gated model's licence on its page first")
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
                      help="copy the files from this local directory instead of downloading "
                           "(a hub model's: a directory holding config.json)")
    down.set_defaults(func=_download)

    export = add_command(
        commands, "export", help="write a model as a Hugging Face directory (GPT-2, Llama 3, "
                                 "Qwen3, Gemma 3)",
        description="Write MODEL as a directory that transformers' "
                    "AutoModelForCausalLM.from_pretrained(DIR) loads with identical logits: "
                    "a GPT-2 as GPT-2, a Llama 3, Qwen3 or Gemma 3 (or a model fine-tuned "
                    "from one) as its family, with its tokenizer and chat template.",
        examples=["scratchgpt export runs/book --format hf --out book-hf",
                  "scratchgpt export Qwen/Qwen3-0.6B --out qwen3-copy"],
    )
    export.add_argument("model", metavar="MODEL", help=MODEL_SPEC_HELP)
    export.add_argument("--format", choices=["hf"], default="hf",
                        help="hf: Hugging Face's layout, config.json + model.safetensors + the "
                             "tokenizer's files (default, and the only one so far)")
    export.add_argument("--out", required=True, metavar="DIR",
                        help="the directory to write (created if missing)")
    export.add_argument("--dtype", choices=["fp32", "bf16", "fp16"],
                        help="the weights' dtype in DIR (default: the dtype MODEL stores them "
                             "in: a Hugging Face directory's config.json torch_dtype, else "
                             "fp32)")
    export.set_defaults(func=_export)

    _add_finetune(commands)
    _add_classify(commands)
    _add_chat(commands)
    _add_serve(commands)
    add_evaluate(commands)
    add_viz(commands)
    return parser


def _add_run_flags(parser: argparse.ArgumentParser, default_out: str) -> None:
    """``--config``, ``--out`` and ``--resume``: where a training job's settings and run go."""
    parser.add_argument("--config", metavar="FILE.toml", help="settings file (flags override it)")
    parser.add_argument("--out", metavar="RUN_DIR",
                        help=f"run directory (default: {default_out})")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its latest checkpoint")


def _add_finetune(commands: argparse._SubParsersAction) -> None:
    finetune = commands.add_parser(
        "finetune", help="teach a pretrained GPT a task (classify, instruct, dpo)",
        description="Fine-tune a language model: `classify` puts a class head on it and "
                    "trains it on labelled texts; `instruct` teaches it to answer "
                    "instructions; `dpo` teaches it which of two answers people prefer.")
    tasks = finetune.add_subparsers(dest="task", required=True, metavar="TASK")
    classify = add_command(
        tasks, "classify", help="a text classifier, such as a spam filter (the book's ch. 6)",
        description="Fine-tune a GPT into a classifier on labelled texts: a stratified, seeded "
                    "train/validation/test split is saved in the run directory, the chosen "
                    "weights train with the same loop as pretraining (checkpoints, --resume, "
                    "Ctrl-C), and the best checkpoint is tested at the end (eval.json, "
                    "confusion.png, errors.jsonl).",
        examples=["scratchgpt finetune classify --data sms-spam --model gpt2-124M --balance "
                  "--out runs/spam",
                  "scratchgpt finetune classify --data sms-spam --model runs/first "
                  "--train all --epochs 3 --out runs/spam-small",
                  "scratchgpt finetune classify --data reviews.csv --text-field review "
                  "--label-field stars --model preset:micro --train lora --out runs/stars"],
    )
    _add_run_flags(classify, "runs/classify-TIME")
    _add_config_flags(classify, "data", ClassifyData)
    _add_config_flags(classify, "model", ClassifyModel)
    _add_config_flags(classify, "train", TrainConfig, ClassifyConfig.train_defaults)
    classify.set_defaults(func=_finetune_classify, command="finetune classify")

    instruct = add_command(
        tasks, "instruct", help="an assistant that follows instructions (the book's ch. 7)",
        description="Fine-tune a GPT on instruction/response records (or multi-turn "
                    "conversations) rendered in the model's own chat template (a Hugging Face "
                    "model that has one: Llama 3, Qwen3, Gemma 3; the loss on the assistant "
                    "turns, the template kept in the run for chat, serve and export) or in a "
                    "prompt style (alpaca, phi3, chatml): a seeded 85/5/10 split is saved "
                    "in the run directory, all weights, the last blocks or LoRA adapters "
                    "train with the same loop as pretraining (checkpoints, --resume, Ctrl-C), "
                    "each evaluation "
                    "answers a few validation instructions (samples.txt), and the best "
                    "checkpoint answers every test instruction at the end "
                    "(test-responses.json, scored in eval.json).",
        examples=["scratchgpt finetune instruct --data instructions --model gpt2-124M "
                  "--out runs/assistant",
                  "scratchgpt finetune instruct --data alpaca --limit 5000 --model "
                  "Qwen/Qwen3-0.6B --train lora --out runs/qwen3-alpaca   # in the chat "
                  "template Qwen3 ships",
                  "scratchgpt finetune instruct --config configs/book-ch7.toml "
                  "--out runs/book-ch7"],
    )
    _add_run_flags(instruct, "runs/instruct-TIME")
    _add_config_flags(instruct, "data", InstructData)
    _add_config_flags(instruct, "model", InstructModel)
    _add_config_flags(instruct, "train", TrainConfig, InstructConfig.train_defaults)
    instruct.set_defaults(func=_finetune_instruct, command="finetune instruct")

    dpo = add_command(
        tasks, "dpo", help="an assistant taught which of two answers people prefer (DPO, the "
                           "book's ch. 7 bonus)",
        description="Direct Preference Optimization: tune a language model (best one already "
                    "instruction-tuned) on pairs of answers to one prompt, one chosen by people "
                    "and one rejected, so that it makes the chosen more likely and the rejected "
                    "less, relative to the frozen model it started from (the reference: a "
                    "frozen copy, or with --train lora the same weights with the adapters "
                    "off). Pairs render in the model's chat template or the prompt style its "
                    "instruction tuning recorded; a seeded 85/5/10 split is saved in the run "
                    "directory; training uses the same loop as pretraining (checkpoints, "
                    "--resume, Ctrl-C). Each evaluation logs the loss, the reward margin "
                    "(chosen minus rejected implicit reward), the reward accuracy (share of "
                    "pairs the chosen answer wins) and answers a few validation prompts with "
                    "the starting model and the current one (samples.txt); the best checkpoint "
                    "is measured on the test pairs at the end (eval.json).",
        examples=["scratchgpt finetune dpo --data preferences --model runs/assistant "
                  "--out runs/polite",
                  "scratchgpt finetune dpo --data pairs.jsonl --model Qwen/Qwen3-0.6B "
                  "--train lora --beta 0.1 --out runs/qwen3-dpo",
                  "scratchgpt finetune dpo --out runs/polite --resume"],
    )
    _add_run_flags(dpo, "runs/dpo-TIME")
    _add_config_flags(dpo, "data", DPOData)
    _add_config_flags(dpo, "model", DPOModel)
    _add_config_flags(dpo, "train", TrainConfig, DPOConfig.train_defaults)
    dpo.set_defaults(func=_finetune_dpo, command="finetune dpo")


def _add_classify(commands: argparse._SubParsersAction) -> None:
    classify = add_command(
        commands, "classify", help="label texts with a fine-tuned classifier",
        description="Print the label of each text (and its probability), or with --json one "
                    "object per line: {\"label\": ..., \"probabilities\": {label: p, ...}}. "
                    "An empty TEXT is an error (it has nothing to label); the blank lines of "
                    "a --file, and messages with no text, are skipped, and stderr says which.",
        examples=["scratchgpt classify --model runs/spam \"WINNER! Claim your prize now\"",
                  "scratchgpt classify --model runs/spam --file inbox.mbox --json",
                  "scratchgpt classify --model runs/spam --file messages.txt --threshold 0.9"],
    )
    classify.add_argument("--model", required=True, metavar="RUN_DIR",
                          help="a run directory of `scratchgpt finetune classify`")
    classify.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    classify.add_argument("--file", metavar="FILE",
                          help="classify the texts in FILE: one per line (a line ends at \\n "
                               "or \\r\\n only), or an email (.eml) or a mailbox (.mbox, one "
                               "text per message)")
    add_encoding_errors_flag(classify)
    classify.add_argument("--json", action="store_true",
                          help="one JSON object per text: label and the probability of each class")
    classify.add_argument("--threshold", type=float, metavar="P",
                          help="two classes only: pick the second label (spam of ham, spam) "
                               "when its probability is at least P (default: the likelier "
                               "class); higher P, fewer good messages flagged")
    classify.set_defaults(func=_classify)


def _add_sampling_flags(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    """How text is decoded: the flags `generate` and `chat` share."""
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens, metavar="N",
                        help=f"stop after this many new tokens (default: {max_new_tokens}), or "
                             "earlier at <|endoftext|> or a stop text")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="0 = greedy (default); 1 = the model's own distribution; higher = "
                             "more random")
    parser.add_argument("--top-k", type=int, metavar="K",
                        help="sample among the K most likely tokens (default: all; needs "
                             "--temperature above 0)")
    parser.add_argument("--top-p", type=float, metavar="P",
                        help="sample among the most likely tokens holding probability P, "
                             "in (0, 1] (default: 1, all; needs --temperature above 0)")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, metavar="R",
                        help="make tokens already in the text less likely: a logit is divided "
                             "by R when positive, multiplied when negative (default: 1, off; "
                             "1.1-1.3 curbs loops)")
    parser.add_argument("--seed", type=int,
                        help="makes sampling reproducible (default: a different sample each "
                             "run)")


def _add_chat(commands: argparse._SubParsersAction) -> None:
    chat = add_command(
        commands, "chat", help="talk to an instruction-tuned model in the terminal",
        description="A terminal assistant: each answer streams as it is made, the "
                    "conversation is kept (the oldest turns dropped, and you told, when it "
                    "would overflow the context; the system prompt is never dropped), in the "
                    "prompt style the run was fine-tuned with, or a Hugging Face model "
                    "directory's own chat template. Commands: /reset, /system TEXT, "
                    "/save FILE (the conversation as JSON), /exit. Ctrl-C stops the current "
                    "answer, Ctrl-D leaves. A /save that cannot write (a missing directory, a "
                    "directory) says why, and the chat goes on. Piped standard input is read "
                    "line by line, one message (or command) a line, and printed as a log: "
                    "'> MESSAGE', the answer, a blank line; notes go to stderr.",
        examples=["scratchgpt chat --model runs/assistant",
                  "scratchgpt chat --model runs/assistant --temperature 0.7 --top-p 0.9 "
                  "--system \"You answer in one sentence.\"",
                  "printf 'Name a fruit.\\nAnd a vegetable?\\n' | scratchgpt chat --model "
                  "runs/assistant"],
    )
    chat.add_argument("--model", required=True, metavar="SPEC",
                      help="a run directory of `scratchgpt finetune instruct`, or a Hugging "
                           "Face model directory with a chat template (Qwen3, Llama 3, Gemma 3; "
                           "or ORG/NAME once downloaded); any language model works, a base "
                           "model gets a warning")
    add_dtype_flag(chat)
    chat.add_argument("--system", metavar="TEXT",
                      help="the system prompt (default: the prompt style's own, if any)")
    _add_sampling_flags(chat, max_new_tokens=256)
    chat.set_defaults(func=_chat)


def _add_serve(commands: argparse._SubParsersAction) -> None:
    serve = add_command(
        commands, "serve", help="serve a model over OpenAI's and Ollama's HTTP APIs, with a "
                                "chat page",
        description="Serve a run (instruction-tuned, pretrained or classifier) or a downloaded "
                    "GPT-2 with OpenAI's API: GET /v1/models, POST /v1/chat/completions and "
                    "/v1/completions (streaming as server-sent events), POST /v1/classify for a "
                    "classifier; with Ollama's: GET /api/tags, POST /api/chat and /api/generate "
                    "(streaming as JSON lines); GET / a chat page (or a classifier's box), GET "
                    "/health. Chats are rendered in the run's prompt style or the model "
                    "directory's own chat template (a body's chat_template_kwargs, as vLLM's, "
                    "reach the template). Concurrent requests are decoded together in one "
                    "batch. Listens "
                    "on 127.0.0.1 unless --host says otherwise; prints the URL once ready.",
        examples=["scratchgpt serve --model runs/assistant",
                  "scratchgpt serve --model runs/spam --port 8001",
                  "scratchgpt serve --model gpt2-124M --host 0.0.0.0 --api-key s3cret"],
    )
    serve.add_argument("--model", required=True, metavar="SPEC", help=MODEL_SPEC_HELP)
    add_dtype_flag(serve)
    serve.add_argument("--host", default="127.0.0.1",
                       help="the address to listen on (default: 127.0.0.1, this machine only; "
                            "0.0.0.0 for every network: then set --api-key)")
    serve.add_argument("--port", type=int, default=8000, help="the port (default: 8000)")
    serve.add_argument("--api-key", metavar="KEY",
                       help="require 'Authorization: Bearer KEY' on every /v1 and /api "
                            "request and on /openapi.json (default: the environment variable "
                            "SCRATCHGPT_API_KEY, else none)")
    serve.add_argument("--max-concurrency", type=int, default=32, metavar="N",
                       help="streams decoded together in one batch (default: 32); more wait "
                            "in a queue")
    serve.add_argument("--max-queue", type=int, default=64, metavar="N",
                       help="requests that may wait for a place (default: 64); beyond, the "
                            "answer is 429 with Retry-After")
    serve.add_argument("--max-tokens", type=int, default=512, metavar="N",
                       help="the most new tokens a request may ask for (default: 512)")
    serve.add_argument("--max-body-bytes", type=int, default=1_000_000, metavar="N",
                       help="the largest request body, counted as it arrives (default: "
                            "1000000); beyond, the answer is 413")
    serve.add_argument("--max-classify-inputs", type=int, default=256, metavar="N",
                       help="the most texts one /v1/classify request may send (default: 256)")
    serve.add_argument("--threads", type=int, metavar="N",
                       help="the CPU threads a decoding step uses (default: PyTorch's, one "
                            "per core)")
    serve.add_argument("--cors-origin", metavar="ORIGIN",
                       help="let web pages from ORIGIN (https://example.org) call the API "
                            "(default: none, only this server's own page)")
    serve.set_defaults(func=_serve)


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
        # one write: under torchrun several processes share stderr, and print() writes the
        # message and its newline apart, which interleaves their lines
        sys.stderr.write(f"scratchgpt {args.command}: error: {message}\n")
        return 2
