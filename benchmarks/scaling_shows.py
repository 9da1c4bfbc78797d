"""Where does compound scaling show on 2 cores? Accuracy across phi = 0-3 for candidate settings (#44 item 1).

For each setting (the base's width, the epochs over Fashion-MNIST's 45,000 training images), MobileNet scaled by
the coefficients (default: the committed study's pick, 1.0, 1.4, 1.0) is trained at phi = 0, 1, 2, 3 on --seeds
seeds at batch 256, through scaler's engine (resumable: rerun the same command to go on; each setting has its
own runs.db). Printed per setting and phi: the test accuracy with its 95 % interval (seeds and images crossed),
the seeds' t interval of it (what `scaler scale` judges a held-out phi by), and the increment from the phi before
it, paired seed by seed and image by image, with its interval. A setting shows scaling when the increment from
phi = 2 to 3 exceeds the width of phi = 3's seed t interval: a fit on phi < 3 and the "last value" predictor
differ by about that increment, and the held-out verdict decides between them only where the measurement's interval
excludes the point halfway between the two ("untested" otherwise), which an interval narrower than the gap can do
wherever the measurement lands near one of them. `seeds_needed` is how many seeds would narrow that interval below
the increment at the seeds' measured spread. Last line, per setting S (with -a<A>_b<B>_g<G> for other coefficients):
gain23_S=<points> lo23_S=<points> width3_S=<points> shows_S=<bool> seeds_needed_S=<n> minutes_S=<minutes>

    python benchmarks/scaling_shows.py [--settings w0.125-e2 w0.25-e2 ...] [--seeds 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from scaler.experiments.scale import plan
from scaler.study.engine import PlanRun
from scaler.study.extrapolate import seeds_to_narrow
from scaler.study.run import RunConfig, setup
from scaler.study.stats import mean_interval
from scaler.training.train import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results" / "scaling_shows"
PHIS = [0.0, 1.0, 2.0, 3.0]
PICK = (1.0, 1.4, 1.0)  # the committed study's pick: width alone grows
SETTINGS = {  # name: (width of the base, epochs); cheapest first
    "w0.125-e2": (0.125, 2),
    "w0.25-e2": (0.25, 2),
    "w0.125-e6": (0.125, 6),
    "w0.25-e6": (0.25, 6),
}


def folder_name(name: str, coefficients: tuple[float, float, float]) -> str:
    """A setting's results folder: its name, with the coefficients unless they are the default pick's."""
    if coefficients == PICK:
        return name
    alpha, beta, gamma = coefficients
    return f"{name}-a{alpha:.2f}_b{beta:.2f}_g{gamma:.2f}"


def measure(name: str, coefficients: tuple[float, float, float], seeds: list[int]) -> tuple[pd.DataFrame, float]:
    """One setting's table (phi, test accuracy with its interval, increment over the phi before with its interval)
    and its training minutes."""
    width, epochs = SETTINGS[name]
    config = RunConfig(
        command="scaling_shows",
        base="mobilenet",
        width=width,
        train=TrainConfig(epochs=epochs, batch_size=256, lr=0.05),
        folder=RESULTS / folder_name(name, coefficients),
        latency_runs=5,
        progress=False,
        argv=tuple(sys.argv),
    )
    points = plan(coefficients, PHIS, ["relu"], max(PHIS), seeds)
    runner = PlanRun(points, setup(config), log=lambda line: print(f"# {line}", flush=True))
    frame = runner.run()
    examples = runner.per_example
    runs = {phi: list(part.label) for phi, part in frame.groupby("phi")}
    rows = []
    for index, phi in enumerate(PHIS):
        accuracy = examples.accuracy("test", runs[phi])
        low, high = accuracy.interval()
        row = {"setting": name, "phi": phi, "macs": int(frame[frame.phi == phi].macs.iloc[0])}
        row |= {"acc": accuracy.mean * 100, "acc_lo": low * 100, "acc_hi": high * 100, "acc_dof": accuracy.dof}
        per_seed = examples.correct("test", runs[phi]).mean(axis=1)
        _, seed_low, seed_high = mean_interval(list(per_seed))
        row |= {"seed_lo": seed_low * 100, "seed_hi": seed_high * 100, "seed_sd": float(np.std(per_seed, ddof=1)) * 100}
        if index:
            gain = examples.difference("test", runs[PHIS[index - 1]], runs[phi])
            gain_low, gain_high = gain.interval()
            row |= {"gain": gain.mean * 100, "gain_lo": gain_low * 100, "gain_hi": gain_high * 100}
        rows.append(row)
    return pd.DataFrame(rows), float(frame.train_seconds.sum()) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds per phi")
    parser.add_argument("--coefficients", type=float, nargs=3, default=PICK, metavar=("A", "B", "G"))
    args = parser.parse_args()
    seeds = list(range(60, 60 + args.seeds))
    coefficients = (args.coefficients[0], args.coefficients[1], args.coefficients[2])
    verdicts = []
    pd.set_option("display.width", 200)
    for name in args.settings:
        table, minutes = measure(name, coefficients, seeds)
        print(
            f"# {name}: mobilenet x{SETTINGS[name][0]:g}, {SETTINGS[name][1]} epochs, seeds {seeds}, coefficients "
            f"{coefficients}; test accuracy and increments in points, 95 % intervals; {minutes:.0f} min of training"
        )
        print(table.round(2).to_string(index=False))
        last = table.iloc[-1]
        key = folder_name(name, coefficients)
        width = last.seed_hi - last.seed_lo
        shows = bool(last.gain_lo > 0 and last.gain > width)
        verdicts.append(
            f"gain23_{key}={last.gain:.2f} lo23_{key}={last.gain_lo:.2f} width3_{key}={width:.2f} "
            f"shows_{key}={shows} seeds_needed_{key}={seeds_to_narrow(last.gain, last.seed_sd) or '>100'} "
            f"minutes_{key}={minutes:.0f}"
        )
    print(" ".join(verdicts))


if __name__ == "__main__":
    main()
