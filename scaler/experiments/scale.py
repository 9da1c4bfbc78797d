"""`scaler scale`: every (variant, phi) measured, trained up to a phi on every seed, extrapolated beyond."""

from __future__ import annotations

import argparse
import math

import pandas as pd

from scaler.errors import UserError
from scaler.experiments import Argv, Command
from scaler.experiments.options import (
    add_experiment_args,
    add_latency_arg,
    add_seeds_arg,
    experiment_config,
    latency_form,
    options_of,
    seeds_of,
)
from scaler.model.complexity import CONVENTION
from scaler.model.scaling import compound
from scaler.model.variants import VARIANT_HELP
from scaler.report.figures import tradeoff_figures
from scaler.report.files import write
from scaler.study.engine import PlanRun
from scaler.study.examples import INTERVALS, Examples, group_statistics
from scaler.study.extrapolate import extrapolate, held_out_error
from scaler.study.run import Log, Setup, retime_interleaved, setup

SUMMARY_FIRST = ["variant", "phi", "resolution", "params", "macs", "macs_ratio", "target_ratio"]
PLOTTED_COLUMNS = ["variant", "phi", "macs", "latency_ms", "latency_iqr_ms"]  # what `scaler plot` reads back
FIT_COLUMNS = ["predicted_acc", "pred_lo", "pred_hi", "extrapolated", "fit", "at_bound"]


def plan(
    coefficients: tuple[float, float, float],
    phis: list[float],
    variants: list[str],
    train_max_phi: float,
    seeds: list[int] | None = None,
) -> pd.DataFrame:
    """One point per (variant, phi, seed): the compound multipliers; phi <= train_max_phi trains on every seed,
    larger phi is measured once (seed NaN). Every trained phi sees the same images (the budget rule)."""
    rows = []
    for variant in variants:
        for phi in sorted(phis):
            depth, width, res_mult = compound(*coefficients, phi)
            trained = phi <= train_max_phi
            runs: list[float] = [float(seed) for seed in seeds or []] if trained and seeds else [math.nan]
            for seed in runs:
                rows.append(
                    {
                        "label": f"{variant} φ={phi:g}" + (f" seed {seed:g}" if math.isfinite(seed) else ""),
                        "variant": variant,
                        "phi": phi,
                        "seed": seed,
                        "depth": depth,
                        "width": width,
                        "res_mult": res_mult,
                        "train": trained,
                        "progressive": False,
                    }
                )
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame, examples: Examples | None = None) -> pd.DataFrame:
    """One row per (variant, phi): cost, seeds trained, mean test accuracy with its 95 % interval over seeds and
    test images (acc_lo, acc_hi), the seeds' spread beside the images' floor, latency median and IQR, and the
    fit's prediction with its interval where present."""
    trained = frame[frame.test_acc.notna()] if "test_acc" in frame else frame.iloc[0:0]
    statistics = group_statistics(trained, ["variant", "phi"], examples) if len(trained) else {}
    rows = []
    for key, part in frame.groupby(["variant", "phi"], sort=False):
        first = part.iloc[0]
        row = {column: first[column] for column in SUMMARY_FIRST if column in part}
        row |= {"latency_ms": first.latency_ms, "latency_iqr_ms": first.latency_iqr_ms}
        row |= statistics.get(key, {"seeds": 0, "test_acc": math.nan, "acc_lo": math.nan, "acc_hi": math.nan})
        row |= {column: first[column] for column in FIT_COLUMNS if column in part}
        rows.append(row)
    return pd.DataFrame(rows)


