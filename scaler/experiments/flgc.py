"""`scaler flgc`: dense, fixed groups, FLGC and FLGC with duplication as the number of groups grows, over seeds."""

from __future__ import annotations

import argparse
import copy
import statistics
from typing import Any

import pandas as pd
import torch
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
from scaler.model.nn.flgc import FLGCConv2d, duplication_extra, flgc_layers, grouped_macs
from scaler.model.spec import DUPLICATE_TOP_K, GROUPING_ARMS, NetSpec
from scaler.model.variants import apply_variant, grouping_variant
from scaler.report.figures import flgc_figure
from scaler.report.files import write
from scaler.study.engine import Extra, Hook, PlanRun
from scaler.study.examples import Examples, group_statistics
from scaler.study.run import Log, Row, RunConfig, Setup, buildable, grouped_share, setup
from scaler.study.stats import family_columns, seed_mean
from scaler.training.train import recalibrated_accuracy

ARMS = GROUPING_ARMS
PROBE_RULES = ("weight", "logit", "random")
BATCH_LATENCY = 32


def plan(
    groups: list[int],
    seeds: list[int],
    top_k: int = DUPLICATE_TOP_K,
    spatial: bool = False,
    arms: tuple[str, ...] = ARMS,
) -> pd.DataFrame:
    """Every arm at every G > 1 (dense once, at G = 1) on every seed, seed by seed so a cut run has whole seeds."""
    rows = []
    for seed in seeds:
        for arm in arms:
            for g in [1] if arm == "dense" else sorted({g for g in groups if g > 1}):
                rows.append(
                    {"arm": arm, "groups": g, "variant": grouping_variant(arm, g, top_k, spatial), "seed": seed}
                )
    return pd.DataFrame(rows)


def layer_rows(model: nn.Module) -> list[dict[str, Any]]:
    """Per FLGC layer: shape, channels and filters moved, duplicated maps, duplication margin, group sizes."""
    return [
        {
            "layer": name,
            "in_channels": m.in_channels,
            "out_channels": m.out_channels,
            "kernel": m.kernel_size,
            "moved": m.moved(),
            "duplicated": m.duplicated_channels(),
            "duplication_margin": round(m.duplication_margin(), 4),
            "group_sizes": " ".join(f"{n_in}x{n_out}" for n_in, n_out in m.group_sizes()),
        }
        for name, m in model.named_modules()
        if isinstance(m, FLGCConv2d)
    ]


def with_duplicates(model: nn.Module, rule: str, generator: torch.Generator) -> tuple[nn.Module, int]:
    """A copy of a trained plain-FLGC model whose frozen groups gain the duplicates `rule` picks, and their count.

    `weight` and `logit` apply the top-k-mean rule with that score; `random` adds as many duplicates per layer
    as `weight` does, drawn uniformly from the non-member (channel, group) pairs.
    """
    probe = copy.deepcopy(model)
    added = 0
    for layer in flgc_layers(probe):
        member_in, member_out = layer.learned()
        layer.score = "weight" if rule == "random" else rule
        extra = duplication_extra(layer.scores(member_out), member_in, layer.top_k)
        if rule == "random":
            candidates = (~member_in).flatten().nonzero().flatten()
            chosen = candidates[torch.randperm(len(candidates), generator=generator)[: int(extra.sum())]]
            extra = torch.zeros_like(member_in).flatten().index_fill_(0, chosen, True).view_as(member_in)
        layer.frozen_in.copy_(member_in | extra)
        layer.frozen_out.copy_(member_out)
        layer.frozen = True
        added += int(extra.sum())
    return probe, added


