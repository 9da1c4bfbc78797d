"""`scaler ladder`: MobileNet, + compound scaling, + Fused-MBConv and progressive learning, + FReLU."""

from __future__ import annotations

import argparse
import math

import pandas as pd

from scaler.experiments import Argv, Command
from scaler.experiments.options import (
    add_decision_args,
    add_experiment_args,
    experiment_config,
    latency_form,
    options_of,
    seeds_of,
)
from scaler.model.complexity import CONVENTION
from scaler.model.scaling import compound
from scaler.model.variants import apply_variant, joined
from scaler.report.files import write
from scaler.study.engine import PlanRun
from scaler.study.examples import INTERVALS, Examples, group_statistics
from scaler.study.run import LATENCY_WORDS, Log, Setup, retime_interleaved, setup
from scaler.training.train import Progressive


def plan(
    coefficients: tuple[float, float, float], frelu_variant: str, base_name: str, seeds: list[int] | None = None
) -> pd.DataFrame:
    """The four steps of the FReLU study's ladder, each adding one thing to the step before, on every seed
    (seed-major, so that an interrupted ladder has whole seeds)."""
    scaled = dict(zip(("depth", "width", "res_mult"), compound(*coefficients, 1.0)))
    alpha, beta, gamma = coefficients
    steps = [
        ("0", base_name, "relu", {"depth": 1.0, "width": 1.0, "res_mult": 1.0}, False),
        ("1", f"+ compound scaling φ=1 (α={alpha}, β={beta}, γ={gamma})", "relu", scaled, False),
        ("2", "+ Fused-MBConv early stages + progressive learning", "fused", scaled, True),
        ("3", f"+ FReLU ({frelu_variant})", joined("fused", frelu_variant), scaled, True),
    ]
    return pd.DataFrame(
        [
            {
                "step": step,
                "description": text,
                "label": f"ladder {step}" + (f" seed {seed:g}" if seeds else ""),
                "variant": variant,
                "seed": seed,
                **multipliers,
                "train": True,
                "progressive": progressive,
            }
            for seed in [float(s) for s in seeds or []] or [math.nan]
            for step, text, variant, multipliers, progressive in steps
        ]
    )


def run(
    points: pd.DataFrame, setup: Setup, log: Log = print, latency_form: str = "deployed", latency_rounds: int = 30
) -> dict[str, pd.DataFrame]:
    """ladder.csv (every step on every seed, trained and tested alike) and ladder_summary.csv (per step: mean test
    accuracy with its CI, the gain over the step before paired by seed, train time, latency of all steps timed
    interleaved in `latency_form`)."""
    runner = PlanRun(points, setup, log)
    frame = retime_interleaved(runner.run(), setup, ["step"], latency_form, latency_rounds, log)
    return {"ladder": frame, "ladder_summary": summarise(frame, runner.per_example)}


def summarise(frame: pd.DataFrame, examples: Examples | None = None) -> pd.DataFrame:
    """Per step: seeds, test accuracy with its 95 % interval over seeds and test images, the gain over the previous
    step and over step 0 (paired seed by seed and image by image; each a family over the steps: simultaneous
    intervals, Holm p), mean train seconds, latency median and IQR."""
    steps = list(dict.fromkeys(frame.step))
    statistics = group_statistics(
        frame,
        ["step"],
        examples,
        references={
            "gain": lambda step: steps[steps.index(step) - 1] if steps.index(step) else None,
            "vs_base": lambda step: steps[0],
        },
    )
    rows = []
    for step in steps:
        part = frame[frame.step == step]
        row = {"step": step, "description": part.description.iloc[0]} | statistics[(step,)]
        row |= {
            "train_seconds": part.train_seconds.mean(),
            "macs": part.macs.iloc[0],
            "latency_ms": part.latency_ms.iloc[0],
            "latency_iqr_ms": part.latency_iqr_ms.iloc[0],
        }
        rows.append(row)
    return pd.DataFrame(rows)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the command."""
    add_experiment_args(p, epochs=5, subset=0)
    p.add_argument("--frelu", default="frelu-early", help="FReLU placement of step 3 (a variant, e.g. frelu:1,2)")
    add_decision_args(p, "step")


def main(args: argparse.Namespace, argv: Argv) -> int:
    """scaler ladder: MobileNet -> + compound scaling -> + Fused-MBConv & progressive -> + FReLU, over seeds."""
    seeds = seeds_of(args)
    form = latency_form(args)
    config, coefficients = experiment_config(args, argv)
    apply_variant(config.base_spec(), joined("fused", args.frelu))
    Progressive().check(config.train.epochs)
    prepared = setup(config)
    frames = run(plan(coefficients, args.frelu, prepared.spec.name, seeds), prepared, latency_form=form)
    write(prepared.folder, config, argv, prepared.started, frames, options=options_of(args))
    print(
        f"# {CONVENTION}; test accuracy over seeds {seeds} {INTERVALS}; gain = difference to the step before; "
        f"latency in {LATENCY_WORDS[form]}, steps timed interleaved: median (IQR)"
    )
    columns = ["step", "test_acc", "acc_lo", "acc_hi", "gain", "gain_lo", "gain_hi", "gain_significant"]
    columns += ["train_seconds", "macs", "latency_ms", "latency_iqr_ms"]
    summary = frames["ladder_summary"]
    print(summary[[c for c in columns if c in summary]].round(4).to_string(index=False))
    print(
        f"wrote {prepared.folder / 'ladder.csv'}, {prepared.folder / 'ladder_summary.csv'}, {prepared.folder / 'run.json'}"
    )
    return 0


COMMAND = Command(
    "ladder",
    "MobileNet -> + compound scaling -> + Fused-MBConv & progressive -> + FReLU",
    add_arguments,
    main,
)
