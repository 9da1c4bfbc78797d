"""Channel permutations between deployed FLGC layers and their dense neighbours, folded into the neighbours' weights
or gathers wherever the graph allows."""

from __future__ import annotations

import torch
from torch import nn

from scaler.model.nn.flgc_deploy import DeployedFLGC

ELEMENTWISE = (nn.Identity, nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.GELU)  # commute with a channel permutation


def deployed_in(module: nn.Module) -> DeployedFLGC | None:
    """The deployed FLGC layer `module` is, or wraps as its conv (a ConvBN), else None."""
    if isinstance(module, DeployedFLGC):
        return module
    conv = getattr(module, "conv", None)
    return conv if isinstance(conv, DeployedFLGC) else None


def hands_on(module: nn.Module) -> bool:
    """Whether what `module`'s conv outputs reaches the next module only through channel-wise-identical steps."""
    if isinstance(module, DeployedFLGC):
        return True
    return all(isinstance(getattr(module, name, nn.Identity()), ELEMENTWISE) for name in ("bn", "act"))


def sequences(model: nn.Module) -> list[list[nn.Module]]:
    """Runs of modules each feeding only the next: every nn.Sequential's children, every bottleneck's three convs."""
    from scaler.model.nn.blocks import Bottleneck

    runs: list[list[nn.Module]] = []
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            runs.append(list(module.children()))
        elif isinstance(module, Bottleneck):
            runs.append([module.conv1, module.conv2, module.conv3])
    return runs


def plain_conv_in(module: nn.Module) -> nn.Conv2d | None:
    """The ungrouped nn.Conv2d `module` is, or wraps as its conv (a ConvBN), else None."""
    conv = module if isinstance(module, nn.Conv2d) else getattr(module, "conv", None)
    return conv if isinstance(conv, nn.Conv2d) and conv.groups == 1 else None


@torch.no_grad()
def read_rows(conv: nn.Conv2d, position: torch.Tensor, width: int) -> None:
    """Make a dense conv read its input channel c from row position[c] of a `width`-row input (others unread)."""
    weight = conv.weight.new_zeros(conv.out_channels, width, *conv.weight.shape[2:])
    weight[:, position] = conv.weight
    conv.weight = nn.Parameter(weight, requires_grad=False)
    conv.in_channels = width


@torch.no_grad()
def emit_rows(conv: nn.Conv2d, order: torch.Tensor) -> None:
    """Make a dense conv output its filter order[r] as row r (bias too)."""
    conv.weight = nn.Parameter(conv.weight[order].clone(), requires_grad=False)
    if conv.bias is not None:
        conv.bias = nn.Parameter(conv.bias[order].clone(), requires_grad=False)


@torch.no_grad()
def fold_permutations(model: nn.Module) -> int:
    """Fold channel permutations into neighbouring layers, in place, wherever a layer's output only the next one
    reads (through BN already folded and element-wise activations); returns how many were folded.

    A deployed FLGC layer followed by another hands on its rows in group order (a channel-major view) and the
    reader gathers them once; followed by a dense conv, the dense conv's input channels are permuted instead, so
    no copy is left. A dense conv followed by a deployed FLGC layer that reads each channel once (equal groups, no
    duplicate) emits its filters in the reader's order, so the reader gathers nothing. A gather stays where a
    layer reads the residual stream, a permutation where one writes to it or feeds a depthwise conv, a composed
    gather between two learned groupings (they never line up), and wherever duplicates or padding make a layer
    read a channel more or less than once."""
    folded = 0
    for run in sequences(model):
        producer: DeployedFLGC | nn.Conv2d | None = None
        for module in run:
            reader, dense = deployed_in(module), plain_conv_in(module)
            if (
                isinstance(producer, DeployedFLGC)
                and producer.emits_raw()
                and (reader is not None or dense is not None)
            ):
                width = producer.out_channels
                if reader is not None:
                    reader.read_from(producer.emit_raw(), width)
                elif dense is not None:
                    read_rows(dense, producer.emit_raw(), width)
                folded += 1
            elif isinstance(producer, nn.Conv2d) and reader is not None:
                order = reader.permutation_read()
                if order is not None:
                    emit_rows(producer, order)
                    reader.read_from(order.argsort(), len(order))
                    folded += 1
            if reader is not None or dense is not None:
                producer = (reader if reader is not None else dense) if hands_on(module) else None
            elif not isinstance(module, ELEMENTWISE):
                producer = None
    return folded
