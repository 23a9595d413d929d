"""GPT-2's weights, as OpenAI and Hugging Face publish them, in our :class:`GPTModel`.

* Hugging Face's layout: ``config.json``, ``model.safetensors`` (or ``pytorch_model.bin``),
  ``vocab.json`` + ``merges.txt``: :func:`load_gpt2_weights`;
* OpenAI's: ``hparams.json``, the TensorFlow checkpoint ``model.ckpt.*``, ``encoder.json`` +
  ``vocab.bpe``: :func:`load_openai_model`.

Both go through :func:`scratchgpt.hub.hf_weights.hf_to_scratch`, which checks every shape and
names any tensor that does not fit; OpenAI's names are first renamed to Hugging Face's
(``model/h0/attn/c_attn/w`` is ``h.0.attn.c_attn.weight``, its leading axis of size 1
dropped). The file is read one tensor at a time into fresh memory (safetensors' ``pread``
backend, or a plain read of the TensorFlow data file), and the tensors become the model's
parameters (:mod:`scratchgpt.hub.model_from_weights`), so the peak is the weights plus one
tensor. :mod:`scratchgpt.hub.models` picks the loader for a ``--model SPEC``.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from scratchgpt.config import ModelConfig
from scratchgpt.config_files import read_json_object
from scratchgpt.hub.hf_checkpoint import safe_open_file
from scratchgpt.hub.hf_weights import config_from_hf, hf_to_scratch
from scratchgpt.hub.model_from_weights import model_from_weights
from scratchgpt.hub.tf_checkpoint import TFCheckpoint
from scratchgpt.model import GPTModel

HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
DOWNLOADED_NAME = re.compile(r"gpt2-(124M|355M|774M|1558M)(?:-(hf|openai))?")


def load_gpt2_weights(directory: Path, hf_config: dict[str, Any]) -> GPTModel:
    """GPT-2's weights from a Hugging Face directory (``hf_config``: its ``config.json``):
    ``model.safetensors``, or ``pytorch_model.bin``, in float32."""
    config = config_from_hf(hf_config)
    safetensors_file, bin_file = (directory / name for name in HF_WEIGHTS)
    if safetensors_file.is_file():
        with safe_open_file(safetensors_file) as f:
            weights = _convert(LazyTensors(f.keys(), f.get_tensor), config, safetensors_file)
    elif bin_file.is_file():
        # weights_only: a pickle may run code; this unpickler only rebuilds tensors and dicts.
        # mmap: the zip format (torch >= 1.6) lets tensors stay on disk until they are used.
        state = torch.load(bin_file, map_location="cpu", weights_only=True,
                           mmap=zipfile.is_zipfile(bin_file))
        weights = _convert(LazyTensors(state, state.__getitem__), config, bin_file)
    else:
        raise FileNotFoundError(f"{directory} has config.json but no weights: expected "
                                f"{' or '.join(HF_WEIGHTS)}")
    return model_from_weights(config, weights)


def load_openai_model(directory: str | Path) -> GPTModel:
    """GPT-2's weights from OpenAI's layout: ``hparams.json`` and the TensorFlow checkpoint
    (``checkpoint``, ``model.ckpt.index``, ``model.ckpt.data-00000-of-00001``). TensorFlow is
    not needed (see :mod:`scratchgpt.hub.tf_checkpoint`)."""
    directory = Path(directory)
    config = config_from_openai(read_json_object(directory / "hparams.json"))
    checkpoint = TFCheckpoint(directory)
    tf_names = {hf: tf for tf in checkpoint.entries if (hf := openai_to_hf_name(tf))}

    def read(hf_name: str) -> torch.Tensor:
        tensor = torch.from_numpy(checkpoint.read(tf_names[hf_name]))
        return tensor.squeeze(0) if tf_names[hf_name].endswith("/w") else tensor  # [1, in, out]

    try:
        weights = hf_to_scratch(LazyTensors(tf_names, read), config)
    except (KeyError, ValueError) as err:
        message = err.args[0]
        named = re.search(r"'([^']+)'", message)
        if named and named.group(1) in tf_names:
            message += f" (OpenAI's name: {tf_names[named.group(1)]!r})"
        raise type(err)(f"{checkpoint.prefix}: {message}") from None
    return model_from_weights(config, weights)


def openai_to_hf_name(name: str) -> str | None:
    """Hugging Face's name for a tensor of OpenAI's checkpoint, None if GPT-2 has no such
    tensor: ``model/wte`` is ``wte.weight``, ``model/h3/ln_1/g`` (gain) ``h.3.ln_1.weight``,
    ``model/h3/mlp/c_fc/b`` ``h.3.mlp.c_fc.bias``, ``model/ln_f/g`` ``ln_f.weight``."""
    if name in ("model/wte", "model/wpe"):
        return name.removeprefix("model/") + ".weight"
    match = re.fullmatch(r"model/([\w/]+)/([gbw])", name)
    if not match:
        return None
    module = re.sub(r"^h(\d+)/", r"h.\1/", match.group(1)).replace("/", ".")
    return f"{module}.{'bias' if match.group(2) == 'b' else 'weight'}"


def config_from_openai(hparams: dict[str, Any]) -> ModelConfig:
    """A :class:`ModelConfig` from OpenAI's ``hparams.json``
    (``{"n_vocab": 50257, "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12}``).

    The rest is GPT-2's design, as in Hugging Face's ``config.json`` for the same weights:
    learned positions, biases everywhere, tied embeddings, LayerNorm eps 1e-5, dropout 0.1
    (which only matters when fine-tuning).
    """
    try:
        return ModelConfig(
            vocab_size=hparams["n_vocab"], context_length=hparams["n_ctx"],
            emb_dim=hparams["n_embd"], n_heads=hparams["n_head"], n_layers=hparams["n_layer"],
            drop_rate=0.1, qkv_bias=True, tie_weights=True, pos_encoding="learned",
            layer_norm_eps=1e-5,
        )
    except KeyError as err:
        raise ValueError(f"hparams.json lacks {err.args[0]!r}") from None


class LazyTensors(Mapping[str, torch.Tensor]):
    """A read-only mapping that reads each tensor, as float32, only when it is looked up.

    :func:`hf_to_scratch` converts one tensor at a time, so through this mapping only one
    unconverted tensor is in memory at once.
    """

    def __init__(self, names: Iterable[str], read: Callable[[str], torch.Tensor]) -> None:
        self._names = list(names)
        self._known = set(self._names)
        self._read = read

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._known:
            raise KeyError(name)
        return self._read(name).float()  # a no-op for float32 tensors

    def __contains__(self, name: object) -> bool:  # Mapping's default would read the tensor
        return name in self._known

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _convert(
    tensors: Mapping[str, torch.Tensor], config: ModelConfig, source: Path
) -> dict[str, torch.Tensor]:
    """:func:`hf_to_scratch`, with the file named in its errors."""
    try:
        return hf_to_scratch(tensors, config)
    except (KeyError, ValueError) as err:
        raise type(err)(f"{source}: {err.args[0]}") from None
