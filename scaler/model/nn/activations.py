"""Activation factories: each takes the channel count, because FReLU needs it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from scaler.model.nn.depthwise import DepthwiseConv2d
from scaler.model.spec import SpecError

ActFactory = Callable[[int], nn.Module]


class FReLU(nn.Module):
    """Funnel activation (Ma et al. 2020): max(x, BN(depthwise3x3(x)))."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.conv = DepthwiseConv2d(channels, 3)
        self.bn: nn.Module = nn.BatchNorm2d(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(x, self.bn(self.conv(x)))


def act_factory(name: str, eps: float = 1e-5) -> ActFactory:
    """Factory for activation `name` (relu, relu6, silu, frelu)."""
    if name == "relu":
        return lambda channels: nn.ReLU(inplace=True)
    if name == "relu6":
        return lambda channels: nn.ReLU6(inplace=True)
    if name == "silu":
        return lambda channels: nn.SiLU(inplace=True)
    if name == "frelu":
        return lambda channels: FReLU(channels, eps)
    raise SpecError(f"unknown activation {name!r}; choose from relu, relu6, silu, frelu")
