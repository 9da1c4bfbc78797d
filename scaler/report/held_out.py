"""The report's held-out extrapolation: recomputed from a scale study's runs, one table and one sentence."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from scaler.report.tables import cell, markdown
from scaler.study.extrapolate import held_out_error


def held_out_of(folder: Path, runs: pd.DataFrame) -> pd.DataFrame | None:
    """The held-out extrapolation: recomputed by the current rule from the runs (`scale.csv`, read by the caller)
    where they carry their test accuracy, else the folder's `extrapolation.csv` as written; None without either."""
    if "test_acc" in runs and runs.test_acc.notna().any():
        return held_out_error(runs)
    return pd.read_csv(folder / "extrapolation.csv") if (folder / "extrapolation.csv").exists() else None


def extrapolation_verdict(held: pd.DataFrame) -> str:
    """One sentence on the held-out point: covered, which predictor came closest as far as the measurement can
    tell (the file's `verdict`, where it has one), fits at a bound."""
    phis = ", ".join(f"{phi:g}" for phi in sorted(held.held_out_phi.unique()))
    one_phi = held.held_out_phi.nunique() == 1
    covered = int(held.covered.fillna(False).astype(bool).sum())
    sentence = (
        f"Extrapolation to the held-out φ = {phis}: the fit's interval covered the measurement for {covered} of "
        + (f"{len(held)} variants" if one_phi else f"{len(held)} held-out points")
    )
    if "verdict" in held:
        names = [
            str(row.variant) if one_phi else f"{row.variant} at φ = {row.held_out_phi:g}" for row in held.itertuples()
        ]
        return sentence + "; " + "; ".join(f"{name}: {verdict}" for name, verdict in zip(names, held.verdict)) + "."
    return sentence + (
        f", the fit beat both naive predictors for {int(held.beats_naive.sum())} (by any margin: the file predates "
        f"the verdict that weighs it against the measurement's interval), and {int(held.at_bound.sum())} fits sit "
        "at a bound of their parameters."
    )


def held_out_table(held: pd.DataFrame) -> str:
    """The extrapolation's errors beside the naive predictors', as they are in the file."""
    columns = [c for c in held.columns if c != "variant"]
    rows = [[str(row.variant), *(cell(row[c]) for c in columns)] for _, row in held.iterrows()]
    return markdown(rows, ["variant", *columns])
