"""``scratchgpt viz TASK``: pictures of what happens inside a model.

Each task writes the picture ``--out`` names and prints its path (``viz tokens`` prints the
text coloured by token in the terminal unless it is asked for a page).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scratchgpt.cli.parsing import (
    MODEL_SPEC_HELP,
    TOKENIZER_SPEC_HELP,
    add_allow_special_flag,
    add_command,
    add_dtype_flag,
    add_encoding_errors_flag,
)


def _saved(path: str | Path) -> int:
    print(path)
    return 0


def _viz_attention(args: argparse.Namespace) -> int:
    from scratchgpt.hub.models import load_model
    from scratchgpt.viz.attention import attention_maps, plot_attention

    model, tokenizer = load_model(args.model, args.dtype)
    maps = attention_maps(model, tokenizer, args.text, args.layer, args.head,
                          max_tokens=args.max_tokens, name=Path(args.model).name)
    if maps.truncated:
        print(f"only the first {len(maps.tokens)} of {maps.total_tokens} tokens are drawn "
              "(--max-tokens); attention is causal, so later tokens change none of them",
              file=sys.stderr)
    plot_attention(maps, args.out)
    return _saved(args.out)


def _viz_embeddings(args: argparse.Namespace) -> int:
    from scratchgpt.hub.models import load_model
    from scratchgpt.viz.embeddings import (
        format_neighbours,
        nearest_tokens,
        plot_position_similarity,
        plot_word_map,
        word_vectors,
    )

    if not (args.words or args.neighbours or args.positions):
        raise ValueError("say what to show: --words W1 W2 ... (a map), --neighbours WORD (the "
                         "nearest tokens) or --positions (the position embeddings)")
    if args.words and args.positions:
        raise ValueError("--words and --positions each draw a picture to --out: one at a time")
    model, tokenizer = load_model(args.model)
    leading_space = not args.no_leading_space
    name = Path(args.model).name
    if args.neighbours:
        neighbours = nearest_tokens(model, tokenizer, args.neighbours, args.k, leading_space)
        print(format_neighbours(args.neighbours, neighbours, leading_space))
    if args.positions:
        plot_position_similarity(model, args.out, args.max_positions,
                                 title=f"{name}: position embeddings, cosine similarity")
        return _saved(args.out)
    if args.words:
        vectors = word_vectors(model, tokenizer, args.words, leading_space)
        plot_word_map(vectors, args.out, args.method, title=f"{name}: token embeddings")
        return _saved(args.out)
    return 0


def _viz_tokens(args: argparse.Namespace) -> int:
    from scratchgpt.data import read_text_file
    from scratchgpt.hub.models import resolve_tokenizer
    from scratchgpt.viz.tokens import render_html, render_terminal, token_pieces, use_color

    if (args.text is None) == (args.file is None):
        raise ValueError("give the text to split: --text TEXT or --file PATH (one of them)")
    if args.file is not None:
        text = read_text_file(Path(args.file), args.encoding_errors)
    else:
        text = args.text
    tokenizer = resolve_tokenizer(args.tokenizer)
    pieces = token_pieces(tokenizer, text, "all" if args.allow_special else frozenset())
    if args.html or args.out:
        from scratchgpt.run_dir import write_whole

        out = Path(args.out or "tokens.html")
        write_whole(out, render_html(pieces, f"{args.tokenizer}: {len(pieces)} tokens"))
        return _saved(out)
    sys.stdout.write(render_terminal(pieces, color=use_color(sys.stdout),
                                     spaces=not args.no_spaces))
    return 0


def _viz_run(args: argparse.Namespace) -> int:
    from scratchgpt.viz.runs import plot_runs

    plot_runs(args.runs, args.out, x=args.x)
    return _saved(args.out)


def add_viz(commands: argparse._SubParsersAction) -> None:
    viz = commands.add_parser(
        "viz", help="pictures: attention, embeddings, tokens, training curves",
        description="Pictures of what happens inside a model: the attention weights of each "
                    "head, where words sit in embedding space, how a tokenizer splits text, "
                    "and how runs' losses fell.")
    tasks = viz.add_subparsers(dest="task", required=True, metavar="TASK")
    _add_attention(tasks)
    _add_embeddings(tasks)
    _add_tokens(tasks)
    _add_run(tasks)


def _add_attention(tasks: argparse._SubParsersAction) -> None:
    attention = add_command(
        tasks, "attention", help="each head's attention weights over a text, as heatmaps",
        description="Run TEXT through the model once and draw the attention weights of every "
                    "head of --layer (or of every layer, a grid): query tokens down the side, "
                    "the tokens they attend to along the bottom, the future (which a causal "
                    "model may not see) hatched. The weights are recorded from the model as it "
                    "computes. Models with grouped-query attention (Llama 3, Qwen3, Gemma 3) "
                    "are drawn per query head, saying which query heads share a key/value "
                    "head; sliding-window layers (Gemma 3's local ones) say their window and "
                    "hatch what lies beyond it.",
        examples=["scratchgpt viz attention --model runs/first --text \"The list is sorted "
                  "in place\" --layer 0 --out attention.png",
                  "scratchgpt viz attention --model Qwen/Qwen3-0.6B --text \"The cat sat on "
                  "the mat\" --layer 5 --head 1 --out head.png",
                  "scratchgpt viz attention --model runs/first --text \"def f(x):\" "
                  "--out all-layers.png"],
    )
    attention.add_argument("--model", required=True, metavar="SPEC", help=MODEL_SPEC_HELP)
    attention.add_argument("--text", required=True, help="the text whose attention to draw")
    attention.add_argument("--out", default="attention.png", metavar="FILE.png",
                           help="the picture (default: attention.png; .svg and .pdf work too)")
    attention.add_argument("--layer", type=int, metavar="N",
                           help="the layer, from 0 (default: every layer, a grid)")
    attention.add_argument("--head", type=int, metavar="N",
                           help="one (query) head, from 0, drawn large with its weights "
                                "written in (default: every head)")
    attention.add_argument("--max-tokens", type=int, default=40, metavar="N",
                           help="draw the first N tokens (default: 40, readable)")
    add_dtype_flag(attention)
    attention.set_defaults(func=_viz_attention, command="viz attention")


def _add_embeddings(tasks: argparse._SubParsersAction) -> None:
    embeddings = add_command(
        tasks, "embeddings", help="words on a 2-D map of the embedding space; nearest tokens",
        description="Where words sit in the model's token-embedding space: --words draws them "
                    "on a 2-D map (PCA, or t-SNE), a word of several tokens at the mean of its "
                    "tokens (the picture says so); --neighbours prints the tokens nearest to a "
                    "word by cosine similarity; --positions draws how alike the position "
                    "embeddings of every two positions are.",
        examples=["scratchgpt viz embeddings --model runs/first --words list dict tuple "
                  "string file write read --out emb.png",
                  "scratchgpt viz embeddings --model gpt2-124M --neighbours king",
                  "scratchgpt viz embeddings --model runs/first --positions --out positions.png"],
    )
    embeddings.add_argument("--model", required=True, metavar="SPEC", help=MODEL_SPEC_HELP)
    embeddings.add_argument("--words", nargs="+", metavar="WORD", help="the words to map")
    embeddings.add_argument("--neighbours", metavar="WORD",
                            help="print the tokens nearest to WORD (cosine similarity)")
    embeddings.add_argument("--k", type=int, default=10,
                            help="how many neighbours (default: 10)")
    embeddings.add_argument("--positions", action="store_true",
                            help="draw the position embeddings' cosine similarity instead")
    embeddings.add_argument("--max-positions", type=int, metavar="N",
                            help="with --positions: the first N positions (default: all)")
    embeddings.add_argument("--method", choices=["pca", "tsne"], default="pca",
                            help="pca: the two directions of greatest spread (default); tsne: "
                                 "keeps neighbours together, distances between groups mean "
                                 "little (needs scikit-learn)")
    embeddings.add_argument("--no-leading-space", action="store_true",
                            help="look words up as written, not as ' word' (how they appear "
                                 "after a space in running text, the default)")
    embeddings.add_argument("--out", default="embeddings.png", metavar="FILE.png",
                            help="the picture (default: embeddings.png)")
    embeddings.set_defaults(func=_viz_embeddings, command="viz embeddings")


def _add_tokens(tasks: argparse._SubParsersAction) -> None:
    tokens = add_command(
        tasks, "tokens", help="a text coloured token by token, with the ids",
        description="Show how a tokenizer splits a text: each token on its own colour with its "
                    "id (spaces as ␣: GPT-2's ' the' and 'the' are different tokens), in the "
                    "terminal, or with --html as a page.",
        examples=["scratchgpt viz tokens --tokenizer ../shared/assets/gpt2-tokenizer --text "
                  "\"The cat sat on the mat. the CAT\"",
                  "scratchgpt viz tokens --tokenizer runs/first --file README.md --html "
                  "--out tokens.html"],
    )
    tokens.add_argument("--tokenizer", required=True, metavar="SPEC", help=TOKENIZER_SPEC_HELP)
    tokens.add_argument("--text", help="the text to split")
    tokens.add_argument("--file", metavar="PATH", help="or a UTF-8 file to split")
    add_encoding_errors_flag(tokens)
    add_allow_special_flag(tokens)
    tokens.add_argument("--no-spaces", action="store_true",
                        help="in the terminal, show spaces as spaces, not ␣")
    tokens.add_argument("--html", action="store_true",
                        help="write a page instead (to --out, default tokens.html)")
    tokens.add_argument("--out", metavar="FILE.html", help="the page to write (implies --html)")
    tokens.set_defaults(func=_viz_tokens, command="viz tokens")


def _add_run(tasks: argparse._SubParsersAction) -> None:
    run = add_command(
        tasks, "run", help="loss and perplexity curves of one or more runs, on one figure",
        description="Draw the training and validation losses of RUNs together (perplexity on "
                    "the right for language models; accuracy in a second panel for "
                    "classifiers), against the tokens each run has seen, or --x step.",
        examples=["scratchgpt viz run runs/first --out first.png",
                  "scratchgpt viz run runs/first runs/book-ch5 --x step --out runs.png",
                  "scratchgpt viz run runs/spam runs/spam-random --out spam.png"],
    )
    run.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    run.add_argument("--out", default="runs.png", metavar="FILE.png",
                     help="the picture (default: runs.png)")
    run.add_argument("--x", choices=["tokens", "step"], default="tokens",
                     help="the horizontal axis: tokens seen (default) or optimizer steps")
    run.set_defaults(func=_viz_run, command="viz run")
