"""Registry of base networks, each one table from its paper."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from scaler.model.scaling import scale
from scaler.model.spec import Head, NetSpec, SpecError, Stage, Stem
from scaler.model.specfile import read_spec_file

MIN_FEATURE_MAP = 4
SMALL_INPUT = 64  # below this many pixels a base gets the CIFAR stem, fitted strides and a stride-multiple size


def mobilenet() -> NetSpec:
    """MobileNetV1 (Howard et al. 2017, Table 1): 4.2 M params, 569 M MACs at 224 px.

    Conv 3x3/2 32 | dw-sep 64 | 2x 128 (/2) | 2x 256 (/2) | 6x 512 (/2) | 2x 1024 (/2) | pool | fc
    """
    return NetSpec(
        name="mobilenet",
        stem=Stem(32, 3, 2),
        stages=(
            Stage("dsconv", 1, 3, 1, 64, 1),
            Stage("dsconv", 1, 3, 2, 128, 2),
            Stage("dsconv", 1, 3, 2, 256, 2),
            Stage("dsconv", 1, 3, 2, 512, 6),
            Stage("dsconv", 1, 3, 2, 1024, 2),
        ),
        head=Head(0, 0.0),
        activation="relu",
    )


def mobilenetv2() -> NetSpec:
    """MobileNetV2 (Sandler et al. 2018, Table 2): t, c, n, s per stage; ReLU6; 1280-wide head."""
    rows = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    return NetSpec(
        name="mobilenetv2",
        stem=Stem(32, 3, 2),
        stages=tuple(Stage("mbconv", t, 3, s, c, n, activation="relu6") for t, c, n, s in rows),
        head=Head(1280, 0.2),
        activation="relu6",
    )


def efficientnet_b0() -> NetSpec:
    """EfficientNet-B0 (Tan & Le 2019, Table 1): MBConv with SE 0.25 and SiLU; 1280-wide head.

    expand, kernel, stride, channels, repeats: MBConv1 k3 16 x1 | MBConv6 k3 24 x2 /2 | k5 40 x2 /2 |
    k3 80 x3 /2 | k5 112 x3 | k5 192 x4 /2 | k3 320 x1
    """
    rows = [
        (1, 3, 1, 16, 1),
        (6, 3, 2, 24, 2),
        (6, 5, 2, 40, 2),
        (6, 3, 2, 80, 3),
        (6, 5, 1, 112, 3),
        (6, 5, 2, 192, 4),
        (6, 3, 1, 320, 1),
    ]
    return NetSpec(
        name="efficientnet-b0",
        stem=Stem(32, 3, 2),
        stages=tuple(Stage("mbconv", e, k, s, c, n, se_ratio=0.25, activation="silu") for e, k, s, c, n in rows),
        head=Head(1280, 0.2),
        activation="silu",
        norm_eps=1e-3,
    )


def efficientnetv2_s() -> NetSpec:
    """EfficientNetV2-S (Tan & Le 2021, Table 4): Fused-MBConv stages 1-3, MBConv+SE stages 4-6."""
    fused = [(1, 1, 24, 2), (4, 2, 48, 4), (4, 2, 64, 4)]
    mb = [(4, 2, 128, 6), (6, 1, 160, 9), (6, 2, 256, 15)]
    return NetSpec(
        name="efficientnetv2-s",
        stem=Stem(24, 3, 2),
        stages=tuple(Stage("fused", e, 3, s, c, n, activation="silu") for e, s, c, n in fused)
        + tuple(Stage("mbconv", e, 3, s, c, n, se_ratio=0.25, activation="silu") for e, s, c, n in mb),
        head=Head(1280, 0.2),
        activation="silu",
        norm_eps=1e-3,
    )


def mobilenet_fused() -> NetSpec:
    """MobileNetV1 whose first two stages are Fused-MBConv (EfficientNetV2's lesson for early layers)."""
    from scaler.model.variants import fuse_early

    return replace(fuse_early(mobilenet(), 2), name="mobilenet-fused")


def resnet50() -> NetSpec:
    """ResNet-50 (He et al. 2016, Table 1; v1.5 stride on the 3x3): bottlenecks [3, 4, 6, 3]."""
    rows = [(1, 256, 3), (2, 512, 4), (2, 1024, 6), (2, 2048, 3)]
    return NetSpec(
        name="resnet50",
        stem=Stem(64, 7, 2, maxpool=True),
        stages=tuple(Stage("bottleneck", 0.25, 3, s, c, n) for s, c, n in rows),
        head=Head(0, 0.0),
        activation="relu",
    )


def cifar_stem(spec: NetSpec) -> NetSpec:
    """The CIFAR stem: 3x3 conv with stride 1 and no max-pool."""
    return replace(spec, stem=replace(spec.stem, kernel=3, stride=1, maxpool=False))


BASES: dict[str, Callable[[], NetSpec]] = {
    "mobilenet": mobilenet,
    "mobilenetv2": mobilenetv2,
    "efficientnet-b0": efficientnet_b0,
    "efficientnetv2-s": efficientnetv2_s,
    "mobilenet-fused": mobilenet_fused,
    "resnet50": resnet50,
}

# EfficientNet B0-B7 as (width, depth, resolution) on the B0 table (Tan & Le 2019; torchvision).
EFFICIENTNET_FAMILY: dict[str, tuple[float, float, int]] = {
    "b0": (1.0, 1.0, 224),
    "b1": (1.0, 1.1, 240),
    "b2": (1.1, 1.2, 260),
    "b3": (1.2, 1.4, 300),
    "b4": (1.4, 1.8, 380),
    "b5": (1.6, 2.2, 456),
    "b6": (1.8, 2.6, 528),
    "b7": (2.0, 3.1, 600),
}


def efficientnet(variant: str) -> NetSpec:
    """EfficientNet-B0..B7 from the B0 table by the official multipliers."""
    width, depth, resolution = EFFICIENTNET_FAMILY[variant]
    return replace(scale(efficientnet_b0(), depth, width, resolution / 224), name=f"efficientnet-{variant}")


def fit_strides(spec: NetSpec, min_feature_map: int = MIN_FEATURE_MAP) -> NetSpec:
    """Drop the strides that would shrink the feature map below `min_feature_map` at this input size.

    At 224 px nothing changes; at 32 px MobileNet keeps /8 and ends on 4x4 instead of 1x1.
    """
    size = spec.resolution

    def keep(stride: int) -> int:
        nonlocal size
        if stride > 1 and -(-size // stride) < min_feature_map:
            return 1
        size = -(-size // stride)
        return stride

    stem = replace(spec.stem, stride=keep(spec.stem.stride))
    stem = replace(stem, maxpool=stem.maxpool and keep(2) == 2)
    stages = tuple(replace(stage, stride=keep(stage.stride)) for stage in spec.stages)
    return replace(spec, stem=stem, stages=stages)


SPEC_SUFFIXES = (".toml", ".json")


def is_spec_file(name: str) -> bool:
    """`name` means a network file (a .toml or .json name, or a path), not a zoo entry."""
    separators = [sep for sep in (os.sep, os.altsep) if sep]
    return name.lower().endswith(SPEC_SUFFIXES) or any(sep in name for sep in separators)


def table(name: str) -> NetSpec:
    """The table of base `name` at the reference input: a zoo entry, or the network a spec file describes."""
    if is_spec_file(name):
        return read_spec_file(Path(name).expanduser())
    if name not in BASES:
        raise SpecError(f"unknown base {name!r}; choose from {', '.join(BASES)}, or give a .toml/.json network file")
    return BASES[name]()


def base_identity(name: str) -> str:
    """What makes a network file the same base: a hash of the table it holds ('' for a zoo name)."""
    if not is_spec_file(name):
        return ""
    from scaler.model.specfile import spec_dict

    return hashlib.sha256(json.dumps(spec_dict(table(name)), sort_keys=True).encode()).hexdigest()[:16]


def base_label(name: str) -> str:
    """A base as a part of folder and study names: the file's stem for a network file, else the zoo name."""
    if not is_spec_file(name):
        return name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).stem).strip("-._") or "network"


def base(
    name: str,
    in_channels: int = 3,
    resolution: int = 224,
    num_classes: int = 1000,
    cifar: bool | None = None,
) -> NetSpec:
    """Base network `name` (a zoo entry or a network file) for this input, strides fitted to the resolution.

    `cifar` swaps ResNet's 7x7/2 + max-pool stem for a 3x3/1 one; by default it does so below 64 px.
    Below 64 px the input also grows to the next multiple of the fitted total stride (28 -> 32 px for a /8
    network) and scaling keeps it a multiple of that stride: every feature map then grows in proportion
    to the input, so MACs follow r^2 instead of jumping where a 2x2 map becomes 3x3.
    """
    spec = table(name).with_input(in_channels, resolution, num_classes)
    small = resolution < SMALL_INPUT
    if (cifar if cifar is not None else small) and spec.stem.maxpool:
        spec = cifar_stem(spec)
    fitted = fit_strides(spec)
    if not small:
        return fitted
    stride = fitted.total_stride
    return replace(fitted, resolution=-(-resolution // stride) * stride, resolution_multiple=stride)
