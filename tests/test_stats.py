"""Paired differences, intervals, Holm, factorial effects with family-wise intervals, and the confidence set of the best."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from scaler.study.stats import (
    Estimate,
    accuracy_interval,
    best_set,
    crossed_mean,
    factorial_effects,
    family_columns,
    holm,
    mean_interval,
    paired_by_seed,
)


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


def test_holm_matches_the_step_down_by_hand() -> None:
    """Sorted p 0.005, 0.01, 0.03, 0.04 -> 4x, 3x, 2x, 1x, kept monotone: 0.02, 0.03, 0.06, 0.06."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and holm([]) == []


def simulated_factorial(effects: dict[str, float], seeds: int, noise: float, rng: np.random.Generator) -> dict:
    """Scores of every 3-stage mask on `seeds` seed blocks: block offset + effects (+-1/2 coding) + noise."""
    blocks = rng.normal(0.8, 0.02, size=seeds)
    scores = {}
    for bits in itertools.product("01", repeat=3):
        mask = "".join(bits)
        x = [int(b) - 0.5 for b in mask]
        mean = effects.get("1", 0) * x[0] + effects.get("2", 0) * x[1] + effects.get("1x2", 0) * x[0] * x[1]
        scores[mask] = list(blocks + mean + rng.normal(0, noise, size=seeds))
    return scores


def test_factorial_main_effects_are_the_on_minus_off_means_and_find_a_real_effect() -> None:
    """In a balanced 2^3 design a main effect equals the mean with the factor on minus the mean with it off; a
    2-point effect stands out of 0.1-point noise, a null factor does not."""
    rng = np.random.default_rng(0)
    scores = simulated_factorial({"1": 0.02, "2": -0.01, "1x2": 0.005}, seeds=4, noise=0.001, rng=rng)
    effects, dof, sd = factorial_effects(scores)
    by_name = {effect.name: effect for effect in effects}
    for j, name in enumerate("123"):
        on = np.mean([v for mask, values in scores.items() if mask[j] == "1" for v in values])
        off = np.mean([v for mask, values in scores.items() if mask[j] == "0" for v in values])
        assert by_name[name].estimate == pytest.approx(on - off)
    assert by_name["1"].significant and by_name["2"].significant and not by_name["3"].significant
    assert by_name["1x2"].estimate == pytest.approx(0.005, abs=0.002)
    assert dof == 8 * 4 - 4 - 6 and sd == pytest.approx(0.001, rel=0.5)


def test_factorial_family_wise_error_stays_under_five_percent_under_the_null() -> None:
    """No effect at all: in 400 simulated studies, the share with any interval excluding zero is at most ~5 %."""
    rng = np.random.default_rng(1)
    false = sum(
        any(e.significant for e in factorial_effects(simulated_factorial({}, 3, 0.01, rng))[0]) for _ in range(400)
    )
    assert false / 400 <= 0.07


def test_best_set_keeps_the_true_best_and_drops_clear_losers() -> None:
    """A clear winner stands alone; equal candidates all stay; over 300 noisy draws the true best is kept >= 95 %."""
    rng = np.random.default_rng(2)
    base = rng.normal(0.8, 0.01, size=5)
    clear = {"a": list(base + 0.05), "b": list(base), "c": list(base - 0.01)}
    assert best_set({k: [v + rng.normal(0, 1e-4) for v in vs] for k, vs in clear.items()}) == {
        "a": True,
        "b": False,
        "c": False,
    }
    kept = 0
    for _ in range(300):
        seeds = rng.normal(0.8, 0.01, size=3)
        draw = {
            name: list(seeds + shift + rng.normal(0, 0.004, size=3))
            for name, shift in (("a", 0.002), ("b", 0), ("c", 0))
        }
        kept += best_set(draw)["a"]
    assert kept / 300 >= 0.95


def crossed_table(
    rng: np.random.Generator, seeds: int, examples: int, seed_sd: float, example_sd: float, mean: float = 0.0
) -> np.ndarray:
    """Per-example correctness differences of two networks: each image has its own chance that the candidate is
    right where the reference is wrong and the reverse (drawn fresh per table, as the images are a sample), each
    seed shifts both, and each (seed, image) is one draw."""
    shift = rng.normal(0, seed_sd, size=(seeds, 1)) + rng.normal(0, example_sd, size=(1, examples)) + mean
    p_gain = np.clip(0.2 + shift / 2, 0, 1)
    p_loss = np.clip(0.2 - shift / 2, 0, 1)
    u = rng.random((seeds, examples))
    return (u < p_gain).astype(float) - ((u >= p_gain) & (u < p_gain + p_loss)).astype(float)


def test_crossed_mean_covers_the_true_difference_at_its_nominal_rate() -> None:
    rng = np.random.default_rng(0)
    for seed_sd, example_sd in ((0.0, 0.0), (0.0, 0.1), (0.02, 0.1), (0.05, 0.0), (0.1, 0.1)):  # floor: 0.02
        covered = 0
        for _ in range(400):
            low, high = crossed_mean(crossed_table(rng, 3, 1000, seed_sd, example_sd, mean=0.01)).interval()
            covered += low <= 0.01 <= high
        assert 0.92 <= covered / 400 <= 0.99, (seed_sd, example_sd, covered)


