"""``scratchgpt finetune instruct``: a GPT taught to follow instructions (chapter 7).

The steps, each a library call of its own:

1. read instruction records (:mod:`scratchgpt.data.instructions`: ``{instruction, input,
   output}`` records as a JSON list or JSON Lines, or ``{messages: [...]}`` conversations),
   every record validated,
2. split them, seeded, 85/5/10 into train, validation and test; the split is saved in the run
   directory,
3. turn each record into text with a prompt style (:mod:`scratchgpt.data.prompt_styles`:
   ``alpaca``, ``phi3``, ``chatml``) or, with ``template`` (the default for a model that has
   one), the model's own chat template (:mod:`scratchgpt.data.chat_templates`, kept in the run
   directory's ``template/`` so that the run is prompted as it was trained), and into padded
   batches whose loss falls on the answers (:mod:`scratchgpt.data.instruction_batches`),
4. start from a language model (:mod:`.init_from`), train all of its weights or LoRA adapters,
   with the same :class:`~scratchgpt.training.trainer.Trainer` as pretraining, on the
   :class:`InstructionTask`; each evaluation answers a few fixed validation instructions
   (``samples.txt``),
5. answer every test instruction with the best checkpoint, in batches, into
   ``test-responses.json`` (what ``scratchgpt evaluate judge`` reads), and score the answers
   against the references (ROUGE-L, exact match) in ``eval.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.data.batches import ShuffledBatches, evaluation_batches
from scratchgpt.data.chat_templates import read_chat_template
from scratchgpt.data.instruction_batches import IGNORE_INDEX, InstructionExamples
from scratchgpt.data.instructions import (
    Record,
    load_instruction_splits,
    load_instructions,
    record_fields,
    record_prompt,
    record_reference,
    save_instruction_splits,
    split_records,
)
from scratchgpt.data.prompt_format import PromptFormat, describe, encode_prompt
from scratchgpt.data.prompt_styles import PROMPT_STYLES, TEMPLATE, get_prompt_style
from scratchgpt.evaluation.rouge import response_scores
from scratchgpt.finetune.config import (  # the settings, kept free of PyTorch
    DPOConfig,
    InstructConfig,
    InstructData,
    InstructModel,  # noqa: F401  (re-exported: scratchgpt.finetune.instruction.InstructModel)
    split_fractions,
)
from scratchgpt.finetune.init_from import PRESET_PREFIX, start_model
from scratchgpt.generation import generate_batch_text
from scratchgpt.hub.datasets import dataset_path
from scratchgpt.hub.models import model_prompt_format, model_stop_ids, model_template_dir
from scratchgpt.model import GPTModel
from scratchgpt.model.device import compute_device
from scratchgpt.model.trainable import set_trainable
from scratchgpt.progress import progress_bar
from scratchgpt.run_dir import (
    HEAD,
    RESOLVED_MODEL,
    SPLIT_DIR,
    TEMPLATE_DIR,
    load_run,
    save_run_template,
    write_whole,
)
from scratchgpt.tokenizers import Tokenizer
from scratchgpt.training import distributed
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.language_modeling import next_token_loss
from scratchgpt.training.runner import Setup, log, run_job
from scratchgpt.training.trainer import Batch, FitResult, Task

TEST_RESPONSES = "test-responses.json"
EVAL_FILE = "eval.json"
SAMPLE_RECORDS = 3  # validation instructions answered at every evaluation


def read_records(config: InstructData) -> list[Record]:
    """The records ``config.data`` names (a shipped dataset from the download cache, or a
    path), the first ``config.limit`` of them."""
    return load_instructions(dataset_path(config.data, "instructions"))[: config.limit]


def fitting_report(examples: InstructionExamples, context: int) -> str:
    """What became of the records longer than the context: how many were cut, and how many
    left out, each with why."""
    clauses = []
    if examples.truncated:
        clauses.append(f"{_records(examples.truncated)} longer than the context of {context} "
                       "tokens cut from the left to fit")
    if examples.dropped:
        clauses.append(f"{_records(examples.dropped)} left out: even with the prompt cut, the "
                       f"final answer and end-of-text need more than {context} tokens")
    return "; ".join(clauses)


def _records(count: int) -> str:
    return f"{count:,} record" + ("" if count == 1 else "s")


def choose_prompt_format(name: str | None, model: str) -> tuple[PromptFormat, Path | None]:
    """The prompt format ``--prompt-style NAME`` asks for, fine-tuning ``model`` (its
    ``--model``), and the directory of the chat template (None for a prompt style): NAME
    ``template`` is the model's own chat template; None picks it where the model has one, else
    ``alpaca``. A model without a template given ``template`` is refused, with the
    alternatives."""
    if name is not None and name != TEMPLATE:
        return get_prompt_style(name), None
    template_dir = None if model.startswith(PRESET_PREFIX) else model_template_dir(model)
    if template_dir is not None:
        return read_chat_template(template_dir), template_dir
    if name is None:
        return get_prompt_style("alpaca"), None
    raise ValueError(
        f"--prompt-style template: {model} has no chat template to render the records in "
        "(no chat_template.jinja, no 'chat_template' in tokenizer_config.json, not a run tuned "
        "in one: a base model has none); fine-tune it in a prompt style instead: "
        f"--prompt-style {', '.join(PROMPT_STYLES)}"
    )


def respond(model: GPTModel, tokenizer: Tokenizer, style: PromptFormat, records: Sequence[Record],
            *, max_new_tokens: int, stop_ids: tuple[int, ...] | None = None,
            batch_size: int = 16, show_progress: bool = False) -> list[str]:
    """The model's answer (greedy) to each record's prompt, encoded as the style means it
    (:func:`~scratchgpt.data.prompt_format.encode_prompt`, as in training), generated
    ``batch_size`` at a time (left-padded rows decoded together, each with its own KV cache
    rows) and cut at the style's stop strings or any of ``stop_ids`` (None: end-of-text)."""
    prompts = [encode_prompt(style, tokenizer, record_prompt(record, style))
               for record in records]
    responses: list[str] = []
    with progress_bar(total=len(prompts), desc="responses", unit="response",
                      disable=not show_progress) as bar:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            texts = generate_batch_text(model, tokenizer, chunk, max_new_tokens,
                                        stop=style.stop, stop_ids=stop_ids)
            responses += [text.strip() for text in texts]
            bar.update(len(chunk))
    return responses


