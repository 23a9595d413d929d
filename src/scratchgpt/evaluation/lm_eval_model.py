"""Our GPT models inside lm-evaluation-harness (``pip install lm_eval``), the tool papers report
benchmark numbers with: every task of the harness can then run on a model trained here.

Importing this module registers the model type ``scratchgpt``::

    import lm_eval
    import scratchgpt.evaluation.lm_eval_model  # noqa: F401  (registers "scratchgpt")

    results = lm_eval.simple_evaluate(model="scratchgpt", model_args="pretrained=runs/base",
                                      tasks=["mmlu"], num_fewshot=5)

(``pretrained=Qwen/Qwen3-0.6B,dtype=bf16`` for one of today's open models), or, with a model
already loaded, ``simple_evaluate(model=ScratchGPTLM(model=m, tokenizer=t), ...)``. The
harness builds the prompts; this class only answers its three kinds of request, with the
same code as :mod:`.mmlu` (so the two give the same MMLU scores, which
``tests/test_mmlu.py`` checks). Texts are encoded as the harness's ``hf`` model encodes them,
with the model's BOS first where its tokenizer puts one (Llama 3, Gemma 3), so the
log-likelihoods are those of ``lm_eval --model hf`` on the same directory
(``tests/test_open_model_evaluate.py``):

* ``loglikelihood``: how likely a continuation is after a context
  (:func:`.mmlu.score_continuations`);
* ``loglikelihood_rolling``: a whole text's log-likelihood, in windows of the model's context
  that each predict new tokens only (perplexity tasks such as ``wikitext``);
* ``generate_until``: greedy (or sampled) text up to a stop string
  (:func:`scratchgpt.generation.generate_batch_text`).

lm_eval is an optional dependency: nothing else in the package imports this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lm_eval.models  # noqa: F401  (lm_eval's own models: see below)
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from scratchgpt.evaluation.mmlu import encode, score_continuations
from scratchgpt.generation import generate_batch_text
from scratchgpt.model import GPTModel
from scratchgpt.model.device import compute_device
from scratchgpt.tokenizers.base import Tokenizer

DEFAULT_BATCH_SIZE = 8
DEFAULT_MAX_GEN_TOKS = 256  # lm_eval's own default for generate_until

# lm_eval fills its model registry (lazily: names only) on the first look-up that finds it
# empty. ``import lm_eval.models`` above fills it first; registering ours into an empty registry
# would leave "hf" and the others out for good.


@register_model("scratchgpt")
class ScratchGPTLM(TemplateLM):
    """A :class:`GPTModel` and its tokenizer as an lm-evaluation-harness language model.

    Give either ``pretrained`` (anything :func:`scratchgpt.hub.models.load_model` loads: a run
    directory, ``gpt2-124M``, a Hugging Face or OpenAI directory, a Llama 3, Qwen3 or Gemma 3
    directory or its ``ORG/NAME``), loaded in ``dtype`` (``auto``, ``fp32``, ``bf16``,
    ``fp16``, or the ``hf`` model's ``float32``, ``bfloat16``, ``float16``; default
    ``fp32``), or ``model`` and ``tokenizer``. ``batch_size`` is how many inputs share a
    forward pass (``"auto"`` picks the default); ``device`` moves the model (``cuda``,
    ``cpu``).
    """

    def __init__(
        self,
        pretrained: str | Path | None = None,
        *,
        model: GPTModel | None = None,
        tokenizer: Tokenizer | None = None,
        dtype: str | None = None,
        batch_size: int | str = DEFAULT_BATCH_SIZE,
        device: str | None = None,
        max_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        if (pretrained is None) == (model is None):
            raise ValueError("give either pretrained=PATH or model= (with tokenizer=)")
        if pretrained is not None:
            from scratchgpt.hub.models import load_model

            model, tokenizer = load_model(pretrained, _dtype_name(dtype or "fp32"))
        elif dtype is not None:
            raise ValueError("dtype= goes with pretrained=: it is the dtype the weights load "
                             "in; cast a model given as model= before passing it")
        if tokenizer is None:
            raise ValueError("model= needs its tokenizer=")
        assert model is not None
        if device is not None:
            model = model.to(device)
        self.model = model.eval()
        self.tok = tokenizer
        self.eos_id = tokenizer.eot_id if pretrained is None else _eos_id(pretrained, tokenizer)
        self.batch_size = _batch_size(batch_size, max_batch_size)

    # -- what TemplateLM needs ---------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        """The end-of-text token: a Hugging Face directory's ``eos_token``, as the ``hf``
        model takes it, else ``<|endoftext|>``."""
        if self.eos_id is None:
            raise ValueError("this tokenizer has no end-of-text token, so an empty context "
                             "cannot be scored")
        return self.eos_id

    @property
    def prefix_token_id(self) -> int:
        """The context of a continuation that has none, and the token a rolling
        log-likelihood starts from: the BOS of a tokenizer that has one (Llama 3, Gemma 3),
        else the end-of-text token, as the ``hf`` model picks it."""
        return self.tok.bos_id if self.tok.bos_id is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self.model.config.context_length

    @property
    def device(self) -> Any:
        return compute_device(self.model)

    @property
    def tokenizer_name(self) -> str:
        return type(self.tok).__name__

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   **kwargs: Any) -> list[int]:
        """``string``'s ids, with the model's BOS first unless ``add_special_tokens=False``
        (the harness asks that of a continuation scored after an empty context)."""
        return encode(self.tok, string, add_special_tokens=add_special_tokens is not False)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tok.decode(tokens)

    def _loglikelihood_tokens(self, requests: list[Any], disable_tqdm: bool = False,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        """``requests``: ``((context, continuation), context ids, continuation ids)``."""
        scores = score_continuations(self.model, [(ctx, cont) for _, ctx, cont in requests],
                                     batch_size=self.batch_size, progress=not disable_tqdm)
        for (pair, _, _), score in zip(requests, scores, strict=True):
            self.cache_hook.add_partial("loglikelihood", pair, score)
        return scores

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Each text's log-likelihood after the prefix token, every token predicted once,
        from up to a full context of the tokens before it (lm_eval's rolling windows)."""
        pieces: list[tuple[int, list[int], list[int]]] = []  # (request, context, continuation)
        for n, request in enumerate(requests):
            (text,) = request.args
            windows = get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)
            pieces += [(n, *make_disjoint_window(w)) for w in windows]
        scores = score_continuations(self.model, [(ctx, cont) for _, ctx, cont in pieces],
                                     batch_size=self.batch_size, progress=not disable_tqdm,
                                     desc="rolling log-likelihoods")
        totals = [0.0] * len(requests)
        for (n, _, _), (score, _) in zip(pieces, scores, strict=True):
            totals[n] += score
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Continue each context until one of its ``until`` strings (not included), the
        end-of-text token or ``max_gen_toks`` tokens; greedy unless ``do_sample``. Requests
        with the same settings are generated together, ``batch_size`` at a time."""
        groups: dict[str, list[int]] = {}
        for n, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str),
                              []).append(n)
        outputs = [""] * len(requests)
        for members in groups.values():
            kwargs = dict(requests[members[0]].args[1])
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_tokens = int(kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
            temperature = float(kwargs.pop("temperature", 0.0))
            if not kwargs.pop("do_sample", False):
                temperature = 0.0
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                texts = generate_batch_text(
                    self.model, self.tok, [requests[n].args[0] for n in chunk], max_tokens,
                    temperature=temperature, top_k=kwargs.get("top_k"),
                    top_p=kwargs.get("top_p"), stop=until,
                    stop_ids=None if self.eos_id is None else [self.eos_id])
                for n, text in zip(chunk, texts, strict=True):
                    outputs[n] = text
                    self.cache_hook.add_partial("generate_until", requests[n].args, text)
        return outputs


def _eos_id(pretrained: str | Path, tokenizer: Tokenizer) -> int | None:
    """The id of the ``eos_token`` of ``tokenizer_config.json`` where the model's directory
    has one (Qwen3's instruction-tuned models: ``<|im_end|>``), else ``<|endoftext|>``."""
    from scratchgpt.data.chat_templates import read_special_tokens
    from scratchgpt.hub.models import resolve_model

    eos = read_special_tokens(resolve_model(pretrained)).get("eos_token")
    return tokenizer.special_tokens.get(eos, tokenizer.eot_id) if eos else tokenizer.eot_id


def _dtype_name(dtype: str) -> str:
    """``dtype`` as :func:`~scratchgpt.hub.models.load_model` names it: the ``hf`` model's
    torch names (``bfloat16``) become ours (``bf16``)."""
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(dtype, dtype)


def _batch_size(batch_size: int | str, max_batch_size: int | None) -> int:
    """lm_eval passes ``batch_size`` as given on its command line: a number or ``auto``."""
    if isinstance(batch_size, str):
        size = DEFAULT_BATCH_SIZE if batch_size.startswith("auto") else int(batch_size)
    else:
        size = batch_size
    if max_batch_size is not None:
        size = min(size, max_batch_size)
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return size
