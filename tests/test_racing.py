"""Selection under a budget: durations, the screen's rule, the best set on per-example outputs, the pick and what
more budget would buy (pure functions, on simulated per-example correctness)."""

from __future__ import annotations

import numpy as np
import pytest

from scaler.errors import UserError
from scaler.study.racing import (
    MIN_IMAGES,
    Cost,
    base_resolved,
    best_set,
    contenders_after,
    leader,
    next_budget,
    parse_budget,
    pick,
    plan_search,
    screened_out,
)


def tables(
    rng: np.random.Generator, accuracy: dict[str, float], seeds: int, images: int = 3000
) -> dict[str, np.ndarray]:
    """Seeds x images correctness: every image has its own difficulty, shared by all networks; each network and
    seed draws its own errors."""
    difficulty = rng.normal(0, 1.0, size=images)
    out = {}
    for label, target in accuracy.items():
        shift = np.log(target / (1 - target))
        p = 1 / (1 + np.exp(-(shift - difficulty)))
        out[label] = (rng.random((seeds, images)) < p).astype(float)
    return out


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("2h", 7200), ("1h30m", 5400)])
def test_budget_durations(text: str, seconds: float) -> None:
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "15", "15 minutes", "-5m", "0m", "m"])
def test_a_budget_that_is_not_a_duration_is_one_line(text: str) -> None:
    with pytest.raises(UserError, match="--budget"):
        parse_budget(text)


def test_the_screen_rules_out_the_clearly_worse_and_keeps_the_close() -> None:
    rng = np.random.default_rng(0)
    screen = tables(rng, {"wide": 0.86, "sharp": 0.858, "deep": 0.80, "deeper": 0.70}, seeds=2, images=15000)
    out = screened_out(screen)
    assert leader(screen) in {"wide", "sharp"} and set(out) == {"deep", "deeper"}
    assert all(b.mean > b.critical * b.se and b.dof == 3 for b in out.values())
    assert screened_out({label: table[:1] for label, table in screen.items()}) == {}, "one seed shows no seed noise"


def test_the_screen_counts_the_seeds_noise_not_only_the_images() -> None:
    """Two seeds whose networks swap places by 2 points: the images alone would call a 1-point gap certain, the
    seeds' spread does not."""
    rng = np.random.default_rng(5)
    base = tables(rng, {"a": 0.85}, seeds=1, images=15000)["a"][0]
    shift = {"a": (0.0, 0.0), "b": (-0.03, +0.01), "c": (+0.01, -0.03), "d": (-0.01, -0.01)}
    screen = {}
    for label, (first, second) in shift.items():
        rows = []
        for delta in (first, second):
            row = base.copy()
            flip = rng.choice(np.flatnonzero(row == (1 if delta < 0 else 0)), int(abs(delta) * len(row)), replace=False)
            row[flip] = 1 - row[flip]
            rows.append(row)
        screen[label] = np.stack(rows)
    assert screened_out(screen) == {}


def test_the_best_set_keeps_the_true_best_under_ties_and_drops_clear_losers() -> None:
    rng = np.random.default_rng(1)
    kept_best = 0
    for _ in range(40):
        race = tables(rng, {"a": 0.86, "b": 0.86, "c": 0.84}, seeds=3)
        members = best_set(race)
        kept_best += members["a"] and members["b"]
    assert kept_best >= 36  # a tie keeps both nearly always (each is left out with probability <= 5 %)
    race = tables(rng, {"a": 0.87, "b": 0.80}, seeds=3)
    assert best_set(race) == {"a": True, "b": False}


def test_the_pick_is_the_cheapest_of_the_best_set() -> None:
    costs = {"a": Cost(7.2e6, 0.9), "b": Cost(7.0e6, 1.1), "c": Cost(7.0e6, 1.0)}
    assert pick(["a", "b", "c"], costs) == "c" and pick(["a"], costs) == "a"


def flipped(rng: np.random.Generator, reference: np.ndarray, worse: int, better: int) -> np.ndarray:
    """`reference` with, on every seed, `worse` of its right images made wrong and `better` wrong ones made right
    (different images per seed): a difference of (better - worse) / images on every seed, noise only per image."""
    out = reference.copy()
    for row in out:
        right, wrong = np.flatnonzero(row == 1), np.flatnonzero(row == 0)
        row[rng.choice(right, worse, replace=False)] = 0
        row[rng.choice(wrong, better, replace=False)] = 1
    return out


def test_next_budget_counts_the_trainings_that_would_separate_the_best_set() -> None:
    rng = np.random.default_rng(2)
    a = (rng.random((3, 10000)) < 0.86).astype(float)
    seconds = {"a": 60.0, "b": 80.0}
    close = {"a": a, "b": flipped(rng, a, worse=150, better=130)}  # 0.2 points behind on every seed
    closer = {"a": a, "b": flipped(rng, a, worse=145, better=135)}  # 0.1 points behind
    first, second = next_budget(close, ["a", "b"], seconds), next_budget(closer, ["a", "b"], seconds)
    assert first.seeds is not None and second.seeds is not None and 3 < first.seeds < second.seeds
    assert first.trainings == 2 * (first.seeds - 3)
    assert first.minutes == pytest.approx((first.seeds - 3) * (60 + 80) / 60, abs=0.05)
    assert next_budget(close, ["a"], seconds).trainings == 0  # a best set of one needs nothing more


