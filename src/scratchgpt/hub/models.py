"""What ``--model SPEC`` names, and loading it into our :class:`GPTModel`.

:func:`load_model` takes any of these ``spec``:

* ``gpt2-124M`` (``-355M``, ``-774M``, ``-1558M``): a model fetched by ``scratchgpt download``
  into the cache; ``gpt2-124M-hf`` / ``gpt2-124M-openai`` picks the layout;
* a downloaded hub model's ``ORG/NAME`` (``Qwen/Qwen3-0.6B``; :mod:`scratchgpt.hub.names`);
* a Hugging Face directory of GPT-2 (``config.json``, ``model.safetensors`` or
  ``pytorch_model.bin``, ``vocab.json`` + ``merges.txt``; :mod:`scratchgpt.hub.gpt2`);
* a Hugging Face directory of Llama 3, Qwen3 or Gemma 3 (``config.json``'s ``model_type``
  ``llama``, ``qwen3``, ``gemma3_text``): the weights through :mod:`scratchgpt.hub.families`
  and :mod:`scratchgpt.hub.hf_checkpoint`, the tokenizer from ``tokenizer.json``;
* an OpenAI directory of GPT-2: ``hparams.json``, the TensorFlow checkpoint ``model.ckpt.*``,
  ``encoder.json`` + ``vocab.bpe``;
* a run directory written by ``scratchgpt pretrain`` or ``finetune``.

A ``spec`` that names an existing file or directory is read from there; only otherwise is it
a downloaded name, so a ``./gpt2-124M`` directory is that directory.
:func:`resolve_tokenizer` does the same for tokenizers: anything
:func:`~scratchgpt.tokenizers.load_tokenizer` reads (a run directory among them), or a
downloaded name. Besides the weights, a model directory says how to prompt it
(:func:`model_prompt_format`; its own chat template: :func:`model_template_dir`) and where its
answers end (:func:`model_stop_ids`).

Memory: every loader builds the model without storage and makes the tensors it reads its
parameters (:mod:`scratchgpt.hub.model_from_weights`), one tensor read at a time, so loading
peaks near the size of the weights; ``bench/bench_load.py`` measures it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scratchgpt.config import ModelConfig
from scratchgpt.config_files import load_toml, read_json_object
from scratchgpt.data.chat_templates import (
    end_of_turn_ids,
    has_chat_template,
    read_chat_template,
)
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
from scratchgpt.hub.gpt2 import (
    DOWNLOADED_NAME,
    config_from_openai,
    load_gpt2_weights,
    load_openai_model,
)
from scratchgpt.hub.hf_checkpoint import SafetensorsCheckpoint, resolve_dtype
from scratchgpt.hub.hf_weights import config_from_hf
from scratchgpt.hub.model_from_weights import model_from_weights
from scratchgpt.hub.names import (
    TOKENIZER_SPECS,
    downloaded_hub_model,
    is_hub_name,
    local_or_downloaded,
)
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
    run_template_dir,
)
from scratchgpt.tokenizers import Tokenizer, load_gpt2_tokenizer, load_tokenizer


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


def load_hf_model(directory: str | Path, dtype: str = "fp32") -> GPTModel:
    """The weights of a Hugging Face directory: ``config.json`` and the weights files. GPT-2's
    (:func:`~scratchgpt.hub.gpt2.load_gpt2_weights`) load in float32; an open family's
    (config.json's ``model_type`` one of :data:`~scratchgpt.hub.families.FAMILIES`) go to
    :func:`load_open_model`, in ``dtype`` (``auto``, ``fp32``, ``bf16``, ``fp16``)."""
    directory = Path(directory)
    hf_config = read_json_object(directory / "config.json")
    if hf_config.get("model_type", "gpt2") != "gpt2":
        return load_open_model(directory, hf_config, dtype)
    return load_gpt2_weights(directory, hf_config)


def load_open_model(directory: Path, hf_config: dict[str, Any], dtype: str) -> GPTModel:
    """A Llama 3, Qwen3 or Gemma 3 model: ``config.json`` (its ``model_type`` picks the family,
    :mod:`scratchgpt.hub.families`), ``model.safetensors`` or shards
    (:mod:`scratchgpt.hub.hf_checkpoint`) cast to ``dtype``."""
    try:
        config = model_config_from_hf(hf_config)
    except (KeyError, ValueError) as err:
        detail = (f"lacks {err.args[0]!r}" if isinstance(err, KeyError)
                  else err.args[0].removeprefix("config.json: "))
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


def model_template_dir(spec: str | Path) -> Path | None:
    """The directory that holds ``spec``'s own chat template: a Hugging Face directory that has
    one (``chat_template.jinja`` or ``tokenizer_config.json``'s ``chat_template``), or the
    ``template/`` of a run instruction-tuned in its model's template; None for a base model and
    a run tuned in a prompt style."""
    directory = resolve_model(spec)
    if is_run_dir(directory):
        return run_template_dir(directory)
    return directory if has_chat_template(directory) else None


def model_prompt_format(spec: str | Path) -> PromptFormat | None:
    """What turns a conversation into ``spec``'s prompt: its own chat template
    (:func:`model_template_dir`: a Hugging Face directory's, or the one a run was tuned in); a
    run directory's recorded prompt style; None for a base model, which has neither."""
    template_dir = model_template_dir(spec)
    if template_dir is not None:
        return read_chat_template(template_dir)
    directory = resolve_model(spec)
    style = run_prompt_style(directory) if is_run_dir(directory) else None
    return get_prompt_style(style) if style else None


def model_stop_ids(spec: str | Path, tokenizer: Tokenizer) -> tuple[int, ...]:
    """The token ids that end ``spec``'s answers, for generation to stop at any of them: a Hugging
    Face directory's end-of-turn ids (``generation_config.json``'s ``eos_token_id``, one or a
    list, and ``tokenizer_config.json``'s ``eos_token``), also those of the model a run was
    tuned from in its chat template (kept in the run's ``template/``); else, or where it names
    none, the tokenizer's end-of-text token."""
    directory = resolve_model(spec)
    source = run_template_dir(directory) if is_run_dir(directory) else directory
    ids = [] if source is None else end_of_turn_ids(
        source, lambda text: _token_id(tokenizer, text))
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
