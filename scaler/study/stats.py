"""Uncertainty of published numbers: paired differences, seed spread, factorial effects with family-wise
intervals, Holm adjustment, and confidence sets of the best."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class Paired:
    """Mean of paired differences b - a over n seeds, their standard deviation and a t confidence interval."""

    n: int
    mean: float
    sd: float
    low: float
    high: float
    confidence: float

    @property
    def significant(self) -> bool:
        """The interval excludes zero."""
        return self.low > 0 or self.high < 0

    def columns(self, name: str) -> dict[str, float | bool]:
        """The difference as table columns: name, name_lo, name_hi, name_significant."""
        return {
            name: self.mean,
            f"{name}_lo": self.low,
            f"{name}_hi": self.high,
            f"{name}_significant": self.significant,
        }


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Paired:
    """b - a, seed by seed: mean, sd and the t interval with n - 1 degrees of freedom (needs n >= 2)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired difference needs two equal-length samples of at least 2 (got {len(a)}, {len(b)})")
    differences = [y - x for x, y in zip(a, b)]
    mean = statistics.fmean(differences)
    sd = statistics.stdev(differences)
    half = float(stats.t.ppf((1 + confidence) / 2, len(differences) - 1)) * sd / math.sqrt(len(differences))
    return Paired(len(differences), mean, sd, mean - half, mean + half, confidence)


def paired_by_seed(by_seed: pd.DataFrame, reference: object, candidate: object) -> Paired | None:
    """candidate - reference over the seeds (rows) where both columns ran; None under two such seeds."""
    if reference not in by_seed or candidate not in by_seed:
        return None
    pair = by_seed[[reference, candidate]].dropna()
    if len(pair) < 2:
        return None
    return paired_difference(pair.iloc[:, 0].tolist(), pair.iloc[:, 1].tolist())


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the t interval of a mean (low = high = mean for a single value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf((1 + confidence) / 2, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def accuracy_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """`mean_interval` of accuracies, its ends kept within [0, 1] where the t interval of few seeds overshoots."""
    mean, low, high = mean_interval(values, confidence)
    return mean, max(0.0, low), min(1.0, high)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family's p-values (same order back): reject where adjusted < alpha."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Effect:
    """One coefficient of a linear model: estimate, standard error, two-sided p, and its family-wise interval."""

    name: str
    estimate: float
    se: float
    p: float
    p_holm: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        """The family-wise (Bonferroni-simultaneous) interval excludes zero."""
        return self.low > 0 or self.high < 0


def factorial_effects(
    scores: Mapping[str, Sequence[float]],
    factors: Sequence[str] | None = None,
    interactions: bool = True,
    confidence: float = 0.95,
) -> tuple[list[Effect], int, float]:
    """Main effects (and two-factor interactions where the design can estimate them) of a 2^k factorial with seed
    blocks, by least squares: `scores` maps a mask ('01101', factor j on where bit j is 1) to its score on each seed
    (seed i paired across masks). Factors are coded -1/2 and +1/2, so a main effect is the average change from
    off to on over the other factors' settings. Each effect's interval is simultaneous over the whole family
    (Bonferroni) and its p-value Holm-adjusted. Returns (effects, residual degrees of freedom, residual sd)."""
    masks = list(scores)
    seeds = {len(values) for values in scores.values()}
    if len(seeds) != 1 or min(seeds) < 1 or not masks:
        raise ValueError(f"factorial effects need every mask on the same seeds (got seed counts {sorted(seeds)})")
    k, n_seeds = len(masks[0]), seeds.pop()
    bits = np.array([[int(b) for b in mask] for mask in masks], dtype=float) - 0.5
    columns = [bits[:, j] for j in range(k)]
    factors = list(factors) if factors is not None else [str(j + 1) for j in range(k)]
    names = list(factors)
    if interactions:
        for a in range(k):
            for b in range(a + 1, k):
                columns.append(bits[:, a] * bits[:, b])
                names.append(f"{factors[a]}x{factors[b]}")
    design = np.column_stack(columns)
    rows = np.repeat(design, n_seeds, axis=0)
    blocks = np.tile(np.eye(n_seeds), (len(masks), 1))
    x = np.hstack([blocks, rows])
    y = np.array([v for mask in masks for v in scores[mask]], dtype=float)
    if interactions and (np.linalg.matrix_rank(x) < x.shape[1] or len(y) - x.shape[1] < 2):
        return factorial_effects(scores, factors, interactions=False, confidence=confidence)
    if np.linalg.matrix_rank(x) < x.shape[1] or len(y) - x.shape[1] < 1:
        raise ValueError(f"{len(masks)} masks on {n_seeds} seed(s) cannot estimate {k} main effects")
    coefficients, *_ = np.linalg.lstsq(x, y, rcond=None)
    dof = len(y) - x.shape[1]
    sigma = float(np.sqrt(np.sum((y - x @ coefficients) ** 2) / dof))
    errors = sigma * np.sqrt(np.diag(np.linalg.inv(x.T @ x)))[n_seeds:]
    estimates = coefficients[n_seeds:]
    p = [float(2 * stats.t.sf(abs(e / s), dof)) if s > 0 else 0.0 for e, s in zip(estimates, errors)]
    quantile = float(stats.t.ppf(1 - (1 - confidence) / (2 * len(names)), dof))
    return (
        [
            Effect(name, float(e), float(s), pv, ph, float(e - quantile * s), float(e + quantile * s))
            for name, e, s, pv, ph in zip(names, estimates, errors, p, holm(p))
        ],
        dof,
        sigma,
    )


def best_set(scores: Mapping[str, Sequence[float]], confidence: float = 0.95) -> dict[str, bool]:
    """A confidence set of the best (highest mean) candidate from seed-paired scores: a candidate stays in unless
    some other beats it significantly, by a one-sided paired t test at the Bonferroni level over its K - 1
    comparisons, so the true best is left out with probability at most 1 - confidence. One-sided, so a candidate
    can leave the set while the two-sided 95 % interval of its difference to the winner still includes zero."""
    labels = list(scores)
    lengths = {len(scores[label]) for label in labels}
    if len(labels) < 2:
        return dict.fromkeys(labels, True)
    if len(lengths) != 1 or min(lengths) < 2:
        raise ValueError(f"a set of the best needs equal-length scores of at least 2 seeds (got {sorted(lengths)})")
    level = 1 - (1 - confidence) / (len(labels) - 1)
    kept = {}
    for label in labels:
        beaten = (paired_difference(scores[label], scores[other], level * 2 - 1) for other in labels if other != label)
        kept[label] = not any(diff.low > 0 for diff in beaten)
    return kept
