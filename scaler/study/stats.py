"""Uncertainty of published numbers: paired differences with t confidence intervals, seed spread, bootstrap ranks."""

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


def bootstrap_p_best(scores: Mapping[str, Sequence[float]], draws: int = 10_000, seed: int = 0) -> dict[str, float]:
    """P(each label has the highest mean) when the seeds are resampled with replacement, paired across labels."""
    labels = list(scores)
    lengths = {len(scores[label]) for label in labels}
    if not labels or len(lengths) != 1 or min(lengths) < 2:
        raise ValueError(
            f"bootstrap needs equal-length score lists of at least 2 seeds (got lengths {sorted(lengths)})"
        )
    if draws < 1:
        raise ValueError(f"bootstrap needs at least one draw (got {draws})")
    table = np.array([scores[label] for label in labels], dtype=float)  # (labels, seeds)
    if not np.all(np.isfinite(table)):
        raise ValueError("bootstrap scores must be finite")
    n = table.shape[1]
    # One set of resampled seed indices per draw, shared by every label; as counts, the means are one product.
    picks = np.random.default_rng(seed).integers(0, n, size=(draws, n))
    counts = np.bincount((picks + n * np.arange(draws)[:, None]).ravel(), minlength=draws * n).reshape(draws, n)
    means = counts @ table.T / n  # (draws, labels)
    top = means.max(axis=1, keepdims=True)
    # Ties, up to rounding in the product, share the win equally.
    best = means >= top - 1e-12 * np.maximum(1.0, np.abs(top))
    shares = (best / best.sum(axis=1, keepdims=True)).sum(axis=0) / draws
    return {label: float(share) for label, share in zip(labels, shares)}