class InstructionTask:
    """Next-token cross-entropy on the trained positions of instruction examples; the loss on
    fixed train and validation examples, and answers to a few validation instructions.

    The best checkpoint is the one with the lowest validation loss.
    """

    best_metric = "val_loss"
    higher_is_better = False
    progress_metrics: tuple[str, ...] = ()

    def __init__(self, train: InstructionExamples, val: InstructionExamples, *, batch_size: int,
                 eval_examples: int, seed: int, tokenizer: Tokenizer, style: PromptFormat,
                 stop_ids: tuple[int, ...] | None, sample_records: Sequence[Record],
                 max_new_tokens: int) -> None:
        self.data = {"train": train, "val": val}
        self.batch_size = batch_size
        self.seed = seed
        self.eval_sets = {name: evaluation_batches(examples, eval_examples, batch_size)
                          for name, examples in self.data.items()}
        self.tokenizer = tokenizer
        self.style = style
        self.stop_ids = stop_ids
        self.sample_records = list(sample_records)
        self.max_new_tokens = max_new_tokens

    def train_stream(self, rank: int, world_size: int) -> ShuffledBatches:
        return ShuffledBatches(self.data["train"], self.batch_size, seed=self.seed, rank=rank,
                               world_size=world_size)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return next_token_loss(model, batch)  # positions marked IGNORE_INDEX do not count

    def loss_terms(self, batch: Batch) -> torch.Tensor:
        return (batch[1] != IGNORE_INDEX).sum()  # the trained tokens

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """The mean loss per trained token (not per batch: examples differ in length)."""
        device = compute_device(model)
        metrics = {}
        for name, examples in self.data.items():
            total, count = 0.0, 0
            for indices in self.eval_sets[name]:
                inputs, targets = (t.to(device) for t in examples.batch(indices))
                logits = model(inputs).float()
                total += float(F.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                               reduction="sum"))
                count += int((targets != IGNORE_INDEX).sum())
            metrics[f"{name}_loss"] = total / max(count, 1)
        return metrics

    def sample(self, model: nn.Module) -> str | None:
        """The model's answers to the first validation instructions, beside the references."""
        if not self.sample_records or not isinstance(model, GPTModel):
            return None
        responses = respond(model, self.tokenizer, self.style, self.sample_records,
                            max_new_tokens=self.max_new_tokens, stop_ids=self.stop_ids)
        return "\n\n".join(_sample_text(record, response)
                           for record, response in zip(self.sample_records, responses,
                                                       strict=True))


