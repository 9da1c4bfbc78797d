"""`scaler scale`: every (variant, phi) measured, trained up to a phi on every seed, extrapolated beyond."""

from __future__ import annotations

import math

import pandas as pd

from scaler.engine import evaluate_plan
from scaler.extrapolate import extrapolate, held_out_error
from scaler.run import Log, Setup, retime_interleaved
from scaler.scaling import compound
from scaler.stats import accuracy_interval

SUMMARY_FIRST = ["variant", "phi", "resolution", "params", "macs", "macs_ratio", "target_ratio"]
PLOTTED_COLUMNS = ["variant", "phi", "macs", "latency_ms", "latency_iqr_ms"]  # what `scaler plot` reads back
FIT_COLUMNS = ["predicted_acc", "pred_lo", "pred_hi", "extrapolated", "fit", "at_bound"]


def plan(
    coefficients: tuple[float, float, float],
    phis: list[float],
    variants: list[str],
    train_max_phi: float,
    seeds: list[int] | None = None,
) -> pd.DataFrame:
    """One point per (variant, phi, seed): the compound multipliers; phi <= train_max_phi trains on every seed,
    larger phi is measured once (seed NaN). Every trained phi sees the same images (the budget rule)."""
    rows = []
    for variant in variants:
        for phi in sorted(phis):
            depth, width, res_mult = compound(*coefficients, phi)
            trained = phi <= train_max_phi
            runs: list[float] = [float(seed) for seed in seeds or []] if trained and seeds else [math.nan]
            for seed in runs:
                rows.append(
                    {
                        "label": f"{variant} φ={phi:g}" + (f" seed {seed:g}" if math.isfinite(seed) else ""),
                        "variant": variant,
                        "phi": phi,
                        "seed": seed,
                        "depth": depth,
                        "width": width,
                        "res_mult": res_mult,
                        "train": trained,
                        "progressive": False,
                    }
                )
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant, phi): cost, seeds trained, mean test accuracy with its 95 % t interval
    (acc_lo, acc_hi), latency median and IQR, and the fit's prediction with its interval where present."""
    rows = []
    for _, part in frame.groupby(["variant", "phi"], sort=False):
        first = part.iloc[0]
        accuracies = part.test_acc.dropna().tolist() if "test_acc" in part else []
        mean, low, high = accuracy_interval(accuracies) if accuracies else (math.nan,) * 3
        row = {column: first[column] for column in SUMMARY_FIRST if column in part}
        row |= {"latency_ms": first.latency_ms, "latency_iqr_ms": first.latency_iqr_ms, "seeds": len(accuracies)}
        row |= {"test_acc": mean, "acc_lo": low, "acc_hi": high}
        row |= {column: first[column] for column in FIT_COLUMNS if column in part}
        rows.append(row)
    return pd.DataFrame(rows)


def run(
    points: pd.DataFrame, setup: Setup, log: Log = print, latency_form: str = "deployed", latency_rounds: int = 30
) -> dict[str, pd.DataFrame]:
    """scale.csv (one row per run, the fit's prediction where a variant has trained points), scale_summary.csv
    (per variant and phi, with intervals) and extrapolation.csv (held-out error vs naive predictors); every network
    is timed interleaved with all the others in `latency_form`."""
    frame = evaluate_plan(points, setup, log)
    frame = retime_interleaved(frame, setup, ["variant", "phi"], latency_form, latency_rounds, log)
    base_macs = frame[frame.phi == 0].groupby("variant").macs.first()
    frame["macs_ratio"] = [
        round(macs / base_macs[variant], 4) if variant in base_macs else math.nan
        for variant, macs in zip(frame.variant, frame.macs)
    ]
    frame["target_ratio"] = 2.0**frame.phi
    frames = {"scale": frame}
    if frame.trained.any():
        frames["scale"] = extrapolate(frame)
        frames["extrapolation"] = held_out_error(frames["scale"])
    frames["scale_summary"] = summarise(frames["scale"])
    return frames
