"""`scaler frelu`: which stages get FReLU: every per-stage mask trained on paired seeds, timed interleaved."""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections.abc import Sequence

import pandas as pd

from scaler.errors import UserError
from scaler.experiments import Argv, Command
from scaler.experiments.options import (
    add_decision_args,
    add_experiment_args,
    experiment_config,
    latency_form,
    options_of,
    seeds_of,
)
from scaler.model.scaling import compound, scale
from scaler.model.variants import apply_variant, frelu_variant
from scaler.report.figures import frelu_figure, pareto_mask
from scaler.report.files import write
from scaler.study.engine import evaluate_plan
from scaler.study.run import LATENCY_WORDS, Log, Setup, interleaved_costs, setup
from scaler.study.stats import (
    accuracy_interval,
    best_set,
    factorial_effects,
    family_columns,
    seed_mean,
)

ADJUSTED = ["d_val_acc", "d_val_acc_lo", "d_val_acc_hi", "p", "p_holm", "significant", "dof", "residual_sd"]
EFFECT_COLUMNS = ["stage", *ADJUSTED, "d_latency_ms", "latency_ratio"]
INTERACTION_COLUMNS = ["stages", *ADJUSTED]
MASK_COLUMNS = (
    "mask",
    "variant",
    "seeds",
    "val_acc",
    "acc_lo",
    "acc_hi",
    "val_accs",
    "latency_ms",
    "latency_iqr_ms",
    "latency_form",
    "macs",
    "params",
    "train_seconds",
    "pareto",
)


def mask_variant(mask: str) -> str:
    """'01100' -> 'frelu:2,3' (stages numbered from 1); all zeros -> 'relu'."""
    return frelu_variant(i for i, bit in enumerate(mask, start=1) if bit == "1")


def all_masks(stages: int) -> list[str]:
    """Every per-stage mask, '00000' to '11111'."""
    return [format(i, f"0{stages}b") for i in range(2**stages)]


def chosen_masks(stages: int, n_trials: int | None, seed: int, exhaustive_limit: int = 64) -> list[str]:
    """Every per-stage mask when there are at most `exhaustive_limit` (or `n_trials` is not below their number);
    else `n_trials` of them (40 by default): ReLU everywhere, FReLU everywhere, and the rest drawn at random (seeded)."""
    masks = all_masks(stages)
    wanted = n_trials if n_trials is not None else (None if len(masks) <= exhaustive_limit else 40)
    if wanted is None or wanted >= len(masks):
        return masks
    ends = ["0" * stages, "1" * stages][:wanted]
    rest = [mask for mask in masks if mask not in ends]
    random.Random(seed).shuffle(rest)
    return sorted(ends + rest[: wanted - len(ends)])


def plan(
    masks: list[str], seeds: Sequence[int], multipliers: tuple[float, float, float] = (1.0, 1.0, 1.0)
) -> pd.DataFrame:
    """Every mask on every seed (seed-major, so that a cut study has whole seeds), the network scaled by
    `multipliers` (depth, width, resolution); validation only: the test split is not looked at while choosing."""
    depth, width, res_mult = multipliers
    return pd.DataFrame(
        [
            {
                "label": f"mask {mask} seed {seed}",
                "mask": mask,
                "variant": mask_variant(mask),
                "seed": seed,
                "depth": depth,
                "width": width,
                "res_mult": res_mult,
                "train": True,
                "progressive": False,
                "test": False,
                "form": "folded",  # counted as deployed (BN folded); compiled and timed once, at the end
            }
            for seed in seeds
            for mask in masks
        ]
    )


