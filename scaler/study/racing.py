"""Selection under a time budget: the budget itself, the screen's rule, the confidence set of the best on
per-example outputs, the pick, and what more budget would buy. Pure functions of measured numbers."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.stats import t as t_distribution

from scaler.errors import UserError
from scaler.study.stats import Beaten, Estimate, beaten_by, confidence_set, crossed_mean

BUDGET = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
NEVER_POOL = 1.0  # crossed_mean pools the seed term only where its F test's p exceeds this: never
SCREEN_SEEDS = 2  # the screen trains every network on two seeds, so that its rule sees the seeds' noise too


def parse_budget(text: str) -> float:
    """'90s', '15m', '2h' or '1h30m' in seconds; anything else is one line naming the forms."""
    match = BUDGET.match(text.strip()) if text.strip() else None
    if match is None or not any(match.groups()):
        raise UserError(f"--budget {text!r} is not a duration: use e.g. 90s, 15m, 2h or 1h30m")
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise UserError(f"--budget must be more than zero (got {text!r})")
    return total


def budget_text(seconds: float) -> str:
    """A budget in seconds as a user writes it: 90s, 15m, 1h30m."""
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{value}{unit}" for value, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if value) or "0s"


def paired_tables(tables: Mapping[str, np.ndarray], a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    """The two networks' seeds x images tables cut to the seeds both have (rows are seeds in a shared order)."""
    rows = min(len(tables[a]), len(tables[b]))
    return tables[a][:rows], tables[b][:rows]


def difference(tables: Mapping[str, np.ndarray], reference: str, candidate: str) -> Estimate:
    """candidate - reference accuracy, seed by seed and image by image (`stats.crossed_mean`), the seed term always
    kept (never pooled into the images'): a race looks many times and compares every pair, and whole races
    simulated with it pooled where the seeds looked like image noise dropped a tied best 9 % of the time at a
    stated 5 % (`benchmarks/race_error.py`)."""
    ref, cand = paired_tables(tables, reference, candidate)
    return crossed_mean(cand - ref, pooling_level=NEVER_POOL)


def leader(tables: Mapping[str, np.ndarray]) -> str:
    """The network with the highest mean accuracy (ties to the first label in sorted order)."""
    return min(tables, key=lambda label: (-float(tables[label].mean()), label))


@dataclass(frozen=True)
class Behind:
    """How far a screened network is behind the screen's leader (`by`): the difference of their mean accuracies,
    its standard error, degrees of freedom, and the t it had to exceed."""

    mean: float
    se: float
    dof: int
    critical: float
    by: str = ""


SCREEN_RULE = (
    "the confidence set of the best at the screen's fidelity: every network on the same seeds, the noise of one "
    "network on one seed pooled over all networks (the residual of network + seed); a network leaves when the "
    "leader beats it by a one-sided t test at the Bonferroni level over the others"
)


def screened_out(tables: Mapping[str, np.ndarray], confidence: float = 0.95) -> dict[str, Behind]:
    """The screen's rule (SCREEN_RULE) on seeds x images tables: the per-seed accuracies (networks x seeds) are
    fitted additively, network + seed; the residual variance, pooled over the K networks ((K - 1)(S - 1) degrees of
    freedom), is one network's noise on one seed, seeds and images together, so a single lucky or unlucky seed is
    not mistaken for skill. Returns the networks ruled out, with how far behind they are."""
    labels = sorted(tables)
    seeds = min((len(tables[label]) for label in labels), default=0)
    if len(labels) < 3 or seeds < 2:
        return {}
    accuracy = np.array([[float(tables[label][seed].mean()) for seed in range(seeds)] for label in labels])
    residual = accuracy - accuracy.mean(1, keepdims=True) - accuracy.mean(0, keepdims=True) + accuracy.mean()
    dof = (len(labels) - 1) * (seeds - 1)
    se = math.sqrt(2 * float((residual**2).sum()) / dof / seeds)
    critical = float(t_distribution.ppf(1 - (1 - confidence) / (len(labels) - 1), dof))
    means = dict(zip(labels, accuracy.mean(1)))
    first = max(labels, key=lambda label: (means[label], -labels.index(label)))
    out = {}
    for label in labels:
        behind = float(means[first] - means[label])
        if label != first and behind > critical * se:
            out[label] = Behind(behind, se, dof, critical, first)
    return out


