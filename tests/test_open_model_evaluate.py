"""``evaluate perplexity``, ``evaluate mmlu`` and the lm-eval adapter on Hugging Face model
directories of Llama 3, Qwen3 and Gemma 3, against transformers and lm-evaluation-harness.

Each directory is what ``save_pretrained`` writes for a small random transformers model
(tests/open_model_dirs.py). The oracles run nothing of ours: transformers' model on
``AutoTokenizer``'s ids (with Llama's and Gemma's BOS first), and lm-evaluation-harness's own
``hf`` model (HFLM: transformers' model and tokenizer, its own encoding and batching).
Leaving out Llama's or Gemma's BOS moves these models' perplexity by about 1% and a 0-shot
letter's log-likelihood by about 0.008, another window or stride moves the perplexity by 0.1%
to 2%: far more than the tolerances.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model
from lm_eval.models.huggingface import HFLM
from open_model_dirs import FAMILIES, ModelDir, open_model_dir
from pretrain_runs import run_here

from scratchgpt.cli import main
from scratchgpt.evaluation.lm_eval_model import ScratchGPTLM
from scratchgpt.evaluation.mmlu import LETTERS, Question, mmlu_prompt

TEXT = ("I had always thought Jack Gisburn rather a cheap genius--though a good fellow "
        "enough--so it was no great surprise to me to hear that, in the height of his glory, "
        "he had dropped his painting, married a rich widow, and established himself in a villa "
        "on the Riviera. The height of his glory--that was what the women called it.\n")
CONTEXT, STRIDE = 24, 10  # windows overlap; the text is several windows long
SUBJECT = "astronomy"
DEV = [Question("Which is a planet?", ("the sun", "Mars", "a comet", "the moon"), 1),
       Question("What orbits the earth?", ("the moon", "Venus", "the sun", "Jupiter"), 0)]
TEST = [Question("What is the sun?", ("a planet", "a moon", "a star", "a comet"), 2),
        Question("Which is the largest planet?", ("Mercury", "Jupiter", "Mars", "Venus"), 1),
        Question("  What is a comet, mostly?\n", ("ice and dust", "iron", "gas", "fire"), 0)]


@pytest.fixture(scope="module", params=list(FAMILIES))
def model_dir(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> ModelDir:
    return open_model_dir(tmp_path_factory.mktemp("open") / request.param, request.param)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "verdict.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def hflm(model_dir: ModelDir) -> HFLM:
    """lm-evaluation-harness's own Hugging Face model, on the same directory."""
    return HFLM(pretrained=str(model_dir.directory), dtype="float32", device="cpu",
                batch_size=4)


# -- perplexity ----------------------------------------------------------------------------------
def transformers_perplexity(hf: torch.nn.Module, ids: list[int], context: int,
                            stride: int) -> tuple[float, int]:
    """The sliding-window perplexity of transformers' model on ``ids``: windows of
    ``context`` tokens start every ``stride`` tokens (the last ends at the text's end); each
    scores the tokens no window before it did, each given the tokens before it in the
    window. (perplexity, tokens scored)."""
    nll, scored, done = 0.0, 0, 1  # the first token has nothing before it
    for begin in range(0, len(ids), stride):
        end = min(begin + context, len(ids))
        with torch.no_grad():
            logits = hf(torch.tensor([ids[begin:end]])).logits[0]
        logprobs = torch.log_softmax(logits.double(), dim=-1)
        for t in range(max(done, begin + 1), end):  # token t, predicted at position t - 1
            nll -= logprobs[t - 1 - begin, ids[t]].item()
            scored += 1
        done = end
        if end == len(ids):
            break
    return math.exp(nll / scored), scored


@pytest.fixture(scope="module")
def expected_perplexity(model_dir: ModelDir) -> tuple[float, int]:
    """transformers' perplexity of TEXT, on AutoTokenizer's ids (Llama, Gemma: a BOS first)."""
    ids = model_dir.hf_tokenizer(TEXT)["input_ids"]
    assert (ids[0] == model_dir.hf_tokenizer.bos_token_id) == (
        model_dir.directory.name != "qwen3")
    return transformers_perplexity(model_dir.hf, ids, CONTEXT, STRIDE)


def test_perplexity_command_equals_transformers(model_dir: ModelDir, text_file: Path,
                                                expected_perplexity: tuple[float, int],
                                                tmp_path: Path) -> None:
    done = run_here(["evaluate", "perplexity", "--model", str(model_dir.directory), "--data",
                     str(text_file), "--context", str(CONTEXT), "--stride", str(STRIDE), "--json"],
                    tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)

    ids = model_dir.hf_tokenizer(TEXT)["input_ids"]
    assert len(ids) > 3 * CONTEXT
    expected, scored = expected_perplexity
    assert record["perplexity"] == pytest.approx(expected, rel=1e-4)
    assert (record["text_tokens"], record["tokens"]) == (len(ids), scored)
    assert scored == len(ids) - 1  # every token but the first, once
    assert (record["context_length"], record["stride"]) == (CONTEXT, STRIDE)
    assert record["windows"] == math.ceil((len(ids) - CONTEXT) / STRIDE) + 1


