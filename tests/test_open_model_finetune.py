"""``finetune classify`` on Llama 3, Qwen3 and Gemma 3 directories, and what takes its runs.

The directories are small random models as ``save_pretrained`` writes them
(tests/open_model_dirs.py). The head's oracle is transformers' ``*ForSequenceClassification``
with the same weights: it reads the last token that is not its ``pad_token_id``; ours reads
each text's last real token by its length, so the padding id may be anything, even one that
occurs inside the texts. The runs are two steps long: what is checked is the path (which
weights learn, an exact ``--resume``, ``classify``, ``evaluate classify``, ``evaluate
compare`` across families), not a good classifier. Bad model directories are refused by
name, by ``finetune classify`` and ``finetune instruct`` alike, before any run is made.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from open_model_dirs import FAMILIES, write_model_dir
from pretrain_runs import read_metrics

from scratchgpt.classify import Classifier
from scratchgpt.cli import main
from scratchgpt.data.text_batches import TokenizedTexts, encode_text
from scratchgpt.evaluation.records import RECORD_KEYS
from scratchgpt.hub.families import model_config_from_hf
from scratchgpt.hub.models import load_model
from scratchgpt.model import GPTClassifier
from scratchgpt.training.checkpoints import load_checkpoint

# "!" is id 0 in Llama 3's vocabulary: with no pad token, the batches pad with it.
TEXTS = ["win cash now!!", "hi", "Lunch at one? See you there, and bring the report!", "ok"]
PAD_TOKENS = {"llama": "<|end_of_text|>", "qwen3": "<|endoftext|>", "gemma3_text": "<pad>"}
STEPS = ["--epochs", "0", "--max-steps", "2", "--batch-size", "4", "--eval-every", "2",
         "--eval-batches", "1"]


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    for family in FAMILIES:
        write_model_dir(root / family, FAMILIES[family])
    return {family: root / family for family in FAMILIES}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 short texts of two classes, each drawn from its own words."""
    rng = random.Random(0)
    words = {"spam": ["free", "prize", "call", "now", "win", "cash"],
             "ham": ["hello", "lunch", "meet", "see", "you", "today"]}
    rows = ["text,label"]
    for i in range(40):
        label = ("ham", "spam")[i % 2]
        rows.append(" ".join(rng.choices(words[label], k=rng.randint(2, 9))) + f",{label}")
    path = tmp_path_factory.mktemp("data") / "messages.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def finetune(data: Path, model: Path, out: Path, *flags: str) -> None:
    assert main(["finetune", "classify", "--data", str(data), "--model", str(model),
                 "--out", str(out), *STEPS, *flags]) == 0


# --- The head on the last real token --------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_head_reads_each_texts_last_real_token_as_transformers_does(
        family: str, family_dirs: dict[str, Path]) -> None:
    directory = family_dirs[family]
    gpt, tokenizer = load_model(directory)
    torch.manual_seed(0)
    ours = GPTClassifier.from_language_model(gpt, 3).eval()
    with torch.no_grad():
        ours.head.bias.zero_()  # transformers' score layer has no bias
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(
        directory, num_labels=3, dtype=torch.float32, attn_implementation="eager").eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    hf_tokenizer.pad_token = PAD_TOKENS[family]
    hf.config.pad_token_id = hf_tokenizer.pad_token_id
    with torch.no_grad():
        hf.score.weight.copy_(ours.head.weight)
        batch = hf_tokenizer(TEXTS, padding=True, return_tensors="pt")
        expected = hf(**batch).logits

    data = TokenizedTexts(TEXTS, [0] * len(TEXTS), tokenizer, max_length=64)
    inputs, lengths, _ = data.batch(range(len(TEXTS)))
    real = [ids[mask.bool()].tolist() for ids, mask in zip(batch.input_ids,
                                                           batch.attention_mask, strict=True)]
    assert [row[:n].tolist() for row, n in zip(inputs, lengths, strict=True)] == real  # BOS too
    if family == "llama":  # no pad token: padded with id 0, "!", which texts hold
        assert data.pad_id in inputs[0, : lengths[0]].tolist()
    with torch.no_grad():
        torch.testing.assert_close(ours(inputs, lengths), expected, atol=1e-5, rtol=0)
    # `classify` and `evaluate classify` batch the texts their own way: the same figures
    classifier = Classifier(ours, tokenizer, ["a", "b", "c"], max_length=64, batch_size=3)
    torch.testing.assert_close(torch.from_numpy(classifier.probabilities(TEXTS)).float(),
                               expected.softmax(-1), atol=1e-5, rtol=0)


