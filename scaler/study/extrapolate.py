"""Accuracy extrapolation across phi: fit acc(F) = a - b*(F/F0)^-c on trained points, predict from MACs.

Every prediction carries a bootstrap prediction interval (seeds resampled jointly across phi, the curve refitted,
seed noise added back) and is judged against two naive predictors on a held-out phi: the last trained value
and a straight line in log MACs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats
from scipy.optimize import least_squares

from scaler.errors import UserError
from scaler.study.stats import mean_interval

# Typical power-law exponent of error vs compute; the prior used when 2 points cannot pin down c.
DEFAULT_EXPONENT = 0.5
EXPONENT_BOUNDS = (0.01, 3.0)
_EXPONENT_GRID = np.geomspace(*EXPONENT_BOUNDS, 25)
BOOTSTRAP_DRAWS = 400
INTERVAL = 0.95


@dataclass(frozen=True)
class SaturatingFit:
    """acc(F) = a - b*(F/macs0)^-c, with a <= 1, b >= 0, c > 0."""

    a: float
    b: float
    c: float
    macs0: float
    method: str
    residual_rms: float

    def predict(self, macs: ArrayLike) -> np.ndarray | float:
        """Predicted accuracy at `macs` (a float for a scalar, an array otherwise)."""
        values = np.asarray(macs, dtype=float)
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise UserError("MACs to predict at must be finite and positive")
        predicted = self.a - self.b * (values / self.macs0) ** (-self.c)
        return float(predicted) if values.ndim == 0 else predicted

    @property
    def at_bound(self) -> bool:
        """Whether a fitted parameter sits on its constraint (a = 1, b = 0 or c at an end of its range)."""
        if self.method == "flat":
            return False
        ends = self.method == "3-param" and not EXPONENT_BOUNDS[0] * 1.001 < self.c < EXPONENT_BOUNDS[1] * 0.999
        return self.a >= 1 - 1e-6 or self.b <= 1e-9 or ends

    def describe(self) -> str:
        """One-line formula, e.g. 'acc = 0.931 - 0.052·(F/15.7M)^-0.48'."""
        if self.method == "flat":
            return f"acc = {self.a:.3f} (flat)"
        return f"acc = {self.a:.3f} - {self.b:.3f}·(F/{_si(self.macs0)})^-{self.c:.2f}"


def _si(value: float) -> str:
    """Compact count with K/M/G/T suffix."""
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _validated(macs: ArrayLike, accuracy: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Unique MACs (ascending) and the mean accuracy at each; UserError on bad input."""
    try:
        flops = np.asarray(macs, dtype=float).ravel()
        acc = np.asarray(accuracy, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise UserError(f"MACs and accuracy must be numbers ({exc})".replace("\n", " ")) from None
    if flops.size != acc.size:
        raise UserError(f"got {flops.size} MACs values but {acc.size} accuracies")
    if flops.size == 0:
        raise UserError("no trained points to fit")
    if not (np.all(np.isfinite(flops)) and np.all(np.isfinite(acc))):
        raise UserError("MACs and accuracy must be finite (no NaN or inf)")
    if np.any(flops <= 0):
        raise UserError("MACs must be positive")
    if np.any(acc < 0) or np.any(acc > 1):
        raise UserError("accuracy must be a fraction in [0, 1]")
    unique, inverse = np.unique(flops, return_inverse=True)
    mean_acc = np.bincount(inverse, weights=acc) / np.bincount(inverse)
    return unique, mean_acc


def _linear_fit(x: np.ndarray, acc: np.ndarray, c: float) -> tuple[float, float]:
    """Least-squares (a, b) for fixed c subject to a <= 1, b >= 0."""
    basis = x ** (-c)

    def sse(a: float, b: float) -> float:
        return float(np.sum((a - b * basis - acc) ** 2))

    if np.ptp(basis) > 0:
        design = np.column_stack([np.ones_like(basis), -basis])
        (a, b), *_ = np.linalg.lstsq(design, acc, rcond=None)
        if a <= 1 and b >= 0:
            return float(a), float(b)
    candidates = [(min(float(acc.mean()), 1.0), 0.0), (1.0, 0.0)]
    b_at_one = float(np.dot(basis, 1 - acc) / np.dot(basis, basis))
    candidates.append((1.0, max(b_at_one, 0.0)))
    return min(candidates, key=lambda ab: sse(*ab))


def _rms(x: np.ndarray, acc: np.ndarray, a: float, b: float, c: float) -> float:
    """Root-mean-square residual of the fit on the (deduplicated) points."""
    return float(np.sqrt(np.mean((a - b * x ** (-c) - acc) ** 2)))


def fit_saturating(macs: Sequence[float], accuracy: Sequence[float]) -> SaturatingFit:
    """Fit acc = a - b*(F/F0)^-c (F0 = smallest MACs): 3 params, fixed c for 2 points, flat for 1."""
    flops, acc = _validated(macs, accuracy)
    macs0 = float(flops[0])
    x = flops / macs0
    if x.size == 1:
        return SaturatingFit(float(acc[0]), 0.0, DEFAULT_EXPONENT, macs0, "flat", 0.0)
    if x.size == 2:
        a, b = _linear_fit(x, acc, DEFAULT_EXPONENT)
        return SaturatingFit(a, b, DEFAULT_EXPONENT, macs0, "fixed-exponent", _rms(x, acc, a, b, DEFAULT_EXPONENT))

    a_low = min(float(acc.max()), 1.0 - 1e-9)
    lower, upper = [a_low, 0.0, EXPONENT_BOUNDS[0]], [1.0, np.inf, EXPONENT_BOUNDS[1]]
    starts = [(*_linear_fit(x, acc, c), c) for c in _EXPONENT_GRID]
    a0, b0, c0 = min(starts, key=lambda p: _rms(x, acc, *p))
    start = np.clip([a0, b0, c0], lower, [1.0, np.finfo(float).max, EXPONENT_BOUNDS[1]])

    def residuals(p: np.ndarray) -> np.ndarray:
        return p[0] - p[1] * x ** (-p[2]) - acc

    result = least_squares(residuals, start, bounds=(lower, upper), xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=5000)
    a, b, c = (float(v) for v in result.x)
    return SaturatingFit(a, b, c, macs0, "3-param", _rms(x, acc, a, b, c))


def _require_columns(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """UserError naming any column the frame lacks."""
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise UserError(f"frame lacks column(s) {', '.join(missing)}; has {', '.join(map(str, frame.columns))}")


def last_value(macs: ArrayLike, accuracy: ArrayLike) -> float:
    """Naive predictor: the mean accuracy at the largest trained MACs, wherever it is asked."""
    flops, acc = _validated(macs, accuracy)
    return float(acc[np.argmax(flops)])


def log_linear(macs: ArrayLike, accuracy: ArrayLike, at: ArrayLike) -> np.ndarray:
    """Naive predictor: least-squares line of mean accuracy against log MACs (flat for one point), clipped to [0, 1]."""
    flops, acc = _validated(macs, accuracy)
    where = np.log(np.asarray(at, dtype=float))
    if flops.size == 1:
        return np.full(where.shape, acc[0])
    slope, intercept = np.polyfit(np.log(flops), acc, 1)
    return np.clip(intercept + slope * where, 0.0, 1.0)


def prediction_interval(
    macs: ArrayLike,
    accuracy: ArrayLike,
    seeds: ArrayLike,
    at: ArrayLike,
    averaged_over: int = 1,
    draws: int = BOOTSTRAP_DRAWS,
    level: float = INTERVAL,
    rng_seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap interval at MACs `at` for a new measurement averaged over `averaged_over` seeds.

    Each draw resamples the seeds with replacement (a seed's points at every phi go together), refits the curve,
    predicts, and adds seed noise: the mean of `averaged_over` residuals drawn from the deviations of runs from
    their point's mean (scaled by sqrt(n / (n - 1))). NaN when fewer than 2 seeds were trained.
    """
    flops, acc = np.asarray(macs, dtype=float), np.asarray(accuracy, dtype=float)
    runs, where = np.asarray(seeds), np.asarray(at, dtype=float)
    names = np.unique(runs)
    if names.size < 2:
        return np.full(where.shape, np.nan), np.full(where.shape, np.nan)
    unique, inverse = np.unique(flops, return_inverse=True)
    point_mean = np.bincount(inverse, weights=acc) / np.bincount(inverse)
    counts = np.bincount(inverse)[inverse]
    residuals = ((acc - point_mean[inverse]) * np.sqrt(counts / np.maximum(counts - 1, 1)))[counts > 1]
    rng = np.random.default_rng(rng_seed)
    members = [np.flatnonzero(runs == name) for name in names]
    predictions = np.empty((draws, where.size))
    for draw in range(draws):
        chosen = np.concatenate([members[i] for i in rng.integers(0, names.size, names.size)])
        fit = fit_saturating(flops[chosen], acc[chosen])
        noise = rng.choice(residuals, (where.size, averaged_over)).mean(1) if residuals.size else 0.0
        predictions[draw] = np.asarray(fit.predict(where)) + noise
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(predictions, [tail, 100 - tail], axis=0)
    return low, high


HELD_OUT_COLUMNS = [
    "variant",
    "held_out_phi",
    "predicted",
    "pred_lo",
    "pred_hi",
    "measured",
    "measured_lo",
    "measured_hi",
    "measured_seeds",
    "error",
    "abs_error",
    "covered",
    "last_value_error",
    "log_linear_error",
    "beats_naive",
    "fit_points",
    "fit_seeds",
    "method",
    "at_bound",
    "verdict",
]


def _seeds(frame: pd.DataFrame, seed_col: str) -> np.ndarray:
    """The seed of every row (one shared seed when the frame has no seed column)."""
    return frame[seed_col].to_numpy() if seed_col in frame else np.zeros(len(frame), dtype=int)


def held_out_error(
    frame: pd.DataFrame,
    variant_col: str = "variant",
    phi_col: str = "phi",
    macs_col: str = "macs",
    acc_col: str = "test_acc",
    seed_col: str = "seed",
    draws: int = BOOTSTRAP_DRAWS,
    hold_out: float | None = None,
) -> pd.DataFrame:
    """Per variant, fit on the trained phi below `hold_out` over every seed and predict the mean at each trained
    phi from it on (default: the frame's `held_out` rows, else the largest trained phi alone).

    Beside the fit's error at each held-out phi: its prediction interval and whether it covers the measurement, the
    measurement's own 95 % t interval over its seeds, the errors of the naive predictors, `beats_naive` (smaller
    absolute error than both, by any margin) and the `verdict`, which weighs each naive predictor against the
    measurement's interval (`held_out_verdict`).
    """
    _require_columns(frame, [variant_col, phi_col, macs_col, acc_col])
    rows = []
    trained = frame[frame[acc_col].notna()]
    for variant, group in trained.groupby(variant_col, sort=False, dropna=False):
        start = _hold_out_start(group, phi_col, hold_out)
        fit_rows = group[group[phi_col] < start]
        if fit_rows.empty:
            continue
        macs, acc = fit_rows[macs_col].to_numpy(dtype=float), fit_rows[acc_col].to_numpy(dtype=float)
        fit = fit_saturating(macs, acc)
        for phi, held in group[group[phi_col] >= start].groupby(phi_col):
            at = float(held[macs_col].mean())
            low, high = prediction_interval(macs, acc, _seeds(fit_rows, seed_col), [at], len(held), draws)
            measured = held[acc_col].astype(float).tolist()
            row = _held_out_row(fit, at, measured, (float(low[0]), float(high[0])), macs, acc)
            row |= {"variant": variant, "held_out_phi": phi, "fit_points": len(fit_rows), "method": fit.method}
            row |= {"fit_seeds": len(np.unique(_seeds(fit_rows, seed_col))), "at_bound": fit.at_bound}
            rows.append(row)
    return pd.DataFrame(rows, columns=HELD_OUT_COLUMNS)


def _hold_out_start(group: pd.DataFrame, phi_col: str, hold_out: float | None) -> float:
    """The smallest held-out phi of one variant's trained rows: `hold_out`, the `held_out` rows', or the largest."""
    if hold_out is not None:
        return hold_out
    if "held_out" in group:
        marked = group["held_out"].fillna(False).astype(bool)
        if marked.any():
            return float(group.loc[marked, phi_col].min())
    return float(group[phi_col].max())


def _held_out_row(
    fit: SaturatingFit,
    at: float,
    measured: list[float],
    interval: tuple[float, float],
    macs: np.ndarray,
    acc: np.ndarray,
) -> dict[str, object]:
    """One held-out point: the fit's prediction at `at` MACs against the seeds' `measured` accuracies."""
    predicted = float(fit.predict(at))
    mean, measured_lo, measured_hi = mean_interval(measured)
    naive = {"last value": last_value(macs, acc), "log-linear": float(log_linear(macs, acc, at))}
    spread = statistics.stdev(measured) if len(measured) > 1 else math.nan
    low, high = interval
    return {
        "predicted": predicted,
        "pred_lo": low,
        "pred_hi": high,
        "measured": mean,
        "measured_lo": measured_lo,
        "measured_hi": measured_hi,
        "measured_seeds": len(measured),
        "error": predicted - mean,
        "abs_error": abs(predicted - mean),
        "covered": bool(low <= mean <= high) if np.isfinite(low) else None,
        "last_value_error": naive["last value"] - mean,
        "log_linear_error": naive["log-linear"] - mean,
        "beats_naive": all(abs(predicted - mean) < abs(value - mean) for value in naive.values()),
        "verdict": held_out_verdict(predicted, naive, (measured_lo, measured_hi), spread, fit.at_bound),
    }


def seeds_to_narrow(gap: float, seed_sd: float, most: int = 100) -> int | None:
    """The fewest seeds whose mean's 95 % t interval, at this seed spread, is narrower than `gap`; None past
    `most` or without a spread."""
    if gap <= 0 or not np.isfinite(seed_sd):
        return None
    for seeds in range(2, most + 1):
        if 2 * float(stats.t.ppf(0.975, seeds - 1)) * seed_sd / math.sqrt(seeds) < gap:
            return seeds
    return None


def seeds_text(gap: float, seed_sd: float) -> str:
    """`seeds_to_narrow` in words: '≈5 seeds', '>100 seeds', or a second seed where one gives no spread."""
    if not np.isfinite(seed_sd):
        return "a second seed, to measure the spread, and more"
    needed = seeds_to_narrow(gap, seed_sd)
    return f"≈{needed} seeds" if needed else ">100 seeds"


def held_out_verdict(
    predicted: float, naive: dict[str, float], interval: tuple[float, float], seed_sd: float, at_bound: bool
) -> str:
    """What the held-out point can say of the fit against each naive predictor: the one on the measurement's side
    wins where the measurement's 95 % `interval` excludes the point halfway between the two predictions; untested
    where it holds it (or one seed gives no interval), with the seeds whose interval would exclude it at the seeds'
    spread."""
    low, high = interval
    measured = (low + high) / 2
    beaten: list[str] = []
    beating: list[str] = []
    untested: list[str] = []
    for name, value in naive.items():
        halfway = (predicted + value) / 2
        if not np.isfinite(seed_sd):
            untested.append(f"untested against {name}: one seed gives the measurement no interval")
        elif not low <= halfway <= high:
            (beaten if abs(predicted - measured) < abs(value - measured) else beating).append(name)
        else:
            untested.append(
                f"untested against {name}: the measurement's 95 % interval holds the point halfway between the two "
                f"predictions ({100 * abs(predicted - value):.2f} points apart; "
                f"{seeds_text(2 * abs(measured - halfway), seed_sd)} would resolve it)"
            )
    parts = [f"the fit does not beat {' and '.join(beating)}"] if beating else []
    if beaten:
        parts.append(
            "the fit beats both naive predictors" if len(beaten) == len(naive) else f"the fit beats {beaten[0]}"
        )
    return "; ".join(parts + untested) + ("; the fit sits at a bound of its parameters" if at_bound else "")


def extrapolate(
    frame: pd.DataFrame,
    variant_col: str = "variant",
    phi_col: str = "phi",
    macs_col: str = "macs",
    acc_col: str = "test_acc",
    seed_col: str = "seed",
    draws: int = BOOTSTRAP_DRAWS,
) -> pd.DataFrame:
    """Copy of `frame` with predicted_acc, its interval (pred_lo, pred_hi) for a mean over as many seeds as
    were trained per point, extrapolated, fit and at_bound; fit per variant on every trained run."""
    _require_columns(frame, [variant_col, phi_col, macs_col, acc_col])
    out = frame.copy()
    predicted, low, high = (np.full(len(out), np.nan) for _ in range(3))
    described = np.full(len(out), None, dtype=object)
    bound = np.full(len(out), None, dtype=object)
    trained_mask = out[acc_col].notna().to_numpy()
    macs = out[macs_col].to_numpy(dtype=float)
    accuracy = out[acc_col].to_numpy(dtype=float)
    seeds = _seeds(out, seed_col)
    for positions in out.groupby(variant_col, sort=False, dropna=False).indices.values():
        fit_at = positions[trained_mask[positions]]
        if fit_at.size == 0:
            continue
        fit = fit_saturating(macs[fit_at], accuracy[fit_at])
        predicted[positions] = fit.predict(macs[positions])
        per_point = int(np.median(np.unique(macs[fit_at], return_counts=True)[1]))
        low[positions], high[positions] = prediction_interval(
            macs[fit_at], accuracy[fit_at], seeds[fit_at], macs[positions], per_point, draws
        )
        described[positions] = fit.describe()
        bound[positions] = fit.at_bound
    out["predicted_acc"] = predicted
    out["pred_lo"] = low
    out["pred_hi"] = high
    out["extrapolated"] = ~trained_mask
    out["fit"] = described
    out["at_bound"] = bound
    return out
