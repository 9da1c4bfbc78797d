"""FLGC: gradients, deployment to real grouped convs (exact outputs, MACs, BN folding), training, build."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from scaler.complexity import count_macs
from scaler.nn.build import build
from scaler.nn.flgc import (
    STRATEGIES,
    DeployedFLGC,
    FLGCConv2d,
    deploy_flgc,
    flgc_macs,
    flgc_pointwise,
)
from scaler.spec import NetSpec
from scaler.zoo import base


@torch.no_grad()
def perturb(layer: FLGCConv2d, seed: int = 0) -> FLGCConv2d:
    """Random low-confidence logits (unequal groups); channel 0 made to score ~1/2 for a second, non-empty group."""
    generator = torch.Generator().manual_seed(seed)
    layer.in_logits.copy_(0.15 * torch.randn(layer.in_logits.shape, generator=generator))
    layer.out_logits.copy_(torch.randn(layer.out_logits.shape, generator=generator))
    if layer.groups >= 3:
        neighbour_group = int(layer.in_logits[1].argmax())
        layer.in_logits[0] = -5.0
        layer.in_logits[0, (neighbour_group + 1) % layer.groups] = 5.0
        layer.in_logits[0, neighbour_group] = 4.999
    return layer


def deployed_copy(layer: nn.Module, strategy: str) -> nn.Module:
    """A deployed deep copy of `layer` (or of a model holding FLGC layers)."""
    return deploy_flgc(copy.deepcopy(layer), strategy)


@pytest.mark.parametrize("duplicate", [False, True])
def test_gradients_reach_logits_and_weight(duplicate: bool) -> None:
    torch.manual_seed(0)
    layer = perturb(FLGCConv2d(12, 10, 4, duplicate=duplicate))
    layer(torch.randn(2, 12, 5, 5)).square().mean().backward()
    for name in ("weight", "in_logits", "out_logits"):
        grad = getattr(layer, name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_initial_assignment_is_balanced_and_mask_is_interleaved() -> None:
    torch.manual_seed(0)
    layer = FLGCConv2d(12, 8, 4)
    assert layer.group_sizes() == [(3, 2)] * 4
    expected = (torch.arange(8)[:, None] % 4 == torch.arange(12)[None, :] % 4).float()
    assert torch.equal(layer.mask(), expected)
    assert torch.equal(FLGCConv2d(5, 3, 1).mask(), torch.ones(3, 5))


@pytest.mark.parametrize("duplicate", [False, True])
@pytest.mark.parametrize("groups", [1, 2, 3, 4, 8])
def test_deployed_equals_training_form(groups: int, duplicate: bool) -> None:
    torch.manual_seed(groups)
    layer = perturb(FLGCConv2d(24, 20, groups, duplicate=duplicate), seed=groups).eval()
    sizes = layer.group_sizes()
    assert sum(n_out for _, n_out in sizes) == 20
    assert sum(n_in for n_in, _ in sizes) == 24 + layer.duplicated_channels()
    if duplicate and groups >= 3:
        assert layer.duplicated_channels() > 0
    if groups > 1:
        assert len(set(sizes)) > 1
    x = torch.randn(3, 24, 6, 6)
    with torch.no_grad():
        expected = layer(x)
        for strategy in STRATEGIES:
            deployed = deployed_copy(layer, strategy)
            assert isinstance(deployed, DeployedFLGC)
            torch.testing.assert_close(deployed(x), expected, atol=1e-5, rtol=0, msg=strategy)
            x_last = x.contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(deployed(x_last), expected, atol=1e-5, rtol=0, msg=strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_kxk_strided_uneven_channels(strategy: str) -> None:
    torch.manual_seed(1)
    layer = perturb(FLGCConv2d(10, 14, 3, kernel_size=3, stride=2, duplicate=True)).eval()
    x = torch.randn(2, 10, 9, 9)
    with torch.no_grad():
        expected = layer(x)
        assert expected.shape == (2, 14, 5, 5)
        torch.testing.assert_close(deployed_copy(layer, strategy)(x), expected, atol=1e-5, rtol=0)


def starved_layer() -> FLGCConv2d:
    """G=3: group 2 has filters but no inputs, group 1 has inputs but no filters."""
    layer = FLGCConv2d(6, 9, 3)
    with torch.no_grad():
        layer.in_logits.copy_(torch.tensor([[5.0, 0, -5]] * 3 + [[0, 5.0, -5]] * 3))
        layer.out_logits.copy_(torch.tensor([[5.0, 0, 0], [0, 0, 5.0], [0, 0, 5.0]] * 3))
    return layer.eval()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_empty_groups(strategy: str) -> None:
    layer = starved_layer()
    assert layer.group_sizes() == [(3, 3), (3, 0), (0, 6)]
    x = torch.randn(2, 6, 4, 4)
    with torch.no_grad():
        out = deployed_copy(layer, strategy)(x)
        torch.testing.assert_close(out, layer(x), atol=1e-5, rtol=0)
    assert out.shape == (2, 9, 4, 4) and out[:, 1::3].abs().max() == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_fuse_bn(strategy: str) -> None:
    torch.manual_seed(2)
    for layer in (perturb(FLGCConv2d(16, 12, 4, duplicate=True)), starved_layer()):
        bn = nn.BatchNorm2d(layer.out_channels).eval()
        with torch.no_grad():
            for tensor in (bn.weight, bn.bias, bn.running_mean):
                tensor.normal_()
            bn.running_var.uniform_(0.5, 2.0)
        deployed = deployed_copy(layer, strategy)
        x = torch.randn(2, layer.in_channels, 5, 5)
        with torch.no_grad():
            expected = bn(layer.eval()(x))
            deployed.fuse_bn(bn)
            torch.testing.assert_close(deployed(x), expected, atol=1e-5, rtol=0)


def test_fvcore_macs_of_deployed_layers() -> None:
    """fvcore counts exactly sum_g |in_g||out_g| k^2 H_out W_out (= flgc_macs) on per_group deployments;
    padded and bucketed ones run, and fvcore counts, each bucket's zero-padded sizes instead."""
    torch.manual_seed(3)
    first = perturb(FLGCConv2d(10, 14, 3, kernel_size=3, stride=2, duplicate=True), seed=1)
    second = perturb(FLGCConv2d(14, 8, 4), seed=2)
    model = nn.Sequential(first, nn.BatchNorm2d(14), nn.ReLU(), second).eval()
    expected = flgc_macs(first, 5, 5) + flgc_macs(second, 5, 5)
    assert expected == sum(
        sum(a * b for a, b in layer.group_sizes()) * layer.kernel_size**2 * 25 for layer in (first, second)
    )
    assert expected < (10 * 14 * 9 + 14 * 8) * 25
    assert count_macs(model, (10, 9, 9)) == expected  # training form counted as deployed per group
    assert isinstance(model[0], FLGCConv2d)
    assert flgc_macs(deployed_copy(first, "per_group"), 5, 5) == flgc_macs(first, 5, 5)
    for strategy in STRATEGIES:
        deployed = deployed_copy(model, strategy)
        run_macs = sum(kernel.weight.numel() * 25 for layer in (deployed[0], deployed[3]) for kernel in layer.convs)
        assert count_macs(deployed, (10, 9, 9)) == run_macs >= expected
        if strategy.startswith("per_group"):
            assert run_macs == expected


