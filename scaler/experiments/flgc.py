"""`scaler flgc`: dense, fixed groups, FLGC and FLGC with duplication as the number of groups grows, over seeds."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from scaler.nn.flgc import FLGCConv2d, duplication_extra, flgc_layers, grouped_macs
from scaler.run import Log, Setup, evaluate_model
from scaler.spec import DUPLICATE_TOP_K, GROUPING_ARMS, NetSpec
from scaler.stats import accuracy_interval, mean_interval, paired_by_seed
from scaler.train import recalibrated_accuracy
from scaler.variants import apply_variant

ARMS = GROUPING_ARMS
PROBE_RULES = ("weight", "logit", "random")
BATCH_LATENCY = 32
RUNS_FILE = "flgc_runs.csv"


def variant_of(arm: str, groups: int, top_k: int = DUPLICATE_TOP_K, spatial: bool = False) -> str:
    """The variant string of an arm at `groups` groups."""
    if arm == "dense":
        return "relu"
    name = {"fixed": f"fixed:{groups}", "flgc": f"flgc:{groups}", "flgc-dup": f"flgc-dup:{groups}"}[arm]
    if arm == "flgc-dup" and top_k != DUPLICATE_TOP_K:
        name += f":{top_k}"
    return name + ("+spatial" if spatial else "")


def plan(
    groups: list[int],
    seeds: list[int],
    top_k: int = DUPLICATE_TOP_K,
    spatial: bool = False,
    arms: tuple[str, ...] = ARMS,
) -> pd.DataFrame:
    """Every arm at every G > 1 (dense once, at G = 1) on every seed, seed by seed so a cut run has whole seeds."""
    rows = []
    for seed in seeds:
        for arm in arms:
            for g in [1] if arm == "dense" else sorted({g for g in groups if g > 1}):
                rows.append({"arm": arm, "groups": g, "variant": variant_of(arm, g, top_k, spatial), "seed": seed})
    return pd.DataFrame(rows)


def layer_rows(model: nn.Module) -> list[dict[str, Any]]:
    """Per FLGC layer: shape, channels and filters moved, duplicated maps, duplication margin, group sizes."""
    return [
        {
            "layer": name,
            "in_channels": m.in_channels,
            "out_channels": m.out_channels,
            "kernel": m.kernel_size,
            "moved": m.moved(),
            "duplicated": m.duplicated_channels(),
            "duplication_margin": round(m.duplication_margin(), 4),
            "group_sizes": " ".join(f"{n_in}x{n_out}" for n_in, n_out in m.group_sizes()),
        }
        for name, m in model.named_modules()
        if isinstance(m, FLGCConv2d)
    ]


def with_duplicates(model: nn.Module, rule: str, generator: torch.Generator) -> tuple[nn.Module, int]:
    """A copy of a trained plain-FLGC model whose frozen groups gain the duplicates `rule` picks, and their count.

    `weight` and `logit` apply the top-k-mean rule with that score; `random` adds as many duplicates per layer
    as `weight` does, drawn uniformly from the non-member (channel, group) pairs.
    """
    probe = copy.deepcopy(model)
    added = 0
    for layer in flgc_layers(probe):
        member_in, member_out = layer.learned()
        layer.score = "weight" if rule == "random" else rule
        extra = duplication_extra(layer.scores(member_out), member_in, layer.top_k)
        if rule == "random":
            candidates = (~member_in).flatten().nonzero().flatten()
            chosen = candidates[torch.randperm(len(candidates), generator=generator)[: int(extra.sum())]]
            extra = torch.zeros_like(member_in).flatten().index_fill_(0, chosen, True).view_as(member_in)
        layer.frozen_in.copy_(member_in | extra)
        layer.frozen_out.copy_(member_out)
        layer.frozen = True
        added += int(extra.sum())
    return probe, added


def probe_rows(model: nn.Module, spec: NetSpec, setup: Setup, seed: int) -> list[dict[str, Any]]:
    """Zero-shot duplication on a trained plain-FLGC model: validation accuracy and FLGC MACs with each rule's
    duplicates.

    Which score finds the maps worth duplicating: each rule's duplicates are switched on with the weights the
    straight-through gradient trained, BN statistics are recomputed, and the model is validated, beside the
    model as trained (`none`) and as many random duplicates.
    """
    assert setup.dataset is not None
    config = setup.config.train
    rows = []
    generator = torch.Generator().manual_seed(seed)
    for rule in ("none", *PROBE_RULES):
        probe, added = (copy.deepcopy(model), 0) if rule == "none" else with_duplicates(model, rule, generator)
        probe = probe.to("cpu").to(memory_format=torch.contiguous_format)
        rows.append(
            {
                "rule": rule,
                "duplicated": added,
                "flgc_macs": grouped_macs(probe, spec.input_shape),
                "val_acc": recalibrated_accuracy(probe, setup.dataset, spec.resolution, config),
            }
        )
    return rows


def fingerprint(setup: Setup, top_k: int, spatial: bool) -> str:
    """What makes two runs' rows comparable: base, width, data, training config, top-k, spatial grouping."""
    config = setup.config
    keys = {
        "base": config.base,
        "width": config.width,
        "dataset": config.dataset,
        "subset": config.subset,
        "val_size": config.val_size,
        "test_size": config.test_size,
        "data_seed": config.data_seed,
        "train": {k: v for k, v in asdict(replace(config.train, seed=0)).items() if k not in ("threads", "device")},
        "top_k": top_k,
        "spatial": spatial,
    }
    return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run(
    points: pd.DataFrame,
    setup: Setup,
    top_k: int = DUPLICATE_TOP_K,
    spatial: bool = False,
    log: Log = print,
    probe: bool = True,
) -> dict[str, pd.DataFrame]:
    """flgc.csv (one row per arm, G, seed), flgc_summary.csv, flgc_layers.csv and flgc_probe.csv.

    Each row is saved to flgc_runs.csv as it finishes, so an interrupted study goes on where it stopped.
    """
    trains = setup.dataset is not None
    key = fingerprint(setup, top_k, spatial)
    runs_path = setup.folder / RUNS_FILE
    layers_path, probe_path = setup.folder / "flgc_layers_runs.csv", setup.folder / "flgc_probe_runs.csv"
    earlier, layers, probes = (
        _read(path, key) if trains else pd.DataFrame() for path in (runs_path, layers_path, probe_path)
    )
    rows: list[dict[Any, Any]] = earlier.to_dict("records")
    done = {(r["arm"], int(r["groups"]), int(r["seed"])) for r in rows}
    for point in points.to_dict("records"):
        if (point["arm"], point["groups"], point["seed"]) in done:
            log(f"{point['arm']} G={point['groups']} seed {point['seed']}: already done ({runs_path})")
            continue
        spec = apply_variant(setup.spec, point["variant"])
        train_config = replace(setup.config.train, seed=point["seed"]) if trains else False
        description = f"{point['arm']} G={point['groups']} seed {point['seed']}"
        row, model = evaluate_model(
            spec, setup, train_config, description=description, form="folded", batch_latency=BATCH_LATENCY
        )
        per_layer = layer_rows(model)
        channels = sum(layer["in_channels"] + layer["out_channels"] for layer in per_layer)
        result = (
            point
            | row.as_dict()
            | {
                "moved": round(sum(layer["moved"] for layer in per_layer) / channels, 4) if channels else 0.0,
                "duplicated": sum(layer["duplicated"] for layer in per_layer),
                "seed": point["seed"],  # an untrained (profiled) row keeps its planned seed
                "fingerprint": key,
            }
        )
        result.pop("val_curve")
        rows.append(result)
        tag = {"arm": point["arm"], "groups": point["groups"], "seed": point["seed"], "fingerprint": key}
        layers = pd.concat([layers, pd.DataFrame([tag | layer for layer in per_layer])], ignore_index=True)
        if trains and probe and point["arm"] == "flgc":
            probed = probe_rows(model, spec, setup, point["seed"])
            probes = pd.concat([probes, pd.DataFrame([tag | p for p in probed])], ignore_index=True)
        if trains:
            setup.folder.mkdir(parents=True, exist_ok=True)
            _merge(runs_path, pd.DataFrame(rows), key)
            _merge(layers_path, layers, key)
            _merge(probe_path, probes, key)
        accuracy = f"test_acc {row.test_acc:.4f} in {row.train_seconds:.0f} s" if row.trained else "untrained"
        log(
            f"{description}: {accuracy}, {row.macs / 1e6:.2f} M MACs, moved {result['moved']:.1%}, "
            f"{result['duplicated']} duplicated maps"
        )
    planned = set(zip(points.arm, points.groups, points.seed))
    frame, layers, probes = (_planned(part, planned) for part in (pd.DataFrame(rows), layers, probes))
    frame = frame.sort_values(["seed", "groups", "arm"], key=_arm_order).reset_index(drop=True)
    return {
        "flgc": frame,
        "flgc_summary": summarise(frame),
        "flgc_layers": layers,
        "flgc_probe": summarise_probe(probes),
    }