def test_the_plan_trains_at_full_fidelity_when_the_budget_allows_and_less_when_not() -> None:
    base = 1 / 1700  # the base's seconds per image
    rates = {f"n{i}": 2.06 * base for i in range(7)}
    roomy = plan_search(2 * 3600, rates, base, full_images=90000)
    assert roomy.race_images == 90000 and roomy.rounds >= 3 and roomy.seconds <= 2 * 3600
    tight = plan_search(15 * 60, rates, base, full_images=90000)
    assert MIN_IMAGES <= tight.race_images < 90000 and tight.rounds >= 3 and tight.seconds <= 15 * 60
    assert 2 * tight.screen_images * sum(rates.values()) <= 15 * 60 / 3 + 1e-6
    with pytest.raises(UserError, match=r"--budget 0.5 min is too small .* screen of 7 networks .* needs \d+ min"):
        plan_search(30, rates, base, full_images=90000)
    small = plan_search(2 * 60, rates, base, full_images=90000)
    assert small.race_images == MIN_IMAGES and 0 <= small.rounds < 3, "a small budget: a smaller, labelled answer"


def test_the_plan_without_a_screen_and_with_no_deadline() -> None:
    rates = {"n0": 2.0 / 1700, "n1": 2.1 / 1700}
    plan = plan_search(float("inf"), rates, 1 / 1700, full_images=600, screen=False, overhead=2.0)
    assert plan.screen_images == 0 and plan.race_images == 600 and plan.rounds >= 3
    assert set(plan.seconds_per_training) == {"n0", "n1", "base"}
    assert plan.seconds_per_training["n1"] > plan.seconds_per_training["n0"] > plan.seconds_per_training["base"] > 2


def test_the_race_keeps_its_contenders_until_each_has_two_seeds_then_the_best_set() -> None:
    rng = np.random.default_rng(3)
    race = tables(rng, {"a": 0.88, "b": 0.80, "base": 0.80}, seeds=1, images=15000)
    assert contenders_after(race, ["a", "b"]) == ["a", "b"], "one seed cannot tell luck from skill"
    race = tables(rng, {"a": 0.88, "b": 0.80, "base": 0.80}, seeds=3, images=15000)
    assert contenders_after(race, ["a", "b"]) == ["a"]


def test_the_base_runs_until_every_contender_differs_from_it() -> None:
    rng = np.random.default_rng(4)
    race = tables(rng, {"a": 0.88, "base": 0.80}, seeds=3, images=15000)
    assert base_resolved(race, ["a"], "base")
    assert not base_resolved({"a": race["a"], "base": race["base"][:1]}, ["a"], "base"), "one seed of the base"
    tied = tables(rng, {"a": 0.85, "base": 0.85}, seeds=3, images=3000)
    assert not base_resolved(tied, ["a"], "base")


def test_the_error_is_spent_evenly_over_the_looks_a_search_may_take() -> None:
    from scaler.study.racing import look_confidence, looks

    assert looks(10) == 10 and looks(2) == 2  # the screen's look, then one per race round from the second seed
    assert look_confidence(0.95, 10) == pytest.approx(0.995) and look_confidence(0.95, 1) == pytest.approx(0.95)


def test_a_look_says_who_beat_each_network_it_leaves_out_and_by_what_interval() -> None:
    from scaler.study.racing import difference, eliminated

    rng = np.random.default_rng(3)
    race = tables(rng, {"wide": 0.88, "close": 0.879, "behind": 0.80, "far": 0.70}, seeds=4, images=15000)
    out = eliminated(race, list(race), 0.99)
    assert set(out) == {"behind", "far"} and contenders_after(race, list(race), 0.99) == ["wide", "close"]
    for label, beaten in out.items():
        estimate = difference(race, label, beaten.by)
        assert beaten.by in {"wide", "close"} and beaten.mean == pytest.approx(estimate.mean)
        assert 0 < beaten.low < beaten.mean < beaten.high and beaten.seeds == 4
        assert beaten.error == pytest.approx(0.01 / 3)
    assert eliminated({label: table[:1] for label, table in race.items()}, list(race)) == {}, "one seed: no look"


def test_race_differences_keep_the_seed_term_with_its_few_degrees_of_freedom() -> None:
    """Seeds that look like image noise are not pooled away: the interval rests on the seeds (s - 1 dof)."""
    from scaler.study.racing import difference

    rng = np.random.default_rng(4)
    race = tables(rng, {"a": 0.87, "b": 0.87}, seeds=3, images=15000)
    assert difference(race, "a", "b").dof <= 2
