"""How often a whole search drops the true best network: the screen's look and every race round's look, simulated.

The search keeps "the confidence set of the best (95 %)" by looking at the data once after the screen and once after
every race round from the second seed on, up to --max-seeds rounds. Tested at 95 % at every look, the chance that the
true best leaves at some look grows with the looks. This simulates whole searches with the search's own rules
(`racing.screened_out`, then `racing.contenders_after` round by round, on seeds x images tables) under two ways of
setting each look's level: `per-look` (every look at the stated level, the rule before the error was spent) and
`spent` (the error spent evenly over the looks the search may take, `racing.look_confidence`, the rule now). It
counts the searches in which the true best was dropped, against the stated 5 % (in a tie, network 0: the promise
holds for each best), and the mean size of the final set (what the rule gives up).

Per-example correctness is drawn as measured on Fashion-MNIST (the committed scale study's per-example outputs):
mean accuracy 0.87; two trainings disagree on about 7 % of the images, the same images whatever the network (an
image's chance of being right is Beta-distributed: most images always right, some always wrong); a training's seed
shifts its accuracy by about the images' binomial floor (seed sd / floor = 1, --seed-ratio). A network's skill
shifts the log-odds of every image. Scenarios: `tie` (every network equally good), `margin` (one network better
than the others by --margin points) and `graded` (networks --margin, 2x, 3x, ... points apart, as a grid's are).
Each search: --networks networks screened on 2 seeds, the survivors raced one fresh seed per round up to
--max-seeds seeds or until one is left.

Last line: dropped_<rule>_<scenario>=<rate> for every cell, and level=<stated error>.

    python benchmarks/race_error.py [--searches 300] [--networks 5] [--images 4000] [--max-seeds 10] [--margin 0.5]
        [--seed-ratio 1] [--pooling-level 0.5]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from scaler.study import racing
from scaler.study.racing import contenders_after, look_confidence, looks, screened_out

SCENARIOS = ("tie", "margin", "graded")
RULES = ("per-look", "spent")
SCREEN_SEEDS = 2
AGREEMENT = 0.07  # share of images two trainings disagree on (committed scale study, validation split)
ACCURACY = 0.87


def image_chances(images: int, rng: np.random.Generator) -> np.ndarray:
    """Each image's chance of being classified right by a typical training: Beta with mean ACCURACY whose
    E[2p(1 - p)] is AGREEMENT (the share of images two independent trainings disagree on)."""
    concentration = 1 / (ACCURACY * (1 - ACCURACY) * 2 / AGREEMENT - 1)  # E[p(1-p)] = m(1-m) c / (c + 1)
    return rng.beta(ACCURACY * concentration, (1 - ACCURACY) * concentration, images)


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), clipped away from 0 and 1."""
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def skill_shift(margin_points: float, chances: np.ndarray) -> float:
    """The log-odds shift that raises the mean chance by `margin_points` (bisection)."""
    target = float(chances.mean()) + margin_points / 100
    low, high = 0.0, 5.0
    base = logit(chances)
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if float((1 / (1 + np.exp(-(base + middle)))).mean()) < target else (low, middle)
    return (low + high) / 2


def seed_scale(chances: np.ndarray, ratio: float, rng: np.random.Generator) -> float:
    """The sd of a seed's log-odds shift that makes the seeds' accuracy sd `ratio` times the images' floor
    (bisection on 100 drawn shifts)."""
    floor = math.sqrt(ACCURACY * (1 - ACCURACY) / len(chances))
    base = logit(chances)
    unit = rng.normal(0, 1, 100)
    low, high = 0.0, 2.0
    for _ in range(30):
        middle = (low + high) / 2
        spread = np.std([(1 / (1 + np.exp(-(base + middle * shift)))).mean() for shift in unit])
        low, high = (middle, high) if spread < ratio * floor else (low, middle)
    return (low + high) / 2


