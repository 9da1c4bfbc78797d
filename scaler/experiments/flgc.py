"""`scaler flgc`: dense, dense at equal MACs, fixed groups, FLGC and FLGC with duplication as the number of groups grows, over seeds."""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Mapping
from typing import Any

import pandas as pd
from torch import nn

from scaler.errors import UserError
from scaler.experiments import Argv, Command
from scaler.experiments.options import (
    add_evaluation_args,
    add_seeds_arg,
    add_task_args,
    add_train_args,
    check_seed,
    check_width,
    data_options,
    options_of,
    output_folder,
    task_of,
)
from scaler.model.complexity import CONVENTION
from scaler.model.nn.flgc import FLGCConv2d, flgc_layers
from scaler.model.scaling import scale
from scaler.model.spec import DUPLICATE_TOP_K, GROUPING_ARMS, NetSpec, SpecError
from scaler.model.variants import apply_variant, grouping_variant
from scaler.report.figures import flgc_figure
from scaler.report.files import write
from scaler.study.engine import Extra, Hook, PlanRun
from scaler.study.examples import Examples, group_statistics
from scaler.study.run import Log, Row, RunConfig, Setup, buildable, count, grouped_share, setup

ARMS = GROUPING_ARMS
BATCH_LATENCY = 32
DUPLICATE_CAP = 0.1  # flgc-dup stays within this share of the FLGC arm's MACs, so equal-MACs comparisons hold
THIN_TOLERANCE = 0.05  # dense-thin's MACs are matched to the FLGC arm's within this share where rounding allows
WIDTH_STEPS = 14  # bisection steps of dense-thin's width multiplier


def plan(
    groups: list[int],
    seeds: list[int],
    top_k: int = DUPLICATE_TOP_K,
    spatial: bool = False,
    arms: tuple[str, ...] = ARMS,
    thin_widths: Mapping[int, float] | None = None,
    free: bool = False,
    cap: float | None = None,
) -> pd.DataFrame:
    """Every arm at every G > 1 (dense once, at G = 1) on every seed, seed by seed so a cut run has whole seeds.

    dense-thin is the dense network at the width multiplier `thin_widths[G]` (see `thin_widths`); flgc-dup
    duplicates within `cap` (a share of each grouped layer's MACs; None: uncapped)."""
    if "dense-thin" in arms and thin_widths is None:
        raise ValueError("the dense-thin arm needs its width at every G: pass thin_widths")
    rows = []
    for seed in seeds:
        for arm in arms:
            for g in [1] if arm == "dense" else sorted({g for g in groups if g > 1}):
                width = thin_widths[g] if arm == "dense-thin" and thin_widths is not None else 1.0
                variant = grouping_variant(arm, g, top_k, spatial, free, cap)
                rows.append({"arm": arm, "groups": g, "variant": variant, "width": width, "seed": seed})
    return pd.DataFrame(rows)


def thin_widths(
    base: NetSpec,
    groups: list[int],
    seeds: list[int],
    top_k: int,
    spatial: bool,
    free: bool = False,
    log: Log = print,
) -> dict[int, float]:
    """Per G, the width multiplier at which the dense network's MACs come nearest the FLGC arm's (as built on the
    plan's seeds, averaged: equal groups cost the fixed arm's MACs on every seed, free ones barely move in
    training): the equal-MACs control. Logs each match, and says so where channel rounding allows none within
    THIN_TOLERANCE."""
    widths = {}
    for g in sorted({g for g in groups if g > 1}):
        spec = apply_variant(base, grouping_variant("flgc", g, top_k, spatial, free))
        target = statistics.fmean(count(spec, seed=seed)[0] for seed in seeds)
        widths[g], macs = matched_width(base, target)
        off = macs / target - 1
        outside = (
            "" if abs(off) <= THIN_TOLERANCE else f" (outside {THIN_TOLERANCE:.0%}: channel rounding allows no closer)"
        )
        log(
            f"dense-thin at G={g}: width x{widths[g]:g}, {macs / 1e6:.2f} M MACs against FLGC's {target / 1e6:.2f} M ({off:+.1%}){outside}"
        )
    return widths