def probe_rows(model: nn.Module, spec: NetSpec, setup: Setup, seed: int) -> list[dict[str, Any]]:
    """Zero-shot duplication on a trained plain-FLGC model: validation accuracy and FLGC MACs with each rule's
    duplicates.

    Which score finds the maps worth duplicating: each rule's duplicates are switched on with the weights the
    straight-through gradient trained, BN statistics are recomputed, and the model is validated, beside the
    model as trained (`none`) and as many random duplicates.
    """
    assert setup.dataset is not None
    config = setup.config.train
    rows = []
    generator = torch.Generator().manual_seed(seed)
    for rule in ("none", *PROBE_RULES):
        probe, added = (copy.deepcopy(model), 0) if rule == "none" else with_duplicates(model, rule, generator)
        probe = probe.to("cpu").to(memory_format=torch.contiguous_format)
        rows.append(
            {
                "rule": rule,
                "duplicated": added,
                "flgc_macs": grouped_macs(probe, spec.input_shape),
                "val_acc": recalibrated_accuracy(probe, setup.dataset, spec.resolution, config),
            }
        )
    return rows


def read_off(setup: Setup, probe: bool) -> Extra:
    """What the engine keeps of each evaluated model besides its row: the share of channels and filters that moved,
    the duplicated maps, per-layer rows, and for trained plain FLGC the zero-shot duplication probe."""

    def extra(point: dict[str, Any], spec: NetSpec, row: Row, model: nn.Module) -> dict[str, Any]:
        per_layer = layer_rows(model)
        channels = sum(layer["in_channels"] + layer["out_channels"] for layer in per_layer)
        columns = {
            "moved": round(sum(layer["moved"] for layer in per_layer) / channels, 4) if channels else 0.0,
            "duplicated": sum(layer["duplicated"] for layer in per_layer),
        }
        tables = {"layers": per_layer}
        if row.trained and probe and point["arm"] == "flgc":
            tables["probe"] = probe_rows(model, spec, setup, int(point["seed"]))
        return {"columns": columns, "tables": tables}

    return extra


def run(
    points: pd.DataFrame,
    setup: Setup,
    log: Log = print,
    probe: bool = True,
) -> dict[str, pd.DataFrame]:
    """flgc.csv (one row per arm, G, seed), flgc_summary.csv, flgc_layers.csv and flgc_probe.csv.

    Every (arm, G, seed) is one run of the engine, so an interrupted study goes on where it stopped; each is
    costed in the folded (deployed, uncompiled) form, with its batch latency too.
    """
    plan = points.assign(
        label=[f"{arm} G={g} seed {seed}" for arm, g, seed in zip(points.arm, points.groups, points.seed)],
        depth=1.0,
        width=1.0,
        res_mult=1.0,
        train=setup.dataset is not None,
        progressive=False,
        form="folded",
        batch_latency=BATCH_LATENCY,
    )
    runner = PlanRun(
        plan, setup, log, extra=Hook("scaler.experiments.flgc:read_off", {"probe": probe}), shared_cost=False
    )
    engine_columns = [column for column in plan if column not in points and column != "label"]
    frame = runner.run().drop(columns=[*engine_columns, "val_curve"])
    frame = frame.sort_values(["seed", "groups", "arm"], key=_arm_order).reset_index(drop=True)
    tag = ["arm", "groups", "seed"]
    layers, probes = (runner.tables(name) for name in ("layers", "probe"))
    layers, probes = (
        table.drop(columns=[c for c in table if c in plan and c not in tag]) for table in (layers, probes)
    )
    return {
        "flgc": frame,
        "flgc_summary": summarise(frame, runner.per_example),
        "flgc_layers": layers,
        "flgc_probe": summarise_probe(probes),
    }


def _arm_order(column: pd.Series) -> pd.Series:
    return column.map(ARMS.index) if column.name == "arm" else column


