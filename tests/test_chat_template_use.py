"""A model directory's own chat template in use: ``generate --instruction``, ``chat`` and
``serve`` render prompts exactly as transformers' ``apply_chat_template`` does, and stop at
every end-of-turn id of ``generation_config.json``.

The model is a random GPT-2-shaped one with GPT-2's vocabulary, exported as a Hugging Face
directory, into which the test writes a multi-turn template (ChatML-like, with the BOS and EOS
tokens, and Qwen3's ``enable_thinking`` switch) and a generation_config.json naming two eos
ids: GPT-2's ``<|endoftext|>`` and a token the model greedily writes early in its answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from pretrain_runs import run_env
from serve_runs import Server

from scratchgpt.cli import main
from scratchgpt.config import ModelConfig
from scratchgpt.data.chat_templates import ChatTemplate
from scratchgpt.generation import generate_text, generate_tokens
from scratchgpt.hub.export import export_hf
from scratchgpt.hub.models import load_model, model_prompt_format, model_stop_ids
from scratchgpt.model import GPTModel
from scratchgpt.tokenizers import load_gpt2_tokenizer

transformers = pytest.importorskip("transformers")

TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}{% endif %}"
)
INSTRUCTION = "Name a fruit."
EOT = 50256  # GPT-2's <|endoftext|>: the tokenizer's eos, and the first eos id


@dataclass
class ChatModel:
    directory: Path
    second_eos: int  # the other eos id of generation_config.json
    hf: object  # transformers' tokenizer of the directory

    def hf_ids(self, messages: list[dict[str, str]], **kwargs: object) -> list[int]:
        """The prompt's ids as transformers renders and tokenizes it."""
        return list(self.hf.apply_chat_template(messages, tokenize=True, return_dict=False,
                                                add_generation_prompt=True, **kwargs))

    def answer(self, ids: list[int], max_new_tokens: int) -> str:
        """Our library's greedy answer to these prompt ids, stopping at both eos ids."""
        model, tokenizer = load_model(self.directory)
        return "".join(generate_text(model, tokenizer, ids, max_new_tokens,
                                     stop_ids=(EOT, self.second_eos)))


def export_tiny(directory: Path, shared_assets: Path) -> tuple[GPTModel, object]:
    torch.manual_seed(3)  # a seed whose greedy answer to INSTRUCTION is not one token repeated
    config = ModelConfig(vocab_size=50257, context_length=96, emb_dim=32, n_heads=2,
                         n_layers=1)
    model = GPTModel(config).eval()
    tokenizer = load_gpt2_tokenizer(shared_assets / "gpt2-tokenizer")
    export_hf(model, tokenizer, directory)
    return model, tokenizer


@pytest.fixture(scope="module")
def chat_model(shared_assets: Path, tmp_path_factory: pytest.TempPathFactory) -> ChatModel:
    """The exported directory with the template, and a second eos id the model writes in its
    greedy answer to INSTRUCTION: the last of the answer's 8 tokens to appear first after
    its start, so that the answer is cut after a few tokens."""
    directory = tmp_path_factory.mktemp("hf") / "tiny-chat"
    model, _ = export_tiny(directory, shared_assets)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config_path.write_text(json.dumps({**config, "chat_template": TEMPLATE}), encoding="utf-8")
    hf = transformers.AutoTokenizer.from_pretrained(directory)
    ids = hf.apply_chat_template([{"role": "user", "content": INSTRUCTION}], tokenize=True,
                                 return_dict=False, add_generation_prompt=True)
    tokens = list(generate_tokens(model, list(ids), 8, eos_id=EOT))
    second = next(token for index, token in reversed(list(enumerate(tokens)))
                  if index == tokens.index(token))
    (directory / "generation_config.json").write_text(
        json.dumps({"eos_token_id": [EOT, second]}), encoding="utf-8")
    return ChatModel(directory, second, hf)


def test_a_model_directorys_template_and_end_of_turn_ids_are_its_prompt_format(
        chat_model: ChatModel) -> None:
    prompt_format = model_prompt_format(chat_model.directory)
    assert isinstance(prompt_format, ChatTemplate)
    messages = [{"role": "user", "content": INSTRUCTION}]
    assert prompt_format.instruction_prompt(INSTRUCTION) == chat_model.hf.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)
    _, tokenizer = load_model(chat_model.directory)
    assert model_stop_ids(chat_model.directory, tokenizer) == (EOT, chat_model.second_eos)


def test_a_directory_without_a_template_has_no_prompt_format(
        shared_assets: Path, tmp_path: Path) -> None:
    export_tiny(tmp_path / "base", shared_assets)
    assert model_prompt_format(tmp_path / "base") is None


