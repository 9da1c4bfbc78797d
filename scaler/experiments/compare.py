"""`scaler compare-scaling`: depth-, width-, resolution-only, compound and dWr scaling at equal FLOPs factors."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import pandas as pd
from matplotlib.figure import Figure

from scaler.errors import UserError
from scaler.experiments import Argv, Command
from scaler.experiments.options import add_experiment_args, add_seeds_arg, experiment_config, options_of, seeds_of
from scaler.model.complexity import CONVENTION
from scaler.model.scaling import compound
from scaler.report.files import write
from scaler.study.engine import PlanRun
from scaler.study.examples import INTERVALS, Examples, group_statistics
from scaler.study.run import Log, Setup, setup

DWR_WIDTH_EXPONENT = 0.8  # Dollár et al. 2021: FLOPs exponents e_w = 0.8, e_d = e_r = 0.1


def scaling_rules(coefficients: tuple[float, float, float]) -> dict[str, Callable[[float], tuple[float, float, float]]]:
    """(d, w, r) for a FLOPs factor s under each rule of EfficientNet's comparison, plus dWr."""
    alpha, beta, gamma = coefficients
    rest = (1 - DWR_WIDTH_EXPONENT) / 2
    return {
        "depth": lambda s: (s, 1.0, 1.0),
        "width": lambda s: (1.0, math.sqrt(s), 1.0),
        "resolution": lambda s: (1.0, 1.0, math.sqrt(s)),
        "compound": lambda s: compound(alpha, beta, gamma, math.log2(s)),
        "dWr": lambda s: (s**rest, s ** (DWR_WIDTH_EXPONENT / 2), s ** (rest / 2)),
    }


def plan(
    coefficients: tuple[float, float, float], factors: list[float], seeds: list[int] | None = None
) -> pd.DataFrame:
    """The base, then every rule at every FLOPs factor, on every seed (seed-major)."""
    points = [{"rule": "base", "factor": 1.0, "depth": 1.0, "width": 1.0, "res_mult": 1.0}]
    for rule, multipliers in scaling_rules(coefficients).items():
        for factor in factors:
            depth, width, res_mult = multipliers(factor)
            points.append({"rule": rule, "factor": factor, "depth": depth, "width": width, "res_mult": res_mult})
    rows = [
        point
        | {
            "label": ("base" if point["rule"] == "base" else f"{point['rule']} x{point['factor']:g}")
            + (f" seed {seed:g}" if math.isfinite(seed) else ""),
            "seed": seed,
        }
        for seed in [float(s) for s in seeds or []] or [math.nan]
        for point in points
    ]
    return pd.DataFrame(rows).assign(variant="relu", train=True, progressive=False)


def run(points: pd.DataFrame, setup: Setup, log: Log = print) -> dict[str, pd.DataFrame]:
    """compare_scaling.csv (every run, with its measured MACs ratio to the base) and compare_scaling_summary.csv."""
    runner = PlanRun(points, setup, log)
    frame = runner.run()
    frame["macs_ratio"] = (frame.macs / frame[frame.rule == "base"].macs.iloc[0]).round(4)
    return {"compare_scaling": frame, "compare_scaling_summary": summarise(frame, runner.per_example)}


def summarise(frame: pd.DataFrame, examples: Examples | None = None) -> pd.DataFrame:
    """Per rule and factor: measured MACs ratio, test accuracy with its 95 % interval over seeds and test images,
    and the paired differences (seed by seed, image by image) to compound scaling at the same factor and to the
    base, each a family over the rules and factors (intervals simultaneous, p Holm-adjusted)."""
    statistics = group_statistics(
        frame,
        ["rule", "factor"],
        examples,
        references={"vs_compound": lambda key: ("compound", key[1]), "vs_base": lambda key: ("base", 1.0)},
    )
    rows = []
    for key, part in frame.groupby(["rule", "factor"], sort=False):
        row = {
            "rule": key[0],
            "factor": key[1],
            "macs_ratio": part.macs_ratio.iloc[0],
            "resolution": part.resolution.iloc[0],
            "params": part.params.iloc[0],
        }
        rows.append(row | statistics[key] | {"train_seconds": part.train_seconds.mean()})
    return pd.DataFrame(rows)


def figures(summary: pd.DataFrame) -> dict[str, Figure]:
    """Accuracy (mean, 95 % CI over seeds) against measured MACs ratio, one line per rule, each from the base."""
    from scaler.report.figures import accuracy_vs_macs

    base_row = summary[summary.rule == "base"]
    scaled = summary[summary.rule != "base"]
    plotted = pd.concat([base_row.assign(rule=rule) for rule in scaled.rule.unique()] + [scaled])
    figure = accuracy_vs_macs(plotted, "rule", x="macs_ratio", title="scaling rules at equal FLOPs")
    return {"compare_scaling": figure}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the command."""
    add_experiment_args(p, epochs=3, subset=6000)
    p.add_argument("--factors", type=float, nargs="+", default=[2.0, 4.0], help="FLOPs factors")
    add_seeds_arg(p, "network", "rules")


def main(args: argparse.Namespace, argv: Argv) -> int:
    """scaler compare-scaling: depth, width, resolution, compound and dWr at 2x and 4x FLOPs, over paired seeds."""
    bad = [factor for factor in args.factors if not (math.isfinite(factor) and factor > 1)]
    if bad:
        raise UserError(f"--factors are FLOPs multiples of the base and must be finite numbers > 1 (got {bad[0]:g})")
    seeds = seeds_of(args)
    config, coefficients = experiment_config(args, argv)
    prepared = setup(config)
    frames = run(plan(coefficients, args.factors, seeds), prepared)
    summary = frames["compare_scaling_summary"]
    write(prepared.folder, config, argv, prepared.started, frames, figures(summary), options_of(args))
    print(
        f"# {CONVENTION}; test accuracy over seeds {seeds} {INTERVALS}; vs_compound = difference to compound "
        "scaling at the same factor"
    )
    columns = ["rule", "factor", "macs_ratio", "resolution", "test_acc", "acc_lo", "acc_hi"]
    columns += ["vs_compound", "vs_compound_lo", "vs_compound_hi", "vs_compound_significant", "train_seconds"]
    print(summary[[c for c in columns if c in summary]].round(4).to_string(index=False))
    written = [prepared.folder / f"{name}.csv" for name in frames] + [prepared.folder / "compare_scaling.png"]
    print(f"wrote {', '.join(map(str, written))}, {prepared.folder / 'run.json'}")
    return 0


COMMAND = Command(
    "compare-scaling",
    "depth / width / resolution / compound / dWr scaling at equal FLOPs",
    add_arguments,
    main,
)
