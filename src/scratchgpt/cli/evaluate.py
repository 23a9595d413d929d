"""``scratchgpt evaluate TASK``: how good a model is, in the numbers the field reports.

Each task writes its result into the model's directory (``eval/NAME.json``, see
:mod:`scratchgpt.evaluation.records`), and ``--json`` prints that same object; ``compare``
reads them back into one table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from scratchgpt.cli.parsing import (
    MODEL_SPEC_HELP,
    add_allow_special_flag,
    add_command,
    add_dtype_flag,
    add_encoding_errors_flag,
)


def _print_result(args: argparse.Namespace, record: dict[str, Any], summary: str,
                  path: Path) -> None:
    """``--json``: the record, alone on stdout; else the summary and where it was saved."""
    if args.json:
        print(json.dumps(record, indent=2, ensure_ascii=False))
    else:
        print(summary)
        print(f"saved {path}")


def _evaluate_classify(args: argparse.Namespace) -> int:
    from scratchgpt.classify import Classifier
    from scratchgpt.evaluation.records import record_name, save_evaluation
    from scratchgpt.evaluation.report import evaluate_labelled, write_report
    from scratchgpt.finetune.classification import ClassifyData, read_labelled

    data = read_labelled(ClassifyData(data=args.data, text_field=args.text_field,
                                      label_field=args.label_field))
    evaluation = evaluate_labelled(Classifier.from_run(args.model), data,
                                   threshold=args.threshold)
    if args.out:
        write_report(evaluation, Path(args.out))
    name = record_name("classify", Path(args.data).stem)
    record, path = save_evaluation("classify", args.model, name, evaluation.metrics,
                                   Path(data.source))
    _print_result(args, record, evaluation.summary(), path)
    return 0


def _evaluate_compare(args: argparse.Namespace) -> int:
    from scratchgpt.evaluation.compare import compare_runs

    comparison = compare_runs(args.runs)
    if args.plot:
        from scratchgpt.plots import plot_comparison

        plot_comparison(comparison.runs, comparison.columns, comparison.values, args.plot)
    if args.json:
        print(json.dumps(comparison.to_dict(), indent=2))
    else:
        print(comparison.table())
        if args.plot:
            print(f"saved {args.plot}")
    return 0


def _evaluate_mmlu(args: argparse.Namespace) -> int:
    from scratchgpt.evaluation.mmlu import evaluate_mmlu, load_mmlu
    from scratchgpt.evaluation.records import save_evaluation
    from scratchgpt.hub.datasets import dataset_path
    from scratchgpt.hub.models import load_model

    data = load_mmlu(dataset_path(args.data, "benchmark"), args.subjects, args.limit)
    model, tokenizer = load_model(args.model, args.dtype)
    result = evaluate_mmlu(model, tokenizer, data, shots=args.shots,
                           batch_size=args.batch_size, progress=not args.json)
    record, path = save_evaluation("mmlu", args.model, f"mmlu-{args.shots}shot",
                                   result.to_dict(), list(data.files))
    _print_result(args, record, result.summary(per_subject=args.per_subject), path)
    return 0


def _evaluate_perplexity(args: argparse.Namespace) -> int:
    from scratchgpt.evaluation.perplexity import file_perplexity
    from scratchgpt.evaluation.records import record_name, save_evaluation
    from scratchgpt.hub.models import load_model

    model, tokenizer = load_model(args.model, args.dtype)
    result = file_perplexity(model, tokenizer, args.data, args.context, args.stride,
                             args.batch_size, encoding_errors=args.encoding_errors,
                             allowed_special="all" if args.allow_special else frozenset(),
                             progress=not args.json)
    name = record_name("perplexity", Path(args.data).stem)
    record, path = save_evaluation("perplexity", args.model, name, result.to_dict(),
                                   Path(args.data))
    summary = (f"perplexity {result.perplexity:,.4f} (mean negative log-likelihood "
               f"{result.nll:.4f}) over {result.tokens:,} tokens of {args.data}, in "
               f"{result.windows} windows of {result.context_length} tokens, stride "
               f"{result.stride}")
    _print_result(args, record, summary, path)
    return 0


def _evaluate_judge(args: argparse.Namespace) -> int:
    from scratchgpt.evaluation.judge import JudgeSettings, judge_responses
    from scratchgpt.evaluation.pairwise import judge_pairwise

    pairwise = args.mode == "pairwise"
    if pairwise and len(args.responses) != 2:
        raise ValueError(f"--mode pairwise compares two responses files, got "
                         f"{len(args.responses)}: give --responses FIRST SECOND (the second's "
                         "wins, ties and losses against the first are counted)")
    if not pairwise and len(args.responses) != 1:
        raise ValueError(f"--mode {args.mode} judges one responses file, got "
                         f"{len(args.responses)} ({' '.join(args.responses)}): to compare two "
                         "runs' responses, use --mode pairwise")
    settings = JudgeSettings(
        url=args.judge_url, model=args.judge_model, protocol=args.protocol, mode=args.mode,
        concurrency=args.concurrency, attempts=args.attempts, timeout=args.timeout,
        seed=args.seed, num_ctx=args.num_ctx, max_tokens=args.max_tokens,
        api_key_env=args.api_key_env)
    try:
        result = (judge_pairwise(*args.responses, settings, args.out, progress=not args.json)
                  if pairwise else
                  judge_responses(args.responses[0], settings, args.out,
                                  progress=not args.json))
    except KeyboardInterrupt:  # what was judged is saved; the same command resumes
        return 130
    if args.json:
        print(json.dumps(result.record, indent=2, ensure_ascii=False))
    else:
        print(result.summary())
    return 0


def _evaluate_review(args: argparse.Namespace) -> int:
    from scratchgpt.evaluation.review import collect_ratings, page_data, write_review_page

    if args.collect:
        summary = collect_ratings([Path(f) for f in args.collect])
        result = summary.to_dict()
        if args.out:
            from scratchgpt.run_dir import write_whole

            write_whole(Path(args.out), json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else summary.summary())
        return 0
    if not args.out:
        raise ValueError("--responses needs --out FILE.html: where to write the page")
    page = write_review_page([Path(f) for f in args.responses], Path(args.out), args.seed,
                             title=args.title)
    data = page_data(page)
    print(f"wrote {page}: {len(data['items'])} items, {len(data['systems'])} system(s), "
          f"blinded; open it in a browser, rate, and press Save ratings", file=sys.stderr)
    if args.json:
        print(json.dumps({"page": str(page), "page_id": data["page_id"],
                          "systems": data["systems"], "items": len(data["items"])}))
    else:
        print(page)
    return 0


def add_evaluate(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="measure a model: perplexity, mmlu, judge, classify, review, "
                         "compare",
        description="Evaluate a model. Every task writes its result to MODEL_DIR/eval/NAME.json "
                    "(with the command, a fingerprint of the data and the time); `compare` "
                    "puts the results of several runs in one table.")
    tasks = evaluate.add_subparsers(dest="task", required=True, metavar="TASK")
    _add_perplexity(tasks)
    _add_mmlu(tasks)
    _add_judge(tasks)
    _add_classify(tasks)
    _add_review(tasks)
    _add_compare(tasks)


def _add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the result as one JSON object (the saved record)")


def _add_perplexity(tasks: argparse._SubParsersAction) -> None:
    perplexity = add_command(
        tasks, "perplexity", help="how surprised a model is by a text: exp(mean loss per token)",
        description="The perplexity of a model on a UTF-8 text, by the sliding-window method: "
                    "windows of --context tokens start every --stride tokens, and each scores "
                    "only the tokens the window before did not, so every token but the first "
                    "is scored once, with up to a window of context before it (a smaller "
                    "stride: more context, more compute). Saved as "
                    "MODEL_DIR/eval/perplexity-FILE.json.",
        examples=["scratchgpt evaluate perplexity --model runs/first --data "
                  "../shared/assets/corpora/the-verdict.txt --context 128 --json",
                  "scratchgpt evaluate perplexity --model gpt2-124M --data book.txt "
                  "--stride 512",
                  "scratchgpt evaluate perplexity --model Qwen/Qwen3-0.6B --data book.txt "
                  "--context 2048 --dtype bf16"],
    )
    perplexity.add_argument("--model", required=True, metavar="SPEC", help=MODEL_SPEC_HELP)
    perplexity.add_argument("--data", required=True, metavar="FILE",
                            help="the text to score, UTF-8")
    perplexity.add_argument("--context", type=int, metavar="N",
                            help="tokens per window (default: the model's context length)")
    perplexity.add_argument("--stride", type=int, metavar="N",
                            help="tokens between window starts (default: half the window)")
    perplexity.add_argument("--batch-size", type=int, default=4, metavar="N",
                            help="windows in one forward pass (default: 4)")
    add_dtype_flag(perplexity)
    add_encoding_errors_flag(perplexity)
    add_allow_special_flag(perplexity)
    _add_json_flag(perplexity)
    perplexity.set_defaults(func=_evaluate_perplexity, command="evaluate perplexity")


def _add_mmlu(tasks: argparse._SubParsersAction) -> None:
    mmlu = add_command(
        tasks, "mmlu", help="MMLU: 57 subjects of four-choice questions, as lm-eval scores them",
        description="Measure a model on MMLU (Hendrycks et al.) the way lm-evaluation-harness's "
                    "mmlu task does: each question under its subject's header, choices A. to "
                    "D., then 'Answer:'; the prediction is the letter whose token the model "
                    "finds most likely. Reports accuracy per subject, per category (STEM, "
                    "humanities, social sciences, other), overall (micro: all questions; "
                    "macro: the mean of the subjects). Chance is 25%; GPT-2 124M scores about "
                    "26%. Saved as MODEL_DIR/eval/mmlu-Nshot.json.",
        examples=["scratchgpt evaluate mmlu --model gpt2-124M --data mmlu --shots 5 --json",
                  "scratchgpt evaluate mmlu --model runs/assistant --data mmlu --subjects "
                  "astronomy virology --limit 50",
                  "scratchgpt evaluate mmlu --model meta-llama/Llama-3.2-1B --data mmlu "
                  "--shots 5 --dtype bf16"],
    )
    mmlu.add_argument("--model", required=True, metavar="SPEC", help=MODEL_SPEC_HELP)
    mmlu.add_argument("--data", required=True, metavar="DIR",
                      help="the original release's data/ directory (dev/ and test/ CSVs, "
                           "or the directory holding data/), a directory of Hugging Face "
                           "cais/mmlu parquet files, or mmlu: the download (`scratchgpt "
                           "download mmlu`); a directory that exists is read, before any "
                           "download of that name")
    mmlu.add_argument("--shots", type=int, choices=range(6), default=0, metavar="0-5",
                      help="worked examples from the subject's dev set before each question "
                           "(default: 0; the MMLU paper reports 5)")
    mmlu.add_argument("--subjects", nargs="+", metavar="SUBJECT",
                      help="only these subjects (astronomy, college_physics, ...; default: all)")
    mmlu.add_argument("--limit", type=int, metavar="N",
                      help="only the first N test questions of each subject")
    mmlu.add_argument("--batch-size", type=int, default=8, metavar="N",
                      help="questions scored in one forward pass (default: 8)")
    mmlu.add_argument("--per-subject", action="store_true",
                      help="print every subject's accuracy, not just the categories")
    add_dtype_flag(mmlu)
    _add_json_flag(mmlu)
    mmlu.set_defaults(func=_evaluate_mmlu, command="evaluate mmlu")


def _add_judge(tasks: argparse._SubParsersAction) -> None:
    from scratchgpt.evaluation.judge_settings import API_KEY_ENV, MODES

    judge = add_command(
        tasks, "judge", help="a stronger model scores each response against its reference, "
                             "or picks the better of two runs' responses",
        description="LLM-as-judge (the book's chapter 7): for each entry of a responses file the "
                    "judge model is asked to score the response against the reference, 0-100 "
                    "(the book's prompt) or 1-5 (--mode rubric), answering with the number "
                    "only. An answer without a number is asked once more; then the entry is "
                    "counted unscored, never 0. --mode pairwise compares two runs' responses "
                    "to the same prompts (paired by instruction and input, in any order): the "
                    "judge answers A, B or tie, asked twice with the responses swapped, since "
                    "judges favour a position; the second file wins a prompt only when both "
                    "orders prefer it, loses only when both prefer the first, else ties. It "
                    "reports wins, ties, losses, the win rate (ties count half) with a 95% "
                    "interval, and how often the two orders agreed. The judge speaks Ollama's "
                    "API (the book's: llama3 in Ollama) or OpenAI's (a URL with /v1), any "
                    "OpenAI-compatible server included, `scratchgpt serve` too. Entries are "
                    "judged in parallel with retries, and saved after each one to "
                    "RUN/eval/judge-MODEL.json (pairwise: SECOND_RUN/eval/"
                    "judge-pairwise-MODEL-vs-FIRST.json): run the same command again to resume "
                    "an interrupted run.",
        examples=["scratchgpt evaluate judge --responses runs/assistant/test-responses.json"
                  "   # llama3 in Ollama",
                  "OPENAI_API_KEY=... scratchgpt evaluate judge --responses "
                  "runs/assistant/test-responses.json --judge-url https://api.openai.com/v1 "
                  "--judge-model gpt-4o-mini --mode rubric",
                  "scratchgpt evaluate judge --mode pairwise --responses "
                  "runs/assistant/test-responses.json runs/dpo/test-responses.json --json"
                  "   # the DPO run against its start"],
    )
    judge.add_argument("--responses", required=True, nargs="+", metavar="FILE",
                       help="a responses file: RUN/test-responses.json of `finetune instruct` "
                            "(or the book's, with model_response); with --mode pairwise, two: "
                            "FIRST SECOND, the second's wins counted against the first")
    judge.add_argument("--judge-url", default="http://localhost:11434", metavar="URL",
                       help="the judge server: Ollama's (default: http://localhost:11434, "
                            "Ollama on this machine, as in the book) or a URL with /v1 "
                            "(OpenAI-compatible)")
    judge.add_argument("--judge-model", default="llama3", metavar="NAME",
                       help="the judge model's name on that server (default: llama3, the "
                            "book's; gpt-4o-mini, ...)")
    judge.add_argument("--protocol", choices=["auto", "ollama", "openai"], default="auto",
                       help="the judge's API (default: auto, from the URL)")
    judge.add_argument("--mode", choices=MODES, default="score",
                       help="score: 0-100, the book's prompt (default); rubric: 1-5 against a "
                            "short rubric, which judges answer more steadily; pairwise: which "
                            "of two runs' responses is better, in both orders")
    judge.add_argument("--concurrency", type=int, default=4, metavar="N",
                       help="requests in flight at once (default: 4)")
    judge.add_argument("--attempts", type=int, default=5, metavar="N",
                       help="tries per entry on connection errors, timeouts, 5xx and 429, with "
                            "exponential back-off (default: 5)")
    judge.add_argument("--timeout", type=float, default=120.0, metavar="S",
                       help="seconds to wait for one answer (default: 120)")
    judge.add_argument("--seed", type=int, default=123, help="the judge's seed (default: 123)")
    judge.add_argument("--num-ctx", type=int, default=4096, metavar="N",
                       help="Ollama only: the judge's context window (default: 4096)")
    judge.add_argument("--max-tokens", type=int, metavar="N",
                       help="a cap on each of the judge's answers (default: the server's)")
    judge.add_argument("--api-key-env", default=API_KEY_ENV, metavar="VAR",
                       help=f"the environment variable holding the judge's API key (default: "
                            f"{API_KEY_ENV}, then OPENAI_API_KEY for OpenAI's protocol)")
    judge.add_argument("--out", metavar="FILE.json",
                       help="where to keep the scores (default: eval/judge-MODEL.json beside "
                            "the responses' run; pairwise: eval/judge-pairwise-MODEL-vs-FIRST"
                            ".json in the second's)")
    _add_json_flag(judge)
    judge.set_defaults(func=_evaluate_judge, command="evaluate judge")


def _add_classify(tasks: argparse._SubParsersAction) -> None:
    classify = add_command(
        tasks, "classify", help="accuracy, precision, recall, F1, ROC-AUC, confusion matrix",
        description="Classify labelled texts with a fine-tuned classifier and report how it "
                    "did: accuracy; precision, recall and F1 per class and macro; ROC-AUC for "
                    "two classes; the confusion matrix. Saved as RUN/eval/classify-DATA.json.",
        examples=["scratchgpt evaluate classify --model runs/spam --data sms-spam",
                  "scratchgpt evaluate classify --model runs/spam --data mail.jsonl --json",
                  "scratchgpt evaluate classify --model runs/spam --data spamassassin "
                  "--out runs/spam/spamassassin"],
    )
    classify.add_argument("--model", required=True, metavar="RUN_DIR",
                          help="a run directory of `scratchgpt finetune classify`")
    classify.add_argument("--data", required=True, metavar="PATH",
                          help="labelled texts: a file or directory as `finetune classify "
                               "--data` takes, or sms-spam, spamassassin (downloaded); a path "
                               "that exists is read, before any download of that name")
    classify.add_argument("--text-field", metavar="F",
                          help="the text column of a .csv, .tsv or .jsonl file (default: text)")
    classify.add_argument("--label-field", metavar="F",
                          help="the label column of a .csv, .tsv or .jsonl file (default: label)")
    classify.add_argument("--threshold", type=float, metavar="P",
                          help="two classes only: as `scratchgpt classify --threshold`")
    _add_json_flag(classify)
    classify.add_argument("--out", metavar="DIR",
                          help="also write eval.json, confusion.png and errors.jsonl here")
    classify.set_defaults(func=_evaluate_classify, command="evaluate classify")


def _add_compare(tasks: argparse._SubParsersAction) -> None:
    compare = add_command(
        tasks, "compare", help="one table of every evaluation of several runs",
        description="Read the evaluations of each RUN (RUN/eval/*.json, and a fine-tuning's "
                    "RUN/eval.json) and print one table: a row per run, a column per "
                    "evaluation and headline metric, the best figure in each column starred. "
                    "A column whose runs were evaluated on different data (their fingerprints "
                    "differ) is marked '(mixed data)'; a perplexity column whose runs cut the "
                    "same text into different numbers of tokens (models of different "
                    "families) is marked '(different tokenizers)' and has no best.",
        examples=["scratchgpt evaluate compare runs/assistant runs/assistant-lora",
                  "scratchgpt evaluate compare runs/* --plot compare.png",
                  "scratchgpt evaluate compare runs/a runs/b --json"],
    )
    compare.add_argument("runs", nargs="+", metavar="RUN",
                         help="run directories (or a downloaded model's directory)")
    compare.add_argument("--plot", metavar="FILE.png",
                         help="also draw the table: one panel per column, a bar per run")
    _add_json_flag(compare)
    compare.set_defaults(func=_evaluate_compare, command="evaluate compare")


def _add_review(tasks: argparse._SubParsersAction) -> None:
    review = add_command(
        tasks, "review", help="a page for people to rate responses, and their ratings summed",
        description="Human evaluation. With --responses: write one self-contained HTML page "
                    "(works offline) showing each instruction, its reference and the responses "
                    "of one or more runs side by side, shuffled and blinded; raters give each a "
                    "1-5 rating and pick the better one, and save their ratings as a JSON file. "
                    "With --collect: read those files back: each run's mean rating, win rates "
                    "between runs, and the agreement between raters (Cohen's or Fleiss' kappa).",
        examples=["scratchgpt evaluate review --responses runs/full/test-responses.json "
                  "runs/lora/test-responses.json --out review.html",
                  "scratchgpt evaluate review --collect ratings-*.json",
                  "scratchgpt evaluate review --collect alice.json bob.json --json"],
    )
    mode = review.add_mutually_exclusive_group(required=True)
    mode.add_argument("--responses", nargs="+", metavar="FILE",
                      help="responses files (RUN/test-responses.json) to review side by side")
    mode.add_argument("--collect", nargs="+", metavar="FILE",
                      help="ratings files saved from the page, one per rater")
    review.add_argument("--out", metavar="FILE",
                        help="with --responses: the page to write (review.html); with "
                             "--collect: also save the summary as JSON here")
    review.add_argument("--seed", type=int, default=0,
                        help="the shuffle of items and responses (default: 0)")
    review.add_argument("--title", metavar="TEXT", help="the page's title")
    _add_json_flag(review)
    review.set_defaults(func=_evaluate_review, command="evaluate review")
