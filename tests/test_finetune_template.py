"""``finetune instruct --prompt-style template``: records rendered in the model's own chat
template, the loss on the assistant turns only, and a run that is prompted, stops and exports
in that template.

The oracle is transformers' ``apply_chat_template(..., return_assistant_tokens_mask=True)``
on a template with ``{% generation %}`` markers: the ids we train on, and which of them are
learned, are the ids it tokenizes and the tokens it marks as the assistant's. The same template
without markers (what most models ship) gives us the same, found from the rendering itself.
The models are tiny random Qwen3 and Llama 3 directories (tests/open_model_dirs.py), fine-tuned
for two steps.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from open_model_dirs import CHATML, FAMILIES, LLAMA3, write_model_dir

from scratchgpt.chat import ChatSession, Sampling
from scratchgpt.cli import main
from scratchgpt.config_files import load_toml
from scratchgpt.data.chat_templates import (
    ChatTemplate,
    ChatTemplateError,
    read_chat_template,
    read_special_tokens,
)
from scratchgpt.data.instruction_batches import IGNORE_INDEX, InstructionExamples
from scratchgpt.data.instructions import Conversation, InstructionRecord, record_json
from scratchgpt.data.prompt_format import encode_prompt
from scratchgpt.finetune.instruction import choose_prompt_format
from scratchgpt.generation import generate_text
from scratchgpt.hub.models import load_model, model_prompt_format, model_stop_ids
from scratchgpt.tokenizers import load_tokenizer

transformers = pytest.importorskip("transformers")

# The families' templates with {% generation %} around each answer and its end of turn: what
# transformers' assistant mask reads. CHATML and LLAMA3 are the same text without markers.
CHATML_MARKED = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{{ message['content'] + '<|im_end|>\\n' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3_MARKED = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' }}{% if message['role'] == 'assistant' %}{% generation %}"
    "{{ message['content'] + '<|eot_id|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|eot_id|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
TEMPLATES = {"qwen3": (CHATML_MARKED, CHATML), "llama": (LLAMA3_MARKED, LLAMA3)}
# Qwen3's way with history: only the last answer gets its (empty) reasoning block.
REWRITES_HISTORY = CHATML.replace(
    "message['content'] + '<|im_end|>\\n'",
    "('<think>\\n\\n</think>\\n\\n' if loop.last and message['role'] == 'assistant' else '')"
    " + message['content'] + '<|im_end|>\\n'")

RECORDS = [
    InstructionRecord("Name a primary colour.", "", "Red."),
    InstructionRecord("Rewrite the sentence as a question.", "The sky is blue.",
                      "Is the sky blue?"),
    Conversation(({"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Name a fruit."},
                  {"role": "assistant", "content": "An apple."},
                  {"role": "user", "content": "And a vegetable?"},
                  {"role": "assistant", "content": "A carrot, then."})),
]
MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a fruit."},
            {"role": "assistant", "content": "An apple."},
            {"role": "user", "content": "And a vegetable?"}]
STEPS = ["--max-steps", "2", "--epochs", "0", "--batch-size", "4", "--eval-every", "2",
         "--eval-batches", "1", "--max-new-tokens", "4"]


def messages_of(record: InstructionRecord | Conversation) -> list[dict[str, str]]:
    if isinstance(record, Conversation):
        return [dict(message) for message in record.messages]
    content = f"{record.instruction}\n\n{record.input}" if record.input else record.instruction
    return [{"role": "user", "content": content}, {"role": "assistant", "content": record.output}]


def tokenizer_dir(directory: Path, family: str, template: str) -> Path:
    """The family's tokenizer.json and a tokenizer_config.json with ``template``."""
    directory.mkdir(parents=True)
    spec = FAMILIES[family]
    spec.tokenizer(directory / "tokenizer.json")
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": template,
        "bos_token": spec.bos, "eos_token": spec.eos[0]}))
    return directory