def _sample_text(record: Record, response: str) -> str:
    fields = record_fields(record)
    prompt = fields["instruction"] + (f"\n{fields['input']}" if fields["input"] else "")
    return f">>> {prompt}\n--- response:\n{response}\n--- reference:\n{record_reference(record)}"


def run_prompt_format(
    name: str | None, model: str, resume_dir: Path | None,
    choose: Callable[[str | None, str], tuple[PromptFormat, Path | None]],
) -> tuple[PromptFormat, Path | None, str]:
    """The prompt format a run renders its records in, the directory of its chat template
    (None for a prompt style) and the name recorded in the run (``template`` or the style's).
    A resumed template run reads its own copy of the template; otherwise ``choose`` picks
    from ``--prompt-style NAME`` and the model."""
    if resume_dir is not None and name == TEMPLATE:
        template_dir = resume_dir / TEMPLATE_DIR
        return read_chat_template(template_dir), template_dir, TEMPLATE
    style, template_dir = choose(name, model)
    return style, template_dir, TEMPLATE if template_dir is not None else style.name


def assistant_setup(model: GPTModel, tokenizer: Tokenizer, task: Task,
                    config: InstructConfig | DPOConfig,
                    style_name: str, template_dir: Path | None,
                    save_splits: Callable[[Path], None]) -> Setup:
    """What every fine-tuning of an assistant hands the runner: its tables (a language model
    with the prompt style it trained in, also where the default chose it) and a writer of its
    split and, for a template run, the template."""
    head = {"kind": "language_model", "prompt_style": style_name,
            "trainable": config.model.train, **config.model.lora()}
    settings = config.to_tables()
    settings["data"] = {**settings["data"], "prompt_style": style_name}
    tables = {**settings, RESOLVED_MODEL: model.config.to_dict(), HEAD: head}

    def write(run_dir: Path) -> None:
        save_splits(run_dir / SPLIT_DIR)
        if template_dir is not None:
            save_run_template(template_dir, run_dir)

    return Setup(model, task, tokenizer, tables, write=write)