def test_perplexity_in_bf16_is_close_to_fp32(model_dir: ModelDir, text_file: Path,
                                             expected_perplexity: tuple[float, int],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The weights and activations in bf16 (the losses summed in fp32): a perplexity of its
    own, within 0.2% of transformers' in fp32 (these random models: 0.01% to 0.03%)."""
    assert main(["evaluate", "perplexity", "--model", str(model_dir.directory), "--data",
                 str(text_file), "--context", str(CONTEXT), "--stride", str(STRIDE),
                 "--dtype", "bf16", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    fp32, scored = expected_perplexity
    assert record["perplexity"] != pytest.approx(fp32, rel=1e-6)
    assert record["perplexity"] == pytest.approx(fp32, rel=2e-3)
    assert record["tokens"] == scored


# -- MMLU ----------------------------------------------------------------------------------------
def write_mmlu(root: Path) -> Path:
    """The original release's layout: ``data/dev/S_dev.csv``, ``data/test/S_test.csv``."""
    for split, questions in (("dev", DEV), ("test", TEST)):
        path = root / "data" / split / f"{SUBJECT}_{split}.csv"
        path.parent.mkdir(parents=True)
        with path.open("w", encoding="utf-8", newline="") as stream:
            csv.writer(stream).writerows([q.question, *q.choices, LETTERS[q.answer]]
                                         for q in questions)
    return root


def choice_requests(shots: int) -> list[Instance]:
    """The four answer letters after each test question's prompt, as the mmlu task asks."""
    return [Instance("loglikelihood", {}, (mmlu_prompt(SUBJECT, q, DEV[:shots]), f" {letter}"),
                     4 * n + i)
            for n, q in enumerate(TEST) for i, letter in enumerate(LETTERS)]


@pytest.mark.parametrize("shots", [0, 2])  # 2-shot prompts outgrow the context: trimmed
def test_mmlu_command_equals_lm_eval_s_hf_model(model_dir: ModelDir, hflm: HFLM, shots: int,
                                                tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "mmlu", "--model", str(model_dir.directory), "--data",
                 str(write_mmlu(tmp_path)), "--shots", str(shots), "--dtype", "fp32",
                 "--batch-size", "3", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    items = record["items"]

    theirs = [score for score, _ in hflm.loglikelihood(choice_requests(shots),
                                                       disable_tqdm=True)]
    assert [item["loglikelihoods"] for item in items] == [
        pytest.approx(theirs[4 * n:4 * n + 4], abs=1e-4) for n in range(len(TEST))]
    for n, item in enumerate(items):
        scores = theirs[4 * n:4 * n + 4]
        assert item["predicted"] == LETTERS[max(range(4), key=scores.__getitem__)]
        assert item["answer"] == LETTERS[TEST[n].answer]
    right = [max(range(4), key=theirs[4 * n:4 * n + 4].__getitem__) == q.answer
             for n, q in enumerate(TEST)]
    assert record["accuracy"] == sum(right) / len(TEST)


# -- the lm-eval adapter -------------------------------------------------------------------------
def test_adapter_scores_as_lm_eval_s_hf_model(model_dir: ModelDir, hflm: HFLM) -> None:
    """Loaded by name with lm_eval's model arguments: continuations after a prompt and after
    an empty context (the BOS, or Qwen's end-of-text token, before them), and a text longer
    than the model's context, rolling, all as the ``hf`` model scores them."""
    lm = get_model("scratchgpt").create_from_arg_string(
        f"pretrained={model_dir.directory},dtype=float32", {"batch_size": 4, "device": "cpu"})
    assert lm.model.tok_emb.weight.dtype == torch.float32
    assert lm.prefix_token_id == hflm.prefix_token_id
    requests = [*choice_requests(2), Instance("loglikelihood", {}, ("", " star"), 12)]
    ours = lm.loglikelihood(requests, disable_tqdm=True)
    theirs = hflm.loglikelihood(requests, disable_tqdm=True)
    assert [score for score, _ in ours] == pytest.approx([s for s, _ in theirs], abs=1e-4)
    assert [greedy for _, greedy in ours] == [greedy for _, greedy in theirs]

    long_text = TEXT * 2
    assert len(model_dir.hf_tokenizer(long_text)["input_ids"]) > lm.max_length == \
        hflm.max_length
    rolling = [Instance("loglikelihood_rolling", {}, (long_text,), 0)]
    [our_total] = lm.loglikelihood_rolling(rolling, disable_tqdm=True)
    [their_total] = hflm.loglikelihood_rolling(rolling, disable_tqdm=True)
    assert our_total == pytest.approx(their_total, rel=1e-5)


def test_adapter_loads_in_the_dtype_asked(model_dir: ModelDir) -> None:
    lm = get_model("scratchgpt").create_from_arg_string(
        f"pretrained={model_dir.directory},dtype=bf16", {"batch_size": 4})
    assert lm.model.tok_emb.weight.dtype == torch.bfloat16
    [(score, _)] = lm.loglikelihood(choice_requests(0)[:1], disable_tqdm=True)
    assert math.isfinite(score)
    with pytest.raises(ValueError, match="dtype= goes with pretrained="):
        ScratchGPTLM(model=lm.model, tokenizer=lm.tok, dtype="bf16")