def frelu_masks(
    setup: Setup,
    masks: list[str],
    seeds: Sequence[int] = (0, 1, 2),
    multipliers: tuple[float, float, float] = (1.0, 1.0, 1.0),
    latency_form: str = "deployed",
    latency_rounds: int = 30,
    log: Log = print,
) -> pd.DataFrame:
    """Mean validation accuracy over `seeds` and latency of each FReLU mask of the setup's network (scaled by
    `multipliers`): every (mask, seed) is one run of the engine, so an interrupted study goes on where it stopped;
    at the end every mask is timed again, all interleaved in `latency_form`, and the Pareto front is taken on mean
    accuracy and that latency."""
    seeds = list(seeds)
    runs = evaluate_plan(plan(masks, seeds, multipliers), setup, log)
    rows = []
    for mask, part in runs.groupby("mask", sort=True):
        part = part.set_index("seed").loc[seeds]
        first = part.iloc[0]
        rows.append(
            {
                "mask": mask,
                "variant": first.variant,
                "val_accs": part.val_acc.tolist(),
                "macs": first.macs,
                "params": first.params,
                "train_seconds": round(float(part.train_seconds.sum()), 2),
            }
        )
    frame = pd.DataFrame(rows)
    log(f"timing {len(frame)} masks interleaved ({latency_form}, {latency_rounds} rounds)")
    base = setup.spec if multipliers == (1.0, 1.0, 1.0) else scale(setup.spec, *multipliers)
    latency = interleaved_costs(
        {mask: apply_variant(base, mask_variant(mask)) for mask in frame["mask"]},
        latency_form,
        rounds=latency_rounds,
        progress=setup.config.progress,
    )
    frame["latency_ms"] = [latency[mask][0] for mask in frame["mask"]]
    frame["latency_iqr_ms"] = [latency[mask][1] for mask in frame["mask"]]
    frame["latency_form"] = latency_form
    return summarise(frame)


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Per mask: seeds, mean validation accuracy with its 95 % t interval, per-seed accuracies, Pareto flag (mean
    accuracy up, latency down), cheapest first."""
    frame = frame.copy()
    accuracies = [list(values) for values in frame.val_accs]
    intervals = [accuracy_interval(values) for values in accuracies]
    frame["seeds"] = [len(values) for values in accuracies]
    frame["val_acc"] = [mean for mean, _, _ in intervals]
    frame["acc_lo"] = [low for _, low, _ in intervals]
    frame["acc_hi"] = [high for _, _, high in intervals]
    frame["val_accs"] = [" ".join(f"{value:.4f}" for value in values) for values in accuracies]
    frame["pareto"] = pareto_mask(frame.latency_ms, frame.val_acc)
    return frame[list(MASK_COLUMNS)].sort_values("latency_ms").reset_index(drop=True)


def seed_table(frame: pd.DataFrame) -> dict[str, list[float]]:
    """Per mask, its validation accuracy on each seed (from the space-separated `val_accs`)."""
    return {mask: [float(v) for v in str(values).split()] for mask, values in zip(frame["mask"], frame.val_accs)}


def factorial(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The masks as the 2^k factorial they are, with seed blocks (`stats.factorial_effects`): per stage the main
    effect of FReLU on validation accuracy, and the two-stage interactions where the masks can estimate them; every
    interval is simultaneous over the family (main effects and interactions together) and every p Holm-adjusted.
    Stages no mask varies are left out."""
    table = seed_table(frame)
    stages = len(frame["mask"].iloc[0])
    varied = [j for j in range(stages) if len({mask[j] for mask in table}) == 2]
    reduced = {"".join(mask[j] for j in varied): values for mask, values in table.items()}
    try:
        effects, dof, sd = factorial_effects(reduced, [str(j + 1) for j in varied]) if varied else ([], 0, math.nan)
    except ValueError:
        effects, dof, sd = [], 0, math.nan
    latency = frame.set_index("mask").latency_ms
    mains, pairs = [], []
    for effect in effects:
        row = {
            "d_val_acc": effect.estimate,
            "d_val_acc_lo": effect.low,
            "d_val_acc_hi": effect.high,
            "p": effect.p,
            "p_holm": effect.p_holm,
            "significant": effect.significant,
            "dof": dof,
            "residual_sd": sd,
        }
        if "x" in effect.name:
            pairs.append({"stages": effect.name} | row)
            continue
        stage = int(effect.name) - 1
        on, off = (
            latency[[m for m in latency.index if m[stage] == "1"]],
            latency[[m for m in latency.index if m[stage] == "0"]],
        )
        mains.append(
            {"stage": stage + 1}
            | row
            | {"d_latency_ms": on.mean() - off.mean(), "latency_ratio": on.mean() / off.mean()}
        )
    return pd.DataFrame(mains, columns=EFFECT_COLUMNS), pd.DataFrame(pairs, columns=INTERACTION_COLUMNS)


def stage_effects(frame: pd.DataFrame) -> pd.DataFrame:
    """Per stage, the main effect of FReLU on validation accuracy from the factorial (`factorial`), with its
    family-wise interval and Holm-adjusted p, and the mean latency change and ratio."""
    return factorial(frame)[0]