def run(
    points: pd.DataFrame,
    setup: Setup,
    log: Log = print,
    latency_form: str = "deployed",
    latency_rounds: int = 30,
    hold_out: float | None = None,
) -> dict[str, pd.DataFrame]:
    """scale.csv (one row per run, the fit's prediction where a variant has trained points, `held_out` marking the
    trained phi from `hold_out` on, default the largest), scale_summary.csv (per variant and phi, with intervals) and
    extrapolation.csv (the fit on the other trained phi against naive predictors at each held-out phi); every
    network is timed interleaved with all the others in `latency_form`."""
    runner = PlanRun(points, setup, log)
    frame = retime_interleaved(runner.run(), setup, ["variant", "phi"], latency_form, latency_rounds, log)
    base_macs = frame[frame.phi == 0].groupby("variant").macs.first()
    frame["macs_ratio"] = [
        round(macs / base_macs[variant], 4) if variant in base_macs else math.nan
        for variant, macs in zip(frame.variant, frame.macs)
    ]
    frame["target_ratio"] = 2.0**frame.phi
    first_held = hold_out if hold_out is not None else frame.phi[frame.trained].max()
    frame["held_out"] = frame.trained & (frame.phi >= first_held)
    frames = {"scale": frame}
    if frame.trained.any():
        frames["scale"] = extrapolate(frame)
        frames["extrapolation"] = held_out_error(frames["scale"])
    frames["scale_summary"] = summarise(frames["scale"], runner.per_example)
    return frames


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the command."""
    add_experiment_args(p, epochs=3, subset=6000)
    p.add_argument("--phi", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0])
    p.add_argument(
        "--variant", dest="variant_list", nargs="+", default=["relu", "frelu"], help=f"variants: {VARIANT_HELP}"
    )
    p.add_argument(
        "--train-max-phi",
        type=float,
        default=2.0,
        help="train the points with phi <= this, every one on the same images (-1: profile only); the largest "
        "trained phi is held out to judge the extrapolation",
    )
    p.add_argument(
        "--hold-out",
        type=float,
        help="fit the extrapolation on the trained phi below this and judge it at every trained phi from it on "
        "(default: the largest trained phi alone), e.g. --phi 0 1 2 3 4 --train-max-phi 4 --hold-out 3 predicts "
        "phi = 3 and the step beyond it from phi <= 2",
    )
    add_seeds_arg(p, "trained point", "variants and phi")
    add_latency_arg(p, "network")


def check_hold_out(hold_out: float | None, trained: list[float]) -> None:
    """--hold-out must leave trained phi on both sides of it; else one line naming it."""
    if hold_out is None:
        return
    if not (
        math.isfinite(hold_out) and any(phi < hold_out for phi in trained) and any(phi >= hold_out for phi in trained)
    ):
        shown = " ".join(f"{phi:g}" for phi in sorted(trained)) or "none"
        raise UserError(
            f"--hold-out {hold_out:g} must leave trained phi below it to fit and from it on to judge "
            f"(trained phi: {shown}; --train-max-phi sets them)"
        )


def main(args: argparse.Namespace, argv: Argv) -> int:
    """scaler scale: every (variant, phi) profiled, trained up to --train-max-phi, extrapolated beyond."""
    if not math.isfinite(args.train_max_phi):
        raise UserError(f"--train-max-phi must be a finite number, -1 to only profile (got {args.train_max_phi})")
    bad = [phi for phi in args.phi if not (math.isfinite(phi) and phi >= 0)]
    if bad:
        raise UserError(f"--phi values must be finite numbers >= 0 (got {bad[0]:g})")
    check_hold_out(args.hold_out, [phi for phi in args.phi if phi <= args.train_max_phi])
    seeds = seeds_of(args)
    form = latency_form(args)
    config, coefficients = experiment_config(args, argv)
    prepared = setup(config, data=args.train_max_phi >= 0)
    points = plan(coefficients, args.phi, args.variant_list, args.train_max_phi, seeds)
    frames = run(points, prepared, latency_form=form, hold_out=args.hold_out)
    figures = tradeoff_figures(frames["scale_summary"], latency_form=form)
    paths = write(prepared.folder, config, argv, prepared.started, frames, figures, options_of(args))
    for row in frames["extrapolation"].itertuples() if "extrapolation" in frames else ():
        print(
            f"extrapolation {row.variant} φ={row.held_out_phi:g}: fit on {row.fit_points} runs of the φ held in "
            f"({row.fit_seeds} seeds), predicted {row.predicted:.4f} [{row.pred_lo:.4f}, {row.pred_hi:.4f}], measured "
            f"{row.measured:.4f} [{row.measured_lo:.4f}, {row.measured_hi:.4f}] ({row.measured_seeds} seeds): error "
            f"{row.error:+.4f}; naive: last value {row.last_value_error:+.4f}, log-linear {row.log_linear_error:+.4f}; "
            f"{row.verdict}"
        )
    print(f"# {CONVENTION}; test_acc over seeds {INTERVALS}")
    columns = [
        "variant",
        "phi",
        "resolution",
        "macs",
        "macs_ratio",
        "latency_ms",
        "latency_iqr_ms",
        "seeds",
        "test_acc",
        "acc_lo",
        "acc_hi",
        "predicted_acc",
        "pred_lo",
        "pred_hi",
    ]
    summary = frames["scale_summary"]
    print(summary[[c for c in columns if c in summary]].round(4).to_string(index=False))
    print("wrote " + ", ".join(map(str, paths)))
    return 0


COMMAND = Command(
    "scale",
    "carry alpha, beta, gamma to larger phi for each variant: profile, train, extrapolate",
    add_arguments,
    main,
)
