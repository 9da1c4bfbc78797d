"""The size guard: analytic footprint equals the built model's counts, and oversized networks are refused."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scaler.errors import UserError
from scaler.model import zoo
from scaler.model.complexity import count_activations, count_params
from scaler.model.guard import Footprint, available_memory, check_fits, footprint
from scaler.model.nn.build import build
from scaler.model.scaling import compound, scale
from scaler.model.spec import NetSpec
from scaler.model.variants import apply_variant


def _masked_mobilenet() -> NetSpec:
    spec = zoo.base("mobilenet", 1, 28, 10)
    stage = replace(spec.stages[3], block_activations=("relu", "frelu", "relu", "frelu", "frelu", "relu"))
    return spec.with_stages((*spec.stages[:3], stage, *spec.stages[4:]))


CASES = {
    **{f"{name}-fmnist": (lambda name=name: zoo.base(name, 1, 28, 10)) for name in zoo.BASES},
    **{f"{name}-224": (lambda name=name: zoo.base(name, 3, 224, 1000)) for name in zoo.BASES},
    "mobilenet-scaled": lambda: scale(zoo.base("mobilenet"), 1.5, 1.3, 1.2),
    "mobilenet-frelu": lambda: apply_variant(zoo.base("mobilenet"), "frelu"),
    "mobilenet-mask": _masked_mobilenet,
    "resnet50-flgc4": lambda: apply_variant(zoo.base("resnet50"), "flgc:4"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_footprint_matches_built_model(case: str) -> None:
    spec = CASES[case]()
    model = build(spec)
    fp = footprint(spec)
    assert fp.params == count_params(model)
    assert fp.activations == count_activations(model, spec.input_shape)


def huge() -> NetSpec:
    return scale(zoo.base("mobilenet"), *compound(1.2, 1.1, 1.15, 50))


def test_huge_network_is_refused_without_building() -> None:
    spec = huge()
    fp = footprint(spec)
    assert fp.params > 10**9 and fp.activations > 10**12
    with pytest.raises(UserError) as caught:
        check_fits(spec, batch=64, training=True)
    message = str(caught.value)
    assert "\n" not in message and "bytes" in message and spec.name in message


def test_small_network_fits_and_tiny_memory_refuses() -> None:
    spec = zoo.base("mobilenet", 1, 28, 10)
    assert check_fits(spec, batch=64, training=True, available=10**12) == footprint(spec)
    assert isinstance(footprint(spec), Footprint)
    with pytest.raises(UserError, match="bytes"):
        check_fits(spec, available=1000)


def test_available_memory_is_positive_or_unknown() -> None:
    memory = available_memory()
    assert memory is None or memory > 0
