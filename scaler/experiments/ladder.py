"""`scaler ladder`: MobileNet, + compound scaling, + Fused-MBConv and progressive learning, + FReLU."""

from __future__ import annotations

import pandas as pd

from scaler.run import Log, Setup, evaluate_plan
from scaler.scaling import compound


def plan(coefficients: tuple[float, float, float], frelu_variant: str, base_name: str) -> pd.DataFrame:
    """The four steps of the FReLU study's ladder, each adding one thing to the step before."""
    scaled = dict(zip(("depth", "width", "res_mult"), compound(*coefficients, 1.0)))
    alpha, beta, gamma = coefficients
    steps = [
        ("0", base_name, "relu", {"depth": 1.0, "width": 1.0, "res_mult": 1.0}, False),
        ("1", f"+ compound scaling φ=1 (α={alpha}, β={beta}, γ={gamma})", "relu", scaled, False),
        ("2", "+ Fused-MBConv early stages + progressive learning", "fused", scaled, True),
        ("3", f"+ FReLU ({frelu_variant})", f"fused+{frelu_variant}", scaled, True),
    ]
    return pd.DataFrame(
        [
            {
                "step": step,
                "description": text,
                "label": f"ladder {step}",
                "variant": variant,
                **multipliers,
                "train": True,
                "progressive": progressive,
            }
            for step, text, variant, multipliers, progressive in steps
        ]
    )


def run(points: pd.DataFrame, setup: Setup, log: Log = print) -> dict[str, pd.DataFrame]:
    """ladder.csv: each step trained and tested alike."""
    return {"ladder": evaluate_plan(points, setup, log)}
