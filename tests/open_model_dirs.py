"""Small random Llama 3, Qwen3 and Gemma 3 model directories, as ``save_pretrained`` writes
them, for the tests of everything that takes ``--model DIR``.

Each directory is a small random transformers model (Llama with GQA and llama3 rotary scaling,
in shards; Qwen3 with tied embeddings, in bf16; Gemma 3 with a sliding window shorter than the
prompt), plus a ``tokenizer.json`` of the family's configuration (hf_tokenizer_families.py)
whose vocabulary is the model's, a chat template and a ``generation_config.json``.
:func:`open_model_dir` writes one and reads it back with transformers, the oracle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tokenizers
import torch
import transformers
from hf_tokenizer_families import gemma3_like, llama3_like, qwen_like

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + "
          "message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
          "{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
GEMMA3 = ("{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + "
          "('model' if message['role'] == 'assistant' else message['role']) + '\\n' + "
          "message['content'] + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<start_of_turn>model\\n' }}{% endif %}")


def llama(vocab: int, context: int = 128) -> transformers.PretrainedConfig:
    """GQA 4:1, head_dim 24 (not 64 / 4 = 16), untied, rope scaled "llama3" from an original
    context an eighth of ``context`` (so prompts reach the scaled frequencies)."""
    return transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=24,
        max_position_embeddings=context, tie_word_embeddings=False, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": context // 8})


def qwen3(vocab: int, context: int = 128) -> transformers.PretrainedConfig:
    """QK-norm, tied embeddings, GQA 2:1, head_dim 32 (not 64 / 4 = 16)."""
    return transformers.Qwen3Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        max_position_embeddings=context, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})


def gemma3(vocab: int) -> transformers.PretrainedConfig:
    return transformers.Gemma3TextConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=7,
        num_attention_heads=4, num_key_value_heads=1, head_dim=32, max_position_embeddings=128,
        sliding_window=4, query_pre_attn_scalar=24,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}})


@dataclass(frozen=True)
class Family:
    config: Callable[[int], transformers.PretrainedConfig]
    tokenizer: Callable[[Path], Path]
    template: str
    bos: str | None
    eos: list[str]  # generation_config.json's eos ids, by token
    save: dict[str, object]  # save_pretrained's options
    dtype: torch.dtype = torch.float32


FAMILIES = {
    "llama": Family(llama, llama3_like, LLAMA3, "<|begin_of_text|>",
                    ["<|end_of_text|>", "<|eot_id|>"], {"max_shard_size": "60KB"}),
    "qwen3": Family(qwen3, qwen_like, CHATML, None, ["<|im_end|>", "<|endoftext|>"], {},
                    dtype=torch.bfloat16),
    "gemma3_text": Family(gemma3, gemma3_like, GEMMA3, "<bos>", ["<eos>", "<end_of_turn>"], {}),
}


@dataclass
class ModelDir:
    directory: Path
    hf: torch.nn.Module  # transformers' model, read back from the directory in float32
    hf_tokenizer: object
    eos_ids: list[int]

    def greedy(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """transformers' greedy continuation of ``ids``, cut before the first eos id."""
        with torch.no_grad():
            out = self.hf.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens,
                                   do_sample=False, eos_token_id=self.eos_ids,
                                   pad_token_id=self.eos_ids[0])[0, len(ids):].tolist()
        ends = [i for i, token in enumerate(out) if token in self.eos_ids]
        return out[: ends[0]] if ends else out

    def chat_ids(self, text: str) -> list[int]:
        return list(self.hf_tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=True, return_dict=False,
            add_generation_prompt=True))


def write_model_dir(directory: Path, family: Family) -> None:
    """What save_pretrained writes, plus the tokenizer files and generation_config.json."""
    directory.mkdir(parents=True)
    family.tokenizer(directory / "tokenizer.json")
    hf_tok = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    torch.manual_seed(0)
    config = family.config(hf_tok.get_vocab_size(with_added_tokens=True))
    model = transformers.AutoModelForCausalLM.from_config(config).to(family.dtype)
    with torch.no_grad():  # norms not all ones, so that a misplaced one would show
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.normal_(0.0 if config.model_type == "gemma3_text" else 1.0, 0.2)
    model.save_pretrained(directory, **family.save)
    eos = [hf_tok.token_to_id(token) for token in family.eos]
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": family.template,
        "bos_token": family.bos, "eos_token": family.eos[0]}))


def open_model_dir(directory: Path, family: str) -> ModelDir:
    """Write ``family``'s directory at ``directory`` and read it back with transformers
    (float32, eager attention)."""
    write_model_dir(directory, FAMILIES[family])
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float32, attn_implementation="eager").eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    eos = json.loads((directory / "generation_config.json").read_text())["eos_token_id"]
    return ModelDir(directory, hf, hf_tokenizer, eos)
