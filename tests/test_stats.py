"""Bootstrap probability that each label has the highest mean accuracy, seeds resampled jointly; paired differences."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scaler.study.stats import accuracy_interval, bootstrap_p_best, mean_interval, paired_by_seed


def test_clear_winner_is_certain() -> None:
    scores = {"a": [0.70, 0.72, 0.71, 0.69, 0.73], "b": [0.80, 0.82, 0.79, 0.81, 0.83]}
    p = bootstrap_p_best(scores)
    assert p["b"] == pytest.approx(1.0)
    assert p["a"] == pytest.approx(0.0)


def test_identical_labels_split_evenly() -> None:
    same = [0.7, 0.75, 0.72, 0.74]
    p = bootstrap_p_best({"a": same, "b": list(same), "c": [v - 0.1 for v in same]})
    assert p == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.0})


def test_pairing_by_seed() -> None:
    # b beats a by 0.01 on every seed although the seed-to-seed spread is far larger: paired, b always wins.
    a = [0.60, 0.80, 0.70, 0.90, 0.65]
    p = bootstrap_p_best({"a": a, "b": [v + 0.01 for v in a]})
    assert p["b"] == pytest.approx(1.0)


def test_reproducible_sums_to_one_in_key_order() -> None:
    rng = np.random.default_rng(3)
    scores = {label: list(0.7 + rng.normal(0, 0.02, size=6)) for label in ("z", "m", "a")}
    first = bootstrap_p_best(scores, draws=5_000, seed=7)
    assert first == bootstrap_p_best(scores, draws=5_000, seed=7)
    assert list(first) == ["z", "m", "a"]
    assert sum(first.values()) == pytest.approx(1.0)
    assert all(0 <= p <= 1 for p in first.values())
    assert 0 < max(first.values()) < 1  # noisy labels: no certain winner
    assert bootstrap_p_best(scores, draws=5_000, seed=8) != first


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError):
        bootstrap_p_best({"a": [0.1, 0.2, 0.3], "b": [0.1, 0.2]})
    with pytest.raises(ValueError):
        bootstrap_p_best({"a": [0.1], "b": [0.2]})
    with pytest.raises(ValueError):
        bootstrap_p_best({})


def test_paired_by_seed_uses_only_seeds_both_ran() -> None:
    table = pd.DataFrame(
        {
            ("a", 1): [0.70, 0.80, 0.75, math.nan],
            ("b", 1): [0.72, 0.821, 0.769, 0.99],
            ("c", 1): [0.5, None, None, None],
        },
        index=[0, 1, 2, 3],
    )
    diff = paired_by_seed(table, ("a", 1), ("b", 1))
    assert diff is not None and diff.n == 3 and diff.mean == pytest.approx(0.02)
    assert diff.low < 0.02 < diff.high and diff.significant
    assert paired_by_seed(table, ("a", 1), ("c", 1)) is None  # one shared seed
    assert paired_by_seed(table, ("a", 1), ("z", 1)) is None


def test_accuracy_interval_stays_within_zero_and_one() -> None:
    """Two seeds far apart give a t interval wider than [0, 1]; an accuracy's ends are kept inside it."""
    mean, low, high = accuracy_interval([0.99, 0.31])
    assert mean == pytest.approx(0.65)
    assert (low, high) == (0.0, 1.0)
    assert mean_interval([0.99, 0.31])[2] > 1.0
