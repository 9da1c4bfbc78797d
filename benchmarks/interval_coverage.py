"""Do the intervals scaler publishes cover what fresh seeds measure? Paired comparisons between cheap networks.

Seven MobileNet x0.25 networks (the base, wider, deeper, higher resolution, compound phi = 1, FReLU in the last
stage, Fused-MBConv) are trained on seeds 0..7 at a third of the search's budget (30,000 images at batch 256),
through scaler's engine (resumable: rerun the same command to go on). For each of the 21 pairs, the interval
`stats.crossed_mean` gives from seeds 0-2 on the validation images is checked against the mean difference of the
5 fresh seeds 3-7 on the same images; the three-seed t interval of the per-seed accuracies is checked beside it.
On the test images (fresh images too), the fresh mean is compared with a prediction interval that adds the fresh
estimate's own standard error. Every run averages its weights (ema) and keeps the last weights' own validation
outputs, so the same runs measure what the average changes: accuracy, seed spread, per-example flips between
seeds. Each comparison is named by the regime its interval fell in: seed-limited (the seed term kept, s - 1
degrees of freedom) or pooled (the seeds differed no more than the images explain, so the seed term was folded into
the residual and the interval narrowed). Pairs of networks rarely pool; the same runs read with and without their
weight average (ema - raw, 7 more comparisons) differ by less than the seeds do, and land there. Last line:
coverage=<f> comparisons=<n> val_floor=<points> seed_sd=<points> ema_seed_sd=<points> coverage_pooled=<f>
pooled=<n> coverage_seed_limited=<f> seed_limited=<n>

    python benchmarks/interval_coverage.py [--seeds 3] [--fresh 5] [--first-seed 0] [--max-images 30000] [--ema 0.2]
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from scaler.study.engine import PlanRun
from scaler.study.run import RunConfig, setup
from scaler.study.stats import Estimate, crossed_mean, paired_difference
from scaler.training.train import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results"
POOLED, SEED_LIMITED = "pooled", "seed-limited"
NETWORKS = {  # name: (variant, depth, width, resolution multipliers)
    "base": ("relu", 1.0, 1.0, 1.0),
    "wider": ("relu", 1.0, 1.2, 1.0),
    "deeper": ("relu", 1.3, 1.0, 1.0),
    "sharper": ("relu", 1.0, 1.0, 1.15),
    "compound": ("relu", 1.2, 1.1, 1.15),
    "frelu-last": ("frelu:5", 1.0, 1.0, 1.0),
    "fused": ("fused", 1.0, 1.0, 1.0),
}


def plan(seeds: range) -> pd.DataFrame:
    """One run per network and seed."""
    rows = [
        {
            "label": f"{name} seed {seed}",
            "network": name,
            "variant": variant,
            "depth": depth,
            "width": width,
            "res_mult": res_mult,
            "train": True,
            "progressive": False,
            "seed": seed,
        }
        for seed in seeds
        for name, (variant, depth, width, res_mult) in NETWORKS.items()
    ]
    return pd.DataFrame(rows)


def labels(name: str, seeds: range) -> list[str]:
    """The runs of one network on `seeds`."""
    return [f"{name} seed {seed}" for seed in seeds]


def regime(estimate: Estimate, seeds: int) -> str:
    """Which interval `crossed_mean` gave: pooled (more degrees of freedom than the seeds have) or seed-limited."""
    return POOLED if estimate.dof > seeds - 1 else SEED_LIMITED


def flip_rate(correct: np.ndarray) -> float:
    """Mean share of images whose correctness differs between two seeds of one network."""
    return float(np.mean([np.mean(a != b) for a, b in itertools.combinations(correct, 2)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds the interval is computed from")
    parser.add_argument("--fresh", type=int, default=5, help="fresh seeds the interval is checked against")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from here (100: seeds never used before)")
    parser.add_argument("--max-images", type=int, default=30000, help="training images per run (the search: 90,000)")
    parser.add_argument("--ema", type=float, default=0.2, help="weight average horizon, a fraction of the steps")
    parser.add_argument("--out", default=str(RESULTS / "interval_coverage"))
    args = parser.parse_args()
    train = TrainConfig(epochs=2, batch_size=256, lr=0.05, max_images=args.max_images, ema=args.ema)
    config = RunConfig(
        command="interval_coverage",
        base="mobilenet",
        width=0.25,
        train=train,
        folder=Path(args.out),
        latency_runs=5,
        progress=False,
        argv=tuple(sys.argv),
    )
    run = setup(config)
    assert run.dataset is not None
    start = args.first_seed
    first, fresh = range(start, start + args.seeds), range(start + args.seeds, start + args.seeds + args.fresh)
    everyone = range(start, start + args.seeds + args.fresh)
    runner = PlanRun(plan(everyone), run, log=lambda line: print(f"# {line}", flush=True))
    frame = runner.run()
    examples = runner.per_example
    print(
        f"# mobilenet x0.25, {len(NETWORKS)} networks x seeds {start}-{everyone[-1]}, {args.max_images} training "
        f"images per run (batch 256, peak lr {train.peak_lr:g}, ema over {args.ema:g} of the steps), "
        f"{len(run.dataset.val)} validation and {len(run.dataset.test)} test images; "
        f"{frame.train_seconds.sum() / 60:.0f} min of training"
    )
    raw, ema = "val_raw", "val"
    rows = []
    for a, b in itertools.combinations(NETWORKS, 2):
        interval = examples.difference(raw, labels(a, first), labels(b, first))
        low, high = interval.interval()
        fresh_val = examples.difference(raw, labels(a, fresh), labels(b, fresh)).mean
        seed_level = paired_difference(
            examples.correct(raw, labels(a, first)).mean(axis=1), examples.correct(raw, labels(b, first)).mean(axis=1)
        )
        ema_interval = examples.difference(ema, labels(a, first), labels(b, first))
        ema_low, ema_high = ema_interval.interval()
        fresh_test = examples.difference("test", labels(a, fresh), labels(b, fresh))
        spread = math.hypot(ema_interval.se, fresh_test.se)
        dof = min(ema_interval.dof, fresh_test.dof)
        rows.append(
            {
                "pair": f"{b} - {a}",
                "diff": interval.mean * 100,
                "lo": low * 100,
                "hi": high * 100,
                "dof": interval.dof,
                "regime": regime(interval, args.seeds),
                "fresh": fresh_val * 100,
                "covered": low <= fresh_val <= high,
                "t_lo": seed_level.low * 100,
                "t_hi": seed_level.high * 100,
                "t_covered": seed_level.low <= fresh_val <= seed_level.high,
                "ema_covered": ema_low <= examples.difference(ema, labels(a, fresh), labels(b, fresh)).mean <= ema_high,
                "fresh_test": fresh_test.mean * 100,
                "test_covered": ema_low <= fresh_test.mean <= ema_high,
                "predicted": abs(ema_interval.mean - fresh_test.mean) <= stats.t.ppf(0.975, dof) * spread,
            }
        )
    for name in NETWORKS:  # the same runs with and without their weight average: a difference smaller than the seeds'
        gain = crossed_mean(examples.correct(ema, labels(name, first)) - examples.correct(raw, labels(name, first)))
        low, high = gain.interval()
        fresh_gain = float(
            (examples.correct(ema, labels(name, fresh)) - examples.correct(raw, labels(name, fresh))).mean()
        )
        rows.append(
            {
                "pair": f"{name} ema - raw",
                "diff": gain.mean * 100,
                "lo": low * 100,
                "hi": high * 100,
                "dof": gain.dof,
                "regime": regime(gain, args.seeds),
                "fresh": fresh_gain * 100,
                "covered": low <= fresh_gain <= high,
            }
        )
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 220)
    print(table.round(2).to_string(index=False))
    per_network = []
    for name in NETWORKS:
        plain, averaged = examples.correct(raw, labels(name, everyone)), examples.correct(ema, labels(name, everyone))
        gain = crossed_mean(averaged - plain)
        per_network.append(
            {
                "network": name,
                "acc": plain.mean() * 100,
                "seed_sd": plain.mean(axis=1).std(ddof=1) * 100,
                "floor": crossed_mean(plain).floor * 100,
                "flips": flip_rate(plain) * 100,
                "ema_acc": averaged.mean() * 100,
                "ema_seed_sd": averaged.mean(axis=1).std(ddof=1) * 100,
                "ema_flips": flip_rate(averaged) * 100,
                "ema_gain": gain.mean * 100,
                "ema_gain_lo": gain.interval()[0] * 100,
                "ema_gain_hi": gain.interval()[1] * 100,
            }
        )
    networks = pd.DataFrame(per_network)
    print(f"# per network over {len(everyone)} seeds, validation images, points (flips: % of images per seed pair)")
    print(networks.round(2).to_string(index=False))
    pooled = lambda column: math.sqrt(statistics.fmean(networks[column] ** 2))  # noqa: E731
    flags = ["covered", "t_covered", "ema_covered", "test_covered", "predicted"]
    pairs = table[table.t_covered.notna()].astype({flag: bool for flag in flags})
    n = len(pairs)
    print(
        f"# of {n} comparisons the 95 % interval from {args.seeds} seeds covered the {args.fresh} fresh seeds' mean on "
        f"the same images {pairs.covered.sum()} times (seed t interval: {pairs.t_covered.sum()}; with ema: "
        f"{pairs.ema_covered.sum()}); on the test images, plain {pairs.test_covered.sum()}, as a prediction interval "
        f"{pairs.predicted.sum()}; mean width {(pairs.hi - pairs.lo).mean():.2f} points "
        f"(seed t: {(pairs.t_hi - pairs.t_lo).mean():.2f})"
    )
    by_regime = {name: table[table.regime == name] for name in (POOLED, SEED_LIMITED)}
    for name, part in by_regime.items():
        if len(part):
            print(
                f"# {name}: {part.covered.sum()} of {len(part)} intervals covered the fresh mean; mean width "
                f"{(part.hi - part.lo).mean():.2f} points, median degrees of freedom {part.dof.median():.0f}"
            )
    coverage = {name: part.covered.mean() if len(part) else math.nan for name, part in by_regime.items()}
    print(
        f"# ema: accuracy {networks.ema_acc.mean():.2f} vs {networks.acc.mean():.2f}, flips {networks.ema_flips.mean():.2f}"
        f" vs {networks.flips.mean():.2f} % per seed pair, seed sd {pooled('ema_seed_sd'):.2f} vs {pooled('seed_sd'):.2f}"
    )
    print(
        f"coverage={pairs.covered.mean():.3f} comparisons={n} val_floor={networks.floor.mean():.2f} "
        f"seed_sd={pooled('seed_sd'):.2f} ema_seed_sd={pooled('ema_seed_sd'):.2f} "
        f"coverage_pooled={coverage[POOLED]:.3f} pooled={len(by_regime[POOLED])} "
        f"coverage_seed_limited={coverage[SEED_LIMITED]:.3f} seed_limited={len(by_regime[SEED_LIMITED])}"
    )


if __name__ == "__main__":
    main()
