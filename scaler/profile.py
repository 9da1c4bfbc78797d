"""Profile a base network across phi: the rows of `scaler profile`."""

from __future__ import annotations

from typing import Any

from scaler.complexity import DEFAULT_THREADS, count_activations, count_macs, count_params, measure_latency
from scaler.guard import check_fits
from scaler.nn.build import build
from scaler.scaling import compound, scale
from scaler.spec import NetSpec


def profile_spec(spec: NetSpec, runs: int = 30, threads: int = DEFAULT_THREADS) -> dict[str, Any]:
    """Params, MACs, activations and batch-1 latency of the model a spec builds (refused first if it cannot fit)."""
    check_fits(spec)
    model = build(spec).eval()
    shape = spec.input_shape
    return {
        "resolution": spec.resolution,
        "params": count_params(model),
        "macs": count_macs(model, shape),
        "activations": count_activations(model, shape),
        "latency_ms": round(measure_latency(model, shape, 1, runs=runs, threads=threads), 4),
    }


def profile_phis(
    spec: NetSpec,
    phis: list[float],
    coefficients: tuple[float, float, float],
    runs: int = 30,
    threads: int = DEFAULT_THREADS,
) -> list[dict[str, Any]]:
    """One row per phi: multipliers, measured complexity and the MACs ratio to phi = 0 beside 2^phi."""
    alpha, beta, gamma = coefficients
    base_macs = count_macs(build(spec), spec.input_shape)
    rows = []
    for phi in phis:
        depth, width, resolution = compound(alpha, beta, gamma, phi)
        row = {"phi": phi, "depth": round(depth, 4), "width": round(width, 4)}
        row.update(profile_spec(scale(spec, depth, width, resolution), runs, threads))
        row["macs_ratio"] = round(row["macs"] / base_macs, 4)
        row["target_ratio"] = round(2.0**phi, 4)
        rows.append(row)
    return rows


def profile_multipliers(
    spec: NetSpec, depth: float, width: float, resolution: float, runs: int = 30, threads: int = DEFAULT_THREADS
) -> list[dict[str, Any]]:
    """The base row and one row scaled directly by (d, w, r); the second has no phi."""
    rows = profile_phis(spec, [0.0], (1.0, 1.0, 1.0), runs, threads)
    row: dict[str, Any] = {"phi": None, "depth": depth, "width": width}
    row.update(profile_spec(scale(spec, depth, width, resolution), runs, threads))
    row["macs_ratio"] = round(row["macs"] / rows[0]["macs"], 4)
    row["target_ratio"] = None
    return rows + [row]