def recommend(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Per Pareto mask (a latency budget): its gain over ReLU paired by seed, the front's gains one family
    (simultaneous intervals, Holm p, `significant` adjusted), and whether it is in the 95 % confidence set of the
    best among the masks within that budget (`stats.best_set`); and one sentence: the cheapest mask that beats
    ReLU significantly, then the stages whose family-wise main-effect interval excludes zero."""
    table = seed_table(frame)
    relu = "0" * len(frame["mask"].iloc[0])
    latency = frame.set_index("mask").latency_ms
    rows = []
    gains = {}
    for mask in frame[frame.pareto].sort_values("latency_ms")["mask"]:
        within = {m: table[m] for m in table if latency[m] <= latency[mask]}
        in_best = best_set(within)[mask] if len(table[mask]) > 1 else True
        rows.append(
            {
                "mask": mask,
                "latency_ms": latency[mask],
                "latency_vs_relu": latency[mask] / latency[relu] if relu in latency else math.nan,
                "val_acc": statistics.fmean(table[mask]),
                "masks_within": len(within),
                "in_best_set_within": in_best,
                "seeds": len(table[mask]),
            }
        )
        if relu in table and mask != relu and len(table[mask]) > 1:
            gains[mask] = seed_mean([b - a for a, b in zip(table[relu], table[mask])])
    adjusted = family_columns("vs_relu", gains)
    for row in rows:
        columns = adjusted.get(row["mask"], {})
        row |= {key.replace("vs_relu_significant", "significant"): value for key, value in columns.items()}
    front = pd.DataFrame(rows)
    winners = front[front.get("significant", pd.Series(False, index=front.index)).eq(True)]
    if relu not in table:
        verdict = "ReLU everywhere (mask " + relu + ") was not evaluated, so no mask can be judged against it"
    elif winners.empty:
        verdict = (
            f"keep ReLU: no mask on the front beats it significantly over {len(table[relu])} paired seeds, adjusted "
            f"for the {len(gains)} front masks "
            f"(ReLU {latency[relu]:.2f} ms, val_acc {statistics.fmean(table[relu]):.4f})"
        )
    else:
        best = winners.iloc[0]
        stages = ",".join(str(i + 1) for i, bit in enumerate(best["mask"]) if bit == "1")
        verdict = (
            f"FReLU in stage(s) {stages} (mask {best['mask']}): {100 * best.vs_relu:+.2f} points over ReLU "
            f"[{100 * best.vs_relu_lo:+.2f}, {100 * best.vs_relu_hi:+.2f}] at {best.latency_vs_relu:.2f}x its latency; "
            f"{'in' if best.in_best_set_within else 'not in'} the 95 % confidence set of the best within "
            f"{best.latency_ms:.2f} ms"
        )
    return front, f"{verdict}; {effects_clause(stage_effects(frame))}"


def effects_clause(effects: pd.DataFrame) -> str:
    """The per-stage main effects whose interval excludes zero, in one clause of the recommendation."""
    clear = effects[effects.significant.eq(True)]
    if clear.empty:
        return "no stage's main effect on accuracy excludes zero (family-wise)"
    return "main effects whose family-wise interval excludes zero (averaged over the other stages): " + ", ".join(
        f"stage {row.stage} {100 * row.d_val_acc:+.2f} [{100 * row.d_val_acc_lo:+.2f}, {100 * row.d_val_acc_hi:+.2f}] "
        f"points at {row.latency_ratio:.2f}x latency"
        for row in clear.itertuples()
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the command."""
    add_experiment_args(p, epochs=2, subset=3000)
    p.add_argument("--at-phi", type=float, default=0.0, help="scale the network to this phi first")
    add_decision_args(p, "mask")
    p.add_argument(
        "--n-trials",
        type=int,
        help="masks to evaluate (default: all when <= 64, else 40): ReLU and FReLU everywhere, the rest at random",
    )


def main(args: argparse.Namespace, argv: Argv) -> int:
    """scaler frelu: which stages get FReLU, over paired seeds: Pareto front, stage effects, a recommendation."""
    if args.n_trials is not None and args.n_trials < 1:
        raise UserError(f"--n-trials must be >= 1 (got {args.n_trials}); leave it out to evaluate every mask")
    if not math.isfinite(args.at_phi) or args.at_phi < 0:
        raise UserError(f"--at-phi must be a finite number >= 0 (got {args.at_phi})")
    seeds = seeds_of(args)
    form = latency_form(args)
    config, coefficients = experiment_config(args, argv, latency_runs=30)
    prepared = setup(config)
    masks = chosen_masks(len(prepared.spec.stages), args.n_trials, args.seed)
    multipliers = compound(*coefficients, args.at_phi)
    frame = frelu_masks(prepared, masks, seeds, multipliers, form)
    effects, interactions = factorial(frame)
    front, verdict = recommend(frame)
    frames = {"frelu": frame, "frelu_effects": effects, "frelu_interactions": interactions, "frelu_front": front}
    figures = {"frelu_pareto": frelu_figure(frame)}
    write(prepared.folder, config, argv, prepared.started, frames, figures, options_of(args))
    print(
        f"# {len(frame)} masks, φ={args.at_phi:g}, seeds {seeds}: validation accuracy mean [95 % t CI]; "
        f"latency in {LATENCY_WORDS[form]}, all masks timed interleaved: median (IQR)"
    )
    print("# Pareto front (mean accuracy up, latency down), with each mask's gain over ReLU paired by seed:")
    print(front.round(4).to_string(index=False))
    print(
        "# per-stage main effect of FReLU on accuracy, the masks analysed as a factorial with seed blocks; intervals "
        "simultaneous over main effects and interactions, p Holm-adjusted:"
    )
    print(effects.round(4).to_string(index=False))
    if not interactions.empty:
        print("# two-stage interactions (same family):")
        print(interactions.round(4).to_string(index=False))
    print(f"recommendation: {verdict}")
    print(
        f"wrote {', '.join(str(prepared.folder / (n + '.csv')) for n in frames)}, {prepared.folder / 'frelu_pareto.png'}"
    )
    return 0


COMMAND = Command(
    "frelu",
    "which blocks get FReLU: multi-objective study of per-stage masks",
    add_arguments,
    main,
)