def test_crossed_mean_of_accuracy_has_the_binomial_floor() -> None:
    rng = np.random.default_rng(1)
    p = rng.beta(8, 2, size=6000)
    table = (rng.random((3, 6000)) < p).astype(float)
    estimate = crossed_mean(table)
    accuracy = table.mean()
    assert estimate.floor == pytest.approx(np.sqrt(accuracy * (1 - accuracy) / 6000), rel=0.01)
    assert estimate.seed_sd == pytest.approx(np.std(table.mean(axis=1), ddof=1))
    assert estimate.seeds == 3 and estimate.examples == 6000


def test_crossed_mean_uses_many_degrees_of_freedom_when_seeds_differ_no_more_than_their_images() -> None:
    rng = np.random.default_rng(2)
    quiet = [crossed_mean(crossed_table(rng, 3, 5000, 0.0, 0.1)) for _ in range(50)]
    loud = [crossed_mean(crossed_table(rng, 3, 5000, 0.2, 0.1)) for _ in range(50)]
    assert 0.3 <= np.mean([e.dof > 100 for e in quiet]) <= 0.7  # pooled where the F test's p > 0.5
    assert all(e.dof <= 2 for e in loud)
    assert np.mean([e.se for e in quiet]) < np.mean([e.se for e in loud])


def test_crossed_mean_of_one_seed_counts_only_the_images() -> None:
    table = np.array([[1.0, 0.0, 1.0, 1.0]])
    estimate = crossed_mean(table)
    assert estimate.seeds == 1 and np.isnan(estimate.seed_sd)
    assert estimate.se == pytest.approx(np.std(table, ddof=1) / 2)


def test_family_columns_widen_with_the_family_and_adjust_p() -> None:
    one = Estimate(0.01, 0.0045, 50, 3, 1000, 0.004, 0.004)
    alone = family_columns("gain", {"a": one})["a"]
    family = family_columns("gain", {"a": one, "b": one, "c": one, "d": None})
    assert set(family) == {"a", "b", "c"}
    assert family["a"]["gain_hi"] - family["a"]["gain_lo"] > alone["gain_hi"] - alone["gain_lo"]
    assert family["a"]["gain_p_holm"] == pytest.approx(min(1.0, 3 * one.p))
    assert alone["gain_significant"] and not family["a"]["gain_significant"]


def test_seeds_needed_shrink_only_the_seed_part_of_the_variance() -> None:
    seeds_only = Estimate(0.01, 0.006, 2, 3, 1000, 0.01, 0.01, image_variance=0.0)
    with_images = Estimate(0.01, 0.006, 2, 3, 1000, 0.01, 0.01, image_variance=0.000005)
    images_only = Estimate(0.01, 0.006, 2, 3, 1000, 0.01, 0.01, image_variance=0.000036)
    needed = seeds_only.seeds_needed()
    assert needed is not None and needed > 3
    t = stats.t.ppf(0.975, needed - 1) + stats.t.ppf(0.8, needed - 1)
    assert 0.01 >= t * 0.006 * math.sqrt(3 / needed)  # enough at the answer
    t = stats.t.ppf(0.975, needed - 2) + stats.t.ppf(0.8, needed - 2)
    assert 0.01 < t * 0.006 * math.sqrt(3 / (needed - 1))  # and not one seed fewer
    assert with_images.seeds_needed() > needed
    assert images_only.seeds_needed() is None  # the images alone are too wide: more seeds cannot resolve it
    assert seeds_only.seeds_needed(family=5) > needed
    assert Estimate(0.01, 0.001, 50, 1, 1000, math.nan, 0.01, 0.000001).seeds_needed() is None  # one seed
    assert Estimate(0.02, 0.006, 2, 3, 1000, 0.01, 0.01).seeds_needed() > 3  # never the seeds it already has


def test_family_columns_say_the_seeds_an_unresolved_difference_needs() -> None:
    rng = np.random.default_rng(3)
    columns = family_columns("gain", {"a": crossed_mean(crossed_table(rng, 3, 2000, 0.0, 0.05, mean=0.01))})["a"]
    assert not columns["gain_significant"] and columns["gain_seeds_needed"] >= 3
    one_seed = family_columns("gain", {"a": crossed_mean(crossed_table(rng, 1, 2000, 0.0, 0.05, mean=0.001))})["a"]
    assert not one_seed["gain_significant"] and math.isnan(one_seed["gain_seeds_needed"])  # unknown, not "images"
    images = family_columns("gain", {"a": Estimate(0.0005, 0.006, 2, 3, 1000, 0.01, 0.01, image_variance=0.00001)})
    assert math.isinf(images["a"]["gain_seeds_needed"])


def test_seeds_needed_tells_too_many_seeds_from_too_few_images() -> None:
    tiny = Estimate(0.0005, 0.006, 2, 3, 1000, 0.01, 0.01, image_variance=0.0)
    assert tiny.seeds_needed(most=100) == 101  # reachable, but only beyond the most asked about
    assert Estimate(0.0005, 0.006, 2, 3, 1000, 0.01, 0.01, image_variance=0.00001).seeds_needed() is None
