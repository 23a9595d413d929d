"""``scratchgpt finetune instruct``, ``generate --instruction`` and ``export``, run for real.

A (barely) pretrained tiny language model is instruction-tuned on a few dozen of the book's
real records: the point is the whole path — split, batches, training, samples, checkpoints,
LoRA, test responses, the prompt style recorded and reused — not a good assistant
(``bench/bench_instruct.py`` measures that).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from instruct_runs import TINY, cli_here, finetune_instruct
from pretrain_runs import kill_after_step_0, read_metrics

from scratchgpt.cli import main
from scratchgpt.config_files import load_toml
from scratchgpt.data.instructions import load_instruction_splits
from scratchgpt.data.prompt_styles import get_prompt_style
from scratchgpt.evaluation.rouge import rouge_l
from scratchgpt.hub.models import load_model
from scratchgpt.model.lora import LoRALinear
from scratchgpt.run_dir import load_run
from scratchgpt.tokenizers import CharTokenizer
from scratchgpt.training.checkpoints import step_dirs


def test_a_run_holds_its_split_its_prompt_style_and_its_test_responses(
        instruct_run: tuple[Path, str]) -> None:
    run_dir, log = instruct_run
    config = load_toml(run_dir / "config.toml")
    assert config["head"] == {"kind": "language_model", "prompt_style": "chatml",
                              "trainable": "all", "lora_rank": 8, "lora_alpha": 16.0,
                              "lora_dropout": 0.0, "lora_targets": "all"}
    assert config["train"]["lr"] == 5e-5 and config["train"]["weight_decay"] == 0.1
    splits = load_instruction_splits(run_dir / "split")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (34, 2, 4)  # 85/5/10
    assert "34 training, 2 validation and 4 test records; prompt style chatml" in log

    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 4] and metrics[-1]["val_loss"] > 0
    samples = (run_dir / "samples.txt").read_text(encoding="utf-8")
    first = splits.val[0]
    assert f">>> {first.instruction}" in samples and "--- response:" in samples

    responses = json.loads((run_dir / "test-responses.json").read_text(encoding="utf-8"))
    assert [set(entry) for entry in responses] == [
        {"instruction", "input", "output", "response"}] * 4
    assert [entry["output"] for entry in responses] == [r.output for r in splits.test]
    scores = json.loads((run_dir / "eval.json").read_text())
    expected = sum(rouge_l(e["output"], e["response"]).f1 for e in responses) / 4
    assert scores["count"] == 4 and scores["rouge_l_f1"] == pytest.approx(expected)


def test_test_responses_are_what_the_model_answers_greedily_one_at_a_time(
        instruct_run: tuple[Path, str]) -> None:
    """Batched generation (left padding, a mask, a KV instruct_cache per row) gives the answers that
    one prompt at a time gives."""
    from scratchgpt.generation import generate_text

    run_dir, _ = instruct_run
    model, tokenizer = load_run(run_dir)
    style = get_prompt_style("chatml")
    responses = json.loads((run_dir / "test-responses.json").read_text(encoding="utf-8"))
    for entry in responses:
        prompt = style.instruction_prompt(entry["instruction"], entry["input"])
        alone = "".join(generate_text(model, tokenizer, prompt, 8, stop=style.stop))
        assert entry["response"] == alone.strip()


def test_generate_wraps_an_instruction_in_the_runs_prompt_style(
        instruct_run: tuple[Path, str], instruct_cache: Path) -> None:
    from scratchgpt.generation import generate_text

    run_dir, _ = instruct_run
    done = cli_here("generate", "--model", str(run_dir), "--instruction", "--prompt",
                    "Name a fruit.", "--max-new-tokens", "6", cache=instruct_cache)
    assert done.returncode == 0, done.stderr
    model, tokenizer = load_model(run_dir)
    style = get_prompt_style("chatml")
    expected = "".join(generate_text(model, tokenizer, style.instruction_prompt("Name a fruit."),
                                     6, stop=style.stop))
    assert done.stdout == expected + "\n"


def test_export_writes_the_chat_template_that_training_used(
        instruct_run: tuple[Path, str], instruct_cache: Path, tmp_path: Path) -> None:
    """transformers' own ``apply_chat_template`` renders a conversation exactly as our prompt
    style does (litgpt #1986: a template that differs from training's)."""
    transformers = pytest.importorskip("transformers")
    run_dir, _ = instruct_run
    out = tmp_path / "hf"
    done = cli_here("export", str(run_dir), "--format", "hf", "--out", str(out),
                    cache=instruct_cache)
    assert done.returncode == 0, done.stderr
    assert "chat_template" in json.loads((out / "tokenizer_config.json").read_text())
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Name a fruit."},
                {"role": "assistant", "content": "An apple."},
                {"role": "user", "content": "And a vegetable?"}]
    hf = transformers.AutoTokenizer.from_pretrained(out)
    rendered = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == get_prompt_style("chatml").render(messages)


