"""Profile a base network across phi: the rows of `scaler profile`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from scaler.model.complexity import DEFAULT_THREADS
from scaler.model.scaling import compound, scale
from scaler.model.spec import NetSpec
from scaler.study.run import measure

PROFILE_COLUMNS = [
    "phi",
    "depth",
    "width",
    "resolution",
    "params",
    "macs",
    "macs_ratio",
    "target_ratio",
    "activations",
    "latency_ms",
    "latency_iqr_ms",
]


def profile_row(
    spec: NetSpec,
    phi: float | None,
    depth: float,
    width: float,
    resolution: float,
    runs: int,
    threads: int,
    counter: str = "fvcore",
    form: str = "eager",
) -> dict[str, Any]:
    """Multipliers and the measured cost of the spec they scale (MACs by `counter`, latency of `form`)."""
    scaled = spec if (depth, width, resolution) == (1.0, 1.0, 1.0) else scale(spec, depth, width, resolution)
    return {"phi": phi, "depth": round(depth, 4), "width": round(width, 4)} | asdict(
        measure(scaled, runs=runs, threads=threads, counter=counter, form=form)
    )


def profile_phis(
    spec: NetSpec,
    phis: list[float],
    coefficients: tuple[float, float, float],
    runs: int = 30,
    threads: int = DEFAULT_THREADS,
    counter: str = "fvcore",
    form: str = "eager",
) -> list[dict[str, Any]]:
    """One row per phi: multipliers, measured cost and the MACs ratio to phi = 0 beside 2^phi."""
    base_macs = measure(spec, runs=1, threads=threads, counter=counter).macs
    rows = []
    for phi in phis:
        row = profile_row(spec, phi, *compound(*coefficients, phi), runs, threads, counter, form)
        rows.append(row | {"macs_ratio": round(row["macs"] / base_macs, 4), "target_ratio": round(2.0**phi, 4)})
    return rows


def profile_multipliers(
    spec: NetSpec,
    depth: float,
    width: float,
    resolution: float,
    runs: int = 30,
    threads: int = DEFAULT_THREADS,
    counter: str = "fvcore",
    form: str = "eager",
) -> list[dict[str, Any]]:
    """The base row and one row scaled directly by (d, w, r); the second has no phi."""
    rows = profile_phis(spec, [0.0], (1.0, 1.0, 1.0), runs, threads, counter, form)
    row = profile_row(spec, None, depth, width, resolution, runs, threads, counter, form)
    return rows + [row | {"macs_ratio": round(row["macs"] / rows[0]["macs"], 4), "target_ratio": None}]
