"""Export a GPTModel as a Hugging Face model directory, to share it on the hub.

``export_hf(model, tokenizer, DIR)`` writes what ``transformers.AutoModelForCausalLM
.from_pretrained(DIR)`` loads with the same logits, and what
:func:`scratchgpt.hub.models.load_model` reads back. The model's design picks the layout: a
GPT-2 (LayerNorm, learned positions) is written as ``GPT2LMHeadModel`` (:mod:`.hf_weights`),
a Llama 3, Qwen3 or Gemma 3 as that family (:mod:`.families`, which finds the family from the
model's switches, so a model fine-tuned here goes back out as what it came from):

* ``config.json``: the family's configuration of this model's shape, its ``torch_dtype`` and
  the tokenizer's special token ids;
* ``model.safetensors``: the weights under Hugging Face's names, in the model's own dtype
  (bf16 stays bf16). A tied output layer is written once, as the token embedding:
  safetensors refuses two names for one tensor, and ``tie_word_embeddings`` tells Hugging
  Face to tie it again;
* the tokenizer: ``vocab.json`` + ``merges.txt`` for a byte-level BPE tokenizer with GPT-2's
  pre-tokenization pattern (Hugging Face's ``GPT2Tokenizer``); ``tokenizer.json`` for a
  tokenizer read from one (:class:`~scratchgpt.tokenizers.HFTokenizer` keeps the parsed file
  and writes it back); with ``tokenizer_config.json`` naming its class, its special tokens
  and, for an instruction-tuned model, the ``chat_template`` of the prompt style it was
  trained with, so that every consumer formats a chat exactly as training did;
* for a model read from a Hugging Face directory (``source_dir``), that directory's own
  :data:`~scratchgpt.data.chat_templates.USAGE_FILES` (tokenizer settings, chat templates,
  ``generation_config.json`` with its end-of-turn ids), copied as they are, in place of a
  generated ``tokenizer_config.json``; for a run instruction-tuned in such a model's chat
  template, the copy of them it keeps in its ``template/``. Exporting changes the weights'
  layout, not how the model is used, and those files say more than our tokenizer records
  (padding, sampling defaults, several templates): rebuilding them would lose what we never
  read.

:func:`export_model` does it all for anything ``--model`` names, as ``scratchgpt export`` does.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from scratchgpt.config import ModelConfig
from scratchgpt.config_files import read_json_object
from scratchgpt.data.chat_templates import copy_usage_files
from scratchgpt.data.prompt_styles import PromptStyle
from scratchgpt.hub.families import hf_config_from_model, state_dict_to_hf
from scratchgpt.hub.hf_checkpoint import resolve_dtype
from scratchgpt.hub.hf_weights import hf_config_from, scratch_to_hf
from scratchgpt.hub.models import load_model, model_prompt_format, resolve_model
from scratchgpt.model import GPTModel
from scratchgpt.run_dir import is_run_dir, run_template_dir
from scratchgpt.tokenizers import (
    ENDOFTEXT,
    GPT2_SPLIT_PATTERN,
    BPETokenizer,
    HFTokenizer,
    Tokenizer,
    save_gpt2_files,
)
from scratchgpt.tokenizers.hf_json import HF_TOKENIZER_FILE

TOKENIZER_CONFIG = "tokenizer_config.json"
# config.json's torch_dtype (dtype in transformers 5) -> the --dtype name
STORED_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def export_model(spec: str | Path, out_dir: str | Path, dtype: str | None = None) -> list[Path]:
    """Load the model ``spec`` names (anything :func:`~scratchgpt.hub.models.load_model` reads)
    and :func:`export_hf` it, in ``dtype`` (``fp32``, ``bf16``, ``fp16``; by default the
    dtype it is stored in: a Hugging Face directory's config.json ``torch_dtype``, else
    float32), with a run's prompt style, or the usage files of a Hugging Face directory (those
    a run tuned in its model's chat template keeps, for such a run)."""
    directory = resolve_model(spec)
    if Path(out_dir).resolve() == directory.resolve():
        raise ValueError(f"{out_dir} is the model's own directory: export it to another one")
    dtype = dtype or stored_dtype(directory)
    model, tokenizer = load_model(directory, dtype)
    model = model.to(resolve_dtype(dtype))  # (runs load in float32)
    prompt_format = model_prompt_format(directory)
    style = prompt_format if isinstance(prompt_format, PromptStyle) else None
    source_dir = run_template_dir(directory) if is_run_dir(directory) else directory
    return export_hf(model, tokenizer, out_dir, style, source_dir=source_dir)


def stored_dtype(directory: Path) -> str:
    """The dtype a Hugging Face directory's config.json says its weights are stored in
    (``torch_dtype``; ``dtype`` since transformers 5), as a ``--dtype`` name; ``fp32`` where
    it says none, and for run directories and OpenAI's GPT-2, which have no config.json."""
    config = directory / "config.json"
    hf = read_json_object(config) if config.is_file() else {}
    return STORED_DTYPES.get(hf.get("dtype") or hf.get("torch_dtype"), "fp32")


