"""FLGC as a variant of whole networks: trains, deploys to the same outputs, costs fewer MACs; `scaler flgc` runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from scaler.cli import main
from scaler.complexity import count_macs
from scaler.data import Dataset, Split
from scaler.nn.build import build
from scaler.nn.deploy import deploy
from scaler.nn.flgc import FLGCConv2d, assignment_parameters
from scaler.scaling import scale
from scaler.train import TrainConfig, make_optimizer, train
from scaler.variants import apply_variant
from scaler.zoo import base


def small_resnet(variant: str):
    return apply_variant(scale(base("resnet50", 3, 32, 10), 1.0, 0.25, 1.0), variant)


@pytest.mark.parametrize("variant", ["flgc:4", "flgc-dup:3"])
def test_flgc_resnet_trains_and_deploys(variant: str) -> None:
    torch.manual_seed(0)
    spec = small_resnet(variant)
    assert all(stage.groups > 1 for stage in spec.stages)
    model = build(spec)
    layers = [m for m in model.modules() if isinstance(m, FLGCConv2d)]
    assert len(layers) == 2 * sum(stage.repeats for stage in spec.stages)
    for layer in layers:
        layer.in_logits.data.normal_(0, 1.5)
        layer.out_logits.data.normal_(0, 1.5)
    x = torch.randn(4, 3, 32, 32)
    model(x).logsumexp(1).sum().backward()
    assert all(layer.in_logits.grad is not None and layer.in_logits.grad.abs().sum() > 0 for layer in layers)
    model.eval()
    with torch.no_grad():
        deployed = deploy(model, shifts=False, compile=False)
        torch.testing.assert_close(deployed(x), model(x), atol=1e-4, rtol=1e-4)
    dense = count_macs(build(small_resnet("relu")), spec.input_shape)
    per_group = count_macs(model, spec.input_shape)  # FLGC layers counted as sum_g |in_g| |out_g| k^2 H W
    assert per_group <= count_macs(deployed, spec.input_shape) < dense  # the fastest strategy may pad groups


def test_flgc_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = [
        "flgc",
        "--groups",
        "1",
        "3",
        "--top-k",
        "2",
        "--width",
        "0.25",
        "--subset",
        "128",
        "--val-size",
        "64",
        "--test-size",
        "200",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--no-progress",
        "--out",
        "f",
    ]
    assert main(args) == 0
    frame = pd.read_csv(tmp_path / "studies" / "f" / "flgc.csv")
    assert frame.variant.tolist() == ["dense", "flgc:3", "flgc-dup:3:2"]
    assert (tmp_path / "studies" / "f" / "run.json").read_text().count('"command": "scaler flgc') == 1
    assert frame.test_acc.between(0, 1).all()
    assert (frame.macs[1:] < frame.macs[0]).all()
    assert frame.reassigned.between(0, 1).all()
    layers = pd.read_csv(tmp_path / "studies" / "f" / "flgc_layers.csv")
    assert set(layers.variant) == {"flgc:3", "flgc-dup:3:2"}
    per_variant = layers.groupby("variant").duplicated_channels.sum()
    assert (
        per_variant["flgc:3"] == 0
        and per_variant.to_dict() == frame.set_index("variant").duplicated_channels[1:].to_dict()
    )
    assert (tmp_path / "studies" / "f" / "flgc.png").exists()


def test_seeded_build_pairs_variants() -> None:
    """Plain and duplicating FLGC start from the same weights and logits, so their difference is duplication's."""
    plain, dup = (build(small_resnet(v), seed=3) for v in ("flgc:4", "flgc-dup:4"))
    for (name, a), (_, b) in zip(plain.state_dict().items(), dup.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    other = build(small_resnet("flgc:4"), seed=4)
    assert not torch.equal(next(iter(other.parameters())), next(iter(plain.parameters())))


def test_duplication_top_k_variant() -> None:
    spec = small_resnet("flgc-dup:4:1")
    assert {(s.groups, s.duplicate, s.duplicate_top_k) for s in spec.stages} == {(4, True, 1)}
    layer = next(m for m in build(spec).modules() if isinstance(m, FLGCConv2d))
    assert layer.top_k == 1 and layer.reassigned() == 0
    layer.in_logits.data[0] = torch.tensor([0.0, 5.0, 0.0, 0.0])
    assert layer.reassigned() == 1


def random_dataset(n: int = 128, size: int = 16) -> Dataset:
    """Random 3-channel images with random labels (enough to take optimiser steps)."""
    generator = torch.Generator().manual_seed(0)
    split = Split(
        torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator),
        torch.randint(0, 10, (n,), generator=generator),
    )
    return Dataset("random", split, split, split, 10, "generated")


def test_assignment_logits_learn_at_their_own_rate() -> None:
    """FLGC logits get their own optimiser group (no weight decay, lr_scale).

    Scale 0 freezes them while weights learn; scale 100 moves them over 20x as far as scale 1.
    """
    spec = replace(small_resnet("flgc:4"), resolution=16)
    model = build(spec, seed=0)
    groups = make_optimizer(model, TrainConfig()).param_groups
    logits = {id(p) for p in assignment_parameters(model)}
    assert [g["lr_scale"] for g in groups] == [1.0, 1.0, TrainConfig().assignment_lr_scale]
    assert {id(p) for p in groups[2]["params"]} == logits and groups[2]["weight_decay"] == 0.0
    assert not any(id(p) in logits for g in groups[:2] for p in g["params"])

    config = TrainConfig(epochs=1, batch_size=32, warmup_steps=0, precise_bn=0, weight_decay=0.0, seed=0)
    moved = {}
    for scale_factor in (0.0, 1.0, 100.0):
        model = build(spec, seed=0)
        before = [p.detach().clone() for p in model.parameters()]
        start = torch.cat([p.detach().flatten() for p in assignment_parameters(model)])
        train(model, random_dataset(), 16, replace(config, assignment_lr_scale=scale_factor), progress=False)
        moved[scale_factor] = (
            (torch.cat([p.detach().flatten() for p in assignment_parameters(model)]) - start).abs().max().item()
        )
        assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert moved[0.0] == 0.0 and moved[1.0] > 0
    assert moved[100.0] > 20 * moved[1.0]
