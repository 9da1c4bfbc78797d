"""`scaler scale`: every (variant, phi) measured, trained up to a phi, extrapolated beyond."""

from __future__ import annotations

import math

import pandas as pd

from scaler.extrapolate import extrapolate, held_out_error
from scaler.run import Log, Setup, evaluate_plan
from scaler.scaling import compound


def plan(
    coefficients: tuple[float, float, float], phis: list[float], variants: list[str], train_max_phi: float
) -> pd.DataFrame:
    """One point per (variant, phi): the compound multipliers, trained where phi <= train_max_phi."""
    rows = []
    for variant in variants:
        for phi in sorted(phis):
            depth, width, res_mult = compound(*coefficients, phi)
            rows.append(
                {
                    "label": f"{variant} φ={phi:g}",
                    "variant": variant,
                    "phi": phi,
                    "depth": depth,
                    "width": width,
                    "res_mult": res_mult,
                    "train": phi <= train_max_phi,
                    "progressive": False,
                }
            )
    return pd.DataFrame(rows)


def run(points: pd.DataFrame, setup: Setup, log: Log = print) -> dict[str, pd.DataFrame]:
    """scale.csv (with predicted accuracy where a variant has trained points) and extrapolation.csv."""
    frame = evaluate_plan(points, setup, log)
    base_macs = frame[frame.phi == 0].set_index("variant").macs
    frame["macs_ratio"] = [
        round(macs / base_macs[variant], 4) if variant in base_macs else math.nan
        for variant, macs in zip(frame.variant, frame.macs)
    ]
    frame["target_ratio"] = 2.0**frame.phi
    frames = {"scale": frame}
    if frame.trained.any():
        frames["scale"] = extrapolate(frame)
        frames["extrapolation"] = held_out_error(frames["scale"])
    return frames
