"""Networks as data: a NetSpec is a stem, a tuple of stages and a head."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from scaler.errors import UserError

DUPLICATE_TOP_K = 3  # FLGC duplication threshold: mean score of a group's top K members
GROUPINGS: tuple[str, ...] = ("flgc", "fixed")
GROUPING_ARMS: tuple[str, ...] = ("dense", "dense-thin", "fixed", "flgc", "flgc-dup")  # what `scaler flgc` compares

BlockType = Literal["dsconv", "mbconv", "fused", "bottleneck"]
BLOCK_TYPES: tuple[str, ...] = ("dsconv", "mbconv", "fused", "bottleneck")
ACTIVATIONS: tuple[str, ...] = ("relu", "relu6", "silu", "frelu")


class SpecError(UserError):
    """A spec, scaling factor or variant that a user asked for cannot exist."""


@dataclass(frozen=True)
class Stem:
    """First convolution: `out_channels` filters of size `kernel`, optional 3x3/2 max-pool after it."""

    out_channels: int
    kernel: int = 3
    stride: int = 2
    maxpool: bool = False


@dataclass(frozen=True)
class Stage:
    """`repeats` blocks of one type; the first block carries the stride.

    Args:
        block: dsconv (MobileNetV1), mbconv, fused (Fused-MBConv) or bottleneck (ResNet).
        expand: hidden/in channels for mbconv and fused; mid/out channels for bottleneck.
        se_ratio: squeeze channels as a fraction of the block's input channels (0 = no SE).
        activation: relu, relu6, silu or frelu, for every block of the stage.
        block_activations: per-block override of `activation` (a mask over repeats), or None.
        groups: groups of the blocks' 1x1 convolutions (1 = dense).
        grouping: flgc (channels and filters learn their group) or fixed (contiguous groups, as ResNeXt).
        group_spatial: the bottleneck's kxk convolution is grouped the same way too.
        duplicate: FLGC duplicates important input channels into several groups.
        duplicate_top_k: members whose mean score is the duplication threshold.
        duplicate_cap: duplication adds at most this share of each grouped layer's MACs, the largest margins
            first (None: every channel that beats the threshold).
        equal_groups: FLGC groups hold equal numbers of channels and of filters (a contiguous grouped conv once
            permuted); False lets learned groups take any size (Wang et al.).
    """

    block: BlockType
    expand: float
    kernel: int
    stride: int
    out_channels: int
    repeats: int
    se_ratio: float = 0.0
    activation: str = "relu"
    block_activations: tuple[str, ...] | None = None
    groups: int = 1
    grouping: str = "flgc"
    group_spatial: bool = False
    duplicate: bool = False
    duplicate_top_k: int = DUPLICATE_TOP_K
    duplicate_cap: float | None = None
    equal_groups: bool = True

    def __post_init__(self) -> None:
        if self.block not in BLOCK_TYPES:
            raise SpecError(f"unknown block type {self.block!r}; choose from {', '.join(BLOCK_TYPES)}")
        for act in (self.activation, *(self.block_activations or ())):
            if act not in ACTIVATIONS:
                raise SpecError(f"unknown activation {act!r}; choose from {', '.join(ACTIVATIONS)}")
        if self.block_activations is not None and len(self.block_activations) != self.repeats:
            raise SpecError(f"block_activations has {len(self.block_activations)} entries for {self.repeats} blocks")
        if self.repeats < 1 or self.out_channels < 1 or self.groups < 1 or self.duplicate_top_k < 1:
            raise SpecError(f"stage needs repeats, channels and groups >= 1, got {self}")
        if self.grouping not in GROUPINGS:
            raise SpecError(f"unknown grouping {self.grouping!r}; choose from {', '.join(GROUPINGS)}")
        if self.duplicate and self.grouping != "flgc":
            raise SpecError("only learned (flgc) groups duplicate channels")
        if self.duplicate_cap is not None and (not self.duplicate or not self.duplicate_cap >= 0):
            raise SpecError(f"a duplication cap needs duplicating groups and a share >= 0, got {self.duplicate_cap}")
        if not self.equal_groups and self.grouping != "flgc":
            raise SpecError("only learned (flgc) groups can take unequal sizes")

    def activation_of(self, index: int) -> str:
        """Activation of block `index` of this stage."""
        return self.block_activations[index] if self.block_activations else self.activation


@dataclass(frozen=True)
class Head:
    """Optional 1x1 conv to `out_channels` (0 = none), global pooling, dropout, linear classifier."""

    out_channels: int = 0
    dropout: float = 0.0


@dataclass(frozen=True)
class NetSpec:
    """A whole network: input, stem, stages, head and classes; `activation` is the stem/head one.

    `resolution_multiple`: the input sizes scaling may give it are multiples of this (its total stride on
    small inputs, so that every feature map grows with the input and MACs follow r^2).
    """

    name: str
    stem: Stem
    stages: tuple[Stage, ...]
    head: Head = field(default_factory=Head)
    in_channels: int = 3
    resolution: int = 224
    num_classes: int = 1000
    activation: str = "relu"
    norm_eps: float = 1e-5
    resolution_multiple: int = 2

    def __post_init__(self) -> None:
        if not self.stages:
            raise SpecError("a network needs at least one stage")
        if self.resolution < 8 or self.in_channels < 1 or self.num_classes < 2:
            raise SpecError(
                f"input {self.in_channels}x{self.resolution}px with {self.num_classes} classes is not a task"
            )
        if self.activation not in ACTIVATIONS:
            raise SpecError(f"unknown activation {self.activation!r}")

    @property
    def total_stride(self) -> int:
        """Input size over the last feature map's size (stem, max-pool and stage strides)."""
        stride = self.stem.stride * (2 if self.stem.maxpool else 1)
        for stage in self.stages:
            stride *= stage.stride
        return stride

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input image."""
        return (self.in_channels, self.resolution, self.resolution)

    def with_stages(self, stages: tuple[Stage, ...] | list[Stage]) -> NetSpec:
        """Copy with other stages."""
        return replace(self, stages=tuple(stages))

    def with_input(self, in_channels: int, resolution: int, num_classes: int) -> NetSpec:
        """Copy for another input size and class count (architecture unchanged)."""
        return replace(self, in_channels=in_channels, resolution=resolution, num_classes=num_classes)
