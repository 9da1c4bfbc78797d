"""Compound scaling: the one place that holds EfficientNet's rounding rules."""

from __future__ import annotations

import math
from dataclasses import replace

from scaler.model.spec import NetSpec, SpecError, Stage

CHANNEL_DIVISOR = 8
RESOLUTION_MULTIPLE = 2
EFFICIENTNET_COEFFICIENTS = (1.2, 1.1, 1.15)  # alpha, beta, gamma found for EfficientNet-B0 (Tan & Le 2019)


def compound(alpha: float, beta: float, gamma: float, phi: float) -> tuple[float, float, float]:
    """Depth, width and resolution multipliers d = alpha^phi, w = beta^phi, r = gamma^phi."""
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not math.isfinite(value) or value < 1.0:
            raise SpecError(f"{name} must be >= 1 (got {value}): compound scaling only grows a network")
    if not math.isfinite(phi) or phi < 0:
        raise SpecError(f"phi must be >= 0 (got {phi})")
    return alpha**phi, beta**phi, gamma**phi


def round_channels(channels: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """Nearest multiple of `divisor`, never more than 10 % below `channels` (EfficientNet's rule)."""
    if channels < 1:
        raise SpecError(f"{channels:.3g} channels rounds to zero: the width multiplier is too small")
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * channels:
        rounded += divisor
    return rounded


def round_repeats(repeats: int, depth: float) -> int:
    """ceil(repeats * depth), immune to float error just above an integer."""
    return max(1, math.ceil(repeats * depth - 1e-9))


def round_resolution(resolution: float, multiple: int = RESOLUTION_MULTIPLE) -> int:
    """Nearest multiple of `multiple` (at least one multiple)."""
    return max(multiple, int(round(resolution / multiple)) * multiple)


def resample_mask(mask: tuple[str, ...], repeats: int) -> tuple[str, ...]:
    """Stretch a per-block activation mask to a new block count, keeping relative positions."""
    return tuple(mask[i * len(mask) // repeats] for i in range(repeats))


def _scale_stage(stage: Stage, depth: float, width: float) -> Stage:
    repeats = round_repeats(stage.repeats, depth)
    mask = resample_mask(stage.block_activations, repeats) if stage.block_activations else None
    return replace(
        stage,
        out_channels=round_channels(stage.out_channels * width),
        repeats=repeats,
        block_activations=mask,
    )


def scale(spec: NetSpec, depth: float, width: float, resolution: float) -> NetSpec:
    """Scale a network: repeats by ceil(n*d), channels (stem, stages, head) by w, input size by r.

    The input size rounds to the nearest multiple of `spec.resolution_multiple`.
    """
    for name, value in (("depth", depth), ("width", width), ("resolution", resolution)):
        if not math.isfinite(value) or value <= 0:
            raise SpecError(f"{name} multiplier must be > 0 (got {value})")
    most_repeats = max(stage.repeats for stage in spec.stages)
    if most_repeats * depth < 0.5:
        raise SpecError(
            f"depth multiplier {depth:g} would leave every stage of {spec.name} at one block, as "
            f"{1 / most_repeats:g} already does: use at least that"
        )
    if spec.resolution * resolution < spec.resolution_multiple / 2:
        raise SpecError(
            f"resolution multiplier {resolution:g} makes a {spec.resolution * resolution:.3g}px input from "
            f"{spec.resolution}px; {spec.name} takes inputs in steps of {spec.resolution_multiple}px: use at least "
            f"{spec.resolution_multiple / 2 / spec.resolution:.3g}"
        )
    stem = replace(spec.stem, out_channels=round_channels(spec.stem.out_channels * width))
    head = replace(
        spec.head, out_channels=round_channels(spec.head.out_channels * width) if spec.head.out_channels else 0
    )
    return replace(
        spec,
        stem=stem,
        stages=tuple(_scale_stage(stage, depth, width) for stage in spec.stages),
        head=head,
        resolution=round_resolution(spec.resolution * resolution, spec.resolution_multiple),
    )


def scale_compound(spec: NetSpec, alpha: float, beta: float, gamma: float, phi: float) -> NetSpec:
    """`scale` with the multipliers of `compound(alpha, beta, gamma, phi)`."""
    return scale(spec, *compound(alpha, beta, gamma, phi))
