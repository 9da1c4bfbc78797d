"""Two MACs counters, one convention: fvcore's TorchScript trace and torch's own FlopCounterMode agree on every base
and main variant, and a trace that fails falls back to torch's count with one line."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import scaler.model.complexity as complexity
from scaler.cli import main
from scaler.model.complexity import count_activations, count_macs
from scaler.model.nn.build import build
from scaler.model.nn.flgc_deploy import deploy_flgc
from scaler.model.scaling import scale
from scaler.model.spec import NetSpec
from scaler.model.variants import apply_variant
from scaler.model.zoo import BASES
from scaler.model.zoo import base as zoo_base

SIZES = {"fashion-mnist": (1, 28, 10), "224 px": (3, 224, 1000)}
VARIANTS = [  # FReLU everywhere, Fused-MBConv, FLGC (masked: counted as deployed), fixed groups, grouped 3x3s
    *(("mobilenet", v) for v in ("frelu", "fused", "flgc:4", "fixed:4")),
    *(("resnet50", v) for v in ("frelu", "flgc:4", "fixed:4", "flgc:4+spatial")),
]


def spec_of(name: str, size: str, variant: str = "relu", width: float = 1.0) -> NetSpec:
    """A zoo base at one of SIZES, scaled in width and with a variant applied."""
    spec = zoo_base(name, *SIZES[size])
    spec = spec if width == 1.0 else scale(spec, 1.0, width, 1.0)
    return apply_variant(spec, variant)


def both(model: nn.Module, spec: NetSpec) -> tuple[int, int]:
    """(fvcore, torch) MACs of a model for one image."""
    return count_macs(model, spec.input_shape, "fvcore"), count_macs(model, spec.input_shape, "torch")


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("name", sorted(BASES))
def test_the_counters_agree_on_every_base(name: str, size: str) -> None:
    spec = spec_of(name, size)
    fvcore, counted = both(build(spec), spec)
    assert fvcore > 0 and counted == pytest.approx(fvcore, rel=0.005), (fvcore, counted)


@pytest.mark.parametrize("name,variant", VARIANTS, ids=[f"{n}-{v}" for n, v in VARIANTS])
def test_the_counters_agree_on_the_main_variants(name: str, variant: str) -> None:
    spec = spec_of(name, "fashion-mnist", variant, width=0.25)
    fvcore, counted = both(build(spec), spec)
    assert counted == pytest.approx(fvcore, rel=0.005), (fvcore, counted)


def test_a_deployed_flgc_network_counts_as_its_masked_form() -> None:
    """The masked training form is counted as deployed (one conv per group) by both counters; the deployed model
    itself counts the same."""
    spec = spec_of("resnet50", "fashion-mnist", "flgc:4", width=0.25)
    model = build(spec).eval()
    deployed = deploy_flgc(model, "per_group")
    masked = both(model, spec)
    assert both(deployed, spec) == pytest.approx(masked, rel=0.005)
    dense = spec_of("resnet50", "fashion-mnist", width=0.25)
    assert masked[1] < count_macs(build(dense), dense.input_shape, "torch")


def test_a_failing_trace_falls_back_to_torch_with_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    spec = spec_of("mobilenet", "fashion-mnist", width=0.25)
    model = build(spec)
    expected = count_macs(model, spec.input_shape, "torch")
    activations = count_activations(model, spec.input_shape)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("tracing is gone in this torch")

    monkeypatch.setattr(complexity, "FlopCountAnalysis", broken)
    monkeypatch.setattr(complexity, "ActivationCountAnalysis", broken)
    capsys.readouterr()
    assert count_macs(model, spec.input_shape) == expected
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "fvcore could not count the MACs of Network" in lines[0], lines
    assert "tracing is gone" in lines[0] and "torch's own counter" in lines[0]
    assert count_activations(model, spec.input_shape) == activations, "hooks count what fvcore counts"
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_profile_with_either_counter_gives_the_same_macs(capsys) -> None:
    rows = {}
    for counter in ("fvcore", "torch"):
        args = ["profile", "--base", "mobilenet", "--phi", "0", "1", "--runs", "1", "--json", "--counter", counter]
        assert main(args) == 0
        rows[counter] = json.loads(capsys.readouterr().out)
    assert [r["macs"] for r in rows["torch"]] == pytest.approx([r["macs"] for r in rows["fvcore"]], rel=0.005)
    with pytest.raises(SystemExit) as refused:
        main(["profile", "--counter", "ptflops"])
    assert refused.value.code == 2


def test_the_torch_counter_counts_multiply_adds_not_flops() -> None:
    """A single 3x3 conv, 4 -> 8 channels on 10x10 with padding 1: 8 * 4 * 9 * 100 multiply-adds."""
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, bias=False))
    assert complexity.torch_macs(model, (4, 10, 10)) == 8 * 4 * 9 * 100 == complexity.fvcore_macs(model, (4, 10, 10))
    with torch.no_grad():
        grouped = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=4, bias=False))
        assert complexity.torch_macs(grouped, (4, 10, 10)) == 8 * 1 * 9 * 100
