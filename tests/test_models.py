"""Every registered base at small input: shape, gradients everywhere, no NaN."""

from __future__ import annotations

import pytest
import torch

from scaler.model.nn.build import build
from scaler.model.variants import apply_variant
from scaler.model.zoo import BASES, base


@pytest.mark.parametrize("name", list(BASES))
@pytest.mark.parametrize("variant", ["relu", "frelu"])
def test_forward_backward_small_input(name: str, variant: str) -> None:
    torch.manual_seed(0)
    spec = apply_variant(base(name, in_channels=1, resolution=28, num_classes=10), variant)
    model = build(spec).train()
    x = torch.randn(2, 1, 28, 28)
    out = model(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", list(BASES))
def test_strides_fit_small_inputs(name: str) -> None:
    """At 28 px no stride shrinks the map below 4x4 and the input is a multiple of the stride; at 224 px the paper's strides are untouched."""
    spec = base(name, 1, 28, 10)
    assert spec.resolution == 32 and spec.resolution_multiple == spec.total_stride
    model = build(spec).eval()
    features = model.stages(model.stem(torch.randn(1, 1, 32, 32)))
    assert min(features.shape[2:]) == 32 // spec.total_stride >= 4
    full = base(name)
    assert [s.stride for s in full.stages] == [s.stride for s in BASES[name]().stages]


def test_resnet_cifar_stem() -> None:
    spec = base("resnet50", 3, 32, 10)
    assert (spec.stem.kernel, spec.stem.stride, spec.stem.maxpool) == (3, 1, False)
    assert base("resnet50").stem.maxpool