@pytest.mark.parametrize("family", ["qwen3", "llama"])
def test_the_trained_tokens_are_the_assistant_tokens_transformers_marks(
        family: str, tmp_path: Path) -> None:
    marked, plain = TEMPLATES[family]
    oracle_dir = tokenizer_dir(tmp_path / "marked", family, marked)
    hf = transformers.AutoTokenizer.from_pretrained(oracle_dir)
    tokenizer = load_tokenizer(oracle_dir)
    for template in (marked, plain):  # ours needs no markers
        chat_template = ChatTemplate(template, read_special_tokens(oracle_dir))
        examples = InstructionExamples(RECORDS, tokenizer, chat_template, 128)
        for record, ids, trained in zip(RECORDS, examples.ids, examples.trained, strict=True):
            oracle = hf.apply_chat_template(messages_of(record), tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
            assert ids == oracle["input_ids"]  # the BOS a special token, no end-of-text added
            assert trained == [bool(m) for m in oracle["assistant_masks"]]
            assert sum(trained) > 0
    _, targets = examples.batch([2])  # the conversation: both answers, nothing else
    learned = [t for t in targets[0].tolist() if t != IGNORE_INDEX]
    assert tokenizer.decode(learned) == (
        "An apple.<|im_end|>\nA carrot, then.<|im_end|>\n" if family == "qwen3"
        else "An apple.<|eot_id|>A carrot, then.<|eot_id|>")


def test_a_template_that_rewrites_earlier_turns_is_refused_by_record(tmp_path: Path) -> None:
    tokenizer = load_tokenizer(tokenizer_dir(tmp_path / "qwen", "qwen3", CHATML))
    template = ChatTemplate(REWRITES_HISTORY, origin="rewrites/chat_template.jinja")
    single = InstructionExamples(RECORDS[:2], tokenizer, template, 128)  # one answer: fine
    targets = single.batch([0])[1][0].tolist()
    assert tokenizer.decode([t for t in targets if t != IGNORE_INDEX]) == (
        "<think>\n\n</think>\n\nRed.<|im_end|>\n")
    with pytest.raises(ChatTemplateError) as refused:
        InstructionExamples(RECORDS, tokenizer, template, 128)
    message = str(refused.value)
    assert message.startswith("record 2 of 3 (the one whose last instruction begins "
                              "'And a vegetable?'): the chat template of "
                              "rewrites/chat_template.jinja does not render the conversation "
                              "up to message 2 as the start of the whole conversation")
    assert "one answer" in message and "--prompt-style alpaca, phi3, chatml" in message


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random Qwen3 and Llama 3 directory, and a Qwen3 one without a chat template."""
    root = tmp_path_factory.mktemp("models")
    dirs = {}
    for family in ("qwen3", "llama"):
        dirs[family] = root / family
        write_model_dir(dirs[family], FAMILIES[family])
    dirs["base"] = root / "base"
    shutil.copytree(dirs["qwen3"], dirs["base"])
    config = json.loads((dirs["base"] / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (dirs["base"] / "tokenizer_config.json").write_text(json.dumps(config))
    return dirs


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    records = [record_json(RECORDS[i % 3]) for i in range(17)]
    path = tmp_path_factory.mktemp("data") / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def finetune(model: Path, data: Path, run_dir: Path, *extra: str) -> None:
    assert main(["finetune", "instruct", "--model", str(model), "--data", str(data),
                 "--out", str(run_dir), *STEPS, *extra]) == 0


@pytest.fixture(scope="module")
def qwen_run(models: dict[str, Path], data: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "qwen"
    # no --prompt-style: the model's template; LoRA, merged into what the run exports
    finetune(models["qwen3"], data, run_dir, "--train", "lora", "--lr", "1e-2")
    return run_dir


def test_a_model_with_a_template_is_tuned_in_it_by_default_and_the_run_keeps_it(
        qwen_run: Path, models: dict[str, Path]) -> None:
    config = load_toml(qwen_run / "config.toml")
    assert config["head"]["prompt_style"] == config["data"]["prompt_style"] == "template"
    run_format = model_prompt_format(qwen_run)
    assert isinstance(run_format, ChatTemplate)
    assert run_format.render(MESSAGES) == read_chat_template(models["qwen3"]).render(MESSAGES)
    _, tokenizer = load_model(qwen_run)
    assert model_stop_ids(qwen_run, tokenizer) == model_stop_ids(models["qwen3"], tokenizer)
    assert [tokenizer.decode([i]) for i in model_stop_ids(qwen_run, tokenizer)] == [
        "<|im_end|>", "<|endoftext|>"]


def test_generate_and_chat_prompt_the_run_in_its_template(
        qwen_run: Path, models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    hf = transformers.AutoTokenizer.from_pretrained(models["qwen3"])
    model, tokenizer = load_model(qwen_run)
    stop_ids = model_stop_ids(qwen_run, tokenizer)
    ids = hf.apply_chat_template([{"role": "user", "content": "Name a fruit."}], tokenize=True,
                                 return_dict=False, add_generation_prompt=True)
    expected = "".join(generate_text(model, tokenizer, ids, 5, stop_ids=stop_ids))
    assert main(["generate", "--model", str(qwen_run), "--instruction", "--prompt",
                 "Name a fruit.", "--max-new-tokens", "5"]) == 0
    out, err = capsys.readouterr()
    assert out == expected + "\n" and "prompt format: the model's chat template" in err

    session = ChatSession(model, tokenizer, model_prompt_format(qwen_run),
                          sampling=Sampling(max_new_tokens=5), stop_ids=stop_ids)
    session.turns += MESSAGES[1:]
    assert session.prompt_ids() == hf.apply_chat_template(
        MESSAGES[1:], tokenize=True, return_dict=False, add_generation_prompt=True)


def test_export_writes_the_template_transformers_renders_as_we_do(
        qwen_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    assert main(["export", str(qwen_run), "--format", "hf", "--out", str(out)]) == 0
    hf = transformers.AutoTokenizer.from_pretrained(out)
    ours = model_prompt_format(qwen_run)
    _, tokenizer = load_model(qwen_run)
    text = ours.render(MESSAGES)
    assert hf.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True) == text
    assert hf.apply_chat_template(MESSAGES, tokenize=True, return_dict=False,
                                  add_generation_prompt=True) == encode_prompt(
                                      ours, tokenizer, text)
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == list(model_stop_ids(qwen_run, tokenizer))


def test_a_lora_run_exports_its_merged_weights(qwen_run: Path, models: dict[str, Path],
                                               tmp_path: Path) -> None:
    import torch

    out = tmp_path / "hf"
    assert main(["export", str(qwen_run), "--format", "hf", "--out", str(out)]) == 0
    model, tokenizer = load_model(qwen_run)
    ids = torch.tensor([encode_prompt(model_prompt_format(qwen_run), tokenizer,
                                      model_prompt_format(qwen_run).render(MESSAGES))])
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    source = transformers.AutoModelForCausalLM.from_pretrained(models["qwen3"]).eval()
    with torch.no_grad():
        ours, exported, before = model(ids), hf(ids).logits, source(ids).logits
    torch.testing.assert_close(exported, ours, atol=1e-5, rtol=0)
    assert (exported - before).abs().max() > 1e-3  # the adapters learned, and were merged


def test_resume_of_a_template_run_is_exact_and_reads_the_runs_own_template(
        models: dict[str, Path], data: Path, tmp_path: Path) -> None:
    """Llama's tokenizer has no end-of-text token: a template needs none. Resumed after its
    source's template was broken, the run trains on from its own copy, as if never stopped."""
    source = tmp_path / "llama"
    shutil.copytree(models["llama"], source)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    finetune(source, data, whole, "--prompt-style", "template", "--max-steps", "4")
    finetune(source, data, resumed, "--prompt-style", "template")
    config = json.loads((source / "tokenizer_config.json").read_text())
    broken = "{{ raise_exception('the source changed') }}"
    (source / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": broken}))
    assert main(["finetune", "instruct", "--out", str(resumed), "--resume",
                 "--max-steps", "4"]) == 0
    for name in ("metrics.jsonl", "test-responses.json", "eval.json"):
        assert (resumed / name).read_text() == (whole / name).read_text()


def test_a_model_without_a_template_is_refused_with_the_alternatives(
        models: dict[str, Path], data: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    assert main(["finetune", "instruct", "--model", str(models["base"]), "--data", str(data),
                 "--prompt-style", "template", "--out", str(run_dir), *STEPS]) == 2
    err = capsys.readouterr().err
    assert (f"--prompt-style template: {models['base']} has no chat template to render the "
            "records in") in err
    assert "--prompt-style alpaca, phi3, chatml" in err
    assert not run_dir.exists()
    style, template_dir = choose_prompt_format(None, str(models["base"]))  # the default
    assert (style.name, template_dir) == ("alpaca", None)
    with pytest.raises(ValueError, match="preset:nano has no chat template"):
        choose_prompt_format("template", "preset:nano")