CONFIDENCE = 0.95  # of the search's confidence set of the best, over all its looks
RACE_RULE = (
    "after each race round from the second seed on, the confidence set of the best among the networks still racing "
    "(per-example, seeds and images crossed): a network leaves when another beats it by a one-sided interval at the "
    "Bonferroni level over the others; the search's 5 % error is spent evenly over the looks it may take (the "
    "screen's and one per race round up to --max-seeds), so that the true best leaves at some look with probability "
    "at most 5 %"
)


def looks(max_seeds: int) -> int:
    """The looks at the data a search may take before its answer: the screen's, and one after each race round from
    the second seed on (the first has no seed spread to judge by)."""
    return 1 + max(1, max_seeds - 1)


def look_confidence(confidence: float, looks: int) -> float:
    """The confidence each of `looks` looks keeps when the error 1 - confidence is spent evenly over them: by the
    union bound the true best leaves at some look with probability at most 1 - confidence, however the looks are
    correlated (a look that is never taken leaves its share unspent)."""
    return 1 - (1 - confidence) / max(1, looks)


def best_set(tables: Mapping[str, np.ndarray], confidence: float = 0.95) -> dict[str, bool]:
    """`stats.confidence_set` from seeds x images tables (every network on the same images, seeds in a shared order),
    each comparison the paired per-example difference."""
    return confidence_set(list(tables), lambda a, b: difference(tables, a, b), confidence)


def contenders_after(tables: Mapping[str, np.ndarray], contenders: list[str], confidence: float = 0.95) -> list[str]:
    """Who stays in the race after a round: the confidence set of the best among `contenders` once each has two
    seeds (one seed cannot tell a network's luck from its skill), else all of them."""
    out = eliminated(tables, contenders, confidence)
    return [label for label in contenders if label not in out]


def eliminated(tables: Mapping[str, np.ndarray], contenders: list[str], confidence: float = 0.95) -> dict[str, Beaten]:
    """The contenders a round's look leaves out of the confidence set of the best, each with the network that beat
    it and the interval that decided (none before every contender has two seeds)."""
    if len(contenders) < 2 or min(len(tables[label]) for label in contenders) < 2:
        return {}
    chosen = {label: tables[label] for label in contenders}
    return beaten_by(list(chosen), lambda a, b: difference(chosen, a, b), confidence)


def versus_base(
    tables: Mapping[str, np.ndarray], contenders: list[str], base: str, confidence: float = 0.95
) -> dict[str, tuple[Estimate, tuple[float, float]]]:
    """Each contender minus the base on the seeds both have, with its interval simultaneous over the contenders."""
    out = {}
    for label in contenders:
        estimate = difference(tables, base, label)
        out[label] = (estimate, estimate.interval(confidence, family=len(contenders)))
    return out


def base_resolved(tables: Mapping[str, np.ndarray], contenders: list[str], base: str) -> bool:
    """Whether the base has run on enough seeds: at least two, and every contender's family-adjusted interval
    against it excludes zero (the reference then needs no more trainings)."""
    if base not in tables or len(tables[base]) < 2:
        return False
    return all(low > 0 or high < 0 for _, (low, high) in versus_base(tables, contenders, base).values())


@dataclass(frozen=True)
class Cost:
    """What a network costs to deploy: multiply-adds and latency."""

    macs: float
    latency_ms: float


def pick(best: list[str], costs: Mapping[str, Cost]) -> str:
    """The rule for the answer: the cheapest network of the best set, by MACs, then latency, then label."""
    if not best:
        raise ValueError("the best set is empty")
    return min(best, key=lambda label: (costs[label].macs, costs[label].latency_ms, label))