def test_a_long_text_is_cut_but_keeps_its_bos(family_dirs: dict[str, Path]) -> None:
    _, tokenizer = load_model(family_dirs["llama"])
    ids = tokenizer.encode_ordinary(TEXTS[2])
    assert encode_text(tokenizer, TEXTS[2], 5, "head") == [tokenizer.bos_id, *ids[:4]]
    assert encode_text(tokenizer, TEXTS[2], 5, "tail") == [tokenizer.bos_id, *ids[-4:]]
    assert encode_text(tokenizer, "", 5) == [tokenizer.bos_id]


# --- Fine-tuning ----------------------------------------------------------------------------


def check_trained(directory: Path, run: Path, train: str) -> None:
    """The run's first two steps changed the weights ``train`` names, and no others."""
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics][:2] == [0, 2]
    assert all(math.isfinite(m[key]) for m in metrics for key in ("train_loss", "val_loss"))
    model = load_model(directory)[0]
    start = {f"backbone.{name}": tensor for name, tensor in model.state_dict().items()}
    weights = load_checkpoint(run / "checkpoints" / "step-00000002").weights
    changed = {name for name, tensor in start.items()
               if name in weights and not torch.equal(weights[name], tensor)}
    assert "head.weight" in weights
    if train == "all":  # but the output layer: the embeddings (tied), else unused and frozen
        assert changed == set(start) - {"backbone.out_head.weight"}
    elif train == "last-block":
        last = f"backbone.blocks.{model.config.n_layers - 1}."
        assert changed == {n for n in start if n.startswith((last, "backbone.final_norm."))}
    else:  # lora: every pretrained tensor is kept as it was (wrapped ones under new names)
        assert not changed
        assert all(any(t.shape == tensor.shape and torch.equal(t, tensor)
                       for t in weights.values()) for tensor in start.values())
        merged = Classifier.from_run(run).model.state_dict()  # the adapters merged in
        assert any(not torch.equal(merged[name], tensor) for name, tensor in start.items())
        assert len(weights) > len(start) - model.config.tie_weights + 2  # adapters, the head
    assert len(Classifier.from_run(run).predict(["win a prize", "lunch?"])) == 2