def matched_width(base: NetSpec, target: float) -> tuple[float, int]:
    """The width multiplier (<= 1) whose network's MACs are nearest `target`, by bisection, and those MACs."""
    low, high = 0.05, 1.0
    tried: dict[float, int] = {}

    def macs(width: float) -> int:
        try:
            tried[width] = count(scale(base, 1.0, width, 1.0))[0]
        except SpecError:
            tried[width] = 0
        return tried[width]

    if macs(high) <= target:
        return high, tried[high]
    for _ in range(WIDTH_STEPS):
        middle = (low + high) / 2
        low, high = (middle, high) if macs(middle) < target else (low, middle)
    closest: float = min(tried, key=lambda width: abs(tried[width] - target))
    nearest = round(closest, 4)
    return nearest, macs(nearest)


def layer_rows(model: nn.Module) -> list[dict[str, Any]]:
    """Per FLGC layer: shape, channels and filters moved (at the end and over training, as step:count), duplicated
    maps, the maps the rule would duplicate without a cap, duplication margin, group sizes."""
    return [
        {
            "layer": name,
            "in_channels": m.in_channels,
            "out_channels": m.out_channels,
            "kernel": m.kernel_size,
            "moved": m.moved(),
            "moved_trace": " ".join(f"{step}:{moved}" for step, moved in m.moved_history),
            "duplicated": m.duplicated_channels(),
            "duplicates_by_rule": m.rule_duplicates(),
            "duplication_margin": round(m.duplication_margin(), 4),
            "group_sizes": " ".join(f"{n_in}x{n_out}" for n_in, n_out in m.group_sizes()),
        }
        for name, m in model.named_modules()
        if isinstance(m, FLGCConv2d)
    ]


def moved_trace(layers: list[FLGCConv2d]) -> str:
    """The network's share of channels and filters away from their starting group over training, as step:share."""
    channels = sum(layer.in_channels + layer.out_channels for layer in layers)
    steps = [step for step, _ in layers[0].moved_history] if layers and channels else []
    totals = [sum(layer.moved_history[index][1] for layer in layers) for index in range(len(steps))]
    return " ".join(f"{step}:{total / channels:.4f}" for step, total in zip(steps, totals))


def read_off(setup: Setup) -> Extra:
    """What the engine keeps of each evaluated model besides its row: the share of channels and filters that moved
    (at the end and over training), the duplicated maps, and per-layer rows."""

    def extra(point: dict[str, Any], spec: NetSpec, row: Row, model: nn.Module) -> dict[str, Any]:
        per_layer = layer_rows(model)
        channels = sum(layer["in_channels"] + layer["out_channels"] for layer in per_layer)
        columns = {
            "moved": round(sum(layer["moved"] for layer in per_layer) / channels, 4) if channels else 0.0,
            "moved_trace": moved_trace(flgc_layers(model)),
            "duplicated": sum(layer["duplicated"] for layer in per_layer),
        }
        return {"columns": columns, "tables": {"layers": per_layer}}

    return extra


def run(points: pd.DataFrame, setup: Setup, log: Log = print) -> dict[str, pd.DataFrame]:
    """flgc.csv (one row per arm, G, seed), flgc_summary.csv and flgc_layers.csv.

    Every (arm, G, seed) is one run of the engine, so an interrupted study goes on where it stopped; each is
    costed in the folded (deployed, uncompiled) form, with its batch latency too.
    """
    plan = points.assign(
        label=[f"{arm} G={g} seed {seed}" for arm, g, seed in zip(points.arm, points.groups, points.seed)],
        depth=1.0,
        res_mult=1.0,
        train=setup.dataset is not None,
        progressive=False,
        form="folded",
        batch_latency=BATCH_LATENCY,
    )
    runner = PlanRun(plan, setup, log, extra=Hook("scaler.experiments.flgc:read_off"), shared_cost=False)
    engine_columns = [column for column in plan if column not in points and column != "label"]
    frame = runner.run().drop(columns=[*engine_columns, "val_curve"])
    frame = frame.sort_values(["seed", "groups", "arm"], key=_arm_order).reset_index(drop=True)
    tag = ["arm", "groups", "seed"]
    layers = runner.tables("layers")
    layers = layers.drop(columns=[c for c in layers if c in plan and c not in tag])
    return {"flgc": frame, "flgc_summary": summarise(frame, runner.per_example), "flgc_layers": layers}


