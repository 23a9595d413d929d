"""model.linear.Linear: nn.Linear's numbers, through oneDNN only where it is meant to be."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from scratchgpt.model.linear import FEW_ROWS, MANY_WEIGHTS, Linear

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(),
                                reason="this PyTorch was built without oneDNN")


class KernelNames(TorchDispatchMode):
    """Records the name of every operator that runs inside the ``with`` block."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def run(layer: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    with KernelNames() as kernels:
        out = layer(x)
    return out, kernels.names


IN, OUT = 96, MANY_WEIGHTS // 96 + 1  # just big enough


def twins(bias: bool, out_features: int = OUT) -> tuple[Linear, torch.nn.Linear]:
    torch.manual_seed(0)
    reference = torch.nn.Linear(IN, out_features, bias=bias)
    ours = Linear(IN, out_features, bias=bias)
    ours.load_state_dict(reference.state_dict())
    return ours, reference


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, IN), (3, 1, IN), (2, 5, IN), (FEW_ROWS, IN)])
def test_inference_on_few_rows_runs_onednn_with_the_same_numbers(
        bias: bool, shape: tuple[int, ...]) -> None:
    ours, reference = twins(bias)
    x = torch.randn(shape)
    with torch.inference_mode():
        out, kernels = run(ours, x)
        expected = reference(x)
    assert any("mkldnn._linear_pointwise" in name for name in kernels)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_no_grad_counts_as_inference() -> None:
    ours, reference = twins(True)
    x = torch.randn(2, IN)
    with torch.no_grad():
        out, kernels = run(ours, x)
        torch.testing.assert_close(out, reference(x), rtol=1e-5, atol=1e-5)
    assert any("mkldnn" in name for name in kernels)


def test_training_keeps_pytorchs_kernel_and_its_gradients() -> None:
    ours, reference = twins(True)
    x = torch.randn(2, IN)
    out, kernels = run(ours, x)
    assert not any("mkldnn" in name for name in kernels)
    out.square().sum().backward()
    reference(x).square().sum().backward()
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad)


@pytest.mark.parametrize("case", ["many rows", "small layer", "bf16", "autocast"])
def test_elsewhere_it_is_nn_linear(case: str) -> None:
    ours, reference = twins(True, OUT - 1 if case == "small layer" else OUT)
    x = torch.randn(FEW_ROWS + 1 if case == "many rows" else 2, IN)
    if case == "bf16":
        ours, reference, x = ours.bfloat16(), reference.bfloat16(), x.bfloat16()
    with torch.inference_mode(), torch.autocast("cpu", enabled=case == "autocast"):
        out, kernels = run(ours, x)
        expected = reference(x)
    assert not any("mkldnn" in name for name in kernels)
    assert torch.equal(out, expected)