def test_tiny_model_trains() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(FLGCConv2d(8, 16, 4), nn.BatchNorm2d(16), nn.ReLU(), FLGCConv2d(16, 4, 2, duplicate=True))
    x, target = torch.randn(16, 8, 4, 4), torch.randn(16, 4, 4, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    assert model[0].in_logits.grad.abs().sum() > 0 and model[3].out_logits.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(deployed_copy(model, "per_group")(x), model(x), atol=1e-5, rtol=0)


def small_spec(groups: int, duplicate: bool) -> NetSpec:
    """The first three MobileNet stages at 28 px with FLGC 1x1 convs."""
    spec = base("mobilenet", 1, 28, 10)
    stages = tuple(dataclasses.replace(s, groups=groups, duplicate=duplicate) for s in spec.stages[:3])
    return dataclasses.replace(spec, stages=stages)


def test_pointwise_factory_and_build() -> None:
    layer = flgc_pointwise(3, True)(10, 14)
    assert isinstance(layer, FLGCConv2d)
    assert (layer.in_channels, layer.out_channels, layer.groups, layer.kernel_size, layer.duplicate) == (
        10,
        14,
        3,
        1,
        True,
    )
    spec = small_spec(groups=4, duplicate=False)
    torch.manual_seed(5)
    model = build(spec).eval()
    layers = [m for m in model.modules() if isinstance(m, FLGCConv2d)]
    assert layers
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
        macs = count_macs(model, (1, 28, 28))
        assert macs < count_macs(build(small_spec(groups=1, duplicate=False)), (1, 28, 28))
        assert count_macs(deployed_copy(model, "per_group"), (1, 28, 28)) == macs
        deployed = deploy_flgc(model)
        assert not any(isinstance(m, FLGCConv2d) for m in deployed.modules())
        torch.testing.assert_close(deployed(x), expected, atol=1e-5, rtol=1e-5)


def test_deploy_pipeline_keeps_outputs() -> None:
    """scaler.nn.deploy.deploy (FLGC deployed, BN folded, shifts) computes what the trained model does."""
    from scaler.nn.deploy import deploy

    torch.manual_seed(6)
    model = build(small_spec(groups=3, duplicate=True))
    for layer in model.modules():
        if isinstance(layer, FLGCConv2d):
            perturb(layer)
    model.train()(torch.randn(8, 1, 28, 28))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(deploy(model, compile=False)(x), model.eval()(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("groups", [2, 4, 8])
def test_duplication_margin_says_whether_duplication_fires(groups: int) -> None:
    """margin > 0 exactly when some channel is duplicated; at the balanced start it is negative."""
    torch.manual_seed(0)
    layer = FLGCConv2d(24, 16, groups, duplicate=True)
    assert layer.duplication_margin() < 0 and layer.duplicated_channels() == 0
    fired = []
    for seed in range(12):
        perturb(layer, seed)
        margin = layer.duplication_margin()
        assert (margin > 0) == (layer.duplicated_channels() > 0), (seed, margin)
        fired.append(margin > 0)
    assert any(fired) == (groups >= 3)