@dataclass
class InstructJob:
    """Instruction-tuning a language model (a :class:`~.runner.Job`)."""

    config: InstructConfig
    command = "finetune instruct"

    @property
    def train(self) -> TrainConfig:
        return self.config.train

    def setup(self, process: distributed.ProcessInfo, resume_dir: Path | None) -> Setup:
        data, choice, train = self.config.data, self.config.model, self.config.train
        style, template_dir, style_name = run_prompt_format(
            data.prompt_style, choice.model, resume_dir, choose_prompt_format)
        splits = (load_instruction_splits(resume_dir / SPLIT_DIR) if resume_dir is not None
                  else split_records(read_records(data), seed=train.seed,
                                     fractions=split_fractions(data)))
        model, tokenizer = start_model(
            choice.model, tokenizer=choice.tokenizer, seed=train.seed, resume_dir=resume_dir,
            texts=lambda: [text for record in splits.train
                           for text in record_fields(record).values()])
        summary = set_trainable(model, choice.train, **choice.lora())
        context = model.config.context_length

        def examples(records: Sequence[Record]) -> InstructionExamples:
            return InstructionExamples(records, tokenizer, style, context, data.mask_prompt)

        train_examples, val_examples = examples(splits.train), examples(splits.val)
        if process.is_main:
            if template_dir is not None:
                masked = f" ({style.origin}), the loss on the assistant turns only"
            else:
                masked = ", loss on the responses only" if data.mask_prompt else ""
            log(f"{len(splits.train):,} training, {len(splits.val):,} validation and "
                f"{len(splits.test):,} test records; {describe(style)}{masked}")
            for name, part in (("training", train_examples), ("validation", val_examples)):
                if part.truncated or part.dropped:
                    log(f"{name}: " + fitting_report(part, context))
            log(str(summary))
        if data.epochs > 0:
            train.max_steps = train.steps_for_epochs(data.epochs, len(train_examples),
                                                     process.world_size)
        eval_examples = train.eval_batches * train.global_batch(process.world_size)
        # a template's answers end at the model's end-of-turn ids; a style's at end-of-text
        stop_ids = model_stop_ids(template_dir, tokenizer) if template_dir is not None else None
        task = InstructionTask(train_examples, val_examples, batch_size=train.batch_size,
                               eval_examples=eval_examples, seed=train.seed,
                               tokenizer=tokenizer, style=style, stop_ids=stop_ids,
                               sample_records=splits.val[:SAMPLE_RECORDS],
                               max_new_tokens=data.max_new_tokens)
        return assistant_setup(model, tokenizer, task, self.config, style_name, template_dir,
                               lambda directory: save_instruction_splits(splits, directory))


def answer_entries(model: GPTModel, tokenizer: Tokenizer, style: PromptFormat,
                   records: Sequence[Record], *, max_new_tokens: int,
                   stop_ids: Sequence[int] | None,
                   show_progress: bool = True) -> list[dict[str, Any]]:
    """``records`` answered greedily by ``model``: a responses file's entries (instruction,
    input, output: the reference, response)."""
    responses = respond(model, tokenizer, style, records, max_new_tokens=max_new_tokens,
                        stop_ids=stop_ids, show_progress=show_progress)
    return [{**record_fields(record), "response": response}
            for record, response in zip(records, responses, strict=True)]


def write_test_responses(run_dir: Path, *, max_new_tokens: int,
                         show_progress: bool = True) -> dict[str, float]:
    """Answer every test record of a run with its best checkpoint: ``test-responses.json``
    and the scores of the answers against the references in ``eval.json``, which are
    returned."""
    model, tokenizer = load_run(run_dir)
    if not isinstance(model, GPTModel):
        raise ValueError(f"{run_dir} is not a language model run")
    style = model_prompt_format(run_dir) or get_prompt_style("alpaca")
    records = load_instruction_splits(run_dir / SPLIT_DIR).test
    entries = answer_entries(model, tokenizer, style, records, max_new_tokens=max_new_tokens,
                             stop_ids=model_stop_ids(run_dir, tokenizer),
                             show_progress=show_progress)
    scores = response_scores((entry["output"], entry["response"]) for entry in entries)
    write_json(run_dir / TEST_RESPONSES, entries)
    write_json(run_dir / EVAL_FILE, scores)
    return scores


def write_json(path: Path, data: Any) -> None:
    """``data`` as readable JSON, written whole (a crash leaves the old file or the new)."""
    write_whole(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def finetune_instruct(config: InstructConfig, run_dir: Path, *, resume: bool = False,
                      show_progress: bool = True) -> FitResult:
    """Instruction-tune (or, with ``resume``, continue) a model in ``run_dir``, then answer
    the test split with its best checkpoint (``test-responses.json``, ``eval.json``)."""
    result = run_job(InstructJob(config), run_dir, resume=resume, show_progress=show_progress)
    if not result.interrupted and distributed.is_main_process():
        scores = write_test_responses(run_dir, max_new_tokens=config.data.max_new_tokens,
                                      show_progress=show_progress)
        log(f"test: ROUGE-L F1 {scores['rouge_l_f1']:.3f}, exact match "
            f"{scores['exact_match']:.3f} over {scores['count']:.0f} responses "
            f"({run_dir / TEST_RESPONSES})")
    return result