def export_hf(model: GPTModel, tokenizer: Tokenizer | None, out_dir: str | Path,
              prompt_style: PromptStyle | None = None,
              source_dir: str | Path | None = None) -> list[Path]:
    """Write ``model`` (and ``tokenizer``, with ``prompt_style``'s chat template, or
    ``source_dir``'s usage files) to ``out_dir`` in Hugging Face's layout and return the files
    written. Raises ``ValueError``, before writing anything, for a model that neither GPT-2
    nor an open family expresses."""
    state = {name: t.detach().to("cpu") for name, t in model.state_dict().items()}
    hf_config, weights = hf_config_and_weights(model.config, state)
    hf_config["torch_dtype"] = str(model.tok_emb.weight.dtype).removeprefix("torch.")
    hf_config.update(_special_token_ids(tokenizer))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(weights, out_dir / "model.safetensors", metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    written = [out_dir / "config.json", out_dir / "model.safetensors"]
    tokenizer_files, tokenizer_class = _write_tokenizer(tokenizer, out_dir)
    copied = copy_usage_files(Path(source_dir), out_dir) if source_dir is not None else []
    if tokenizer_class and out_dir / TOKENIZER_CONFIG not in copied:
        tokenizer_files.append(_write_tokenizer_config(
            out_dir, tokenizer_class, tokenizer, model.config.context_length, prompt_style))
    return written + tokenizer_files + copied


def hf_config_and_weights(config: ModelConfig, state: dict[str, torch.Tensor]
                  ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """config.json (as a dict) and the weights under Hugging Face's names: GPT-2's for a model
    with GPT-2's LayerNorm (no open family uses it), else those of the family whose design the
    model has. A tied output layer is left out of the weights."""
    if config.norm == "layernorm":
        hf_config = hf_config_from(config)  # checks the model is GPT-2-shaped
        weights = scratch_to_hf(state, config)
        if config.tie_weights:
            del weights["lm_head.weight"]
        return hf_config, weights
    return hf_config_from_model(config), state_dict_to_hf(state, config)


def _special_token_ids(tokenizer: Tokenizer | None) -> dict[str, int | None]:
    """config.json's ``bos_token_id`` (the token put before a text, else end-of-text, as in
    GPT-2 and Qwen) and ``eos_token_id`` (end-of-text); None where the tokenizer has none."""
    if tokenizer is None:
        return {"bos_token_id": None, "eos_token_id": None}
    bos = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eot_id
    return {"bos_token_id": bos, "eos_token_id": tokenizer.eot_id}


def _write_tokenizer(tokenizer: Tokenizer | None, out_dir: Path) -> tuple[list[Path], str]:
    """The tokenizer's vocabulary files in ``out_dir`` and the transformers class that reads
    them; none (and "") for a tokenizer Hugging Face has no equivalent of, with a warning."""
    if isinstance(tokenizer, BPETokenizer) and tokenizer.pattern == GPT2_SPLIT_PATTERN:
        save_gpt2_files(tokenizer, out_dir)
        return [out_dir / "vocab.json", out_dir / "merges.txt"], "GPT2Tokenizer"
    if isinstance(tokenizer, HFTokenizer):
        tokenizer.save(out_dir / HF_TOKENIZER_FILE)
        return [out_dir / HF_TOKENIZER_FILE], "PreTrainedTokenizerFast"
    if tokenizer is not None:
        warnings.warn(
            f"{type(tokenizer).__name__} has no Hugging Face equivalent (byte-level BPE with "
            f"GPT-2's pattern and tokenizer.json's tokenizers have); {out_dir} holds the model "
            "without a tokenizer",
            stacklevel=3,
        )
    return [], ""


def _write_tokenizer_config(out_dir: Path, tokenizer_class: str, tokenizer: Tokenizer,
                            context_length: int, prompt_style: PromptStyle | None) -> Path:
    """``tokenizer_config.json``: the tokenizer's class and special tokens, the context length,
    and the chat template when the model was instruction-tuned."""
    if tokenizer_class == "GPT2Tokenizer":
        config: dict[str, Any] = {"bos_token": ENDOFTEXT, "eos_token": ENDOFTEXT,
                                  "unk_token": ENDOFTEXT, "add_prefix_space": False}
    else:
        spelling = {token_id: token for token, token_id in tokenizer.special_tokens.items()}
        ids = _special_token_ids(tokenizer)
        config = {"bos_token": spelling.get(ids["bos_token_id"]),
                  "eos_token": spelling.get(ids["eos_token_id"])}
    config = {"tokenizer_class": tokenizer_class, **config, "model_max_length": context_length}
    if prompt_style is not None:
        config["chat_template"] = prompt_style.chat_template
    path = out_dir / TOKENIZER_CONFIG
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path
