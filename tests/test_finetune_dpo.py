"""``scratchgpt finetune dpo``, run for real on a few dozen of the book's preference pairs.

A tiny model (instruction-tuned for a few steps, or barely pretrained) is tuned with DPO: the
point is the whole path — the loss of log 2 where the policy is the reference, a learning
signal, LoRA's reference with the adapters off, the logged rewards, ``eval.json``, an exact
``--resume``, and a run that generate, chat and export take — not a polite assistant.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from instruct_runs import cli_here
from pretrain_runs import read_metrics, run_env

from scratchgpt.cli import main
from scratchgpt.config_files import load_toml
from scratchgpt.data.preference_batches import PreferenceExamples
from scratchgpt.data.preferences import load_preference_splits, load_preferences
from scratchgpt.data.prompt_styles import get_prompt_style
from scratchgpt.finetune.preference import Reference
from scratchgpt.model.lora import LoRALinear, adapters_off
from scratchgpt.model.trainable import set_trainable
from scratchgpt.run_dir import load_run
from scratchgpt.training.dpo import answer_log_probs

TINY = ["--batch-size", "4", "--eval-every", "2", "--eval-batches", "1", "--max-new-tokens", "4",
        "--epochs", "0", "--max-steps", "4"]
IDENTICAL = 2  # records whose chosen answer equals their rejected one, in the test data


def dpo_here(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    """``scratchgpt finetune dpo ARGS --threads 1`` in this process (one thread is the fast
    choice on busy cores), leaving the process's threads as they were."""
    threads = torch.get_num_threads()
    try:
        return cli_here("finetune", "dpo", *args, "--threads", "1", cache=cache)
    finally:
        torch.set_num_threads(threads)


def finetune_dpo(data: Path, model: Path, run_dir: Path, *extra: str,
                 cache: Path) -> subprocess.CompletedProcess[str]:
    return dpo_here("--data", str(data), "--model", str(model), "--out", str(run_dir), *TINY,
                    *extra, cache=cache)


