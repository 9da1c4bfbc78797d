"""Variants: functions from NetSpec to NetSpec (FReLU placement, Fused-MBConv early stages)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from scaler.model.spec import DUPLICATE_TOP_K, NetSpec, SpecError

VARIANT_HELP = (
    "relu (as built), frelu (every stage, stem and head), frelu-early (first half of the stages), "
    "frelu-late (second half), frelu-all-but-last, frelu:1,2 (stages numbered from 1), "
    "fused (Fused-MBConv in the first two stages), fused:K, flgc:G (learnable groups in every block's 1x1 "
    "conv), flgc-dup:G or flgc-dup:G:K (duplication of important channels, threshold = mean score of a group's "
    "top K members, default 3), fixed:G (contiguous groups, as ResNeXt), spatial (after flgc or fixed: the "
    "bottleneck's kxk conv grouped too), free (after flgc or flgc-dup: learned groups of any size, as Wang et al.; "
    "default: equal sizes), cap:S (after flgc-dup: duplication adds at most share S of each grouped layer's MACs, "
    "largest margins first); join with '+', e.g. fused+frelu:1,2 or flgc:4+spatial"
)


def with_frelu(spec: NetSpec, stages: set[int] | None, stem_and_head: bool = False) -> NetSpec:
    """FReLU on the given 1-based stages (None = all); other stages keep their activation."""
    count = len(spec.stages)
    chosen = set(range(1, count + 1)) if stages is None else stages
    bad = sorted(i for i in chosen if not 1 <= i <= count)
    if bad:
        raise SpecError(f"{spec.name} has stages 1..{count}; cannot put FReLU on stage {bad[0]}")
    new_stages = tuple(
        replace(stage, activation="frelu", block_activations=None) if i in chosen else stage
        for i, stage in enumerate(spec.stages, start=1)
    )
    return replace(spec, stages=new_stages, activation="frelu" if stem_and_head else spec.activation)


def fuse_early(spec: NetSpec, count: int = 2) -> NetSpec:
    """Replace the first `count` stages' blocks by Fused-MBConv (depthwise-separable becomes expand 1)."""
    if not 0 <= count <= len(spec.stages):
        raise SpecError(f"{spec.name} has {len(spec.stages)} stages; cannot fuse {count}")
    new_stages = []
    for i, stage in enumerate(spec.stages):
        if i < count and stage.block in ("dsconv", "mbconv"):
            stage = replace(stage, block="fused", expand=1.0 if stage.block == "dsconv" else stage.expand, se_ratio=0.0)
        elif i < count:
            raise SpecError(f"stage {i + 1} of {spec.name} is a {stage.block} block; only dsconv/mbconv fuse")
        new_stages.append(stage)
    return spec.with_stages(new_stages)


def with_flgc(
    spec: NetSpec, groups: int, duplicate: bool, top_k: int = DUPLICATE_TOP_K, grouping: str = "flgc"
) -> NetSpec:
    """`groups` groups (learned, or fixed and contiguous) in every block's 1x1 convolutions."""
    if groups < 1 or top_k < 1:
        raise SpecError(f"grouping needs at least 1 group and top-k >= 1 (got {groups}, {top_k})")
    return spec.with_stages(
        [
            replace(stage, groups=groups, grouping=grouping, duplicate=duplicate, duplicate_top_k=top_k)
            for stage in spec.stages
        ]
    )


def with_free_groups(spec: NetSpec) -> NetSpec:
    """Learned groups of any size (Wang et al.) instead of equal ones."""
    if not any(stage.grouping == "flgc" and stage.groups > 1 for stage in spec.stages):
        raise SpecError("variant 'free' lets learned groups take any size: write it after flgc:G or flgc-dup:G")
    return spec.with_stages(
        [replace(stage, equal_groups=not (stage.grouping == "flgc" and stage.groups > 1)) for stage in spec.stages]
    )


def with_duplicate_cap(spec: NetSpec, cap: float) -> NetSpec:
    """Duplication that adds at most share `cap` of each grouped layer's MACs, the largest margins first."""
    if not any(stage.duplicate for stage in spec.stages):
        raise SpecError("variant 'cap:S' bounds duplication: write it after flgc-dup:G")
    if not cap >= 0 or cap == float("inf"):
        raise SpecError(f"cap:S takes a finite share of MACs >= 0, e.g. cap:0.1 (got {cap})")
    return spec.with_stages([replace(stage, duplicate_cap=cap) if stage.duplicate else stage for stage in spec.stages])


def with_grouped_spatial(spec: NetSpec) -> NetSpec:
    """The bottleneck's kxk convolution grouped as the stage's 1x1 convolutions are."""
    if not any(stage.block == "bottleneck" and stage.groups > 1 for stage in spec.stages):
        raise SpecError(
            "variant 'spatial' groups the kxk conv of grouped bottleneck stages: write it after flgc:G or fixed:G on a ResNet"
        )
    return spec.with_stages(
        [replace(stage, group_spatial=stage.block == "bottleneck" and stage.groups > 1) for stage in spec.stages]
    )


