"""FReLU and its deploy form."""

from __future__ import annotations

import torch

from scaler.model.nn.activations import FReLU
from scaler.model.nn.build import build
from scaler.model.nn.deploy import ShiftDepthwise, deploy, fold_batchnorm
from scaler.model.variants import apply_variant
from scaler.model.zoo import base


def _randomise_bn(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)


def test_frelu_is_max_of_x_and_funnel() -> None:
    torch.manual_seed(0)
    act = FReLU(4).eval()
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(act(x), torch.maximum(x, act.bn(act.conv(x))))
    assert (act(x) >= x).all()


def test_folding_keeps_outputs() -> None:
    torch.manual_seed(0)
    model = build(apply_variant(base("mobilenet", 1, 28, 10), "frelu")).eval()
    _randomise_bn(model)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        before = model(x)
        folded = fold_batchnorm(model)
        after = folded(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_shift_depthwise_matches_conv() -> None:
    torch.manual_seed(0)
    for stride, kernel, size in [(1, 3, 7), (2, 3, 7), (2, 5, 8), (1, 5, 4)]:
        conv = torch.nn.Conv2d(6, 6, kernel, stride, kernel // 2, groups=6, bias=True)
        x = torch.randn(2, 6, size, size)
        torch.testing.assert_close(ShiftDepthwise(conv)(x), conv(x), atol=1e-5, rtol=1e-5)


def test_deploy_form_keeps_outputs() -> None:
    torch.manual_seed(0)
    model = build(apply_variant(base("efficientnet-b0", 1, 28, 10), "frelu")).eval()
    _randomise_bn(model)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(deploy(model, compile=False)(x), model(x), atol=1e-5, rtol=1e-4)
