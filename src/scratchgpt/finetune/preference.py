"""``scratchgpt finetune dpo``: an assistant taught which of two answers people prefer (DPO, the
bonus of the book's chapter 7).

The steps, each a library call of its own:

1. read preference pairs (:mod:`scratchgpt.data.preferences`: the book's ``{instruction, input,
   chosen, rejected}`` records, or TRL's conversational ``{prompt, chosen, rejected}``), every
   record validated, those whose two answers are equal dropped and counted,
2. split them, seeded, 85/5/10 into train, validation and test; the split is saved in the run
   directory,
3. render both answers of each pair as instruction tuning renders them, in the model's chat
   template or the prompt style its instruction tuning recorded (else alpaca), into batches of
   2B rows, the B chosen then the B rejected (:mod:`scratchgpt.data.preference_batches`),
4. start the *policy* from a language model (:mod:`.init_from`), ideally one already
   instruction-tuned, and keep its starting point as the frozen *reference*: with ``--train
   all`` a frozen copy, with ``--train lora`` the very same weights with the adapters off
   (:func:`~scratchgpt.model.lora.adapters_off`: no second copy in memory),
5. train with the same :class:`~scratchgpt.training.trainer.Trainer` as pretraining, on the
   :class:`DPOTask`: the loss of :mod:`scratchgpt.training.dpo` on the answers'
   log-probabilities under the policy and the reference (the reference's computed at each
   step, or once for all the training pairs: ``--precompute-reference``); each evaluation
   logs the loss, the reward margin, the reward accuracy and both implicit rewards, and
   answers a few validation prompts with the starting model and the current one side by side
   (``samples.txt``),
6. measure the best checkpoint on the test pairs (``eval.json``), and answer their prompts with
   it (``test-responses.json``) and with the starting model (``start-responses.json``), for
   ``scratchgpt evaluate judge --mode pairwise`` or ``evaluate review`` to set side by side.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from scratchgpt.config import ModelConfig
from scratchgpt.config_files import load_toml
from scratchgpt.data.batches import ShuffledBatches, evaluation_batches
from scratchgpt.data.instructions import Record, record_fields
from scratchgpt.data.preference_batches import PreferenceExamples
from scratchgpt.data.preferences import (
    PreferenceRecord,
    load_preference_splits,
    load_preferences,
    save_preference_splits,
    split_preferences,
)
from scratchgpt.data.prompt_format import PromptFormat, describe
from scratchgpt.data.prompt_styles import get_prompt_style
from scratchgpt.finetune.config import DPOConfig, split_fractions
from scratchgpt.finetune.init_from import PRESET_PREFIX, start_model
from scratchgpt.finetune.instruction import (
    TEST_RESPONSES,
    answer_entries,
    assistant_setup,
    choose_prompt_format,
    respond,
    run_prompt_format,
    write_json,
)
from scratchgpt.hub.datasets import dataset_path
from scratchgpt.hub.models import (
    load_model,
    model_prompt_format,
    model_stop_ids,
    model_template_dir,
)
from scratchgpt.model import GPTModel
from scratchgpt.model.device import compute_device
from scratchgpt.model.lora import adapters_off
from scratchgpt.model.trainable import set_trainable
from scratchgpt.run_dir import (
    CONFIG_FILE,
    RESOLVED_MODEL,
    SPLIT_DIR,
    load_run,
)
from scratchgpt.tokenizers import Tokenizer
from scratchgpt.training import distributed
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.dpo import DPOLoss, answer_log_probs, dpo_loss
from scratchgpt.training.runner import Setup, log, run_job
from scratchgpt.training.trainer import Batch, FitResult, resolve_device

EVAL_FILE = "eval.json"
START_RESPONSES = "start-responses.json"  # the test prompts answered by the starting model
SAMPLE_PAIRS = 3  # validation prompts answered at every evaluation


def choose_preference_format(name: str | None, model: str) -> tuple[PromptFormat, Path | None]:
    """The prompt format ``--prompt-style NAME`` asks for, tuning ``model``, and the directory
    of its chat template (None for a prompt style). NAME None picks the model's chat template
    where it has one, else the prompt style its instruction tuning recorded (DPO goes on in the
    layout the model learned), else alpaca."""
    if name is None and not model.startswith(PRESET_PREFIX) and model_template_dir(model) is None:
        recorded = model_prompt_format(model)
        if recorded is not None:
            return recorded, None
    return choose_prompt_format(name, model)


def starting_model(spec: str, run_dir: Path, seed: int) -> GPTModel:
    """The model a DPO run in ``run_dir`` started from, built again (in eval mode): its
    ``--model``, or for ``preset:NAME`` the same seeded random start. The global random state
    is left as it was."""
    with torch.random.fork_rng(devices=[]):
        if spec.startswith(PRESET_PREFIX):
            torch.manual_seed(seed)
            config = ModelConfig.from_dict(load_toml(run_dir / CONFIG_FILE)[RESOLVED_MODEL])
            return GPTModel(config).eval()
        return load_model(spec)[0].eval()


class Reference:
    """The frozen starting model that DPO measures the policy against.

    With full fine-tuning it is a frozen copy (``frozen``); with LoRA it is the policy itself
    with its adapters switched off, no second copy in memory. Either way it runs in eval mode
    (no dropout) and without gradients.
    """

    def __init__(self, policy: GPTModel, frozen: GPTModel | None) -> None:
        self.policy = policy
        self.frozen = None if frozen is None else frozen.eval().requires_grad_(False)

    @contextmanager
    def model(self) -> Iterator[GPTModel]:
        """The reference, on the policy's device, for the ``with`` block."""
        if self.frozen is not None:
            yield self.frozen.to(compute_device(self.policy))
            return
        was_training = self.policy.training
        self.policy.eval()
        try:
            with adapters_off(self.policy):
                yield self.policy
        finally:
            self.policy.train(was_training)

    @torch.no_grad()
    def log_probs(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The answers' log-probabilities under the reference: ``[2B]``."""
        with self.model() as reference:
            return answer_log_probs(reference(inputs), targets)


class ReferencedPairs:
    """Training pairs with the reference's log-probabilities of their answers, computed once
    (``--precompute-reference``): ``batch(indices)`` gives ``(inputs, targets, reference
    [2B])``, so that a step runs the policy alone.

    They are computed at the first batch, when the model holds the weights it trains from (a
    resumed run loads its checkpoint after its batches are set up), in batches padded unlike
    training's: they match a step's own to float precision.
    """

    def __init__(self, examples: PreferenceExamples, reference: Reference,
                 batch_size: int) -> None:
        self.examples = examples
        self.example_name, self.remedy = examples.example_name, examples.remedy
        self.reference = reference
        self.batch_size = batch_size
        self.log_probs: tuple[torch.Tensor, torch.Tensor] | None = None  # chosen, rejected

    def __len__(self) -> int:
        return len(self.examples)

    def _compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        device = compute_device(self.reference.policy)
        chosen, rejected = torch.empty(len(self)), torch.empty(len(self))
        for indices in torch.arange(len(self)).split(self.batch_size):
            inputs, targets = (t.to(device) for t in self.examples.batch(indices))
            chosen[indices], rejected[indices] = (
                self.reference.log_probs(inputs, targets).cpu().split(len(indices)))
        return chosen, rejected

    def batch(self, indices: torch.Tensor | Sequence[int]) -> Batch:
        if self.log_probs is None:
            self.log_probs = self._compute()
        rows = torch.as_tensor([int(i) for i in indices])
        chosen, rejected = self.log_probs
        return (*self.examples.batch(rows), torch.cat([chosen[rows], rejected[rows]]))


def pair_loss(policy: torch.Tensor, reference: torch.Tensor, *, beta: float,
              label_smoothing: float) -> DPOLoss:
    """The DPO loss of a batch from the log-probabilities of its 2B rows (chosen, then
    rejected) under the policy and the reference."""
    b = len(policy) // 2
    return dpo_loss(policy[:b], policy[b:], reference[:b], reference[b:], beta=beta,
                    label_smoothing=label_smoothing)


def pair_metrics(results: Sequence[DPOLoss]) -> dict[str, float]:
    """The mean loss, reward margin, reward accuracy and implicit rewards over batches."""
    def mean(part: Callable[[DPOLoss], torch.Tensor]) -> float:
        return float(torch.cat([part(r) for r in results]).float().mean())

    return {"loss": mean(lambda r: r.losses), "reward_margin": mean(lambda r: r.reward_margins),
            "reward_accuracy": mean(lambda r: r.reward_accuracies),
            "chosen_reward": mean(lambda r: r.chosen_rewards),
            "rejected_reward": mean(lambda r: r.rejected_rewards)}


class DPOTask:
    """The DPO loss of preference pairs; loss, reward margin and accuracy and the implicit
    rewards on fixed train and validation pairs; a few validation prompts answered by the
    starting model and the current one.

    ``evaluate`` names each metric ``train_...`` and ``val_...``, as every task does, and also
    gives the validation's ``reward_accuracy`` and ``reward_margin`` under those plain names
    (what ``metrics.jsonl`` is read for). The best checkpoint has the lowest validation loss.
    """

    best_metric = "val_loss"
    higher_is_better = False
    progress_metrics = ("val_reward_accuracy", "val_reward_margin")

    def __init__(self, train: PreferenceExamples, val: PreferenceExamples, reference: Reference,
                 *, beta: float, label_smoothing: float, precompute: bool, batch_size: int,
                 eval_examples: int,
                 seed: int, tokenizer: Tokenizer, style: PromptFormat,
                 stop_ids: tuple[int, ...] | None, sample_pairs: Sequence[PreferenceRecord],
                 max_new_tokens: int) -> None:
        self.data = {"train": train, "val": val}
        self.reference = reference
        self.beta = beta
        self.label_smoothing = label_smoothing
        self.precompute = precompute
        self.batch_size = batch_size
        self.seed = seed
        self.eval_sets = {name: evaluation_batches(examples, eval_examples, batch_size)
                          for name, examples in self.data.items()}
        self.reference_cache: dict[tuple[str, int], torch.Tensor] = {}  # fixed batches
        self.tokenizer = tokenizer
        self.style = style
        self.stop_ids = stop_ids
        self.sample_pairs = list(sample_pairs)
        self.max_new_tokens = max_new_tokens
        self.starting_answers: list[str] | None = None  # computed once, by the reference

    def train_stream(self, rank: int, world_size: int) -> ShuffledBatches:
        pairs: PreferenceExamples | ReferencedPairs = self.data["train"]
        if self.precompute:
            pairs = ReferencedPairs(self.data["train"], self.reference, self.batch_size)
        return ShuffledBatches(pairs, self.batch_size, seed=self.seed, rank=rank,
                               world_size=world_size)

    def _loss(self, policy: torch.Tensor, reference: torch.Tensor) -> DPOLoss:
        return pair_loss(policy, reference, beta=self.beta, label_smoothing=self.label_smoothing)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """One forward of the 2B rows through the policy; the reference's under no_grad,
        unless the batch brings them (``--precompute-reference``)."""
        inputs, targets, *precomputed = batch
        policy = answer_log_probs(model(inputs), targets)
        reference = (precomputed[0] if precomputed
                     else self.reference.log_probs(inputs, targets))
        return self._loss(policy, reference).loss

    def loss_terms(self, batch: Batch) -> int:
        return len(batch[0]) // 2  # the pairs: B chosen rows, then B rejected

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        device = compute_device(model)
        metrics: dict[str, float] = {}
        for name, examples in self.data.items():
            results = []
            for number, indices in enumerate(self.eval_sets[name]):
                inputs, targets = (t.to(device) for t in examples.batch(indices))
                key = (name, number)
                if key not in self.reference_cache:  # the reference never changes
                    self.reference_cache[key] = self.reference.log_probs(inputs, targets)
                policy = answer_log_probs(model(inputs), targets)
                results.append(self._loss(policy, self.reference_cache[key].to(device)))
            metrics |= {f"{name}_{metric}": value
                        for metric, value in pair_metrics(results).items()}
        return {**metrics, "reward_accuracy": metrics["val_reward_accuracy"],
                "reward_margin": metrics["val_reward_margin"]}

    def sample(self, model: nn.Module) -> str | None:
        """The first validation prompts answered by the starting model and the current one,
        beside the chosen and the rejected answer."""
        if not self.sample_pairs or not isinstance(model, GPTModel):
            return None
        records = [pair.chosen for pair in self.sample_pairs]
        if self.starting_answers is None:
            with self.reference.model() as start:
                self.starting_answers = self._respond(start, records)
        now = self._respond(model, records)
        return "\n\n".join(
            _sample_text(pair, before, after)
            for pair, before, after in zip(self.sample_pairs, self.starting_answers, now,
                                           strict=True))

    def _respond(self, model: GPTModel, records: list[Record]) -> list[str]:
        return respond(model, self.tokenizer, self.style, records,
                       max_new_tokens=self.max_new_tokens, stop_ids=self.stop_ids)


def _sample_text(pair: PreferenceRecord, before: str, after: str) -> str:
    fields = record_fields(pair.chosen)
    prompt = fields["instruction"] + (f"\n{fields['input']}" if fields["input"] else "")
    chosen, rejected = pair.answers
    return (f">>> {prompt}\n--- starting model:\n{before}\n--- now:\n{after}\n"
            f"--- chosen:\n{chosen}\n--- rejected:\n{rejected}")


def _pair_texts(pairs: Sequence[PreferenceRecord]) -> list[str]:
    """Every text of the pairs: what a ``preset:NAME`` model's tokenizer is trained on."""
    return [text for pair in pairs for record in (pair.chosen, pair.rejected)
            for text in record_fields(record).values()]


@dataclass
class DPOJob:
    """Preference-tuning a language model with DPO (a :class:`~.runner.Job`)."""

    config: DPOConfig
    command = "finetune dpo"

    @property
    def train(self) -> TrainConfig:
        return self.config.train

    def setup(self, process: distributed.ProcessInfo, resume_dir: Path | None) -> Setup:
        data, choice, train = self.config.data, self.config.model, self.config.train
        style, template_dir, style_name = run_prompt_format(
            data.prompt_style, choice.model, resume_dir, choose_preference_format)
        identical = 0
        if resume_dir is not None:  # the run's own split
            splits = load_preference_splits(resume_dir / SPLIT_DIR)
        else:
            preferences = load_preferences(dataset_path(data.data, "preferences"))
            identical = preferences.identical
            splits = split_preferences(preferences.pairs[: data.limit], seed=train.seed,
                                       fractions=split_fractions(data))
        model, tokenizer = start_model(choice.model, tokenizer=choice.tokenizer, seed=train.seed,
                                       resume_dir=resume_dir,
                                       texts=lambda: _pair_texts(splits.train))
        frozen = None
        if choice.train == "all":  # the start, kept frozen beside the policy (resumed, the
            # model may be a shell for a checkpoint's weights: the start is built again)
            frozen = (copy.deepcopy(model) if resume_dir is None
                      else starting_model(choice.model, resume_dir, train.seed))
        summary = set_trainable(model, choice.train, **choice.lora())
        context = model.config.context_length

        def examples(pairs: Sequence[PreferenceRecord]) -> PreferenceExamples:
            return PreferenceExamples(pairs, tokenizer, style, context)

        train_examples, val_examples = examples(splits.train), examples(splits.val)
        if process.is_main:
            log(f"{len(splits.train):,} training, {len(splits.val):,} validation and "
                f"{len(splits.test):,} test pairs; {describe(style)}")
            if identical:
                log(f"{identical:,} records dropped: their chosen answer equals their rejected "
                    "one (nothing to prefer)")
            for name, part in (("training", train_examples), ("validation", val_examples)):
                if part.fitting_report():
                    log(f"{name}: " + part.fitting_report())
            if choice.model.startswith(PRESET_PREFIX) or model_prompt_format(choice.model) is None:
                log(f"warning: {choice.model} was never instruction-tuned: DPO teaches a "
                    "preference between answers, best to a model that already answers "
                    "(`scratchgpt finetune instruct` first)")
            log(str(summary) + f"; the reference is the starting model, frozen "
                f"({'a copy' if frozen is not None else 'the adapters switched off'})")
        if data.epochs > 0:
            train.max_steps = train.steps_for_epochs(data.epochs, len(train_examples),
                                                     process.world_size)
        eval_examples = train.eval_batches * train.global_batch(process.world_size)
        stop_ids = model_stop_ids(template_dir, tokenizer) if template_dir is not None else None
        task = DPOTask(train_examples, val_examples, Reference(model, frozen),
                       beta=choice.beta, label_smoothing=choice.label_smoothing,
                       precompute=choice.precompute_reference,
                       batch_size=train.batch_size, eval_examples=eval_examples,
                       seed=train.seed, tokenizer=tokenizer, style=style, stop_ids=stop_ids,
                       sample_pairs=splits.val[:SAMPLE_PAIRS], max_new_tokens=data.max_new_tokens)
        return assistant_setup(model, tokenizer, task, self.config, style_name, template_dir,
                               lambda directory: save_preference_splits(splits, directory))


def write_test_metrics(run_dir: Path, config: DPOConfig, *,
                       show_progress: bool = True) -> dict[str, float]:
    """The loss, reward margin and accuracy and implicit rewards of the run's best checkpoint
    on every test pair, against the starting model: written to ``eval.json`` and returned.
    Both models also answer the test prompts: ``test-responses.json`` (the tuned one) and
    ``start-responses.json``, each entry with the pair's chosen answer as its reference
    (``output``) and its ``rejected`` one beside it."""
    device = resolve_device(config.train.device)
    policy, tokenizer = load_run(run_dir)
    if not isinstance(policy, GPTModel):
        raise ValueError(f"{run_dir} is not a language model run")
    policy = policy.to(device).eval()
    reference = Reference(policy, starting_model(config.model.model, run_dir, config.train.seed))
    style = model_prompt_format(run_dir) or get_prompt_style("alpaca")
    pairs = load_preference_splits(run_dir / SPLIT_DIR).test
    examples = PreferenceExamples(pairs, tokenizer, style, policy.config.context_length)
    results = []
    with torch.no_grad():
        for indices in torch.arange(len(examples)).split(config.train.batch_size):
            inputs, targets = (t.to(device) for t in examples.batch(indices))
            results.append(pair_loss(answer_log_probs(policy(inputs), targets),
                                     reference.log_probs(inputs, targets),
                                     beta=config.model.beta,
                                     label_smoothing=config.model.label_smoothing))
    scores = {**pair_metrics(results), "count": len(examples), "dropped": examples.dropped}
    write_json(run_dir / EVAL_FILE, scores)
    records = [pair.chosen for pair in pairs]

    def answers(model: GPTModel) -> list[dict[str, str]]:
        entries = answer_entries(model, tokenizer, style, records,
                                 max_new_tokens=config.data.max_new_tokens,
                                 stop_ids=model_stop_ids(run_dir, tokenizer),
                                 show_progress=show_progress)
        return [{**entry, "rejected": pair.answers[1]}
                for entry, pair in zip(entries, pairs, strict=True)]

    write_json(run_dir / TEST_RESPONSES, answers(policy))
    with reference.model() as start:
        write_json(run_dir / START_RESPONSES, answers(start))
    return scores


def finetune_dpo(config: DPOConfig, run_dir: Path, *, resume: bool = False,
                 show_progress: bool = True) -> FitResult:
    """DPO-tune (or, with ``resume``, continue) a model in ``run_dir``, then measure the best
    checkpoint on the test pairs (``eval.json``) and answer their prompts with it and with the
    starting model (``test-responses.json``, ``start-responses.json``)."""
    result = run_job(DPOJob(config), run_dir, resume=resume, show_progress=show_progress)
    if not result.interrupted and distributed.is_main_process():
        scores = write_test_metrics(run_dir, config, show_progress=show_progress)
        log(f"test: reward accuracy {scores['reward_accuracy']:.3f}, reward margin "
            f"{scores['reward_margin']:.3f}, loss {scores['loss']:.3f} over "
            f"{scores['count']:.0f} pairs ({run_dir / EVAL_FILE}); the test prompts answered "
            f"by the tuned model and the starting one: {run_dir / TEST_RESPONSES}, "
            f"{run_dir / START_RESPONSES}")
    return result
