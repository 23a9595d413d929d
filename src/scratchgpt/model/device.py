"""Where a model computes: the device its inputs must be on.

Usually that is where its weights are. Sharded across processes (FSDP), a weight is a
``DTensor``, one piece of a whole spread over a *mesh* of devices, and with ``--cpu-offload``
its piece waits in CPU memory and goes to the GPU only to compute: there the mesh says where
the model computes, not the piece.
"""

from __future__ import annotations

import torch
from torch import nn


def compute_device(model: nn.Module) -> torch.device:
    """The device ``model`` computes on (see the module docstring); the CPU for a model
    without weights."""
    weight = next(model.parameters(), None)
    if weight is None:
        return torch.device("cpu")
    mesh = getattr(weight, "device_mesh", None)  # a DTensor's: the processes' devices
    if mesh is None or mesh.device_type == "cpu":
        return weight.device
    return torch.device(mesh.device_type,
                        torch.get_device_module(mesh.device_type).current_device())
