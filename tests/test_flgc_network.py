"""Grouping as a variant of whole networks (FLGC, fixed, spatial): trains, freezes, deploys to the same outputs,
costs fewer MACs; `scaler flgc` runs its four arms over seeds and resumes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from notebook_runner import run_notebook

from scaler.cli import main
from scaler.experiments.flgc import plan
from scaler.model.complexity import count_macs, count_params
from scaler.model.nn.build import build
from scaler.model.nn.deploy import deploy
from scaler.model.nn.flgc import FLGCConv2d, assignment_parameters, flgc_layers, freeze_assignments
from scaler.model.nn.flgc_deploy import DeployedFLGC
from scaler.model.scaling import scale
from scaler.model.spec import SpecError
from scaler.model.variants import apply_variant, grouping_variant
from scaler.model.zoo import base
from scaler.study.run import grouped_share, measure
from scaler.training.data import Dataset, Split
from scaler.training.train import TrainConfig, make_optimizer, train


def small_resnet(variant: str):
    return apply_variant(scale(base("resnet50", 3, 32, 10), 1.0, 0.25, 1.0), variant)


@pytest.mark.parametrize("variant", ["flgc:4", "flgc-dup:2", "flgc-dup:4+spatial"])
def test_flgc_resnet_trains_and_deploys(variant: str) -> None:
    torch.manual_seed(0)
    spec = small_resnet(variant)
    assert all(stage.groups > 1 for stage in spec.stages)
    model = build(spec)
    layers = [m for m in model.modules() if isinstance(m, FLGCConv2d)]
    spatial = variant.endswith("spatial")
    assert len(layers) == (3 if spatial else 2) * sum(stage.repeats for stage in spec.stages)
    for layer in layers:
        layer.in_logits.data.normal_(0, 1.5)
        layer.out_logits.data.normal_(0, 1.5)
        layer.score = "weight"  # duplicates on an untrained network (the logit rule waits for learned logits)
    x = torch.randn(4, 3, 32, 32)
    model(x).logsumexp(1).sum().backward()
    assert all(layer.in_logits.grad is not None and layer.in_logits.grad.abs().sum() > 0 for layer in layers)
    freeze_assignments(model)
    assert (sum(layer.duplicated_channels() for layer in layers) > 0) == variant.startswith("flgc-dup")
    for layer in layers:
        layer.weight.data += 0.01 * torch.randn_like(layer.weight)  # duplicated connections trained away from 0
    model.eval()
    with torch.no_grad():
        deployed = deploy(model, shifts=False, compile=False)
        torch.testing.assert_close(deployed(x), model(x), atol=1e-4, rtol=1e-4)
    grouped = [m for m in deployed.modules() if isinstance(m, DeployedFLGC)]
    handed_on = [m for m in grouped if not m.permute_outputs]
    blocks = sum(stage.repeats for stage in spec.stages)
    assert len(handed_on) == (2 if spatial else 1) * blocks  # every grouped conv but a block's last hands rows on
    if variant == "flgc:4":  # no duplicates: each block's last conv reads the dense 3x3's filters in its own order
        assert not any(any(m.gather_inputs) for m in grouped[1::2])
    dense = count_macs(build(small_resnet("relu")), spec.input_shape)
    per_group = count_macs(model, spec.input_shape)  # FLGC layers counted as sum_g |in_g| |out_g| k^2 H W
    assert per_group <= count_macs(deployed, spec.input_shape) < dense  # the fastest strategy may pad groups


def test_flgc_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Five arms, two seeds: one row per (arm, G, seed), CIs and paired differences (to dense, to dense-thin at
    equal MACs, to FLGC), duplication that leaves validation accuracy where it was, the moved share over training;
    a rerun takes every run from the engine's store and trains nothing."""
    monkeypatch.chdir(tmp_path)
    args = "flgc --groups 2 --seeds 2 --top-k 2 --width 0.125 --subset 64 --val-size 32 --test-size 32"
    args += " --epochs 1 --batch-size 32 --no-progress --out f"
    assert main(args.split()) == 0
    folder = tmp_path / "studies" / "f"
    frame = pd.read_csv(folder / "flgc.csv")
    arms = (("dense", 1), ("dense-thin", 2), ("fixed", 2), ("flgc", 2), ("flgc-dup", 2))
    assert list(zip(frame.arm, frame.groups, frame.seed)) == [(arm, g, seed) for seed in (0, 1) for arm, g in arms]
    assert {"arm", "groups", "seed", "width", "test_acc", "macs", "moved", "moved_trace", "duplicated"} <= set(frame)
    assert frame.test_acc.between(0, 1).all() and frame.moved.between(0, 1).all()
    assert (frame[frame.arm != "dense"].macs < frame.macs[0]).all()
    thin, flgc = (frame[frame.arm == arm].macs.mean() for arm in ("dense-thin", "flgc"))
    assert frame[frame.arm == "dense-thin"].width.lt(1).all() and abs(thin / flgc - 1) < 0.25
    assert (frame[frame.arm.isin(["dense", "dense-thin", "fixed", "flgc"])]["duplicated"] == 0).all()
    dup = frame[frame.arm == "flgc-dup"]
    assert (dup.val_before_dup == dup.val_after_dup).all() and dup.macs.max() <= 1.1 * flgc
    assert dup.variant.str.endswith("+cap:0.1").all()
    assert frame[frame.arm != "flgc-dup"].val_before_dup.isna().all()
    assert frame[frame.arm == "flgc"].moved_trace.str.startswith("0:0.0000").all()
    summary = pd.read_csv(folder / "flgc_summary.csv").set_index("arm")
    assert (summary.seeds == 2).all() and (summary.acc_lo <= summary.test_acc).all()
    assert {"vs_dense", "vs_thin", "vs_thin_lo", "vs_flgc_lo", "vs_dense_p_holm", "floor"} <= set(summary.columns)
    assert summary.floor.gt(0).all() and summary.dup_val_change["flgc-dup"] == 0
    assert summary.latency_spread.ge(0).all()
    assert not (folder / "flgc_probe.csv").exists()
    layers = pd.read_csv(folder / "flgc_layers.csv")
    assert set(layers.arm) == {"flgc", "flgc-dup"} and layers.moved_trace.notna().all()
    assert (layers["duplicated"] <= layers.duplicates_by_rule).all()
    assert (folder / "flgc.png").exists() and (folder / "run.json").read_text().count('"command": "scaler flgc') == 1
    assert "dense-thin at G=2: width x" in capsys.readouterr().out
    assert main(args.split()) == 0
    assert "10 of 10 planned runs already in" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(folder / "flgc.csv"), frame)
    assert main(["report", "--study", "f"]) == 0
    report = (folder / "report.md").read_text()
    assert "vs dense-thin (equal MACs)" in report and "it spreads by up to" in report
    assert "| moved | maps duplicated | latency ms |" in report
    run_notebook("flgc.ipynb", folder)


