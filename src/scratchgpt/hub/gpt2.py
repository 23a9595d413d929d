"""Load GPT-2, as OpenAI and Hugging Face publish it, into our :class:`GPTModel`.

:func:`load_model` takes any of these ``spec``:

* ``gpt2-124M`` (``-355M``, ``-774M``, ``-1558M``): a model fetched by ``scratchgpt download``
  into the cache; ``gpt2-124M-hf`` / ``gpt2-124M-openai`` picks the layout;
* a Hugging Face directory: ``config.json``, ``model.safetensors`` (or ``pytorch_model.bin``),
  ``vocab.json`` + ``merges.txt``;
* an OpenAI directory: ``hparams.json``, the TensorFlow checkpoint ``model.ckpt.*``,
  ``encoder.json`` + ``vocab.bpe``;
* a run directory written by ``scratchgpt pretrain``;
* a Hugging Face directory of Llama 3, Qwen3 or Gemma 3 (``config.json``'s ``model_type``
  ``llama``, ``qwen3``, ``gemma3_text``): :func:`load_open_model`, the weights through
  :mod:`scratchgpt.hub.families` and :mod:`scratchgpt.hub.hf_checkpoint`, the tokenizer from
  ``tokenizer.json``.

A ``spec`` that names an existing file or directory is read from there; only otherwise is it
a downloaded name (:mod:`scratchgpt.hub.names`), so a ``./gpt2-124M`` directory is that
directory. :func:`resolve_tokenizer` does the same for tokenizers: anything
:func:`~scratchgpt.tokenizers.load_tokenizer` reads (a run directory among them), or a
downloaded name.

All layouts go through :func:`scratchgpt.hub.hf_weights.hf_to_scratch`, which checks every
shape and names any tensor that does not fit; OpenAI's names are first renamed to Hugging
Face's (``model/h0/attn/c_attn/w`` is ``h.0.attn.c_attn.weight``, its leading axis of size 1
dropped).

Memory: the model's parameters are built on the ``meta`` device (shapes, no storage, no
random initialisation) and the converted tensors become its parameters in place
(``load_state_dict(assign=True)``). The file is read
one tensor at a time into fresh memory (safetensors' ``pread`` backend, or a plain read of the
TensorFlow data file), so the peak is the weights plus one tensor; ``bench/bench_load.py``
measures it.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scratchgpt.config import ModelConfig
from scratchgpt.config_files import load_toml, read_json_object
from scratchgpt.data.chat_templates import end_of_turn_ids, read_chat_template
from scratchgpt.data.prompt_format import PromptFormat
from scratchgpt.data.prompt_styles import get_prompt_style
from scratchgpt.hub.download import (
    FORMATS,
    check_download,
    model_name,
    models_dir,
    read_manifest,
)
from scratchgpt.hub.families import model_config_from_hf, state_dict_from_hf
from scratchgpt.hub.hf_checkpoint import SafetensorsCheckpoint, resolve_dtype, safe_open_file
from scratchgpt.hub.hf_weights import config_from_hf, hf_to_scratch
from scratchgpt.hub.names import (
    TOKENIZER_SPECS,
    downloaded_hub_model,
    is_hub_name,
    local_or_downloaded,
)
from scratchgpt.hub.tf_checkpoint import TFCheckpoint
from scratchgpt.model import GPTModel
from scratchgpt.run_dir import (
    CONFIG_FILE,
    HEAD,
    LANGUAGE_MODEL_HEAD,
    RESOLVED_MODEL,
    is_run_dir,
    load_run,
    model_tables,
    run_prompt_style,
)
from scratchgpt.tokenizers import Tokenizer, load_gpt2_tokenizer, load_tokenizer

HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
DOWNLOADED_NAME = re.compile(r"gpt2-(124M|355M|774M|1558M)(?:-(hf|openai))?")


def load_model(spec: str | Path, dtype: str = "fp32") -> tuple[GPTModel, Tokenizer]:
    """The model (in eval mode, on the CPU) and tokenizer named by ``spec``: a downloaded name,
    a Hugging Face or OpenAI directory, or a run directory (listed above). Every command that
    runs a model loads it here. A Hugging Face directory's weights load through
    :func:`load_hf_model`, in ``dtype`` for an open family, its tokenizer from its own
    ``tokenizer.json``; GPT-2's load in float32, with GPT-2's tokenizer."""
    directory = resolve_model(spec)
    if is_run_dir(directory):
        model, tokenizer = load_run(directory)
        if not isinstance(model, GPTModel):
            raise ValueError(f"{directory} is a classifier run, not a language model: use it "
                             f"with `scratchgpt classify --model {directory}`")
        return model, tokenizer
    if (directory / "config.json").is_file():
        model = load_hf_model(directory, dtype)
        open_family = model.config.pos_encoding == "rope"  # GPT-2 learns its positions
        tokenizer = load_tokenizer(directory) if open_family else load_gpt2_tokenizer(directory)
    elif (directory / "hparams.json").is_file():
        model, tokenizer = load_openai_model(directory), load_gpt2_tokenizer(directory)
    else:
        raise _not_a_model(directory)
    _check_vocab(directory, tokenizer, model)
    return model, tokenizer


def load_open_model(directory: Path, hf_config: dict[str, Any], dtype: str) -> GPTModel:
    """A Llama 3, Qwen3 or Gemma 3 model: ``config.json`` (its ``model_type`` picks the family,
    :mod:`scratchgpt.hub.families`), ``model.safetensors`` or shards
    (:mod:`scratchgpt.hub.hf_checkpoint`) cast to ``dtype``."""
    try:
        config = model_config_from_hf(hf_config)
    except (KeyError, ValueError) as err:
        detail = f"lacks {err.args[0]!r}" if isinstance(err, KeyError) else err.args[0]
        raise ValueError(f"{directory / 'config.json'}: {detail}") from None
    with SafetensorsCheckpoint(directory, resolve_dtype(dtype)) as checkpoint:
        try:
            weights = state_dict_from_hf(checkpoint, hf_config)
        except (KeyError, ValueError) as err:
            raise type(err)(f"{directory}: {err.args[0]}") from None
    return model_from_weights(config, weights)


def _check_vocab(directory: Path, tokenizer: Tokenizer, model: GPTModel) -> None:
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens but the "
                         f"model only {model.config.vocab_size}; they do not belong together")


def model_config(spec: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The shape of the model ``spec`` names and what sits on top of it (the ``[head]`` table:
    ``kind`` ``"language_model"`` or ``"classifier"``), read from its settings alone, no
    weights: a run's ``config.toml``, Hugging Face's ``config.json`` (GPT-2, or a family of
    :mod:`scratchgpt.hub.families`: Llama 3, Qwen3, Gemma 3) or OpenAI's ``hparams.json``."""
    directory = resolve_model(spec)
    if (directory / CONFIG_FILE).is_file():
        tables = model_tables(load_toml(directory / CONFIG_FILE))
        source = f"{directory / CONFIG_FILE} [{RESOLVED_MODEL}]"
        return ModelConfig.from_dict(tables[RESOLVED_MODEL], source), tables[HEAD]
    if (directory / "config.json").is_file():
        hf = read_json_object(directory / "config.json")
        if hf.get("model_type", "gpt2") == "gpt2":
            return config_from_hf(hf), dict(LANGUAGE_MODEL_HEAD)
        try:
            return model_config_from_hf(hf), dict(LANGUAGE_MODEL_HEAD)
        except KeyError as err:
            raise ValueError(f"{directory / 'config.json'} lacks {err.args[0]!r}") from None
        except ValueError as err:  # its messages begin "config.json: "
            message = str(err).removeprefix("config.json: ")
            raise ValueError(f"{directory / 'config.json'}: {message}") from None
    if (directory / "hparams.json").is_file():
        hparams = read_json_object(directory / "hparams.json")
        return config_from_openai(hparams), dict(LANGUAGE_MODEL_HEAD)
    raise _not_a_model(directory)