def _arm_order(column: pd.Series) -> pd.Series:
    return column.map(ARMS.index) if column.name == "arm" else column


def summarise(frame: pd.DataFrame, examples: Examples | None = None) -> pd.DataFrame:
    """Per arm and G: test accuracy with its 95 % interval over seeds and test images, and the paired differences
    (seed by seed, image by image) to dense, to dense-thin at the same G (equal MACs) and to FLGC at the same G,
    each a family over the arms and G (simultaneous intervals, Holm p); with duplication, the largest change of
    validation accuracy across it; the median batch-1 latency and its spread over the seeds."""
    if "test_acc" not in frame or frame.test_acc.isna().all():
        return frame.groupby(["arm", "groups"], sort=False)[["macs", "params", "latency_ms"]].median().reset_index()
    by_group = group_statistics(
        frame,
        ["arm", "groups"],
        examples,
        references={
            "vs_dense": lambda key: ("dense", 1),
            "vs_thin": lambda key: ("dense-thin", key[1]),
            "vs_flgc": lambda key: ("flgc", key[1]),
        },
    )
    rows = []
    for key, part in frame.groupby(["arm", "groups"], sort=False):
        row: dict[str, Any] = {"arm": key[0], "groups": key[1]} | by_group[key]
        row |= {
            "macs": part.macs.mean(),
            "moved": part.moved.mean(),
            "duplicated": part["duplicated"].mean(),
            "dup_val_change": duplication_change(part),
            "latency_ms": part.latency_ms.median(),
            "latency_spread": spread(part.latency_ms),
            "latency_batch_ms": part.latency_batch_ms.median(),
        }
        rows.append(row)
    return pd.DataFrame(rows)


def spread(values: pd.Series) -> float:
    """(max - min) / median over the runs (NaN with fewer than two): how far one network's timings wander."""
    values = values.dropna()
    return float((values.max() - values.min()) / values.median()) if len(values) > 1 else float("nan")


