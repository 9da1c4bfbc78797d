"""Experiments built on one measure-and-train step: scale, ladder, compare-scaling."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from scaler.data import Dataset
from scaler.errors import UserError
from scaler.guard import check_fits
from scaler.nn.build import build
from scaler.profile import profile_spec
from scaler.scaling import compound, scale
from scaler.spec import DUPLICATE_TOP_K, NetSpec
from scaler.storage import STUDIES_DIR, study_folder
from scaler.train import Progressive, TrainConfig, test_accuracy, train
from scaler.variants import apply_variant

Log = Callable[[str], None]


@dataclass(frozen=True)
class StudyInfo:
    """What a finished search tells later commands: base, dataset, variant and coefficients."""

    name: str
    base: str
    dataset: str
    alpha: float
    beta: float
    gamma: float
    folder: Path


def study_info(name: str, studies_dir: Path = STUDIES_DIR) -> StudyInfo:
    """Read studies/<name>/summary.json (written by scaler search)."""
    folder = study_folder(name, studies_dir)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise UserError(
            f"no finished search at {summary_path}; run scaler search --study {name} first, or pass --alpha/--beta/--gamma with --base"
        )
    summary = json.loads(summary_path.read_text())
    grid = summary.get("grid") or {}
    return StudyInfo(
        name,
        grid.get("base", "mobilenet"),
        grid.get("dataset", "fashion-mnist"),
        summary["alpha"],
        summary["beta"],
        summary["gamma"],
        folder,
    )


def measure_and_train(
    spec: NetSpec,
    dataset: Dataset | None,
    config: TrainConfig,
    description: str,
    progress: bool = True,
    latency_runs: int = 20,
) -> dict[str, Any]:
    """Profile a spec and, when a dataset is given, train it: one row of every experiment's frame."""
    if dataset is not None:
        check_fits(spec, config.batch_size, training=True)
    row: dict[str, Any] = profile_spec(spec, runs=latency_runs)
    if dataset is None:
        return row | {"val_acc": math.nan, "test_acc": math.nan, "train_seconds": math.nan, "trained": False}
    model = build(spec, seed=config.seed)
    result = train(model, dataset, spec.resolution, config, progress=progress, description=description)
    row.update(
        val_acc=round(result.final_val_acc, 4),
        test_acc=round(test_accuracy(model, dataset, spec.resolution, config), 4),
        train_seconds=round(result.train_seconds, 1),
        trained=True,
    )
    return row


def scale_variants(
    base: NetSpec,
    coefficients: tuple[float, float, float],
    phis: list[float],
    variants: list[str],
    dataset: Dataset | None,
    config: TrainConfig,
    train_max_phi: float,
    log: Log = print,
    progress: bool = True,
) -> pd.DataFrame:
    """One row per (variant, phi): complexity always, accuracy where phi <= train_max_phi."""
    rows = []
    for variant in variants:
        variant_base = apply_variant(base, variant)
        base_macs = None
        for phi in sorted(phis):
            d, w, r = compound(*coefficients, phi)
            spec = scale(variant_base, d, w, r)
            trains = dataset is not None and phi <= train_max_phi
            row = measure_and_train(spec, dataset if trains else None, config, f"{variant} φ={phi:g}", progress)
            base_macs = base_macs or (row["macs"] if phi == 0 else None)
            row = {"variant": variant, "phi": phi, "depth": round(d, 4), "width": round(w, 4)} | row
            row["macs_ratio"] = round(row["macs"] / base_macs, 4) if base_macs else math.nan
            row["target_ratio"] = 2.0**phi
            rows.append(row)
            acc = f"test_acc {row['test_acc']:.4f}" if row["trained"] else "not trained"
            log(
                f"{variant:>20} φ={phi:g}: {row['macs'] / 1e6:.2f} M MACs (x{row['macs_ratio']:.2f}), {row['latency_ms']:.2f} ms, {acc}"
            )
    return pd.DataFrame(rows)


def ladder(
    base: NetSpec,
    coefficients: tuple[float, float, float],
    frelu_variant: str,
    dataset: Dataset,
    config: TrainConfig,
    log: Log = print,
    progress: bool = True,
) -> pd.DataFrame:
    """The FReLU study's ladder: MobileNet, + compound scaling, + Fused-MBConv and progressive learning, + FReLU."""
    d, w, r = compound(*coefficients, 1.0)
    scaled = scale(base, d, w, r)
    fused = scale(apply_variant(base, "fused"), d, w, r)
    frelu = scale(apply_variant(apply_variant(base, "fused"), frelu_variant), d, w, r)
    progressive = replace(config, progressive=Progressive())
    steps = [
        ("0", f"{base.name}", base, config),
        (
            "1",
            f"+ compound scaling φ=1 (α={coefficients[0]}, β={coefficients[1]}, γ={coefficients[2]})",
            scaled,
            config,
        ),
        ("2", "+ Fused-MBConv early stages + progressive learning", fused, progressive),
        ("3", f"+ FReLU ({frelu_variant})", frelu, progressive),
    ]
    rows = []
    for step, description, spec, step_config in steps:
        row = {"step": step, "description": description} | measure_and_train(
            spec, dataset, step_config, f"ladder {step}", progress
        )
        rows.append(row)
        log(
            f"ladder {step} {description}: test_acc {row['test_acc']:.4f}, {row['macs'] / 1e6:.2f} M MACs, {row['latency_ms']:.2f} ms, {row['train_seconds']:.0f} s"
        )
    return pd.DataFrame(rows)


DWR_WIDTH_EXPONENT = 0.8  # Dollár et al. 2021: FLOPs exponents e_w = 0.8, e_d = e_r = 0.1