def _not_a_model(directory: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"{directory} is not a model directory: expected config.json + model.safetensors "
        "(Hugging Face), hparams.json + model.ckpt.index (OpenAI), or a run directory "
        "(config.toml + checkpoints/)"
    )


def model_prompt_style(spec: str | Path) -> str | None:
    """The prompt style ``spec`` was instruction-tuned with (a run directory's), or None for a
    base model."""
    directory = resolve_model(spec)
    return run_prompt_style(directory) if is_run_dir(directory) else None


def model_prompt_format(spec: str | Path) -> PromptFormat | None:
    """What turns a conversation into ``spec``'s prompt: a run directory's recorded prompt
    style; a Hugging Face directory's own chat template (``chat_template.jinja`` or
    ``tokenizer_config.json``'s ``chat_template``); None for a base model, which has neither."""
    directory = resolve_model(spec)
    if is_run_dir(directory):
        style = run_prompt_style(directory)
        return get_prompt_style(style) if style else None
    config = directory / "tokenizer_config.json"
    if ((directory / "chat_template.jinja").is_file()
            or (directory / "additional_chat_templates").is_dir()
            or (config.is_file() and "chat_template" in read_json_object(config))):
        return read_chat_template(directory)
    return None


def model_stop_ids(spec: str | Path, tokenizer: Tokenizer) -> tuple[int, ...]:
    """The token ids that end ``spec``'s answers, for generation to stop at any of them: a Hugging
    Face directory's end-of-turn ids (``generation_config.json``'s ``eos_token_id``, one or a
    list, and ``tokenizer_config.json``'s ``eos_token``); else, or where it names none, the
    tokenizer's end-of-text token."""
    directory = resolve_model(spec)
    ids = [] if is_run_dir(directory) else end_of_turn_ids(
        directory, lambda text: _token_id(tokenizer, text))
    if not ids and tokenizer.eot_id is not None:
        ids = [tokenizer.eot_id]
    return tuple(ids)