def test_generate_instruction_uses_the_template_and_stops_at_either_eos(
        chat_model: ChatModel, capsys: pytest.CaptureFixture[str]) -> None:
    ids = chat_model.hf_ids([{"role": "user", "content": INSTRUCTION}])
    model, tokenizer = load_model(chat_model.directory)
    greedy = list(generate_tokens(model, ids, 8, eos_id=EOT))
    cut = greedy.index(chat_model.second_eos)  # the answer ends before the second eos id
    assert 0 < cut < len(greedy)
    assert main(["generate", "--model", str(chat_model.directory), "--prompt", INSTRUCTION,
                 "--instruction", "--max-new-tokens", "8"]) == 0
    out, err = capsys.readouterr()
    assert out == tokenizer.decode(greedy[:cut]) + "\n"
    assert "prompt format: the model's chat template" in err


def test_chat_through_a_pipe_renders_every_turn_with_the_template(
        chat_model: ChatModel, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scratchgpt.cli", "chat", "--model", str(chat_model.directory),
         "--max-new-tokens", "6"], input="Name a fruit.\nAnd a vegetable?\n",
        env=run_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    messages: list[dict[str, str]] = []
    transcript = ""
    for text in ("Name a fruit.", "And a vegetable?"):
        messages.append({"role": "user", "content": text})
        answer = chat_model.answer(chat_model.hf_ids(messages), 6)
        transcript += f"> {text}\n{answer}\n\n"
        messages.append({"role": "assistant", "content": answer.strip()})
    assert done.stdout == transcript


@pytest.fixture(scope="module")
def template_server(chat_model: ChatModel,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(chat_model.directory, tmp_path_factory.mktemp("serve-cache"))
    yield server
    server.stop()


def chat_body(model: str, **extra: object) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": INSTRUCTION}],
                       "max_tokens": 6, "temperature": 0, **extra}).encode()


def test_serve_passes_chat_template_kwargs_to_the_template(
        template_server: Server, chat_model: ChatModel) -> None:
    assert "prompt format: the model's chat template" in template_server.announcement
    messages = [{"role": "user", "content": INSTRUCTION}]
    name = chat_model.directory.name
    for kwargs in ({}, {"enable_thinking": False}):
        extra = {"chat_template_kwargs": kwargs} if kwargs else {}
        status, _, body = template_server.request("POST", "/v1/chat/completions",
                                                  chat_body(name, **extra))
        assert status == 200, body
        ids = chat_model.hf_ids(messages, **kwargs)
        assert body["usage"]["prompt_tokens"] == len(ids)
        assert body["choices"][0]["message"]["content"] == chat_model.answer(ids, 6)
    assert len(chat_model.hf_ids(messages, enable_thinking=False)) > len(
        chat_model.hf_ids(messages))


def test_ollamas_chat_reads_the_templates_special_tokens_as_v1_does(
        template_server: Server, chat_model: ChatModel) -> None:
    """/api/chat renders with the same template and encodes its special tokens as tokens:
    the same prompt, so the same greedy answer, as /v1/chat/completions."""
    messages = [{"role": "user", "content": INSTRUCTION}]
    ids = chat_model.hf_ids(messages)
    status, _, body = template_server.request("POST", "/api/chat", json.dumps({
        "model": chat_model.directory.name, "messages": messages, "stream": False,
        "options": {"temperature": 0}}).encode())
    assert status == 200, body
    assert body["prompt_eval_count"] == len(ids)
    assert body["message"]["content"] == chat_model.answer(ids, 6)


def test_serve_refuses_chat_template_kwargs_the_template_cannot_take(
        template_server: Server, chat_model: ChatModel) -> None:
    status, _, body = template_server.request(
        "POST", "/v1/chat/completions",
        chat_body(chat_model.directory.name, chat_template_kwargs={"messages": []}))
    assert status == 400
    assert body["error"]["param"] == "chat_template_kwargs"


def test_serve_refuses_chat_template_kwargs_without_a_chat_template(
        shared_assets: Path, tmp_path: Path) -> None:
    export_tiny(tmp_path / "base", shared_assets)
    server = Server(tmp_path / "base", tmp_path / "cache")
    try:
        assert "prompt style alpaca" in server.announcement
        status, _, body = server.request(
            "POST", "/v1/chat/completions",
            chat_body("base", chat_template_kwargs={"enable_thinking": False}))
        assert status == 400
        assert body["error"]["param"] == "chat_template_kwargs"
        assert "chat_template_kwargs" in body["error"]["message"]
        assert "no chat template" in body["error"]["message"]
        status, _, body = server.request("POST", "/v1/chat/completions", chat_body("base"))
        assert status == 200, body
    finally:
        server.stop()