def test_lora_trains_adapters_only_and_the_run_loads_merged(
        instruction_records: Path, instruct_base: Path, instruct_cache: Path,
        tmp_path: Path) -> None:
    run_dir = tmp_path / "lora"
    done = finetune_instruct(instruction_records, instruct_base, run_dir, "--train", "lora",
                             "--lora-rank", "4", "--lora-targets", "q,v,down", "--mask-prompt",
                             "--lr", "1e-3", cache=instruct_cache)
    assert done.returncode == 0, done.stderr
    assert "training lora:" in done.stderr
    from safetensors.torch import load_file

    weights = load_file(run_dir / "checkpoints" / "best" / "model.safetensors")
    adapters = {name for name in weights if name.startswith("blocks.0.") and ".base." not in name
                and name.split(".")[-2] in "AB"}
    assert adapters == {"blocks.0.att.qkv.A.q", "blocks.0.att.qkv.B.q", "blocks.0.att.qkv.A.v",
                        "blocks.0.att.qkv.B.v"}
    assert "blocks.0.ff.out_proj.A" in weights and "blocks.0.att.out_proj.A" not in weights
    base, _ = load_run(instruct_base)
    model, _ = load_run(run_dir)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())  # merged
    # frozen weights outside the adapters did not move: neither k's rows nor untargeted layers
    assert model.tok_emb.weight.equal(base.tok_emb.weight)
    assert model.blocks[0].att.out_proj.weight.equal(base.blocks[0].att.out_proj.weight)
    qkv, base_qkv = model.blocks[0].att.qkv.weight, base.blocks[0].att.qkv.weight
    e = qkv.shape[1]
    assert qkv[e:2 * e].equal(base_qkv[e:2 * e])
    assert not qkv[:e].equal(base_qkv[:e]) and not qkv[2 * e:].equal(base_qkv[2 * e:])
    assert not model.blocks[0].ff.out_proj.weight.equal(base.blocks[0].ff.out_proj.weight)
    assert (run_dir / "test-responses.json").exists()


def test_a_bad_record_is_named_and_nothing_is_written(
        instruct_cache: Path, instruct_base: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"instruction": "Say hi.", "output": "Hi."}\n'
                    '{"instruction": "Say bye.", "output": 3}\n', encoding="utf-8")
    run_dir = tmp_path / "run"
    done = finetune_instruct(data, instruct_base, run_dir, cache=instruct_cache)
    assert done.returncode == 2
    assert f"{data}:2: " in done.stderr and "output" in done.stderr
    assert not run_dir.exists()


def test_a_tokenizer_without_end_of_text_is_refused(
        instruction_records: Path, instruct_cache: Path, tmp_path: Path) -> None:
    tokenizer = tmp_path / "chars.json"
    CharTokenizer.from_texts("abcdefghijklmnopqrstuvwxyz .,#:\n").save(tokenizer)
    done = cli_here("finetune", "instruct", "--data", str(instruction_records), "--model",
                    "preset:nano", "--tokenizer", str(tokenizer), "--out", str(tmp_path / "run"),
                    *TINY, cache=instruct_cache)
    assert done.returncode == 2
    assert "end-of-text" in done.stderr


def test_resume_continues_the_run_with_its_own_split(
        instruction_records: Path, instruct_base: Path, instruct_cache: Path,
        tmp_path: Path) -> None:
    run_dir = tmp_path / "resumed"
    first = finetune_instruct(instruction_records, instruct_base, run_dir, "--max-steps", "2",
                              "--eval-every", "2", cache=instruct_cache)
    assert first.returncode == 0, first.stderr
    split = (run_dir / "split" / "train.jsonl").read_text(encoding="utf-8")
    again = cli_here("finetune", "instruct", "--out", str(run_dir), "--resume", "--max-steps",
                     "4", cache=instruct_cache)
    assert again.returncode == 0, again.stderr
    assert "resumed from" in again.stderr and "(step 2)" in again.stderr
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 2, 4]
    assert (run_dir / "split" / "train.jsonl").read_text(encoding="utf-8") == split