def _token_id(tokenizer: Tokenizer, text: str) -> int | None:
    """The id of the token spelled ``text``: a special token, or an ordinary one."""
    if text in tokenizer.special_tokens:
        return tokenizer.special_tokens[text]
    ids = tokenizer.encode_ordinary(text)
    return ids[0] if len(ids) == 1 else None


def resolve_tokenizer(spec: str | Path) -> Tokenizer:
    """The tokenizer ``spec`` names (:data:`TOKENIZER_SPECS`): any run directory, file or
    directory :func:`~scratchgpt.tokenizers.load_tokenizer` reads, or else a downloaded
    model's vocabulary (``gpt2-124M``; an existing path comes first, see
    :mod:`scratchgpt.hub.names`)."""

    def downloaded(name: str) -> Path:
        if not (is_hub_name(name) or DOWNLOADED_NAME.fullmatch(name)):
            raise FileNotFoundError(f"{name} does not exist; expected {TOKENIZER_SPECS}")
        return _downloaded_model(name)

    return load_tokenizer(local_or_downloaded(spec, downloaded))


def resolve_model(spec: str | Path) -> Path:
    """The directory for ``spec``: an existing path as is (a ``./gpt2-124M`` directory
    included, see :mod:`scratchgpt.hub.names`), else a downloaded name (``gpt2-124M``, or a
    hub model's ``ORG/NAME``) as its cache directory once its files check out (for GPT-2,
    Hugging Face's layout first)."""
    return local_or_downloaded(spec, _downloaded_model)


def _downloaded_model(name: str) -> Path:
    """The cache directory of the downloaded GPT-2 ``name``. A cache directory whose
    ``download.json`` records no file (or that has none: a download that failed at once, or
    was interrupted in its first file) is not a download; one that records some files but not
    all is an unfinished one. The error says what to run."""
    if is_hub_name(name):  # ORG/NAME: a model from the Hugging Face hub
        return downloaded_hub_model(name)
    match = DOWNLOADED_NAME.fullmatch(name)
    if not match:
        raise FileNotFoundError(f"{name} is neither a directory nor a downloaded model name "
                                f"(gpt2-124M, gpt2-355M, gpt2-774M, gpt2-1558M)")
    size, fmt = match.groups()
    for layout in [fmt] if fmt else list(FORMATS):
        directory = models_dir() / model_name(size, layout)
        if read_manifest(directory):
            check_download(directory, FORMATS[layout],
                           command=f"scratchgpt download gpt2 --size {size} --format {layout}")
            return directory
    flags = f" --format {fmt}" if fmt else ""
    raise FileNotFoundError(f"{name} has not been downloaded (looked in {models_dir()}); "
                            f"run: scratchgpt download gpt2 --size {size}{flags}")


def load_hf_model(directory: str | Path, dtype: str = "fp32") -> GPTModel:
    """The weights of a Hugging Face directory: ``config.json`` and the weights files. GPT-2's
    (``model.safetensors`` or ``pytorch_model.bin``) load in float32; an open family's
    (config.json's ``model_type`` one of :data:`~scratchgpt.hub.families.FAMILIES`) go to
    :func:`load_open_model`, in ``dtype`` (``auto``, ``fp32``, ``bf16``, ``fp16``)."""
    directory = Path(directory)
    hf_config = read_json_object(directory / "config.json")
    if hf_config.get("model_type", "gpt2") != "gpt2":
        return load_open_model(directory, hf_config, dtype)
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


def model_from_weights(config: ModelConfig, weights: dict[str, torch.Tensor]) -> GPTModel:
    """``GPTModel(config)`` whose parameters *are* ``weights`` (no copy), in eval mode.

    Its parameters are built on the meta device, which records shapes but allocates nothing,
    so the random initialisation costs neither time nor memory; ``assign=True`` then swaps the
    given tensors in as the parameters. Buffers, which no checkpoint holds (rotary cos/sin
    tables), are computed on the CPU as usual. Assigning replaces each parameter on its own,
    so a tied output layer is tied again afterwards.
    """
    with _parameters_on_meta():
        model = GPTModel(config)
    model.load_state_dict(weights, assign=True)
    if config.tie_weights:
        model.out_head.weight = model.tok_emb.weight
    return model.eval()


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Inside, every parameter a module registers moves to the meta device at once (the
    ``torch.empty`` it was made from is never written, so never paged in), and the
    initialisation functions of ``torch.nn.init`` do nothing: the weights come from the
    checkpoint. (``normal_`` on a meta tensor would also import ``torch._dynamo``, 1 s.)
    Buffers stay where they are made."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None:
            module._parameters[name] = nn.Parameter(param.to("meta"), param.requires_grad)

    def skip(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return tensor

    initialisers = {name: getattr(nn.init, name) for name in _INITIALISERS}
    nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    for name in _INITIALISERS:
        setattr(nn.init, name, skip)
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]
        for name, function in initialisers.items():
            setattr(nn.init, name, function)


_INITIALISERS = ("normal_", "uniform_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                 "xavier_uniform_", "xavier_normal_", "zeros_", "ones_", "constant_")


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


