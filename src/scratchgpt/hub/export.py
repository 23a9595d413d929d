"""Export a GPTModel as a Hugging Face GPT-2 directory, to share it on the hub.

``export_hf(model, tokenizer, DIR)`` writes what ``transformers.GPT2LMHeadModel.from_pretrained
(DIR)`` reads, and what :func:`scratchgpt.hub.gpt2.load_model` reads back:

* ``config.json``: a ``GPT2Config`` (``model_type: gpt2``) with this model's shape;
* ``model.safetensors``: the weights under Hugging Face's names, float32 (``hf_weights``
  explains the renaming). A tied output layer is written once, as ``transformer.wte.weight``:
  safetensors refuses two names for one tensor, and ``tie_word_embeddings`` tells Hugging Face
  to tie it again;
* ``vocab.json`` + ``merges.txt``: the tokenizer, when it is a byte-level BPE tokenizer with
  GPT-2's pre-tokenization pattern, which is what Hugging Face's ``GPT2Tokenizer`` implements;
  with ``tokenizer_config.json`` naming its special tokens and, for an instruction-tuned model,
  the ``chat_template`` of the prompt style it was trained with, so that every consumer
  (``apply_chat_template``, servers, the hub) formats a chat exactly as training did.

Only models GPT-2 can express are exported: learned positions and query/key/value biases.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

from scratchgpt.data.prompt_styles import PromptStyle
from scratchgpt.hub.hf_weights import hf_config_from, scratch_to_hf
from scratchgpt.model import GPTModel
from scratchgpt.tokenizers import (
    ENDOFTEXT,
    GPT2_SPLIT_PATTERN,
    BPETokenizer,
    Tokenizer,
    save_gpt2_files,
)


def export_hf(model: GPTModel, tokenizer: Tokenizer | None, out_dir: str | Path,
              prompt_style: PromptStyle | None = None) -> list[Path]:
    """Write ``model`` (and ``tokenizer``, with ``prompt_style``'s chat template) to ``out_dir``
    in Hugging Face's GPT-2 layout and return the files written. Raises ``ValueError`` for a
    model GPT-2 cannot express."""
    config = model.config
    hf_config = hf_config_from(config)  # checks the model is GPT-2-shaped before writing
    eot = tokenizer.eot_id if tokenizer is not None else None
    hf_config.update(bos_token_id=eot, eos_token_id=eot)
    weights = scratch_to_hf(
        {name: t.detach().to("cpu", torch.float32) for name, t in model.state_dict().items()},
        config,
    )
    if config.tie_weights:
        del weights["lm_head.weight"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(weights, out_dir / "model.safetensors", metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    written = [out_dir / "config.json", out_dir / "model.safetensors"]
    if isinstance(tokenizer, BPETokenizer) and tokenizer.pattern == GPT2_SPLIT_PATTERN:
        save_gpt2_files(tokenizer, out_dir)
        written += [out_dir / "vocab.json", out_dir / "merges.txt",
                    _write_tokenizer_config(out_dir, config.context_length, prompt_style)]
    elif tokenizer is not None:
        warnings.warn(
            f"{type(tokenizer).__name__} has no Hugging Face GPT-2 equivalent (only byte-level "
            f"BPE with GPT-2's pattern does); {out_dir} holds the model without a tokenizer",
            stacklevel=2,
        )
    return written


def _write_tokenizer_config(out_dir: Path, context_length: int,
                            prompt_style: PromptStyle | None) -> Path:
    """``tokenizer_config.json``: GPT-2's tokenizer class and special token, the context
    length, and the chat template when the model was instruction-tuned."""
    config = {"tokenizer_class": "GPT2Tokenizer", "bos_token": ENDOFTEXT,
              "eos_token": ENDOFTEXT, "unk_token": ENDOFTEXT, "model_max_length": context_length,
              "add_prefix_space": False}
    if prompt_style is not None:
        config["chat_template"] = prompt_style.chat_template
    path = out_dir / "tokenizer_config.json"
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path