def test_resume_before_the_first_checkpoint_starts_from_the_model_it_was_given(
        instruction_records: Path, instruct_base: Path, instruct_cache: Path,
        instruct_run: tuple[Path, str], tmp_path: Path) -> None:
    """Killed after its step-0 evaluation and before any checkpoint, a run resumed starts over
    from its --model (not from random weights): the figures of an uninterrupted run."""
    killed = tmp_path / "killed"
    kill_after_step_0(
        [sys.executable, "-m", "scratchgpt.cli", "finetune", "instruct", "--data",
         str(instruction_records), "--model", str(instruct_base), "--out", str(killed), *TINY,
         "--prompt-style", "chatml", "--max-steps", "100000", "--eval-every", "100000"],
        instruct_cache)
    assert (killed / "config.toml").exists() and not step_dirs(killed / "checkpoints")
    resumed = cli_here("finetune", "instruct", "--out", str(killed), "--resume", "--max-steps",
                       "4", "--eval-every", "4", cache=instruct_cache)
    assert resumed.returncode == 0, resumed.stderr
    assert "holds no checkpoint yet" in resumed.stderr

    fresh, _ = instruct_run  # the same settings, uninterrupted
    assert [m["step"] for m in read_metrics(killed)] == [0, 4]
    assert read_metrics(killed) == read_metrics(fresh)  # step 0 too: the same start
    for name in ("eval.json", "test-responses.json"):
        assert (killed / name).read_text() == (fresh / name).read_text()


def test_the_log_says_which_long_records_were_cut_and_which_left_out(
        instruct_base: Path, instruct_cache: Path, tmp_path: Path) -> None:
    records = [{"instruction": f"Say {i}.", "input": "", "output": "Done."} for i in range(20)]
    long_text = " ".join(["a word that takes up room in the context"] * 60)
    records += [{"instruction": f"Cut {i}.", "input": long_text, "output": "Short."}
                for i in range(6)]
    records += [{"instruction": f"Leave {i}.", "input": "", "output": long_text}
                for i in range(6)]
    data = tmp_path / "long.json"
    data.write_text(json.dumps(records), encoding="utf-8")
    run_dir = tmp_path / "run"
    done = finetune_instruct(data, instruct_base, run_dir, "--max-steps", "1", cache=instruct_cache)
    assert done.returncode == 0, done.stderr
    train = load_instruction_splits(run_dir / "split").train
    cut = sum(r.instruction.startswith("Cut") for r in train)
    left_out = sum(r.instruction.startswith("Leave") for r in train)
    assert cut > 1 and left_out > 1  # the seeded split put some of each into training
    assert (f"training: {cut} records longer than the context of 160 tokens cut from the left "
            f"to fit; {left_out} records left out: even with the prompt cut, the final answer "
            "and end-of-text need more than 160 tokens") in done.stderr


def test_a_directory_given_as_data_is_named_with_the_files_it_holds(
        instruction_records: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    assert main(["finetune", "instruct", "--data", str(instruction_records.parent), "--model",
                 "preset:nano", "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert (f"{instruction_records.parent} is a directory; instruction data is one file, a "
            "JSON list or JSON Lines file of records: give its path (this directory holds "
            "instructions.json)") in err
    assert not run_dir.exists()


def test_accumulated_micro_batches_train_as_one_batch(
        instruction_records: Path, instruct_base: Path, instruct_cache: Path,
        tmp_path: Path) -> None:
    """Two micro-batches of 2 step as one batch of 4, though their answers differ in length:
    each micro-batch's mean loss counts by its share of the step's answer tokens (plain
    averaging of the two means was off by 1e-5 here, at this learning rate)."""
    runs = {}
    for name, batch in (("whole", ["--batch-size", "4"]),
                        ("accumulated", ["--batch-size", "2", "--grad-accum-steps", "2"])):
        run_dir = tmp_path / name
        done = finetune_instruct(instruction_records, instruct_base, run_dir, *batch, "--lr",
                                 "1e-3", "--eval-every", "2", cache=instruct_cache)
        assert done.returncode == 0, done.stderr
        runs[name] = read_metrics(run_dir)
    for whole, accumulated in zip(runs["whole"], runs["accumulated"], strict=True):
        for key in ("train_loss", "val_loss"):
            assert whole[key] == pytest.approx(accumulated[key], abs=1e-6)
    assert runs["whole"][-1]["train_loss"] < runs["whole"][0]["train_loss"]
