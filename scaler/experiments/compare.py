"""`scaler compare-scaling`: depth-, width-, resolution-only, compound and dWr scaling at equal FLOPs factors."""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
from matplotlib.figure import Figure

from scaler.run import Log, Setup, evaluate_plan
from scaler.scaling import compound

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


def plan(coefficients: tuple[float, float, float], factors: list[float]) -> pd.DataFrame:
    """The base, then every rule at every FLOPs factor."""
    rows = [{"rule": "base", "factor": 1.0, "label": "base", "depth": 1.0, "width": 1.0, "res_mult": 1.0}]
    for rule, multipliers in scaling_rules(coefficients).items():
        for factor in factors:
            depth, width, res_mult = multipliers(factor)
            rows.append(
                {
                    "rule": rule,
                    "factor": factor,
                    "label": f"{rule} x{factor:g}",
                    "depth": depth,
                    "width": width,
                    "res_mult": res_mult,
                }
            )
    return pd.DataFrame(rows).assign(variant="relu", train=True, progressive=False)


def run(points: pd.DataFrame, setup: Setup, log: Log = print) -> dict[str, pd.DataFrame]:
    """compare_scaling.csv with each network's measured MACs ratio to the base."""
    frame = evaluate_plan(points, setup, log)
    frame["macs_ratio"] = (frame.macs / frame[frame.rule == "base"].macs.iloc[0]).round(4)
    return {"compare_scaling": frame}


def figures(frame: pd.DataFrame) -> dict[str, Figure]:
    """Accuracy against measured MACs, one line per rule, each starting from the base."""
    from scaler.plots import accuracy_vs_macs

    base_row = frame[frame.rule == "base"]
    scaled = frame[frame.rule != "base"]
    plotted = pd.concat([base_row.assign(rule=rule) for rule in scaled.rule.unique()] + [scaled])
    return {"compare_scaling": accuracy_vs_macs(plotted, "rule", title="scaling rules at equal FLOPs")}
