"""Uncertainty of published numbers: paired differences with t confidence intervals, seed spread."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

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


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Paired:
    """b - a, seed by seed: mean, sd and the t interval with n - 1 degrees of freedom (needs n >= 2)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired difference needs two equal-length samples of at least 2 (got {len(a)}, {len(b)})")
    differences = [y - x for x, y in zip(a, b)]
    mean = statistics.fmean(differences)
    sd = statistics.stdev(differences)
    half = float(stats.t.ppf((1 + confidence) / 2, len(differences) - 1)) * sd / math.sqrt(len(differences))
    return Paired(len(differences), mean, sd, mean - half, mean + half, confidence)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the t interval of a mean (low = high = mean for a single value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf((1 + confidence) / 2, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half