def test_flgc_profile_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """--profile-only trains nothing and still writes every arm's deployed cost, with the share of MACs grouped."""
    monkeypatch.chdir(tmp_path)
    assert main("flgc --groups 2 --width 0.125 --profile-only --spatial --no-progress --out p".split()) == 0
    assert "of the dense MACs are in grouped convolutions" in capsys.readouterr().out
    written = {path.name for path in (tmp_path / "studies" / "p").iterdir()}
    assert {"flgc.csv", "flgc_summary.csv", "flgc.png", "run.json"} <= written, written
    frame = pd.read_csv(tmp_path / "studies" / "p" / "flgc.csv")
    assert sorted(frame.arm) == ["dense", "dense-thin", "fixed", "flgc", "flgc-dup"] and (frame.seed == 0).all()
    assert (
        not frame.trained.any() and (frame[frame.arm != "dense"].macs < frame[frame.arm == "dense"].macs.iloc[0]).all()
    )


def test_flgc_plan_pairs_seeds() -> None:
    points = plan([4, 2, 1], [5, 6], top_k=1, spatial=True, thin_widths={2: 0.7, 4: 0.5})
    assert len(points) == 2 * (1 + 4 * 2)
    assert points[points.seed == 5].width.tolist() == [1.0, 0.7, 0.5] + [1.0] * 6
    assert points[points.seed == 5].variant.tolist() == [
        "relu",
        "relu",
        "relu",
        "fixed:2+spatial",
        "fixed:4+spatial",
        "flgc:2+spatial",
        "flgc:4+spatial",
        "flgc-dup:2:1+spatial",
        "flgc-dup:4:1+spatial",
    ]
    free = plan([2], [0], arms=("fixed", "flgc", "flgc-dup"), free=True, cap=0.1)
    assert free.variant.tolist() == ["fixed:2", "flgc:2+free", "flgc-dup:2+free+cap:0.1"]


