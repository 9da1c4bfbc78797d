"""Blocks of the four stage types; each takes its activation and pointwise conv as factories."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from scaler.model.nn.activations import ActFactory
from scaler.model.nn.depthwise import DepthwiseConv2d

Pointwise = Callable[[int, int], nn.Module]
Spatial = Callable[[int, int, int], nn.Module]


def dense_pointwise(in_channels: int, out_channels: int) -> nn.Module:
    """Plain 1x1 convolution without bias."""
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


def dense_spatial(kernel: int) -> Spatial:
    """Factory of plain kxk convolutions (padding k//2, no bias), (in, out, stride) -> Conv2d."""
    return lambda in_channels, out_channels, stride: nn.Conv2d(
        in_channels, out_channels, kernel, stride, kernel // 2, bias=False
    )


class ConvBN(nn.Module):
    """Convolution, batch norm and an optional activation; `conv` may be any conv-like module."""

    def __init__(self, conv: nn.Module, out_channels: int, act: ActFactory | None, eps: float = 1e-5) -> None:
        super().__init__()
        self.conv = conv
        self.bn: nn.Module = nn.BatchNorm2d(out_channels, eps=eps)
        self.act: nn.Module = act(out_channels) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel: int,
    stride: int,
    act: ActFactory | None,
    groups: int = 1,
    eps: float = 1e-5,
) -> ConvBN:
    """kxk convolution (padding k//2, no bias) + BN + activation."""
    conv: nn.Conv2d
    if groups == in_channels == out_channels > 1 and kernel > 1:
        conv = DepthwiseConv2d(in_channels, kernel, stride)
    else:
        conv = nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False)
    return ConvBN(conv, out_channels, act, eps)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation with SiLU inside and a sigmoid gate (as in EfficientNet)."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.SiLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(scale))))


class DepthwiseSeparable(nn.Module):
    """MobileNetV1 block: depthwise kxk + BN + act, pointwise 1x1 + BN + act."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        act: ActFactory,
        pointwise: Pointwise = dense_pointwise,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.conv_dw = conv_bn(in_channels, in_channels, kernel, stride, act, groups=in_channels, eps=eps)
        self.conv_pw = ConvBN(pointwise(in_channels, out_channels), out_channels, act, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.conv_dw(x))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, optional SE, 1x1 project; skip when shapes allow."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int,
        kernel: int,
        stride: int,
        squeeze: int,
        act: ActFactory,
        pointwise: Pointwise = dense_pointwise,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.has_skip = stride == 1 and in_channels == out_channels
        self.conv_pw: nn.Module = (
            ConvBN(pointwise(in_channels, hidden), hidden, act, eps) if hidden != in_channels else nn.Identity()
        )
        self.conv_dw = conv_bn(hidden, hidden, kernel, stride, act, groups=hidden, eps=eps)
        self.se: nn.Module = SqueezeExcite(hidden, squeeze) if squeeze else nn.Identity()
        self.conv_pwl = ConvBN(pointwise(hidden, out_channels), out_channels, None, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_pwl(self.se(self.conv_dw(self.conv_pw(x))))
        return out + x if self.has_skip else out


class FusedMBConv(nn.Module):
    """EfficientNetV2 Fused-MBConv: kxk expand conv (+ 1x1 project when expanded), optional SE."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int,
        kernel: int,
        stride: int,
        squeeze: int,
        act: ActFactory,
        pointwise: Pointwise = dense_pointwise,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.has_skip = stride == 1 and in_channels == out_channels
        expanded = hidden != in_channels
        self.conv_exp = conv_bn(in_channels, hidden if expanded else out_channels, kernel, stride, act, eps=eps)
        self.se: nn.Module = SqueezeExcite(hidden, squeeze) if squeeze else nn.Identity()
        self.conv_pwl: nn.Module = (
            ConvBN(pointwise(hidden, out_channels), out_channels, None, eps) if expanded else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_pwl(self.se(self.conv_exp(x)))
        return out + x if self.has_skip else out


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1 reduce, kxk (carries the stride), 1x1 expand, projection shortcut."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mid: int,
        stride: int,
        act: ActFactory,
        pointwise: Pointwise = dense_pointwise,
        spatial: Spatial | None = None,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        spatial = spatial or dense_spatial(3)
        self.conv1 = ConvBN(pointwise(in_channels, mid), mid, act, eps)
        self.conv2 = ConvBN(spatial(mid, mid, stride), mid, act, eps)
        self.conv3 = ConvBN(pointwise(mid, out_channels), out_channels, None, eps)
        self.downsample: nn.Module = (
            ConvBN(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), out_channels, None, eps)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )
        self.act = act(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.downsample(x))