def summarise(frame: pd.DataFrame, examples: Examples | None = None) -> pd.DataFrame:
    """Per arm and G: test accuracy with its 95 % interval over seeds and test images, and the paired differences
    (seed by seed, image by image) to dense and to FLGC at the same G, each a family over the arms and G
    (simultaneous intervals, Holm p)."""
    if "test_acc" not in frame or frame.test_acc.isna().all():
        return frame.groupby(["arm", "groups"], sort=False)[["macs", "params", "latency_ms"]].median().reset_index()
    by_group = group_statistics(
        frame,
        ["arm", "groups"],
        examples,
        references={"vs_dense": lambda key: ("dense", 1), "vs_flgc": lambda key: ("flgc", key[1])},
    )
    rows = []
    for key, part in frame.groupby(["arm", "groups"], sort=False):
        row: dict[str, Any] = {"arm": key[0], "groups": key[1]} | by_group[key]
        row |= {
            "macs": part.macs.mean(),
            "moved": part.moved.mean(),
            "duplicated": part["duplicated"].mean(),
            "latency_ms": part.latency_ms.median(),
            "latency_batch_ms": part.latency_batch_ms.median(),
        }
        rows.append(row)
    return pd.DataFrame(rows)


def summarise_probe(probes: pd.DataFrame) -> pd.DataFrame:
    """Per G and rule: duplicates added, MACs in FLGC layers, and the validation gain over the trained model,
    paired by seed; the gains one family (simultaneous intervals, Holm p)."""
    if probes.empty:
        return probes
    rows, gains = {}, {}
    for (groups, rule), part in probes[probes.rule != "none"].groupby(["groups", "rule"]):
        none = probes[(probes.rule == "none") & (probes.groups == groups)].set_index("seed").val_acc
        differences = (part.set_index("seed").val_acc - none).dropna().tolist()
        rows[groups, rule] = {
            "groups": groups,
            "rule": rule,
            "seeds": len(differences),
            "duplicated": part["duplicated"].mean(),
            "flgc_macs": part.flgc_macs.mean(),
            "val_gain": statistics.fmean(differences) if differences else float("nan"),
        }
        gains[groups, rule] = seed_mean(differences)
    for key, columns in family_columns("val_gain", gains).items():
        rows[key] |= columns
    return pd.DataFrame(list(rows.values()))


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
        help="dense (G = 1), fixed (contiguous groups, as ResNeXt), flgc, flgc-dup (default: all four)",
    )
    add_seeds_arg(p, "run", "arms")
    p.add_argument(
        "--spatial", action="store_true", help="group the bottleneck's kxk conv too (not only the 1x1 convs)"
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=DUPLICATE_TOP_K,
        help="duplication threshold: mean score of a group's top K members",
    )
    p.add_argument("--width", type=float, default=1.0, help="width multiplier of the base first (e.g. 0.25 on CPU)")
    add_evaluation_args(p)
    p.add_argument("--out", help="output folder under studies/ (default flgc-<base>-<dataset>)")
    p.add_argument("--profile-only", action="store_true", help="deployed MACs, params and latency only; no training")
    add_train_args(p, epochs=3, subset=6000)


def main(args: argparse.Namespace, argv: Argv) -> int:
    """scaler flgc: dense, fixed groups, FLGC and FLGC with duplication as the group count grows, over seeds."""
    if any(g < 1 for g in args.groups) or args.top_k < 1 or args.seeds < 1:
        raise UserError(f"--groups, --top-k and --seeds must be >= 1 (got {args.groups}, {args.top_k}, {args.seeds})")
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
    points = plan(args.groups, seeds, args.top_k, args.spatial, arms)
    base_spec = config.base_spec()
    specs = {variant: buildable(apply_variant(base_spec, variant)) for variant in points.variant.unique()}
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
    if not frames["flgc_probe"].empty:
        print("\n# zero-shot duplication on the trained FLGC models (validation gain, paired by seed):")
        print(frames["flgc_probe"].round(4).to_string(index=False))
    written = ", ".join(str(prepared.folder / f"{name}.csv") for name in frames)
    print(f"wrote {written}, {prepared.folder / 'flgc.png'}, {prepared.folder / 'run.json'}")
    return 0


COMMAND = Command(
    "flgc",
    "dense, fixed groups, FLGC and FLGC + duplication as the number of groups grows",
    add_arguments,
    main,
)