@pytest.fixture(scope="module")
def qwen3_run(family_dirs: dict[str, Path], labelled: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four steps of LoRA on the Qwen3 directory, uninterrupted."""
    run = tmp_path_factory.mktemp("runs") / "qwen3"
    finetune(labelled, family_dirs["qwen3"], run, "--train", "lora", "--lr", "1e-3",
             "--max-steps", "4")
    return run


@pytest.mark.parametrize(("family", "train"), [
    ("llama", "all"), ("qwen3", "last-block"), ("llama", "lora"), ("qwen3", "lora")])
def test_each_choice_of_weights_trains_on_a_family(
        family: str, train: str, family_dirs: dict[str, Path], labelled: Path,
        qwen3_run: Path, tmp_path: Path) -> None:
    """all, last-block and lora on Llama and on Qwen3 (Qwen3's LoRA: the run the tests below
    share)."""
    run = qwen3_run if (family, train) == ("qwen3", "lora") else tmp_path / "run"
    if run != qwen3_run:
        finetune(labelled, family_dirs[family], run, "--train", train)
    check_trained(family_dirs[family], run, train)


def test_resume_continues_exactly(qwen3_run: Path, family_dirs: dict[str, Path],
                                  labelled: Path, tmp_path: Path) -> None:
    """Two steps, then resumed to four: the metrics and test report of four steps in one go."""
    run = tmp_path / "resumed"
    finetune(labelled, family_dirs["qwen3"], run, "--train", "lora", "--lr", "1e-3")
    assert main(["finetune", "classify", "--out", str(run), "--resume", "--max-steps", "4"]) == 0
    assert [m["step"] for m in read_metrics(run)] == [0, 2, 4]
    assert read_metrics(run) == read_metrics(qwen3_run)
    assert (json.loads((run / "eval.json").read_text())
            == json.loads((qwen3_run / "eval.json").read_text()))


def test_classify_and_evaluate_classify_take_the_run(
        qwen3_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts = ["free prize, call now", "see you at lunch"]
    assert main(["classify", "--model", str(qwen3_run), "--json", *texts]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = Classifier.from_run(qwen3_run).predict(texts)
    assert [p["label"] for p in printed] == [p.label for p in expected]
    for line, prediction in zip(printed, expected, strict=True):
        assert line["probabilities"] == pytest.approx(prediction.probabilities)
    test_split = qwen3_run / "split" / "test.jsonl"
    assert main(["evaluate", "classify", "--model", str(qwen3_run), "--data", str(test_split),
                 "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    metrics = {k: v for k, v in record.items() if k not in RECORD_KEYS}
    assert metrics == json.loads((qwen3_run / "eval.json").read_text())


def test_evaluate_compare_puts_families_side_by_side(
        qwen3_run: Path, family_dirs: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Perplexity of two families' base models on one text, and a classifier of one: one
    table, whose perplexity column says its figures are per token of different tokenizers."""
    text = tmp_path / "text.txt"
    text.write_text(TEXTS[2] * 12, encoding="utf-8")
    models = [tmp_path / family for family in ("llama", "qwen3")]
    for model in models:  # copies: the records go into the model's directory
        shutil.copytree(family_dirs[model.name], model)
        assert main(["evaluate", "perplexity", "--model", str(model), "--data", str(text)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "compare", *map(str, models), str(qwen3_run), "--json"]) == 0
    comparison = json.loads(capsys.readouterr().out)
    column = "perplexity-text perplexity"
    assert comparison["mixed_tokenizers"] == [column] and comparison["mixed_data"] == []
    for model in models:
        record = json.loads((model / "eval" / "perplexity-text.json").read_text())
        assert comparison["values"][str(model)] == {column: record["perplexity"]}
    assert comparison["values"][str(qwen3_run)]["finetune accuracy"] == json.loads(
        (qwen3_run / "eval.json").read_text())["accuracy"]
    assert main(["evaluate", "compare", *map(str, models)]) == 0
    table = capsys.readouterr().out
    assert f"{column} (different tokenizers)" in table and "*" not in table.splitlines()[2]


# --- Bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "change", "message"), [
    ("classify", {"model_type": "mistral"},
     "model_type 'mistral' is not supported; supported: llama, qwen3, gemma3_text"),
    ("classify", {"num_experts": 8, "num_experts_per_tok": 2},
     "num_experts = 8 is not supported: scratchgpt implements no mixture of experts"),
    ("instruct", {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6,
                                      "original_max_position_embeddings": 32}},
     "rope_type 'yarn' is not supported (default, linear, llama3)"),
])
def test_finetune_refuses_what_it_does_not_implement_by_name(
        command: str, change: dict[str, object], message: str, family_dirs: dict[str, Path],
        labelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "model"
    shutil.copytree(family_dirs["qwen3"], directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **change}))
    data = labelled
    if command == "instruct":
        data = tmp_path / "instructions.json"
        data.write_text(json.dumps([{"instruction": f"Say {i}.", "input": "",
                                     "output": f"{i}"} for i in range(12)]))
    run = tmp_path / "run"
    assert main(["finetune", command, "--data", str(data), "--model", str(directory),
                 "--out", str(run), *STEPS]) == 2
    err = capsys.readouterr().err
    assert f"{directory / 'config.json'}: " in err and message in err
    assert not run.exists()


LLAMA = {"model_type": "llama", "vocab_size": 64, "max_position_embeddings": 32,
         "hidden_size": 16, "num_attention_heads": 2, "num_hidden_layers": 2,
         "intermediate_size": 32, "hidden_act": "silu"}
GEMMA = {**LLAMA, "model_type": "gemma3_text", "hidden_activation": "gelu_pytorch_tanh",
         "query_pre_attn_scalar": 8, "sliding_window": 4,
         "layer_types": ["sliding_attention", "full_attention"]}


@pytest.mark.parametrize(("config", "message"), [
    ({**LLAMA, "quantization_config": {"quant_method": "awq", "bits": 4}},
     'quantization_config = {"quant_method": "awq", "bits": 4} is not supported'),
    ({**LLAMA, "layer_types": ["full_attention", "sliding_attention"]},
     "layer_types 'sliding_attention' are not supported for this family"),
    ({**LLAMA, "rope_scaling": {"type": "dynamic", "factor": 2.0}},
     "rope_type 'dynamic' is not supported"),
    ({**GEMMA, "rope_parameters": {
        "full_attention": {"rope_type": "default", "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e4}}},
     "rope_type 'linear' for the sliding_attention layers is not supported"),
])
def test_a_config_field_we_do_not_implement_is_named(config: dict[str, object],
                                                     message: str) -> None:
    model_config_from_hf(LLAMA)  # as it stands, the config is read
    with pytest.raises(ValueError, match="config.json: ") as error:
        model_config_from_hf(config)
    assert message in str(error.value)


def test_a_sample_under_inference_mode_leaves_the_model_trainable(
        family_dirs: dict[str, Path]) -> None:
    """Generating mid-training (``torch.inference_mode``) builds the rotary tables there;
    the next training step's backward pass still works."""
    model, _ = load_model(family_dirs["qwen3"])
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.inference_mode():
        model(ids)
    model.train()(ids[:, :3]).sum().backward()
    assert model.tok_emb.weight.grad is not None
