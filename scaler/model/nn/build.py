"""Turn a NetSpec into an nn.Module, and fold batch norms for deployment."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from scaler.model.nn.activations import act_factory
from scaler.model.nn.blocks import (
    Bottleneck,
    DepthwiseSeparable,
    FusedMBConv,
    MBConv,
    Pointwise,
    Spatial,
    conv_bn,
    dense_pointwise,
    dense_spatial,
)
from scaler.model.spec import NetSpec, SpecError, Stage
from scaler.model.structure import Block, blocks


class Network(nn.Module):
    """stem -> stages -> head conv -> global average pool -> dropout -> linear."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        eps = spec.norm_eps
        stem_act = act_factory(spec.activation, eps)
        stem: list[nn.Module] = [
            conv_bn(spec.in_channels, spec.stem.out_channels, spec.stem.kernel, spec.stem.stride, stem_act, eps=eps)
        ]
        if spec.stem.maxpool:
            stem.append(nn.MaxPool2d(3, 2, 1))
        self.stem = nn.Sequential(*stem)
        channels = spec.stem.out_channels
        by_stage: list[list[nn.Module]] = [[] for _ in spec.stages]
        for layout in blocks(spec):
            by_stage[layout.position].append(make_block(layout, eps))
            channels = layout.stage.out_channels
        self.stages = nn.Sequential(*(nn.Sequential(*modules) for modules in by_stage))
        if spec.head.out_channels:
            self.head: nn.Module = conv_bn(channels, spec.head.out_channels, 1, 1, stem_act, eps=eps)
            channels = spec.head.out_channels
        else:
            self.head = nn.Identity()
        self.dropout = nn.Dropout(spec.head.dropout)
        self.classifier = nn.Linear(channels, spec.num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.stages(self.stem(x)))
        return self.classifier(self.dropout(torch.flatten(x.mean((2, 3)), 1)))


def grouped_conv(stage: Stage, kernel: int = 1) -> Callable[[int, int, int], nn.Module]:
    """Factory of the stage's grouped kxk convolutions, (in, out, stride) -> module: FLGC or fixed groups."""
    groups = stage.groups

    def make(in_channels: int, out_channels: int, stride: int) -> nn.Module:
        if in_channels % groups or out_channels % groups:
            raise SpecError(
                f"{stage.grouping}:{groups} needs channels divisible by {groups}; a {stage.block} conv has "
                f"{in_channels}->{out_channels}: choose a G that divides every width (e.g. 2, 4 or 8)"
            )
        if stage.grouping == "flgc":
            from scaler.model.nn.flgc import FLGCConv2d

            return FLGCConv2d(
                in_channels,
                out_channels,
                groups,
                kernel,
                stride,
                stage.duplicate,
                stage.duplicate_top_k,
                balanced=stage.equal_groups,
                duplicate_cap=stage.duplicate_cap,
            )
        return nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False)

    return make


def pointwise_for(stage: Stage) -> Pointwise:
    """The 1x1 convolution a stage's blocks use: dense, or grouped (FLGC or fixed) with the stage's groups."""
    if stage.groups == 1:
        return dense_pointwise
    make = grouped_conv(stage)
    return lambda in_channels, out_channels: make(in_channels, out_channels, 1)


def spatial_for(stage: Stage) -> Spatial:
    """The kxk convolution of a stage's bottlenecks: dense, or grouped as the 1x1 convs when `group_spatial`."""
    if stage.groups == 1 or not stage.group_spatial:
        return dense_spatial(stage.kernel)
    return grouped_conv(stage, stage.kernel)


def make_block(layout: Block, eps: float) -> nn.Module:
    """The module of one block of the layout, producing its stage's `out_channels`."""
    stage, cin, stride, hidden, squeeze = layout.stage, layout.in_channels, layout.stride, layout.hidden, layout.squeeze
    act = act_factory(layout.activation, eps)
    out, kernel = stage.out_channels, stage.kernel
    pointwise = pointwise_for(stage)
    if stage.block == "dsconv":
        return DepthwiseSeparable(cin, out, kernel, stride, act, pointwise, eps)
    if stage.block == "mbconv":
        return MBConv(cin, out, hidden, kernel, stride, squeeze, act, pointwise, eps)
    if stage.block == "fused":
        return FusedMBConv(cin, out, hidden, kernel, stride, squeeze, act, pointwise, eps)
    if stage.block == "bottleneck":
        return Bottleneck(cin, out, hidden, stride, act, pointwise, spatial_for(stage), eps)
    raise SpecError(f"unknown block type {stage.block!r}")


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions, unit BN, small normal linear layers (torchvision's choice)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)


def build(spec: NetSpec, seed: int | None = None) -> Network:
    """The nn.Module a NetSpec describes; with `seed`, its initial weights depend on nothing else."""
    if seed is None:
        return Network(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Network(spec)
