"""Deploy forms of a trained model: BN folded into convolutions, depthwise convs as fusable shifts."""

from __future__ import annotations

import copy
import types
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from scaler.model.nn.activations import FReLU
from scaler.model.nn.blocks import ConvBN
from scaler.model.structure import conv_size


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BN that follows a conv (ConvBN, FReLU's funnel, deployed FLGC) into it, in place; eval only."""
    from scaler.model.nn.flgc_deploy import DeployedFLGC

    model.eval()
    for module in model.modules():
        if isinstance(module, (ConvBN, FReLU)) and isinstance(module.bn, nn.BatchNorm2d):
            if isinstance(module.conv, nn.Conv2d):
                module.conv = torch.nn.utils.fusion.fuse_conv_bn_eval(module.conv, module.bn)
                module.bn = nn.Identity()
            elif isinstance(module.conv, DeployedFLGC):
                module.conv.fuse_bn(module.bn)
                module.bn = nn.Identity()
    return model


class ShiftDepthwise(nn.Module):
    """A depthwise conv written as k*k shifted multiply-adds, which torch.compile fuses with what follows.

    On CPU, at small feature maps, one fused loop beats a library call per depthwise conv; this is what
    makes FReLU's extra funnel conv nearly free once compiled.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        padding = conv.padding[0]
        if not isinstance(padding, int):
            raise ValueError(f"ShiftDepthwise needs numeric padding, not {padding!r}")
        self.kernel, self.stride, self.padding = conv.kernel_size[0], conv.stride[0], padding
        self.weight = nn.Parameter(conv.weight.detach().squeeze(1).clone(), requires_grad=False)
        bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.bias = nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel, self.stride
        height = conv_size(x.shape[-2], k, s, self.padding)
        width = conv_size(x.shape[-1], k, s, self.padding)
        padded = F.pad(x, (self.padding,) * 4)
        out = self.bias.view(1, -1, 1, 1)
        for i in range(k):
            for j in range(k):
                window = padded[:, :, i : i + s * (height - 1) + 1 : s, j : j + s * (width - 1) + 1 : s]
                out = out + window * self.weight[:, i, j].view(1, -1, 1, 1)
        return out


def is_depthwise(module: nn.Module) -> bool:
    """A square, unit-dilation depthwise convolution."""
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == module.in_channels == module.out_channels > 1
        and module.kernel_size[0] == module.kernel_size[1]
        and module.dilation == (1, 1)
        and module.padding_mode == "zeros"
        and isinstance(module.padding, tuple)
    )


def depthwise_as_shifts(model: nn.Module) -> nn.Module:
    """Replace every depthwise conv by a ShiftDepthwise, in place."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if is_depthwise(child):
                setattr(parent, name, ShiftDepthwise(cast(nn.Conv2d, child)))
    return model


def deploy(
    model: nn.Module, shifts: bool = True, compile: bool = True, strategy: str | None = None, duplicates: str = "auto"
) -> nn.Module:
    """A copy in its fastest inference form: FLGC as real grouped convs (permutations folded between them; kernels
    by `strategy`, the default if None; duplicated maps as `duplicates` says), BN folded, shift-depthwise,
    compiled."""
    from scaler.model.nn.flgc_deploy import DEFAULT_STRATEGY, deploy_flgc
    from scaler.model.nn.flgc_fold import fold_permutations

    model = copy.deepcopy(model).eval()
    deployed = fold_batchnorm(deploy_flgc(model, strategy or DEFAULT_STRATEGY, duplicates=duplicates))
    fold_permutations(deployed)
    if shifts:
        deployed = depthwise_as_shifts(deployed)
    return compiled(deployed) if compile else deployed


def compiled(model: nn.Module) -> nn.Module:
    """`model` compiled through a forward of its own. Dynamo keeps compiled graphs per code object: models of one
    class would share a cache, each call walking the guards of every model compiled before it (latency grows with
    the number compiled) and all counting against one recompile limit."""
    forward = type(model).forward
    own = types.FunctionType(
        forward.__code__.replace(), forward.__globals__, forward.__name__, forward.__defaults__, forward.__closure__
    )
    model.forward = types.MethodType(own, model)
    return cast(nn.Module, torch.compile(model, dynamic=False))
