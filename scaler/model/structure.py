"""How a spec unfolds into blocks and their widths: the one description that building and the size guard read."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from scaler.model.scaling import round_channels
from scaler.model.spec import NetSpec, Stage


def conv_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output side of a convolution or pooling of `size` pixels."""
    return (size + 2 * padding - kernel) // stride + 1


@dataclass(frozen=True)
class Block:
    """Block `index` of the spec's stage number `position` as built: the channels it reads, its stride, its
    activation and inner widths.

    `hidden` is the expanded width (MBConv, Fused-MBConv), the bottleneck's middle width, or `in_channels`
    (depthwise-separable); `squeeze` is the squeeze-excitation width (0 without SE).
    """

    position: int
    stage: Stage
    index: int
    in_channels: int
    stride: int
    activation: str
    hidden: int
    squeeze: int


def block(position: int, stage: Stage, index: int, in_channels: int) -> Block:
    """Block `index` of `stage` (the spec's stage number `position`) reading `in_channels`."""
    if stage.block in ("mbconv", "fused"):
        hidden = round_channels(in_channels * stage.expand)
    elif stage.block == "bottleneck":
        hidden = round_channels(stage.out_channels * stage.expand)
    else:
        hidden = in_channels
    squeeze = max(1, int(in_channels * stage.se_ratio)) if stage.se_ratio > 0 else 0
    stride = stage.stride if index == 0 else 1
    return Block(position, stage, index, in_channels, stride, stage.activation_of(index), hidden, squeeze)


def distinct_blocks(spec: NetSpec) -> Iterator[tuple[Block, int]]:
    """The blocks of `blocks(spec)` in order, each stage's alike ones (same activation after the first) once with
    their count: as many steps as stages, however deep the network is scaled."""
    channels = spec.stem.out_channels
    for position, stage in enumerate(spec.stages):
        yield block(position, stage, 0, channels), 1
        channels = stage.out_channels
        masked = stage.block_activations[1:] if stage.block_activations else ()
        if masked:
            counts = Counter(masked)
            for activation in counts:
                yield block(position, stage, 1 + masked.index(activation), channels), counts[activation]
        elif stage.repeats > 1:
            yield block(position, stage, 1, channels), stage.repeats - 1


def blocks(spec: NetSpec) -> Iterator[Block]:
    """Every block of the network in order, each reading the channels the one before it produced."""
    channels = spec.stem.out_channels
    for position, stage in enumerate(spec.stages):
        for index in range(stage.repeats):
            yield block(position, stage, index, channels)
            channels = stage.out_channels