def scaling_rules(coefficients: tuple[float, float, float]) -> dict[str, Callable[[float], tuple[float, float, float]]]:
    """(d, w, r) for a FLOPs factor s under each rule of EfficientNet's comparison, plus dWr."""
    alpha, beta, gamma = coefficients
    rest = (1 - DWR_WIDTH_EXPONENT) / 2
    return {
        "depth": lambda s: (s, 1.0, 1.0),
        "width": lambda s: (1.0, math.sqrt(s), 1.0),
        "resolution": lambda s: (1.0, 1.0, math.sqrt(s)),
        "compound": lambda s: compound(alpha, beta, gamma, math.log2(s)),
        "dWr": lambda s: (s**rest, s ** (DWR_WIDTH_EXPONENT / 2), s ** (rest / 2)),
    }


def compare_scaling(
    base: NetSpec,
    coefficients: tuple[float, float, float],
    factors: list[float],
    dataset: Dataset,
    config: TrainConfig,
    log: Log = print,
    progress: bool = True,
) -> pd.DataFrame:
    """Depth-, width-, resolution-only, compound and dWr scaling at each FLOPs factor, trained alike."""
    base_row = measure_and_train(base, dataset, config, "base", progress)
    rows = [
        {"rule": "base", "factor": 1.0, "depth": 1.0, "width": 1.0, "res_mult": 1.0} | base_row | {"macs_ratio": 1.0}
    ]
    log(f"base: test_acc {base_row['test_acc']:.4f}, {base_row['macs'] / 1e6:.2f} M MACs")
    for rule, multipliers in scaling_rules(coefficients).items():
        for factor in factors:
            d, w, r = multipliers(factor)
            row = measure_and_train(scale(base, d, w, r), dataset, config, f"{rule} x{factor:g}", progress)
            row = {
                "rule": rule,
                "factor": factor,
                "depth": round(d, 4),
                "width": round(w, 4),
                "res_mult": round(r, 4),
            } | row
            row["macs_ratio"] = round(row["macs"] / base_row["macs"], 4)
            rows.append(row)
            log(f"{rule:>10} x{factor:g}: measured x{row['macs_ratio']:.2f} MACs, test_acc {row['test_acc']:.4f}")
    return pd.DataFrame(rows)


def flgc_groups(
    base: NetSpec,
    groups: list[int],
    dataset: Dataset | None,
    config: TrainConfig,
    log: Log = print,
    progress: bool = True,
    latency_runs: int = 20,
    top_k: int = DUPLICATE_TOP_K,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plain FLGC against FLGC with duplication per group count (accuracy, deployed MACs, params, latency); per-layer rows."""
    from scaler.complexity import count_macs, count_params, measure_latency
    from scaler.nn.deploy import deploy
    from scaler.nn.flgc import FLGCConv2d

    rows, layer_rows = [], []
    for g in groups:
        duplicated = f"flgc-dup:{g}" if top_k == DUPLICATE_TOP_K else f"flgc-dup:{g}:{top_k}"
        for variant in ["dense"] if g == 1 else [f"flgc:{g}", duplicated]:
            spec = base if variant == "dense" else apply_variant(base, variant)
            model = build(spec, seed=config.seed)
            row: dict[str, Any] = {"groups": g, "variant": variant, "duplicate": variant.startswith("flgc-dup")}
            if dataset is not None:
                result = train(model, dataset, spec.resolution, config, progress=progress, description=variant)
                row.update(
                    val_acc=round(result.final_val_acc, 4),
                    test_acc=round(test_accuracy(model, dataset, spec.resolution, config), 4),
                    train_seconds=round(result.train_seconds, 1),
                )
            layers = [
                {
                    "groups": g,
                    "variant": variant,
                    "layer": name,
                    "in_channels": m.in_channels,
                    "out_channels": m.out_channels,
                    "duplicated_channels": m.duplicated_channels(),
                    "duplication_margin": round(m.duplication_margin(), 4),
                    "reassigned": m.reassigned(),
                    "group_sizes": " ".join(f"{n_in}x{n_out}" for n_in, n_out in m.group_sizes()),
                }
                for name, m in model.named_modules()
                if isinstance(m, FLGCConv2d)
            ]
            layer_rows += layers
            row["duplicated_channels"] = sum(layer["duplicated_channels"] for layer in layers)
            row["duplication_margin"] = max((layer["duplication_margin"] for layer in layers), default=float("nan"))
            channels = sum(layer["in_channels"] + layer["out_channels"] for layer in layers)
            row["reassigned"] = round(sum(layer["reassigned"] for layer in layers) / max(1, channels), 4)
            deployed = deploy(model, shifts=False, compile=False)
            row.update(
                macs=count_macs(deployed, spec.input_shape),
                params=count_params(deployed),
                latency_ms=round(measure_latency(deployed, spec.input_shape, 1, runs=latency_runs), 3),
                latency_batch32_ms=round(
                    measure_latency(deployed, spec.input_shape, 32, runs=max(3, latency_runs // 4)), 3
                ),
            )
            rows.append(row)
            acc = f"test_acc {row['test_acc']:.4f}" if "test_acc" in row else "untrained"
            log(
                f"G={g} {variant}: {acc}, deployed {row['macs'] / 1e6:.2f} M MACs, {row['params'] / 1e6:.2f} M params, {row['latency_ms']:.2f} ms, {row['duplicated_channels']} duplicated channels (closest margin {row['duplication_margin']:+.3f}), {row['reassigned']:.1%} of channels and filters reassigned"
            )
    return pd.DataFrame(rows), pd.DataFrame(layer_rows)