def duplication_change(part: pd.DataFrame) -> float:
    """The largest change, in absolute value, of validation accuracy across duplication over the runs (NaN: none)."""
    if "val_before_dup" not in part or part.val_before_dup.isna().all():
        return float("nan")
    change = (part.val_after_dup - part.val_before_dup).dropna().to_numpy()
    return float(change[abs(change).argmax()]) if len(change) else float("nan")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the command."""
    p.add_argument("--base", default="resnet50", help="base network (default resnet50; CIFAR stem below 64 px)")
    add_task_args(p)
    p.add_argument("--groups", type=int, nargs="+", default=[2, 4, 8, 16], help="group counts G (dense is G = 1)")
    p.add_argument(
        "--arms",
        nargs="+",
        choices=GROUPING_ARMS,
        default=list(GROUPING_ARMS),
        help="dense (G = 1), dense-thin (dense at the FLGC arm's MACs), fixed (contiguous groups, as ResNeXt), "
        "flgc, flgc-dup (default: all five)",
    )
    add_seeds_arg(p, "run", "arms")
    p.add_argument(
        "--spatial", action="store_true", help="group the bottleneck's kxk conv too (not only the 1x1 convs)"
    )
    p.add_argument(
        "--free-groups",
        action="store_true",
        help="learned groups of any size, as Wang et al. (default: equal sizes, a contiguous grouped conv when "
        "deployed)",
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=DUPLICATE_TOP_K,
        help="duplication threshold: mean score of a group's top K members",
    )
    p.add_argument(
        "--dup-cap",
        type=float,
        default=DUPLICATE_CAP,
        help="flgc-dup adds at most this share of each grouped layer's MACs, largest margins first, so it stays "
        f"within that share of the FLGC arm's MACs (default {DUPLICATE_CAP:g}; inf: every channel that beats the "
        "threshold, as the method states it)",
    )
    p.add_argument("--width", type=float, default=1.0, help="width multiplier of the base first (e.g. 0.25 on CPU)")
    add_evaluation_args(p)
    p.add_argument("--out", help="output folder under studies/ (default flgc-<base>-<dataset>)")
    p.add_argument("--profile-only", action="store_true", help="deployed MACs, params and latency only; no training")
    add_train_args(p, epochs=3, subset=6000)
    p.set_defaults(assignment_lr_scale=FLGC_ASSIGNMENT_LR_SCALE)


FLGC_ASSIGNMENT_LR_SCALE = 10.0  # benchmarks/results/flgc_assignment.txt: x1 moves 0.4 % of channels, x10 2.4 %, and
# x10 is the one rate above the default at resolvable accuracy (+0.71 points); the committed FLGC study used it


def main(args: argparse.Namespace, argv: Argv) -> int:
    """scaler flgc: dense, fixed groups, FLGC and FLGC with duplication as the group count grows, over seeds."""
    if any(g < 1 for g in args.groups) or args.top_k < 1 or args.seeds < 1:
        raise UserError(f"--groups, --top-k and --seeds must be >= 1 (got {args.groups}, {args.top_k}, {args.seeds})")
    if not args.dup_cap >= 0:
        raise UserError(f"--dup-cap is a share of MACs >= 0, or inf for none (got {args.dup_cap})")
    cap = None if math.isinf(args.dup_cap) else args.dup_cap
    arms = tuple(args.arms)
    config = RunConfig(
        command="flgc",
        base=args.base,
        width=check_width(args.width),
        dataset=args.dataset,
        task=task_of(args),
        folder=output_folder(args.out, args.base, args.dataset, prefix="flgc-"),
        argv=argv,
        **data_options(args),
    )
    check_seed("--seed", args.seed, more=args.seeds - 1)
    seeds = list(range(args.seed, args.seed + (1 if args.profile_only else args.seeds)))
    base_spec = config.base_spec()
    free = args.free_groups
    widths = (
        thin_widths(base_spec, args.groups, seeds, args.top_k, args.spatial, free) if "dense-thin" in arms else None
    )
    points = plan(args.groups, seeds, args.top_k, args.spatial, arms, widths, free, cap)
    specs = {variant: buildable(apply_variant(base_spec, variant)) for variant in points.variant.unique()}
    for width in points[points.width != 1.0].width.unique():
        buildable(scale(base_spec, 1.0, width, 1.0))
    prepared = setup(config, data=not args.profile_only)
    frames = run(points, prepared)
    grouped = points[points.arm != "dense"]
    share = grouped_share(base_spec, specs[grouped.variant.iloc[-1]]) if len(grouped) else 0.0
    write(
        prepared.folder,
        config,
        argv,
        prepared.started,
        frames,
        {"flgc": flgc_figure(frames["flgc_summary"])},
        options_of(args),
    )
    print(
        f"# {prepared.spec.name} x{args.width:g} width on {args.dataset}, seeds {seeds}; {CONVENTION}; "
        f"{share:.1%} of the dense MACs are in grouped convolutions; MACs, params and latency of the deployed model"
    )
    print(frames["flgc_summary"].round(4).to_string(index=False))
    written = ", ".join(str(prepared.folder / f"{name}.csv") for name in frames)
    print(f"wrote {written}, {prepared.folder / 'flgc.png'}, {prepared.folder / 'run.json'}")
    return 0


COMMAND = Command(
    "flgc",
    "dense, dense at equal MACs, fixed groups, FLGC and FLGC + duplication as the number of groups grows",
    add_arguments,
    main,
)