@dataclass(frozen=True)
class NextBudget:
    """What more budget would separate the best set: seeds per network, the trainings and minutes that adds, and
    the networks no number of seeds would separate from the leader (they need more images)."""

    seeds: int | None
    trainings: int
    minutes: float
    unresolvable: list[str]


def next_budget(
    tables: Mapping[str, np.ndarray],
    best: list[str],
    seconds_per_training: Mapping[str, float],
    power: float = 0.8,
    confidence: float = 0.95,
) -> NextBudget:
    """From the measured variances: the seeds at which every member of the best set would be told apart from the
    leader with `power` (each comparison at the family's Bonferroni level, its mean staying where it is), and what
    the extra trainings of the set's members cost at their measured seconds per training."""
    first = leader({label: tables[label] for label in best})
    others = [label for label in best if label != first]
    if not others:
        return NextBudget(None, 0, 0.0, [])
    needed, unresolvable = {}, []
    for label in others:
        seeds = difference(tables, label, first).seeds_needed(family=len(others), power=power, confidence=confidence)
        if seeds is None:
            unresolvable.append(label)
        else:
            needed[label] = seeds
    if not needed:
        return NextBudget(None, 0, 0.0, unresolvable)
    target = max(needed.values())
    extra = {label: max(0, target - len(tables[label])) for label in [first, *needed]}
    seconds = sum(count * seconds_per_training[label] for label, count in extra.items())
    return NextBudget(target, sum(extra.values()), round(seconds / 60, 1), unresolvable)


SCREEN_SHARE = 1 / 3  # of the budget left after building the space, at most, for the screen
MIN_ROUNDS = 3  # the race's fewest rounds: with two seeds a paired t interval has 1 degree of freedom (t = 12.7)
FIDELITY_ROUNDS = 2  # with a planned fidelity the race keeps its images for this many rounds before it gives any up
MIN_IMAGES = 6000  # a training's fewest images: below this the base barely leaves chance (see search --quick)


@dataclass(frozen=True)
class SearchPlan:
    """How a search spends its budget: images per screened network, images per race training, the rounds the
    race can afford at those images (each trains the contenders and the base once more), the seconds one
    training of each network is expected to take at the race's images, and the fewest race images allowed."""

    screen_images: int
    race_images: int
    rounds: int
    seconds: float
    seconds_per_training: dict[str, float]
    base_seconds_per_image: float = 0.0
    overhead: float = 0.0
    least_images: int = 0


