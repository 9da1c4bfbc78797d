"""The fidelity ladder's rule on hand-made rungs: plateau, budget, not learning; and the plan's fewest images."""

from __future__ import annotations

import math

import pytest

from scaler.errors import UserError
from scaler.study.fidelity import (
    BUDGET,
    NOT_LEARNING,
    PLATEAU,
    Fidelity,
    Rung,
    climb,
    ladder_start,
    learns_from,
    plateau_at,
    read_ladder,
    validation_floor,
)
from scaler.study.racing import PlanCosts, plan_search


def ladder(*accuracies: float, start: int = 8192) -> list[Rung]:
    """Rungs doubling from `start` images with these validation accuracies."""
    return [Rung(start * 2**k, acc, 10.0 * 2**k) for k, acc in enumerate(accuracies)]


def test_floor_is_the_binomial_standard_error() -> None:
    assert validation_floor(0.87, 6000) == pytest.approx(math.sqrt(0.87 * 0.13 / 6000))
    assert validation_floor(0.87, 6000) == pytest.approx(0.0043, abs=1e-4)


def test_first_rung_is_32_steps() -> None:
    assert ladder_start(256) == 8192 and ladder_start(64) == 2048


def test_plateau_is_the_first_rung_that_doubling_does_not_beat_beyond_the_floor() -> None:
    rungs = ladder(0.40, 0.80, 0.95, 0.955, 0.96)  # floor at 1,000 images and 95.5 %: 0.66 points
    assert plateau_at(rungs, 1000) == 4 * 8192
    assert plateau_at(rungs[:3], 1000) is None
    assert plateau_at(ladder(0.80, 0.79), 1000) == 8192  # a longer training that loses is a plateau too


def test_learns_from_the_shortest_rung_with_nine_tenths_of_the_gain_over_chance() -> None:
    rungs = ladder(0.30, 0.85, 0.95, 0.955)
    assert learns_from(rungs, 1000, chance=0.1) == 4 * 8192  # 0.75 of 0.855 is 0.88 < 0.9; 0.85 of 0.855 is 0.99
    assert learns_from(ladder(0.30, 0.88, 0.95, 0.955), 1000, chance=0.1) == 2 * 8192  # 0.78 of 0.855: 0.91
    assert learns_from(ladder(0.11, 0.12, 0.105), 1000, chance=0.1) is None  # never 3 floors (2.8 points) above chance


def test_climb_stops_at_a_plateau_or_when_the_budget_would_not_fit() -> None:
    assert climb(ladder(0.5, 0.8), 1000, lambda following, proxy: True) == 4 * 8192
    assert climb(ladder(0.5, 0.8), 1000, lambda following, proxy: following <= 2 * 8192) is None
    assert climb(ladder(0.9, 0.9), 1000, lambda following, proxy: True) is None


def test_read_ladder_targets_the_plateau_and_says_so() -> None:
    fidelity = read_ladder(ladder(0.40, 0.80, 0.95, 0.955), 1000, 0.1, stopped_by_budget=False)
    assert (fidelity.status, fidelity.target, fidelity.least) == (PLATEAU, 4 * 8192, 4 * 8192)
    assert fidelity.verdict(4 * 8192).startswith("the proxy has reached the base's plateau")
    assert "the budget affords 16384" in fidelity.verdict(2 * 8192)
    assert Fidelity.from_json(fidelity.to_json()) == fidelity


def test_read_ladder_without_a_plateau_targets_the_longest_rung() -> None:
    fidelity = read_ladder(ladder(0.60, 0.80, 0.86), 15000, 0.1, stopped_by_budget=True)
    assert (fidelity.status, fidelity.target, fidelity.least) == (BUDGET, 4 * 8192, 2 * 8192)
    assert "the budget stopped the ladder while the base still gained +6.00 points" in fidelity.verdict(4 * 8192)


def test_a_base_at_chance_does_not_learn() -> None:
    fidelity = read_ladder(ladder(0.10, 0.11), 1000, 0.1, stopped_by_budget=True)
    assert fidelity.status == NOT_LEARNING
    assert fidelity.verdict(fidelity.target).startswith("the proxy does not learn")


def test_plan_keeps_the_fewest_images_that_learn() -> None:
    per_image = {"a": 2e-3, "b": 2e-3, "c": 2e-3, "d": 2e-3}
    plan = plan_search(600, per_image, 1e-3, full_images=65536, overhead=2.0, least=16384)
    assert 16384 <= plan.race_images < 65536 and plan.least_images == 16384
    minimum = PlanCosts(per_image, 1e-3, 2.0, least=16384).seconds(16384, 0)
    with pytest.raises(UserError, match="too small"):
        plan_search(minimum - 1, per_image, 1e-3, full_images=65536, overhead=2.0, least=16384)


def test_the_race_base_at_the_proxy_is_judged_against_the_longest_training() -> None:
    fidelity = read_ladder(ladder(0.64, 0.85, 0.88, 0.916), 359, 0.1, stopped_by_budget=True)
    assert fidelity.verdict(43776, (0.915, 4)).startswith("the proxy reaches the longest training's accuracy")
    assert "base 0.9150 at 43776 training images (mean of 4 seeds) against 0.9160 at 65536" in fidelity.verdict(
        43776, (0.915, 4)
    )
    assert fidelity.verdict(43776, (0.85, 4)).startswith("the proxy is shorter than the 65536 images")
