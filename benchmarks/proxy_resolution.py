"""Does the search's proxy resolve a doubling of FLOPs? The base and its phi = 1 network, paired by seed.

Trains the search's base network (phi = 0) and the phi = 1 network of EfficientNet's coefficients
(1.2, 1.1, 1.15), snapped as the search snaps its control to the nearest network of the grid whose
measured MACs are within the search's band of 2x, with the same training seeds, on the same split,
through scaler's one evaluate path,
and prints each seed's validation accuracy, the paired gain with its t interval, the seed std of each
network, wall time per trial and images/s. Last line:
gain=<points> ci95=<lo>,<hi> seed_std=<points> seconds_per_trial=<s>

    python benchmarks/proxy_resolution.py [--seeds 3] [--first-seed 100] [--width 0.25] [--epochs 2] [--subset 0] [--val-size 0]
        [--step 0.05] [--ratio-tolerance 0.05]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from scaler.model.scaling import EFFICIENTNET_COEFFICIENTS, scale_compound
from scaler.report.files import write
from scaler.study.grid import control_network, space
from scaler.study.run import RunConfig, count, evaluate, setup
from scaler.study.stats import paired_difference
from scaler.training.train import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="mobilenet")
    parser.add_argument("--width", type=float, default=0.25, help="width multiplier of the base")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--first-seed",
        type=int,
        default=100,
        help="seeds from here on: apart from the search's screen (0, 1) and race (2, 3, ...) seeds, so the "
        "benchmark's runs are its own, not the search's again",
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.05, help="peak LR at batch 64 (scaled linearly with the batch)")
    parser.add_argument("--subset", type=int, default=0, help="training images (0: the whole 45,000)")
    parser.add_argument("--val-size", type=int, default=0, help="validation images (0: the whole 15,000 split)")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--step", type=float, default=0.05, help="the search's grid step")
    parser.add_argument("--ratio-tolerance", type=float, default=0.05, help="the search's MACs band around 2x")
    parser.add_argument("--out", default=str(RESULTS / "proxy_resolution"))
    args = parser.parse_args()
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, compile=args.compile)
    config = RunConfig(
        command="benchmark proxy_resolution",
        base=args.base,
        width=args.width,
        subset=args.subset or None,
        val_size=args.val_size or None,
        train=train,
        folder=Path(args.out),
        latency_runs=10,
        progress=False,
        argv=tuple(sys.argv),
    )
    run = setup(config)

    control, snapped = control_network(space(run.spec, 1.0, args.step, args.ratio_tolerance, count))
    c = control.candidate
    networks = {"phi0": run.spec, "phi1": scale_compound(run.spec, c.alpha, c.beta, c.gamma, 1.0)}
    assert run.dataset is not None
    print(
        f"# {args.base} x{args.width:g} width, EfficientNet's (α, β, γ) = {EFFICIENTNET_COEFFICIENTS} at φ = 1"
        f"{f', snapped to {control.label} (measured MACs x{control.macs_ratio})' if snapped else ''}; "
        f"{len(run.dataset.train)} training images x {args.epochs} epochs, {len(run.dataset.val)} validation images "
        f"(one split for every seed), batch {args.batch_size}, lr {train.peak_lr:g}"
    )
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for name, spec in networks.items():
            started = time.perf_counter()
            row = evaluate(spec, run, replace(train, seed=seed), test=False, description=f"{name} seed {seed}")
            seconds = time.perf_counter() - started
            rows.append({"network": name, "seed": seed, "seconds": round(seconds, 1)} | row.as_dict())
            print(
                f"{name} seed {seed}: val_acc {row.val_acc:.4f}  {row.macs / 1e6:.2f} M MACs  {row.resolution} px  "
                f"{seconds:.0f} s  {row.images_per_second:.0f} images/s",
                flush=True,
            )
    frame = pd.DataFrame(rows)
    accuracy = {name: frame[frame.network == name].sort_values("seed").val_acc.tolist() for name in networks}
    gain = paired_difference(accuracy["phi0"], accuracy["phi1"])
    stds = {name: statistics.stdev(values) for name, values in accuracy.items()}
    macs = frame.groupby("network").macs.first()
    print(f"MACs ratio φ=1 / φ=0: {macs['phi1'] / macs['phi0']:.3f}")
    for name, values in accuracy.items():
        print(
            f"{name}: mean val_acc {statistics.fmean(values):.4f}, seed std {100 * stds[name]:.2f} points over {len(values)} seeds"
        )
    verdict = "resolves the gain (CI excludes 0)" if gain.significant else "does NOT resolve the gain (CI includes 0)"
    print(
        f"gain φ=1 - φ=0: {100 * gain.mean:+.2f} points, paired sd {100 * gain.sd:.2f}, "
        f"95% CI [{100 * gain.low:+.2f}, {100 * gain.high:+.2f}] (t, {gain.n - 1} dof): the proxy {verdict}"
    )
    print(
        f"time: {frame.seconds.mean():.0f} s per trial ({frame.groupby('network').seconds.mean().round(0).to_dict()}), "
        f"{frame.images_per_second.mean():.0f} images/s"
    )
    write(run.folder, config, config.argv, run.started, {"proxy_resolution": frame.drop(columns=["val_curve"])})
    print(
        f"gain={100 * gain.mean:.2f} ci95={100 * gain.low:.2f},{100 * gain.high:.2f} "
        f"seed_std={100 * max(stds.values()):.2f} seconds_per_trial={frame.seconds.mean():.0f}"
    )


if __name__ == "__main__":
    main()