@dataclass(frozen=True)
class PlanCosts:
    """What a search's trainings cost at the measured speeds: every network's seconds per training image
    (`per_image`; the base's is `base_per_image`), the seconds each training spends besides (`overhead`), how many
    of the dearest networks race beside the base, and the screen's share of the race's images (none without one)."""

    per_image: Mapping[str, float]
    base_per_image: float
    overhead: float = 0.0
    contenders: int = 3
    screen_fraction: float = 1 / 3
    screen: bool = True
    least: int = MIN_IMAGES
    rounds: int = MIN_ROUNDS

    @property
    def rates(self) -> dict[str, float]:
        """Seconds per image of each screened network, never faster than the base."""
        return {label: max(rate, self.base_per_image) for label, rate in self.per_image.items()}

    def screen_images(self, race_images: int) -> int:
        """Images per screen training: `screen_fraction` of the race's, at least half the fewest allowed."""
        return max(self.least // 2, int(race_images * self.screen_fraction)) if self.screen else 0

    def training(self, rate: float, images: int) -> float:
        """Seconds of one training of `images` at `rate` seconds per image."""
        return images * rate + self.overhead

    def seconds(self, race_images: int, rounds: int) -> float:
        """Seconds of the screen and `rounds` race rounds at `race_images` images per race training."""
        rates = self.rates
        dearest = sorted(rates.values(), reverse=True)[: self.contenders] or [self.base_per_image] * self.contenders
        screen = SCREEN_SEEDS * sum(self.training(rate, self.screen_images(race_images)) for rate in rates.values())
        race = sum(self.training(rate, race_images) for rate in [*dearest, self.base_per_image])
        return screen + rounds * race

    def minimum(self, race_images: int) -> float:
        """Seconds of the least search worth running at `race_images`: the screen and `rounds` race rounds."""
        return self.seconds(race_images, self.rounds)


def plan_search(
    budget_seconds: float,
    per_image: Mapping[str, float],
    base_per_image: float,
    full_images: int,
    contenders: int = 3,
    screen_fraction: float = 1 / 3,
    overhead: float = 0.0,
    screen: bool = True,
    least: int | None = None,
    budget_text: str = "",
    min_rounds: int = MIN_ROUNDS,
) -> SearchPlan:
    """Fit the screen and the race into `budget_seconds` at the measured speeds (`per_image`: each network's
    seconds per training image, `base_per_image` the base's; `overhead` seconds per training for building and
    evaluating it): the screen trains every network of `per_image` on SCREEN_SEEDS seeds on `screen_fraction`
    of the race's images and takes at most SCREEN_SHARE of the budget; the race's rounds train `contenders` of the
    most expensive networks and the base. Full fidelity (`full_images`) when `min_rounds` rounds fit after the
    screen; fewer images, down to `least` (MIN_IMAGES or all there are when not given), when not, and then as many
    rounds as fit (none: the answer is the screen's). No screen when `screen` is False. A budget that cannot fit the
    screen at the fewest images (without a screen: one round) is refused in one line with the minimum it needs,
    naming the --budget as the user gave it (`budget_text`) when known."""
    least = min(MIN_IMAGES, full_images) if least is None else min(least, full_images)
    costs = PlanCosts(per_image, base_per_image, overhead, contenders, screen_fraction, screen, least, min_rounds)
    seconds = costs.seconds
    minimum = seconds(least, 0 if screen else 1)
    if budget_seconds < minimum:
        what = (
            f"the screen of {len(costs.rates)} networks on {SCREEN_SEEDS} seeds at {costs.screen_images(least)} "
            "images each"
            if screen
            else f"one race round at {least} images"
        )
        given = (
            f"--budget {budget_text} leaves {max(0.0, budget_seconds) / 60:.1f} min after building and timing, which"
            if budget_text
            else f"--budget {budget_seconds / 60:.1f} min"
        )
        raise UserError(
            f"{given} is too small for this search: {what} needs "
            f"{math.ceil(minimum / 60)} min at the measured speed (building the space not counted)"
        )
    race_images = full_images
    while race_images > least and (
        costs.minimum(race_images) > budget_seconds or seconds(race_images, 0) > SCREEN_SHARE * budget_seconds
    ):
        race_images = max(least, int(race_images * 0.9))
    per_round = seconds(race_images, 1) - seconds(race_images, 0)
    left = budget_seconds - seconds(race_images, 0)
    rounds = max(0, int(left // per_round)) if math.isfinite(left) and per_round > 0 else MIN_ROUNDS
    return SearchPlan(
        costs.screen_images(race_images),
        race_images,
        rounds,
        seconds(race_images, rounds),
        {label: costs.training(rate, race_images) for label, rate in costs.rates.items()}
        | {"base": costs.training(base_per_image, race_images)},
        base_per_image,
        overhead,
        least,
    )


def race_images_after_screen(
    seconds_left: float,
    per_image: Mapping[str, float],
    fixed: float,
    full_images: int,
    least: int = MIN_IMAGES,
    rounds: int = MIN_ROUNDS,
) -> int:
    """The race's images per training from speeds measured in the screen (`per_image`: seconds per image of each
    network that races, the base included; `fixed`: seconds per round that do not grow with images): the full
    budget when `rounds` rounds fit in the time left, else as many images as do, never below MIN_IMAGES (or all
    there are, or the `least` the plan allows)."""
    least = min(least, full_images)
    rate = sum(per_image.values())
    if not math.isfinite(seconds_left) or rate <= 0:
        return full_images
    return max(least, min(full_images, int((seconds_left / rounds - fixed) / rate)))
