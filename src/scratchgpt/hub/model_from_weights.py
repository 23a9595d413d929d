"""A :class:`GPTModel` whose parameters *are* given tensors: no random init, no copy.

A loader reads a checkpoint's tensors (converted to our names) and hands them here. Building
``GPTModel(config)`` first would allocate and randomly initialise every weight only to throw it
away, doubling the peak memory; instead the model is built with its parameters on the meta
device (shapes, no storage) and the tensors are swapped in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from scratchgpt.config import ModelConfig
from scratchgpt.model import GPTModel


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
