"""Where a model computes (``scratchgpt.model.device``): its weights' device, and for weights
sharded by FSDP the device of their mesh, not of the piece a process holds."""

from __future__ import annotations

import torch
import torch.distributed as dist

from scratchgpt.config import get_preset
from scratchgpt.model import GPTModel
from scratchgpt.model.device import compute_device
from scratchgpt.training.sharding import shard_model


def test_a_plain_model_computes_where_its_weights_are() -> None:
    model = GPTModel(get_preset("nano").replace(vocab_size=64, context_length=16))
    assert compute_device(model) == torch.device("cpu")
    assert compute_device(model.to("meta")) == torch.device("meta")


def test_a_sharded_model_computes_on_its_mesh() -> None:
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model = GPTModel(get_preset("nano").replace(vocab_size=64, context_length=16))
        shard_model(model, device=torch.device("cpu"), precision="fp32", cpu_offload=True)
        weight = next(model.parameters())
        assert weight.device_mesh.device_type == "cpu"  # a DTensor: a piece on a mesh
        assert compute_device(model) == torch.device("cpu")
        logits = model(torch.zeros(1, 4, dtype=torch.long, device=compute_device(model)))
        assert logits.shape == (1, 4, 64)
    finally:
        dist.destroy_process_group()
