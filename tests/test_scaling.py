"""EfficientNet's rounding rules, held in one pure function."""

from __future__ import annotations

import pytest

from scaler.model.scaling import compound, round_channels, round_repeats, round_resolution, scale
from scaler.model.spec import SpecError
from scaler.model.variants import apply_variant
from scaler.model.zoo import base


@pytest.mark.parametrize(
    "channels,expected",
    [(32, 32), (35.2, 32), (36, 40), (17.6, 16), (38.4, 40), (3.0, 8), (12.0, 16), (1280 * 1.1, 1408), (20, 24)],
)
def test_round_channels_to_multiple_of_8(channels: float, expected: int) -> None:
    assert round_channels(channels) == expected
    assert expected % 8 == 0
    assert expected >= 0.9 * channels


def test_round_channels_never_10_percent_below() -> None:
    for tenths in range(80, 4000):
        target = tenths / 10
        assert round_channels(target) >= 0.9 * target


def test_round_repeats_is_ceil_without_float_noise() -> None:
    assert round_repeats(3, 1.1) == 4
    assert round_repeats(5, 1.2) == 6  # 5 * 1.2 == 6.000000000000001
    assert round_repeats(1, 1.0) == 1
    assert round_repeats(2, 3.1) == 7


def test_round_resolution() -> None:
    assert round_resolution(28 * 1.15) == 32
    assert round_resolution(224 * 1.15, 8) == 256
    assert round_resolution(1.0) == 2


def test_compound_is_power_of_phi() -> None:
    d, w, r = compound(1.2, 1.1, 1.15, 2)
    assert (d, w, r) == pytest.approx((1.44, 1.21, 1.3225))
    assert compound(1.2, 1.1, 1.15, 0) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    "args", [(0.9, 1.1, 1.1, 1), (1.2, 0.5, 1.1, 1), (1.2, 1.1, -1, 1), (1.2, 1.1, 1.1, -0.5), (float("nan"), 1, 1, 1)]
)
def test_compound_rejects_bad_input(args) -> None:
    with pytest.raises(SpecError):
        compound(*args)


def test_width_that_rounds_to_zero_is_an_error() -> None:
    with pytest.raises(SpecError, match="rounds to zero"):
        scale(base("mobilenet"), 1.0, 0.001, 1.0)
    with pytest.raises(SpecError):
        scale(base("mobilenet"), 1.0, 0.0, 1.0)


def test_scale_touches_stem_stages_head_and_resolution() -> None:
    spec = base("efficientnet-b0")
    scaled = scale(spec, 1.4, 1.2, 300 / 224)
    assert scaled.stem.out_channels == 40
    assert [s.out_channels for s in scaled.stages] == [24, 32, 48, 96, 136, 232, 384]
    assert [s.repeats for s in scaled.stages] == [2, 3, 3, 5, 5, 6, 2]
    assert scaled.head.out_channels == 1536
    assert scaled.resolution == 300
    assert scale(spec, 1, 1, 1) == spec


def test_scale_stretches_block_masks() -> None:
    spec = base("mobilenet", 1, 28, 10)
    stages = list(spec.stages)
    from dataclasses import replace

    stages[3] = replace(stages[3], block_activations=("frelu",) * 3 + ("relu",) * 3)
    scaled = scale(spec.with_stages(stages), 1.5, 1.0, 1.0)
    assert scaled.stages[3].block_activations == ("frelu",) * 5 + ("relu",) * 4


def test_variants_are_spec_functions() -> None:
    spec = base("mobilenet", 1, 28, 10)
    assert [s.activation for s in apply_variant(spec, "frelu:1,2").stages] == ["frelu", "frelu", "relu", "relu", "relu"]
    assert [s.activation for s in apply_variant(spec, "frelu-all-but-last").stages][-1] == "relu"
    assert [s.block for s in apply_variant(spec, "fused").stages][:3] == ["fused", "fused", "dsconv"]
    with pytest.raises(SpecError):
        apply_variant(spec, "frelu:9")
    with pytest.raises(SpecError):
        apply_variant(spec, "sparkly")


@pytest.mark.parametrize("name", ["mobilenet", "resnet50", "efficientnet-b0"])
def test_macs_follow_resolution_squared_on_small_inputs(name: str) -> None:
    """At 28 px every gamma^phi of the grid (phi 1 and 2) builds an input whose MACs track r^2 within 10 %."""
    from scaler.model.complexity import count_macs
    from scaler.model.nn.build import build
    from scaler.study.grid import GAMMA_RANGE

    spec = scale(base(name, in_channels=1, resolution=28, num_classes=10), 1.0, 0.25, 1.0)
    assert spec.resolution == 32 and spec.resolution % spec.total_stride == 0
    macs0 = count_macs(build(spec), spec.input_shape)
    sizes = {scale(spec, 1, 1, g**phi).resolution for phi in (1, 2) for g in (1.0, 1.1, 1.2, 1.3, 1.4, GAMMA_RANGE[1])}
    assert len(sizes) >= 4
    for size in sorted(sizes):
        grown = scale(spec, 1, 1, size / spec.resolution)
        assert grown.resolution == size and size % spec.total_stride == 0
        ratio = count_macs(build(grown), grown.input_shape) / macs0
        assert ratio == pytest.approx((size / spec.resolution) ** 2, rel=0.10), size