def test_fixed_and_spatial_variants() -> None:
    """fixed:G is a contiguous grouped nn.Conv2d; spatial groups the bottleneck's 3x3 conv too, so a larger share
    of the MACs is grouped; both refuse, in one line, what they cannot build."""
    fixed = build(small_resnet("fixed:4"))
    convs = [m for m in fixed.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 4]
    assert convs and all(m.kernel_size == (1, 1) for m in convs)
    spatial = build(small_resnet("flgc:4+spatial"), seed=0)
    kernels = sorted({m.kernel_size for m in flgc_layers(spatial)})
    assert kernels == [1, 3]
    x = torch.randn(2, 3, 32, 32)
    spatial.eval()
    with torch.no_grad():
        torch.testing.assert_close(deploy(spatial, shifts=False, compile=False)(x), spatial(x), atol=1e-4, rtol=1e-4)
    dense = small_resnet("relu")
    pointwise_share, all_share = (
        grouped_share(dense, small_resnet("flgc:4")),
        grouped_share(dense, small_resnet("flgc:4+spatial")),
    )
    assert 0 < pointwise_share < all_share < 1
    assert grouped_share(dense, small_resnet("fixed:4")) == pytest.approx(pointwise_share)
    free = small_resnet("flgc:4+free")
    assert {s.equal_groups for s in free.stages} == {False}
    assert not any(layer.balanced for layer in flgc_layers(build(free)))
    assert all(layer.balanced for layer in flgc_layers(spatial))
    assert {s.equal_groups for s in small_resnet("fixed:4").stages} == {True}
    with pytest.raises(SpecError, match="after flgc:G or flgc-dup:G"):
        small_resnet("fixed:4+free")
    with pytest.raises(SpecError, match="divisible"):
        build(small_resnet("fixed:3"))
    with pytest.raises(SpecError, match="after flgc:G or fixed:G"):
        small_resnet("spatial")
    with pytest.raises(SpecError, match="after flgc:G or fixed:G"):
        apply_variant(base("mobilenet", 1, 28, 10), "flgc:2+spatial")


def test_training_freezes_assignments_at_the_configured_fraction() -> None:
    """Logits learn until `assignment_freeze` of the steps, then stay; duplicates appear only at the freeze."""
    spec = replace(small_resnet("flgc-dup:4"), resolution=16)
    config = TrainConfig(epochs=1, batch_size=16, warmup_steps=0, precise_bn=0, seed=0, assignment_lr_scale=100.0)
    final = {}
    for fraction in (0.0, 0.5, 1.0):
        model = build(spec, seed=0)
        start = torch.cat([p.detach().flatten() for p in assignment_parameters(model)])
        train(model, random_dataset(), 16, replace(config, assignment_freeze=fraction), progress=False)
        assert all(layer.frozen for layer in flgc_layers(model))
        final[fraction] = torch.cat([p.detach().flatten() for p in assignment_parameters(model)]) - start
    assert final[0.0].abs().max() == 0
    assert 0 < final[0.5].abs().max() and final[0.5].abs().max() < final[1.0].abs().max()


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
    assert layer.top_k == 1 and layer.moved() == 0
    layer.in_logits.data[0, (int(layer.start_in[0]) + 1) % 4] += 10.0
    assert layer.moved() >= 2  # equal groups: channel 0 displaces a member of the group it joins
    free = next(m for m in build(small_resnet("flgc-dup:4:1+free")).modules() if isinstance(m, FLGCConv2d))
    free.in_logits.data[0, (int(free.start_in[0]) + 1) % 4] += 10.0
    assert free.moved() == 1


def test_measured_cost_counts_real_groups_not_padding() -> None:
    """Uneven groups (duplicates) make the deployed kernel pad to the largest group: measure times that form but
    counts MACs and parameters group by group, as the duplication cap and the equal-MACs controls do."""
    torch.manual_seed(1)
    spec = small_resnet("flgc-dup:4+spatial")
    model = build(spec)
    for layer in flgc_layers(model):
        layer.in_logits.data.normal_(0, 1.5)
    freeze_assignments(model)
    assert len({n_in for layer in flgc_layers(model) for n_in, _ in layer.group_sizes()}) > 1
    model.eval()
    cost = measure(spec, model, form="folded", runs=1)
    padded = deploy(model, shifts=False, compile=False)
    per_group = deploy(model, shifts=False, compile=False, strategy="per_group")
    assert cost.macs == count_macs(model, spec.input_shape) < count_macs(padded, spec.input_shape)
    assert cost.params == count_params(per_group) < count_params(padded)


def test_duplication_cap_variant() -> None:
    """cap:S bounds duplication on the stages that duplicate; elsewhere, or not a share, it is a SpecError."""
    spec = small_resnet("flgc-dup:4+spatial+cap:0.1")
    assert {(s.duplicate, s.duplicate_cap) for s in spec.stages} == {(True, 0.1)}
    assert {m.duplicate_cap for m in build(spec).modules() if isinstance(m, FLGCConv2d)} == {0.1}
    for bad in ("flgc:4+cap:0.1", "flgc-dup:4+cap:x", "flgc-dup:4+cap:-1", "flgc-dup:4+cap:inf"):
        with pytest.raises(SpecError):
            small_resnet(bad)
    assert grouping_variant("flgc-dup", 4, spatial=True, cap=0.1) == "flgc-dup:4+spatial+cap:0.1"
    assert grouping_variant("flgc", 4, cap=0.1) == "flgc:4"


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

    config = TrainConfig(
        epochs=1, batch_size=32, warmup_steps=0, precise_bn=0, weight_decay=0.0, seed=0, assignment_freeze=1.0
    )
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