@pytest.fixture(scope="module")
def preference_records(shared_assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The book's first 40 preference records, and two whose answers are equal."""
    path = shared_assets / "instructions" / "instruction-data-with-preference.json"
    records = json.loads(path.read_text(encoding="utf-8"))[:40]
    records += [{"instruction": f"Say {word}.", "input": "", "chosen": word, "rejected": word}
                for word in ("yes", "no")]
    out = tmp_path_factory.mktemp("preferences") / "pairs.json"
    out.write_text(json.dumps(records), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def dpo_run(preference_records: Path, instruct_run: tuple[Path, str], instruct_cache: Path,
            tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """DPO of the chatml instruction-tuned run, 4 steps: the run directory and its log."""
    run_dir = tmp_path_factory.mktemp("runs") / "dpo"
    done = finetune_dpo(preference_records, instruct_run[0], run_dir, cache=instruct_cache)
    assert done.returncode == 0, done.stderr
    return run_dir, done.stderr


def test_a_run_starts_at_log_2_and_logs_the_rewards_at_each_evaluation(
        dpo_run: tuple[Path, str]) -> None:
    run_dir, log = dpo_run
    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == [0, 2, 4]
    start = metrics[0]
    for split in ("train", "val"):  # the policy is the reference: h = 0
        assert start[f"{split}_loss"] == pytest.approx(math.log(2), abs=1e-6)
        assert start[f"{split}_reward_accuracy"] == 0 and start[f"{split}_reward_margin"] == 0
        assert start[f"{split}_chosen_reward"] == start[f"{split}_rejected_reward"] == 0
    for m in metrics:  # the contract's names, for validation
        assert m["reward_accuracy"] == m["val_reward_accuracy"]
        assert m["reward_margin"] == m["val_reward_margin"]
        assert m["val_reward_margin"] == pytest.approx(m["val_chosen_reward"]
                                                       - m["val_rejected_reward"])
    assert f"{IDENTICAL} records dropped: their chosen answer equals their rejected one" in log
    assert "prompt style chatml" in log and "never instruction-tuned" not in log
    assert "the reference is the starting model, frozen (a copy)" in log


def test_the_run_keeps_its_split_its_style_and_measures_the_test_pairs(
        dpo_run: tuple[Path, str]) -> None:
    run_dir, _ = dpo_run
    config = load_toml(run_dir / "config.toml")
    assert config["head"]["kind"] == "language_model"
    assert config["head"]["prompt_style"] == "chatml"  # the instruction tuning's, recorded
    assert config["model"]["beta"] == 0.1 and config["train"]["lr"] == 5e-6
    splits = load_preference_splits(run_dir / "split")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (34, 2, 4)
    scores = json.loads((run_dir / "eval.json").read_text())
    assert scores["count"] == 4
    assert {"loss", "reward_accuracy", "reward_margin", "chosen_reward",
            "rejected_reward"} <= scores.keys()
    samples = (run_dir / "samples.txt").read_text(encoding="utf-8")
    assert samples.count("--- starting model:") == samples.count("--- now:") == 2 * 3
    # the test prompts answered by the tuned model and the starting one, for a pairwise judge
    tuned, start = (json.loads((run_dir / name).read_text(encoding="utf-8"))
                    for name in ("test-responses.json", "start-responses.json"))
    for entries in (tuned, start):
        assert [(e["instruction"], e["input"]) for e in entries] == [
            (p.chosen.instruction, p.chosen.input) for p in splits.test]
        assert [(e["output"], e["rejected"]) for e in entries] == [p.answers for p in splits.test]
        assert all(isinstance(e["response"], str) for e in entries)
    assert f">>> {splits.val[0].chosen.instruction}" in samples


def test_a_high_learning_rate_teaches_the_preference(
        preference_records: Path, instruct_base: Path, instruct_cache: Path,
        tmp_path: Path) -> None:
    """A real learning signal on a tiny model: the validation pairs are ranked better."""
    run_dir = tmp_path / "learns"
    done = finetune_dpo(preference_records, instruct_base, run_dir, "--lr", "2e-3",
                        "--max-steps", "10", "--eval-every", "5", "--eval-batches", "2",
                        "--val-fraction", "0.2", cache=instruct_cache)
    assert done.returncode == 0, done.stderr
    assert "warning: " in done.stderr and "never instruction-tuned" in done.stderr
    first, *_, last = read_metrics(run_dir)
    assert last["val_reward_margin"] > 0.2 and last["val_reward_accuracy"] >= 0.5
    assert last["val_loss"] < first["val_loss"] - 0.05
    assert last["train_reward_accuracy"] >= 0.75


def test_with_lora_the_reference_is_the_start_with_the_adapters_off(
        preference_records: Path, instruct_base: Path) -> None:
    base, tokenizer = load_run(instruct_base)
    pairs = load_preferences(preference_records).pairs[:4]
    inputs, targets = PreferenceExamples(pairs, tokenizer, get_prompt_style("alpaca"),
                                         base.config.context_length).batch(range(4))
    with torch.no_grad():
        expected = answer_log_probs(base(inputs), targets)
    policy, _ = load_run(instruct_base)
    set_trainable(policy.train(), "lora", lora_rank=4)
    for module in policy.modules():
        if isinstance(module, LoRALinear):
            torch.nn.init.normal_(module.B)  # as if trained
    with torch.no_grad():
        assert not answer_log_probs(policy(inputs), targets).equal(expected)
        with adapters_off(policy):
            assert answer_log_probs(policy(inputs), targets).equal(expected)
    reference = Reference(policy, None)
    assert reference.log_probs(inputs, targets).equal(expected)
    assert policy.training  # the reference's eval mode was for its forward only
    assert not answer_log_probs(policy.eval()(inputs), targets).equal(expected)


def test_lora_trains_the_adapters_only(
        preference_records: Path, instruct_base: Path, instruct_cache: Path,
        tmp_path: Path) -> None:
    run_dir = tmp_path / "lora"
    done = finetune_dpo(preference_records, instruct_base, run_dir, "--train", "lora",
                        "--lr", "1e-2", "--max-steps", "2", cache=instruct_cache)
    assert done.returncode == 0, done.stderr
    assert "training lora:" in done.stderr and "(the adapters switched off)" in done.stderr
    first, last = read_metrics(run_dir)
    assert first["val_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert last["train_loss"] != first["train_loss"]
    base, _ = load_run(instruct_base)
    model, _ = load_run(run_dir)  # merged
    assert model.tok_emb.weight.equal(base.tok_emb.weight)
    for name, tensor in base.final_norm.state_dict().items():
        assert model.final_norm.state_dict()[name].equal(tensor)
    assert not model.blocks[0].att.qkv.weight.equal(base.blocks[0].att.qkv.weight)
    assert json.loads((run_dir / "eval.json").read_text())["count"] == 4


def test_resume_equals_an_uninterrupted_run(
        preference_records: Path, instruct_run: tuple[Path, str], instruct_cache: Path,
        dpo_run: tuple[Path, str], tmp_path: Path) -> None:
    run_dir = tmp_path / "resumed"
    first = finetune_dpo(preference_records, instruct_run[0], run_dir, "--max-steps", "2",
                         cache=instruct_cache)
    assert first.returncode == 0, first.stderr
    again = dpo_here("--out", str(run_dir), "--resume", "--max-steps", "4", cache=instruct_cache)
    assert again.returncode == 0, again.stderr
    assert "resumed from" in again.stderr and "(step 2)" in again.stderr
    fresh, _ = dpo_run  # the same settings, uninterrupted
    assert read_metrics(run_dir) == read_metrics(fresh)
    assert (run_dir / "eval.json").read_text() == (fresh / "eval.json").read_text()


def test_resume_refuses_a_run_of_another_command(
        dpo_run: tuple[Path, str], instruct_run: tuple[Path, str],
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["finetune", "dpo", "--out", str(instruct_run[0]), "--resume"]) == 2
    assert "is a `finetune instruct` run, not a `finetune dpo` one" in capsys.readouterr().err
    assert main(["finetune", "instruct", "--out", str(dpo_run[0]), "--resume"]) == 2
    assert "is a `finetune dpo` run, not a `finetune instruct` one" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "value"), [("--beta", "0"), ("--beta", "-0.1"),
                                             ("--beta", "inf"), ("--label-smoothing", "0.5")])
def test_a_bad_beta_or_smoothing_is_refused_and_nothing_is_written(
        preference_records: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        flag: str, value: str) -> None:
    run_dir = tmp_path / "run"
    assert main(["finetune", "dpo", "--data", str(preference_records), "--model", "preset:nano",
                 "--out", str(run_dir), flag, value]) == 2
    assert f"error: {flag}: must be" in capsys.readouterr().err
    assert not run_dir.exists()


def test_generate_chat_and_export_take_the_run(
        dpo_run: tuple[Path, str], instruct_cache: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, _ = dpo_run
    assert main(["generate", "--model", str(run_dir), "--instruction", "--prompt",
                 "Name a fruit.", "--max-new-tokens", "4"]) == 0
    assert "prompt style chatml" in capsys.readouterr().err
    chat = subprocess.run(
        [sys.executable, "-m", "scratchgpt.cli", "chat", "--model", str(run_dir),
         "--max-new-tokens", "4"], input="Name a fruit.\n", env=run_env(instruct_cache),
        capture_output=True, text=True, timeout=120)
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.startswith("> Name a fruit.\n") and "never instruction" not in chat.stderr
    assert main(["export", str(run_dir), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "model.safetensors").is_file()


def test_a_record_missing_an_answer_is_named_and_nothing_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"instruction": "Say hi.", "chosen": "Hello!", "rejected": "What."}\n'
                    '{"instruction": "Say bye.", "chosen": "Goodbye!"}\n', encoding="utf-8")
    run_dir = tmp_path / "run"
    assert main(["finetune", "dpo", "--data", str(data), "--model", "preset:nano", "--out",
                 str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{data}:2: no field 'rejected'" in err
    assert not run_dir.exists()


def test_a_precomputed_reference_trains_as_one_scored_at_each_step(
        preference_records: Path, instruct_base: Path, instruct_cache: Path,
        tmp_path: Path) -> None:
    """With LoRA too, where a resumed run's base weights arrive after its batches are set up."""
    lora = ("--train", "lora", "--lr", "1e-2")
    runs = {name: tmp_path / name for name in ("each-step", "once", "resumed")}
    for name, extra in (("each-step", ()), ("once", ("--precompute-reference",)),
                        ("resumed", ("--precompute-reference", "--max-steps", "2"))):
        done = finetune_dpo(preference_records, instruct_base, runs[name], *lora, *extra,
                            cache=instruct_cache)
        assert done.returncode == 0, done.stderr
    again = dpo_here("--out", str(runs["resumed"]), "--resume", "--max-steps", "4",
                     cache=instruct_cache)
    assert again.returncode == 0, again.stderr
    once = read_metrics(runs["once"])
    assert read_metrics(runs["resumed"]) == once
    for ours, theirs in zip(once, read_metrics(runs["each-step"]), strict=True):
        assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3_text"])
def test_every_family_is_tuned_in_its_chat_template(
        family: str, preference_records: Path, instruct_cache: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny random Llama 3, Qwen3 and Gemma 3 directory, with their chat templates, tuned with
    LoRA; the run keeps the template and generate prompts in it."""
    pytest.importorskip("transformers")
    from open_model_dirs import FAMILIES, write_model_dir

    model_dir, run_dir = tmp_path / family, tmp_path / "run"
    write_model_dir(model_dir, FAMILIES[family])
    done = finetune_dpo(preference_records, model_dir, run_dir, "--train", "lora",
                        "--max-steps", "2", cache=instruct_cache)
    assert done.returncode == 0, done.stderr
    assert "the model's chat template" in done.stderr and "never instruction" not in done.stderr
    assert load_toml(run_dir / "config.toml")["head"]["prompt_style"] == "template"
    assert (run_dir / "template").is_dir()
    assert read_metrics(run_dir)[0]["val_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert main(["generate", "--model", str(run_dir), "--instruction", "--prompt",
                 "Name a fruit.", "--max-new-tokens", "2"]) == 0
    assert "chat template" in capsys.readouterr().err