class World:
    """One simulated search's ground truth: image chances, each network's skill, the seeds' spread."""

    def __init__(self, scenario: str, args: argparse.Namespace, rng: np.random.Generator) -> None:
        self.rng = rng
        self.base = logit(image_chances(args.images, rng))
        margins = {
            "tie": [0.0] * args.networks,
            "margin": [args.margin] + [0.0] * (args.networks - 1),
            "graded": [args.margin * (args.networks - 1 - i) for i in range(args.networks)],
        }[scenario]
        self.skills = [skill_shift(points, 1 / (1 + np.exp(-self.base))) for points in margins]
        self.best = {0}  # in a tie every network is a best: the set's promise is for each, so count one
        self.seed_sd = args.seed_sd

    def trainings(self, network: int, seeds: int) -> np.ndarray:
        """`seeds` fresh trainings of `network`: a seeds x images table of 0/1 correctness."""
        shift = self.skills[network] + self.rng.normal(0, self.seed_sd, (seeds, 1))
        chance = 1 / (1 + np.exp(-(self.base[None, :] + shift)))
        return (self.rng.random(chance.shape) < chance).astype(np.float32)


def search(
    world: World, networks: int, max_seeds: int, screen_confidence: float, race_confidence: float
) -> tuple[bool, int]:
    """One whole search (the screen, then race rounds of one fresh seed): whether a true best left at any look, and
    how many networks the final set holds."""
    labels = [f"n{i}" for i in range(networks)]
    screen = {label: world.trainings(i, SCREEN_SEEDS) for i, label in enumerate(labels)}
    left = set(screened_out(screen, screen_confidence))
    contenders = [label for label in labels if label not in left]
    race: dict[str, np.ndarray] = {}
    for _ in range(max_seeds):
        if len(contenders) <= 1:
            break
        for label in contenders:
            fresh = world.trainings(int(label[1:]), 1)
            race[label] = fresh if label not in race else np.vstack([race[label], fresh])
        kept = contenders_after(race, contenders, race_confidence)
        left |= set(contenders) - set(kept)
        contenders = kept
    return any(int(label[1:]) in world.best for label in left), len(contenders)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--searches", type=int, default=300, help="simulated searches per (rule, scenario)")
    parser.add_argument("--networks", type=int, default=5)
    parser.add_argument("--images", type=int, default=4000, help="validation images")
    parser.add_argument("--max-seeds", type=int, default=10, help="the race's most seeds (the search's default)")
    parser.add_argument("--margin", type=float, default=0.5, help="points the best is ahead by")
    parser.add_argument("--seed-ratio", type=float, default=1.0, help="seeds' accuracy sd / the images' floor")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pooling-level",
        type=float,
        default=racing.NEVER_POOL,
        help="pool the seed term of each difference where its F test's p exceeds this (0.5: the former rule; "
        "default: never, the rule now)",
    )
    args = parser.parse_args()
    racing.NEVER_POOL = args.pooling_level
    rng = np.random.default_rng(args.seed)
    calibration = image_chances(args.images, rng)
    args.seed_sd = seed_scale(calibration, args.seed_ratio, rng)
    total = looks(args.max_seeds)
    spent = look_confidence(args.confidence, total)
    print(
        f"# {args.searches} searches per cell: {args.networks} networks screened on {SCREEN_SEEDS} seeds, raced up to "
        f"{args.max_seeds} seeds on {args.images} validation images; seed sd = {args.seed_ratio:g} x floor; margin "
        f"{args.margin:g} points; seed term pooled where p > {args.pooling_level:g}; per-look: every look at "
        f"{args.confidence:.0%}; spent: {total} looks at {spent:.4f} each"
    )
    print(f"{'rule':<10}{'scenario':<9}{'dropped':>9}{'95 % interval':>18}{'final set':>10}{'seconds':>9}")
    rates = {}
    for rule in RULES:
        level = args.confidence if rule == "per-look" else spent
        for scenario in SCENARIOS:
            started = time.time()
            results = [
                search(World(scenario, args, rng), args.networks, args.max_seeds, level, level)
                for _ in range(args.searches)
            ]
            rate = sum(dropped for dropped, _ in results) / args.searches
            final = sum(size for _, size in results) / args.searches
            half = 1.96 * math.sqrt(max(rate * (1 - rate), 1 / args.searches) / args.searches)
            rates[f"dropped_{rule.replace('-', '_')}_{scenario}"] = rate
            interval = f"[{max(0.0, rate - half):.3f}, {min(1.0, rate + half):.3f}]"
            line = f"{rule:<10}{scenario:<9}{rate:>9.3f}{interval:>18}{final:>10.2f}{time.time() - started:>9.0f}"
            print(line, flush=True)
    print(" ".join(f"{key}={value:.3f}" for key, value in rates.items()) + f" level={1 - args.confidence:.3f}")


if __name__ == "__main__":
    main()
