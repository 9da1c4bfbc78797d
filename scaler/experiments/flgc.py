"""`scaler flgc`: plain FLGC against FLGC with duplication as the number of groups grows."""

from __future__ import annotations

from typing import Any

import pandas as pd
from torch import nn

from scaler.nn.flgc import FLGCConv2d
from scaler.run import Log, Setup, evaluate_model
from scaler.spec import DUPLICATE_TOP_K
from scaler.variants import apply_variant

BATCH_LATENCY = 32


def plan(groups: list[int], top_k: int = DUPLICATE_TOP_K) -> pd.DataFrame:
    """Dense at G = 1; plain FLGC and FLGC with duplication at every other G."""
    rows = []
    for g in sorted(set(groups)):
        duplicated = f"flgc-dup:{g}" if top_k == DUPLICATE_TOP_K else f"flgc-dup:{g}:{top_k}"
        for variant in ["dense"] if g == 1 else [f"flgc:{g}", duplicated]:
            rows.append({"groups": g, "variant": variant, "duplicate": variant.startswith("flgc-dup")})
    return pd.DataFrame(rows)


def layer_rows(model: nn.Module) -> list[dict[str, Any]]:
    """Per FLGC layer: shape, duplicated channels, closest duplication margin, reassigned channels, group sizes."""
    return [
        {
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


def run(points: pd.DataFrame, setup: Setup, log: Log = print) -> dict[str, pd.DataFrame]:
    """flgc.csv (accuracy and the deployed model's MACs, params, latency) and flgc_layers.csv."""
    rows, all_layers = [], []
    trains = setup.dataset is not None
    for point in points.to_dict("records"):
        spec = setup.spec if point["variant"] == "dense" else apply_variant(setup.spec, point["variant"])
        row, model = evaluate_model(
            spec, setup, trains, description=point["variant"], form="folded", batch_latency=BATCH_LATENCY
        )
        layers = [{"groups": point["groups"], "variant": point["variant"]} | layer for layer in layer_rows(model)]
        all_layers += layers
        channels = sum(layer["in_channels"] + layer["out_channels"] for layer in layers)
        summary = {
            "duplicated_channels": sum(layer["duplicated_channels"] for layer in layers),
            "duplication_margin": max((layer["duplication_margin"] for layer in layers), default=float("nan")),
            "reassigned": round(sum(layer["reassigned"] for layer in layers) / max(1, channels), 4),
        }
        rows.append(point | row.as_dict() | summary)
        accuracy = f"test_acc {row.test_acc:.4f}" if row.trained else "untrained"
        log(
            f"G={point['groups']} {point['variant']}: {accuracy}, deployed {row.macs / 1e6:.2f} M MACs, {row.params / 1e6:.2f} M params, "
            f"{row.latency_ms:.2f} ms, {summary['duplicated_channels']} duplicated channels "
            f"(closest margin {summary['duplication_margin']:+.3f}), {summary['reassigned']:.1%} of channels and filters reassigned"
        )
    return {"flgc": pd.DataFrame(rows), "flgc_layers": pd.DataFrame(all_layers)}