def _parse_stages(text: str) -> set[int]:
    try:
        stages = {int(part) for part in text.split(",") if part}
    except ValueError:
        raise SpecError(f"stage list {text!r} must be numbers like 1,2") from None
    if not stages:
        raise SpecError("frelu: takes at least one stage, e.g. frelu:1,2 (plain relu puts FReLU nowhere)")
    return stages


def _parse_count(variant: str, prefix: str, what: str) -> int:
    """The number after `prefix` in a variant such as fused:2 or fixed:4."""
    try:
        return int(variant[len(prefix) :])
    except ValueError:
        raise SpecError(f"variant {variant!r}: {prefix}N takes a whole number of {what}") from None


def apply_one(spec: NetSpec, variant: str) -> NetSpec:
    """Apply one named variant."""
    count = len(spec.stages)
    half = count // 2
    if variant in ("relu", "base", ""):
        return spec
    if variant == "frelu":
        return with_frelu(spec, None, stem_and_head=True)
    if variant == "frelu-early":
        return with_frelu(spec, set(range(1, half + 1)))
    if variant == "frelu-late":
        return with_frelu(spec, set(range(half + 1, count + 1)))
    if variant == "frelu-all-but-last":
        return with_frelu(spec, set(range(1, count)))
    if variant.startswith("frelu:"):
        return with_frelu(spec, _parse_stages(variant[len("frelu:") :]))
    if variant == "fused":
        return fuse_early(spec, 2)
    if variant.startswith("fused:"):
        return fuse_early(spec, _parse_count(variant, "fused:", "stages"))
    for prefix, duplicate in (("flgc:", False), ("flgc-dup:", True)):
        if variant.startswith(prefix):
            numbers = variant[len(prefix) :].split(":")
            try:
                groups, top_k = int(numbers[0]), int(numbers[1]) if duplicate and len(numbers) == 2 else DUPLICATE_TOP_K
            except ValueError:
                raise SpecError(f"variant {variant!r}: {prefix}G takes a group count") from None
            if len(numbers) > (2 if duplicate else 1):
                raise SpecError(f"variant {variant!r}: write {prefix}G{':K' if duplicate else ''}")
            return with_flgc(spec, groups, duplicate, top_k)
    if variant.startswith("fixed:"):
        return with_flgc(spec, _parse_count(variant, "fixed:", "groups"), False, grouping="fixed")
    if variant == "spatial":
        return with_grouped_spatial(spec)
    if variant == "free":
        return with_free_groups(spec)
    if variant.startswith("cap:"):
        try:
            cap = float(variant[len("cap:") :])
        except ValueError:
            raise SpecError(f"variant {variant!r}: cap:S takes a share of MACs, e.g. cap:0.1") from None
        return with_duplicate_cap(spec, cap)
    raise SpecError(f"unknown variant {variant!r}; choose from {VARIANT_HELP}")


def joined(*variants: str) -> str:
    """Variants applied left to right, as one variant string ('fused', 'frelu:1' -> 'fused+frelu:1')."""
    return "+".join(variants)


def frelu_variant(stages: Iterable[int | str] | None = None) -> str:
    """FReLU on the given 1-based stages ('frelu:2,3'); None: every stage, stem and head ('frelu'); none: 'relu'."""
    if stages is None:
        return "frelu"
    numbers = [str(stage).strip() for stage in stages]
    return f"frelu:{','.join(numbers)}" if numbers else "relu"


def grouping_variant(
    arm: str,
    groups: int,
    top_k: int = DUPLICATE_TOP_K,
    spatial: bool = False,
    free: bool = False,
    cap: float | None = None,
) -> str:
    """The variant of a grouping arm at `groups` groups: dense and dense-thin ('relu'; dense-thin is thinned by
    a width multiplier), fixed:G, flgc:G or flgc-dup:G[:K], then +spatial, +free on the learned arms and
    +cap:S on flgc-dup."""
    if arm in ("dense", "dense-thin"):
        return "relu"
    name = f"{arm}:{groups}" + (f":{top_k}" if arm == "flgc-dup" and top_k != DUPLICATE_TOP_K else "")
    suffixes = (["spatial"] if spatial else []) + (["free"] if free and arm.startswith("flgc") else [])
    if cap is not None and arm == "flgc-dup":
        suffixes.append(f"cap:{cap:g}")
    return joined(name, *suffixes)


def apply_variant(spec: NetSpec, variant: str) -> NetSpec:
    """Apply a '+'-joined list of variants, left to right."""
    for part in variant.split("+"):
        spec = apply_one(spec, part.strip())
    return spec