def _planned(frame: pd.DataFrame, planned: set[tuple[str, int, int]]) -> pd.DataFrame:
    """The rows of the planned (arm, G, seed) triples, without the fingerprint column."""
    if frame.empty:
        return frame
    keep = [(arm, int(g), int(seed)) in planned for arm, g, seed in zip(frame.arm, frame.groups, frame.seed)]
    return frame[keep].drop(columns=["fingerprint"], errors="ignore").reset_index(drop=True)


def _arm_order(column: pd.Series) -> pd.Series:
    return column.map(ARMS.index) if column.name == "arm" else column


def _read(path: Path, key: str) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame()
    frame = pd.read_csv(path)
    return frame[frame.fingerprint == key] if "fingerprint" in frame else pd.DataFrame()


def _merge(path: Path, frame: pd.DataFrame, key: str) -> None:
    """Write `frame` (this fingerprint's rows) to `path`, keeping rows of other fingerprints already there."""
    if frame.empty:
        return
    others = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    if "fingerprint" in others:
        others = others[others.fingerprint != key]
    pd.concat([others, frame], ignore_index=True).to_csv(path, index=False)


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Per arm and G: mean test accuracy with its 95 % t CI, and paired differences (by seed) to dense and FLGC."""
    if "test_acc" not in frame or frame.test_acc.isna().all():
        return frame.groupby(["arm", "groups"], sort=False)[["macs", "params", "latency_ms"]].median().reset_index()
    by_seed = frame.pivot_table(index="seed", columns=["arm", "groups"], values="test_acc")
    rows = []
    for (arm, groups), part in frame.groupby(["arm", "groups"], sort=False):
        mean, low, high = accuracy_interval(part.test_acc.tolist())
        row: dict[str, Any] = {
            "arm": arm,
            "groups": groups,
            "seeds": len(part),
            "test_acc": mean,
            "ci_low": low,
            "ci_high": high,
            "macs": part.macs.mean(),
            "moved": part.moved.mean(),
            "duplicated": part["duplicated"].mean(),
            "latency_ms": part.latency_ms.median(),
            "latency_batch_ms": part.latency_batch_ms.median(),
        }
        for reference, ref_groups in (("dense", 1), ("flgc", groups)):
            column = f"vs_{reference}"
            diff = None if arm == reference else paired_by_seed(by_seed, (reference, ref_groups), (arm, groups))
            if diff is not None:
                row |= {column: diff.mean, f"{column}_low": diff.low, f"{column}_high": diff.high}
        rows.append(row)
    return pd.DataFrame(rows)


def summarise_probe(probes: pd.DataFrame) -> pd.DataFrame:
    """Per G and rule: duplicates added, MACs in FLGC layers, and the validation gain over the trained model,
    paired by seed."""
    if probes.empty:
        return probes
    rows = []
    for (groups, rule), part in probes[probes.rule != "none"].groupby(["groups", "rule"]):
        none = probes[(probes.rule == "none") & (probes.groups == groups)].set_index("seed").val_acc
        gains = (part.set_index("seed").val_acc - none).dropna().tolist()
        mean, low, high = mean_interval(gains) if gains else (float("nan"),) * 3
        rows.append(
            {
                "groups": groups,
                "rule": rule,
                "seeds": len(gains),
                "duplicated": part["duplicated"].mean(),
                "flgc_macs": part.flgc_macs.mean(),
                "val_gain": mean,
                "val_gain_low": low,
                "val_gain_high": high,
            }
        )
    return pd.DataFrame(rows)
