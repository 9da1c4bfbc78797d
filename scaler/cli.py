"""Command line: `scaler profile | search | ...`; user errors end in one line and exit status 2."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from scaler.complexity import CONVENTION, DEFAULT_THREADS
from scaler.errors import RunFailed, UserError
from scaler.scaling import EFFICIENTNET_COEFFICIENTS, compound
from scaler.spec import DUPLICATE_TOP_K, GROUPING_ARMS
from scaler.storage import check_study_name, study_folder
from scaler.tasks import Task, dataset_task, parse_input
from scaler.variants import VARIANT_HELP
from scaler.zoo import BASES

if TYPE_CHECKING:
    from scaler.run import RunConfig
    from scaler.search import SearchConfig
    from scaler.train import TrainConfig

Argv = tuple[str, ...]


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"scaler: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def add_task_args(parser: argparse.ArgumentParser) -> None:
    """--dataset or --input/--classes."""
    parser.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (1x28x28), mnist, cifar10 (3x32x32)")
    parser.add_argument("--input", help="explicit input CxHxW, e.g. 3x224x224 (overrides --dataset)")
    parser.add_argument("--classes", type=int, default=1000, help="classes with --input (default 1000)")


def task_of(args: argparse.Namespace) -> Task:
    """Task from --input/--classes if given, else from --dataset."""
    return parse_input(args.input, args.classes) if args.input else dataset_task(args.dataset)


def add_architecture_args(parser: argparse.ArgumentParser) -> None:
    """--base, --variant, --activation/--frelu-stages."""
    parser.add_argument("--base", default="mobilenet", help=f"base network: {', '.join(BASES)}")
    parser.add_argument("--variant", default="relu", help=f"variant: {VARIANT_HELP}")
    parser.add_argument("--activation", choices=("frelu",), help="shorthand: FReLU on all stages or on --frelu-stages")
    parser.add_argument("--frelu-stages", help="1-based stages that get FReLU, e.g. 1,2")


def variant_of(args: argparse.Namespace) -> str:
    """--variant with the --activation/--frelu-stages shorthand folded in."""
    if args.activation == "frelu" or args.frelu_stages:
        return args.variant + "+" + (f"frelu:{args.frelu_stages}" if args.frelu_stages else "frelu")
    return args.variant


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, Callable[[Any], str]]]) -> None:
    """Aligned table: (header, key, formatter) per column."""
    cells = [[fmt(row.get(key)) for _, key, fmt in columns] for row in rows]
    widths = [max(len(header), *(len(r[i]) for r in cells)) for i, (header, _, _) in enumerate(columns)]
    print("  ".join(h.rjust(w) for (h, _, _), w in zip(columns, widths)))
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


def millions(value: Any) -> str:
    """Value in millions with 3 decimals."""
    return "-" if value is None else f"{value / 1e6:.3f}"


def cmd_profile(args: argparse.Namespace, argv: Argv) -> int:
    """scaler profile: one row per phi."""
    import time

    import pandas as pd

    from scaler.profile import PROFILE_COLUMNS, profile_multipliers, profile_phis
    from scaler.run import RunConfig, write
    from scaler.storage import check_writable

    if args.runs < 1 or args.threads < 1:
        raise UserError(f"--runs and --threads must be >= 1 (got {args.runs}, {args.threads})")
    started = time.time()
    folder = study_folder(args.out, option="--out") if args.out is not None else None
    config = RunConfig(
        command="profile",
        base=check_base(args.base),
        variant=variant_of(args),
        dataset=args.dataset,
        task=task_of(args),
        argv=argv,
    )
    if folder:
        config = replace(config, folder=folder)
    spec = config.base_spec()
    if folder:
        check_writable(folder, "the study folder")
    direct = (args.width, args.depth, args.resolution)
    if any(v is not None for v in direct):
        if any(v is not None for v in (args.alpha, args.beta, args.gamma)):
            raise UserError("give either --alpha/--beta/--gamma or --width/--depth/--resolution, not both")
        width, depth, resolution = (1.0 if v is None else v for v in direct)
        rows = profile_multipliers(spec, depth, width, resolution, args.runs, args.threads)
    else:
        alpha, beta, gamma = (
            default if v is None else v
            for v, default in zip((args.alpha, args.beta, args.gamma), EFFICIENTNET_COEFFICIENTS)
        )
        rows = profile_phis(spec, sorted(set(args.phi)), (alpha, beta, gamma), args.runs, args.threads)
    if folder:
        frame = pd.DataFrame([{k: row[k] for k in PROFILE_COLUMNS} for row in rows])
        paths = write(folder, config, argv, started, {"profile": frame}, options=options_of(args))
        print(f"wrote {', '.join(map(str, paths))}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps([{k: row[k] for k in PROFILE_COLUMNS} for row in rows], indent=1))
        return 0
    print(f"# {spec.name} on {spec.in_channels}x{spec.resolution}x{spec.resolution}, {spec.num_classes} classes")
    print(f"# {CONVENTION}; latency: median (and IQR) of {args.runs} runs at batch 1, {args.threads} threads")
    print_table(
        rows,
        [
            ("phi", "phi", _fmt),
            ("depth", "depth", _fmt),
            ("width", "width", _fmt),
            ("res", "resolution", _fmt),
            ("params(M)", "params", millions),
            ("MACs(M)", "macs", millions),
            ("MACs/φ0", "macs_ratio", _fmt),
            ("2^φ", "target_ratio", _fmt),
            ("acts(M)", "activations", millions),
            ("latency(ms)", "latency_ms", lambda v: _fmt(v, 2)),
            ("IQR(ms)", "latency_iqr_ms", lambda v: _fmt(v, 2)),
        ],
    )
    return 0


def add_train_args(
    parser: argparse.ArgumentParser, epochs: int | None, subset: int | None = None, batch_size: int | None = 64
) -> None:
    """Options of the one training loop (a default of None is resolved by the command, e.g. by --quick)."""
    parser.add_argument("--epochs", type=int, default=epochs, help=f"epochs per training run (default {epochs or 3})")
    parser.add_argument(
        "--batch-size", type=int, default=batch_size, help=f"images per step (default {batch_size or 256})"
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=0.05,
        help="peak learning rate at batch 64, scaled linearly with --batch-size (cosine schedule, warm-up)",
    )
    parser.add_argument(
        "--optimizer", choices=("sgd", "rmsprop"), default="sgd", help="SGD with Nesterov momentum, or RMSProp"
    )
    parser.add_argument(
        "--assignment-lr-scale",
        type=float,
        help="FLGC group-assignment logits learn at this multiple of --lr (default: TrainConfig's)",
    )
    parser.add_argument(
        "--duplicate-after",
        type=float,
        help="fraction of training after which FLGC assignments are fixed and duplicates added; the rest "
        "fine-tunes (default: TrainConfig's, 0.5)",
    )
    parser.add_argument(
        "--progressive",
        action="store_true",
        help="EfficientNetV2 progressive learning: size and regularisation ramp up",
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the training step (pays on GPU and long runs)"
    )
    parser.add_argument(
        "--subset",
        type=int,
        default=subset,
        help=f"train on N images of the training split (default {subset or 'all'}; 0 = all 54000)",
    )
    parser.add_argument(
        "--data-dir", help="folder with the dataset files (else Debian's package, else torchvision download)"
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed: initialisation and data order")
    parser.add_argument(
        "--data-seed", type=int, default=0, help="seed of the train/validation split and subsets (fixed across --seed)"
    )
    parser.add_argument("--threads", type=int, help="torch threads for training (default: all cores)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


MAX_SEED = 2**32 - 1  # numpy's and torch's generators take seeds in [0, 2^32 - 1]


def check_seed(option: str, seed: int, more: int = 0) -> None:
    """A seed (and the `more` seeds after it) the random generators accept; else one line naming the option."""
    if not 0 <= seed <= MAX_SEED - more:
        runs = f" (it and the {more} seed(s) after it)" if more else ""
        raise UserError(f"{option} must be between 0 and {MAX_SEED - more}{runs} (got {seed})")


def train_config(args: argparse.Namespace, epochs: int | None = None, batch_size: int | None = None) -> TrainConfig:
    """TrainConfig from the training options (checked); `epochs` and `batch_size` override the options."""
    from scaler.train import Progressive, TrainConfig, check_device

    epochs = args.epochs if epochs is None else epochs
    batch_size = args.batch_size if batch_size is None else batch_size
    if epochs < 1 or batch_size < 2 or not args.lr > 0 or not (args.assignment_lr_scale or 0) >= 0:
        raise UserError("--epochs must be >= 1, --batch-size >= 2, --lr > 0 and --assignment-lr-scale >= 0")
    check_seed("--seed", args.seed)
    check_seed("--data-seed", args.data_seed)
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1 (got {args.threads})")
    for option in ("subset", "val_size", "test_size"):
        if (getattr(args, option, 0) or 0) < 0:
            raise UserError(f"--{option.replace('_', '-')} must be >= 0 (0 = the whole split)")
    check_device(args.device)
    if args.progressive:
        Progressive().check(epochs)
    flgc = {} if args.assignment_lr_scale is None else {"assignment_lr_scale": args.assignment_lr_scale}
    if args.duplicate_after is not None:
        if not 0.0 <= args.duplicate_after <= 1.0:
            raise UserError(f"--duplicate-after must be a fraction of training in [0, 1] (got {args.duplicate_after})")
        flgc["assignment_freeze"] = args.duplicate_after
    return TrainConfig(
        **flgc,
        epochs=epochs,
        batch_size=batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        progressive=Progressive() if args.progressive else None,
        compile=args.compile,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
    )


# The proxy: MobileNet-style width 0.25 (capacity-limited, so a doubling of FLOPs shows), the whole 54,000-image
# training split, the whole 6,000-image validation split, 2 epochs at batch 256 (benchmarks/proxy_resolution.py).
SEARCH_DEFAULTS: dict[str, Any] = {
    "width": 0.25,
    "subset": 0,
    "val_size": 0,
    "epochs": 2,
    "batch_size": 256,
    "n_trials": None,
    "step": 0.05,
    "confirm": 3,
    "confirm_seeds": 3,
}
# The smoke preset: the fewest images at which the base learns well above chance in one epoch (0.66 on 500
# validation images at 6,000; 0.14 at 1,000, where the 16 steps never leave chance).
QUICK: dict[str, Any] = SEARCH_DEFAULTS | {
    "subset": 6000,
    "val_size": 500,
    "epochs": 1,
    "batch_size": 64,
    "step": 0.1,
    "confirm": 1,
    "confirm_seeds": 2,
}


def search_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options --quick presets: what was given explicitly, else --quick's value, else the default."""
    presets = QUICK if args.quick else SEARCH_DEFAULTS
    return {key: presets[key] if getattr(args, key) is None else getattr(args, key) for key in SEARCH_DEFAULTS}


MAX_HEARTBEAT = 3600  # a trial silent for 3 heartbeats is failed: more than 3 hours would never catch a dead worker


def check_search_args(args: argparse.Namespace, settings: dict[str, Any]) -> None:
    """Every search option that can be wrong without touching data or storage: one line, exit 2."""
    from scaler.search import max_workers

    if not math.isfinite(settings["width"]) or settings["width"] <= 0:
        raise UserError(f"--width must be a finite number > 0 (got {settings['width']})")
    if not math.isfinite(args.phi) or args.phi <= 0:
        raise UserError(f"--phi must be a finite number > 0 for a search (got {args.phi})")
    if 0 < args.ratio_tolerance < 0.5 and 2**args.phi * (1 - args.ratio_tolerance) <= 1:
        lowest = -math.log2(1 - args.ratio_tolerance)
        raise UserError(
            f"--phi {args.phi:g} asks for {2**args.phi:.3f}x the base's MACs, which the base itself meets within "
            f"--ratio-tolerance {args.ratio_tolerance:g}: use --phi above {lowest:.3f}"
        )
    if settings["n_trials"] is not None and settings["n_trials"] < 1:
        raise UserError(f"--n-trials must be >= 1 (got {settings['n_trials']}); leave it out to run every job")
    if args.timeout is not None and not args.timeout > 0:
        raise UserError(f"--timeout must be > 0 seconds (got {args.timeout}); leave it out for no limit")
    if not 0 <= args.heartbeat <= MAX_HEARTBEAT:
        raise UserError(f"--heartbeat must be between 0 (off) and {MAX_HEARTBEAT} seconds (got {args.heartbeat})")
    check_seed("--seed", args.seed, more=max(0, settings["confirm_seeds"]))  # the confirmation's fresh seeds follow it
    check_base(args.base)
    dataset_task(args.dataset)
    limit = max_workers()
    if not 1 <= args.workers <= limit:
        raise UserError(
            f"--workers must be between 1 and {limit} on this machine (one per core, about 1.5 GB each; got {args.workers})"
        )


def cmd_search(args: argparse.Namespace, argv: Argv) -> int:
    """scaler search: grid search of alpha, beta, gamma with proxy training."""
    from scaler.search import run_search

    config = search_config(args, argv)
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    summary = run_search(config, log)
    if args.json:
        keys = ("alpha", "beta", "gamma", "val_acc", "macs", "study", "trials")
        print(json.dumps({k: summary[k] for k in keys}))
        return 0
    print_search_summary(summary, config)
    return 0


def search_config(args: argparse.Namespace, argv: Argv) -> SearchConfig:
    """The search the options ask for, every option checked; `--quick` studies are named apart (<name>-quick), so
    that a smoke run never blocks the full search of the same network with its other settings."""
    from scaler.search import SearchConfig

    settings = search_settings(args)
    check_search_args(args, settings)
    config = SearchConfig(
        base=args.base,
        width=settings["width"],
        dataset=args.dataset,
        variant=variant_of(args),
        phi=args.phi,
        step=settings["step"],
        ratio_tolerance=args.ratio_tolerance,
        halving=args.halving,
        n_trials=settings["n_trials"],
        timeout=args.timeout,
        confirm=settings["confirm"],
        confirm_seeds=settings["confirm_seeds"],
        subset=settings["subset"] or None,
        val_size=settings["val_size"] or None,
        data_dir=args.data_dir,
        study=args.study,
        storage=args.storage,
        seed=args.seed,
        data_seed=args.data_seed,
        heartbeat=args.heartbeat or None,
        workers=args.workers,
        train=train_config(args, epochs=settings["epochs"], batch_size=settings["batch_size"]),
        progress=args.progress and args.workers == 1,
        argv=argv,
    )
    if args.quick and not args.study:
        config = replace(config, study=f"{config.study_name}-quick")
    check_study_name(config.study_name, "--study" if args.study else "the name made from --base, --width and --variant")
    return config


def print_search_summary(summary: dict[str, Any], config: Any) -> None:
    """Human summary of a finished search: the space, the screen, the confirmation with its intervals."""
    from scaler.storage import redact

    control = summary["control"]
    snapped = f", snapped to {control['network']}" if control["snapped"] else ""
    print(
        f"\n# {summary['study']}: {summary['networks']} distinct networks on the grid, {summary['feasible']} within "
        f"{config.ratio_tolerance:.0%} of {2**config.phi:g}x MACs; {summary['stages']['screen']} screen and "
        f"{summary['stages']['confirm']} confirmation trainings, {summary['failed']} failed"
    )
    print(f"# {CONVENTION}; control: EfficientNet (1.2, 1.1, 1.15){snapped}")
    verdict = summary["confirmation"]
    if summary["alpha"] is None:
        print("the confirmation has not finished: rerun the same command to go on")
    else:
        print(
            f"winner: alpha={summary['alpha']:.2f} beta={summary['beta']:.2f} gamma={summary['gamma']:.2f} "
            f"(built: depth x{summary['depth']:.2f}, width x{summary['width']:.2f}, resolution x{summary['resolution']:.2f})  "
            f"MACs {summary['macs'] / 1e6:.2f} M (x{summary['macs_ratio']:.3f} of φ=0)  params {summary['params'] / 1e6:.2f} M  "
            f"latency {summary['latency_ms']:.2f} ms"
        )
        print(
            f"{'network':<22}{'role':<11}{'mean val_acc':>13}{'95% CI':>20}{'vs winner (95% CI)':>30}{'vs base (95% CI)':>30}{'P(best)':>9}"
        )
        for row in summary["ranking"]:
            cells = []
            for name in ("winner", "base"):
                if isinstance(row.get(f"vs_{name}"), float) and not math.isnan(row[f"vs_{name}"]):
                    cells.append(
                        f"{100 * row[f'vs_{name}']:+.2f} [{100 * row[f'vs_{name}_low']:+.2f}, {100 * row[f'vs_{name}_high']:+.2f}] pt"
                    )
                else:
                    cells.append("")
            p_best = "" if math.isnan(row.get("p_best", math.nan)) else f"{row['p_best']:.2f}"
            interval = f"[{row['ci95_low']:.4f}, {row['ci95_high']:.4f}]"
            print(
                f"{row['network']:<22}{row['role']:<11}{row['mean_val_acc']:>13.4f}"
                f"{interval:>20}{cells[0]:>30}{cells[1]:>30}{p_best:>9}"
            )
        if "significant" in verdict:
            word = "significant" if verdict["significant"] else "NOT significant (the CI includes 0)"
            low, high = verdict["gap_ci95"]
            print(
                f"winner vs runner-up {verdict['runner_up']}: {100 * verdict['gap']:+.2f} points, 95% CI "
                f"[{100 * low:+.2f}, {100 * high:+.2f}] over {len(verdict['seeds'])} paired seeds -> {word}"
            )
    surface = summary["surface"]
    if surface.get("fitted"):
        answer = (
            f"best {surface['best']}, predicted {surface['predicted_val_acc']:.4f}"
            if surface["skill"]
            else "no skill (predicting the mean does as well), so its argmax means nothing"
        )
        print(
            f"response surface ({surface['model']}, {surface['points']} points, leave-one-out error "
            f"{100 * surface['loo_rmse']:.2f} points against {100 * surface['mean_loo_rmse']:.2f} for the mean): {answer}"
        )
    else:
        print(f"response surface not fitted: {surface['reason']}")
    per_trial = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in summary["seconds_per_trial"].items())
    print(f"time: {summary['wall_seconds']:.0f} s wall; per training: {per_trial or 'none yet'}")
    print(
        f"wrote {config.folder}/trials.csv, grid.csv, confirm.csv, search.png, summary.json, run.json; "
        f"storage {redact(config.storage_url)}"
    )


def cmd_worker(args: argparse.Namespace, argv: Argv) -> int:
    """scaler worker: run the queued trainings of an existing study."""
    from scaler.search import join_study

    check_study_name(args.study)
    ran = join_study(args.study, args.storage, args.data_dir)
    print(f"worker finished: {ran} trial(s) run by this worker; the queue of {args.study} is empty")
    return 0


def experiment_config(
    args: argparse.Namespace, argv: Argv, latency_runs: int = 20
) -> tuple[RunConfig, tuple[float, float, float]]:
    """The run config and coefficients of scale, frelu, ladder and compare-scaling: from --study or explicit values."""
    from scaler.run import RunConfig, study_info

    info = study_info(args.study) if args.study else None
    explicit = (args.alpha, args.beta, args.gamma)
    if all(v is not None for v in explicit):
        coefficients = (float(args.alpha), float(args.beta), float(args.gamma))
    elif info:
        coefficients = (info.alpha, info.beta, info.gamma)
    else:
        raise UserError("give --study NAME (a finished scaler search) or all of --alpha --beta --gamma")
    compound(*coefficients, 1.0)
    base = check_base(args.base if args.base is not None else (info.base if info else "mobilenet"))
    width = args.width if args.width is not None else (info.width if info else 1.0)
    if not math.isfinite(width) or width <= 0:
        raise UserError(f"--width must be a finite number > 0 (got {width})")
    dataset = args.dataset if args.dataset is not None else (info.dataset if info else "fashion-mnist")
    folder = info.folder if info else output_folder(args.out, base, dataset)
    config = RunConfig(
        command=args.command,
        base=base,
        width=width,
        dataset=dataset,
        task=dataset_task(dataset),
        folder=folder,
        latency_runs=latency_runs,
        argv=argv,
        **data_options(args),
    )
    return config, coefficients


def check_base(base: str) -> str:
    """A base network of the zoo; else one line naming --base."""
    if base not in BASES:
        raise UserError(f"--base {base!r} is not a base network; choose from {', '.join(BASES)}")
    return base


def output_folder(out: str | None, base: str, dataset: str, prefix: str = "") -> Path:
    """studies/<--out>, or studies/<prefix><base>-<dataset> once the base and the dataset are known ones."""
    if out:
        return study_folder(out, option="--out")
    dataset_task(dataset)
    return study_folder(f"{prefix}{check_base(base)}-{dataset}")


def data_options(args: argparse.Namespace) -> dict[str, Any]:
    """data_dir, subset, val_size, test_size, train and progress of a RunConfig, from the training options."""
    return {
        "data_dir": args.data_dir,
        "subset": args.subset or None,
        "val_size": args.val_size or None,
        "test_size": args.test_size or None,
        "data_seed": args.data_seed,
        "train": train_config(args),
        "progress": args.progress,
    }


def options_of(args: argparse.Namespace) -> dict[str, Any]:
    """Every parsed option, for run.json."""
    return {key: value for key, value in vars(args).items() if key != "func"}


def add_experiment_args(parser: argparse.ArgumentParser, epochs: int, subset: int | None) -> None:
    """--study or explicit coefficients, plus the task and training options."""
    parser.add_argument("--study", help="a finished scaler search: its base, dataset and best alpha, beta, gamma")
    parser.add_argument("--alpha", type=float)
    parser.add_argument("--beta", type=float)
    parser.add_argument("--gamma", type=float)
    parser.add_argument("--base", help="base network (default: the study's, else mobilenet)")
    parser.add_argument("--width", type=float, help="width multiplier of the base (default: the study's, else 1)")
    parser.add_argument("--dataset", help="dataset (default: the study's, else fashion-mnist)")
    parser.add_argument("--out", help="output folder name under studies/ when no --study is given")
    parser.add_argument("--val-size", type=int, default=2000, help="validation images (0 = the whole split)")
    parser.add_argument("--test-size", type=int, default=0, help="test images (default 0: the whole test split)")
    add_train_args(parser, epochs=epochs, subset=subset)


def cmd_scale(args: argparse.Namespace, argv: Argv) -> int:
    """scaler scale: every (variant, phi) profiled, trained up to --train-max-phi, extrapolated beyond."""
    from scaler.experiments import scale
    from scaler.plots import tradeoff_figures
    from scaler.run import setup, write

    if not math.isfinite(args.train_max_phi):
        raise UserError(f"--train-max-phi must be a finite number, -1 to only profile (got {args.train_max_phi})")
    bad = [phi for phi in args.phi if not (math.isfinite(phi) and phi >= 0)]
    if bad:
        raise UserError(f"--phi values must be finite numbers >= 0 (got {bad[0]:g})")
    seeds = seeds_of(args)
    config, coefficients = experiment_config(args, argv)
    run = setup(config, data=args.train_max_phi >= 0)
    points = scale.plan(coefficients, args.phi, args.variant_list, args.train_max_phi, seeds)
    frames = scale.run(points, run, latency_form=args.latency)
    figures = tradeoff_figures(frames["scale_summary"])
    paths = write(run.folder, config, argv, run.started, frames, figures, options_of(args))
    for row in frames["extrapolation"].itertuples() if "extrapolation" in frames else ():
        print(
            f"extrapolation {row.variant}: fit on φ<{row.held_out_phi:g} ({row.fit_seeds} seeds), predicted "
            f"{row.predicted:.4f} [{row.pred_lo:.4f}, {row.pred_hi:.4f}] at φ={row.held_out_phi:g}, measured "
            f"{row.measured:.4f} ({row.measured_seeds} seeds): error {row.error:+.4f}; naive: last value "
            f"{row.last_value_error:+.4f}, log-linear {row.log_linear_error:+.4f}; "
            f"{'beats both' if row.beats_naive else 'does not beat both'}{'; fit at a bound' if row.at_bound else ''}"
        )
    print(f"# {CONVENTION}; test_acc is the mean over seeds with its 95 % t interval [acc_lo, acc_hi]")
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


def cmd_plot(args: argparse.Namespace, argv: Argv) -> int:
    """scaler plot: trade-off figures from a study's scale.csv."""
    import time

    from scaler.experiments.scale import PLOTTED_COLUMNS, summarise
    from scaler.plots import tradeoff_figures
    from scaler.run import read_frame, write

    path = study_folder(args.study) / "scale.csv"
    if not path.is_file():
        raise UserError(f"no {path}; run scaler scale --study {args.study} first")
    started = time.time()
    frame = read_frame(path, PLOTTED_COLUMNS, f"rerun scaler scale --study {args.study}", tuple(PLOTTED_COLUMNS[1:]))
    figures = tradeoff_figures(summarise(frame))
    paths = write(path.parent, PlotConfig(args.study, path.name), argv, started, figures=figures)
    print("wrote " + ", ".join(map(str, paths)))
    return 0


@dataclass(frozen=True)
class PlotConfig:
    """What `scaler plot` ran on, for run.json: the study and the file it read."""

    study: str
    source: str

    def to_json(self) -> dict[str, Any]:
        """Plain dict."""
        return {"command": "plot", "study": self.study, "source": self.source}


def cmd_frelu(args: argparse.Namespace, argv: Argv) -> int:
    """scaler frelu: which stages get FReLU, over paired seeds: Pareto front, stage effects, a recommendation."""
    from scaler.engine import store_url
    from scaler.experiments.frelu import chosen_masks, frelu_masks, recommend, stage_effects
    from scaler.plots import frelu_figure
    from scaler.run import setup, write
    from scaler.storage import check_url, redact

    if args.n_trials is not None and args.n_trials < 1:
        raise UserError(f"--n-trials must be >= 1 (got {args.n_trials}); leave it out to evaluate every mask")
    if not math.isfinite(args.at_phi) or args.at_phi < 0:
        raise UserError(f"--at-phi must be a finite number >= 0 (got {args.at_phi})")
    seeds = seeds_of(args)
    config, coefficients = experiment_config(args, argv, latency_runs=30)
    if args.storage:
        check_url(args.storage)
    run = setup(config)
    storage = args.storage or store_url(run.folder)
    masks = chosen_masks(len(run.spec.stages), args.n_trials, args.seed)
    multipliers = compound(*coefficients, args.at_phi)
    frame = frelu_masks(run, masks, seeds, multipliers, args.latency, storage=storage)
    effects = stage_effects(frame)
    front, verdict = recommend(frame)
    frames = {"frelu": frame, "frelu_effects": effects, "frelu_front": front}
    options = options_of(args) | {"storage": redact(storage)}
    write(run.folder, config, argv, run.started, frames, {"frelu_pareto": frelu_figure(frame)}, options)
    print(
        f"# {len(frame)} masks, φ={args.at_phi:g}, seeds {seeds}: validation accuracy mean [95 % t CI]; "
        f"{args.latency} latency, all masks timed interleaved: median (IQR)"
    )
    print("# Pareto front (mean accuracy up, latency down), with each mask's gain over ReLU paired by seed:")
    print(front.round(4).to_string(index=False))
    print("# per-stage main effect of FReLU (accuracy points, latency):")
    print(effects.round(4).to_string(index=False))
    print(f"recommendation: {verdict}")
    print(f"wrote {', '.join(str(run.folder / (n + '.csv')) for n in frames)}, {run.folder / 'frelu_pareto.png'}")
    return 0


def cmd_ladder(args: argparse.Namespace, argv: Argv) -> int:
    """scaler ladder: MobileNet -> + compound scaling -> + Fused-MBConv & progressive -> + FReLU, over seeds."""
    from scaler.experiments import ladder
    from scaler.run import setup, write
    from scaler.train import Progressive
    from scaler.variants import apply_variant

    seeds = seeds_of(args)
    config, coefficients = experiment_config(args, argv)
    apply_variant(config.base_spec(), "fused+" + args.frelu)
    Progressive().check(config.train.epochs)
    run = setup(config)
    frames = ladder.run(ladder.plan(coefficients, args.frelu, run.spec.name, seeds), run, latency_form=args.latency)
    write(run.folder, config, argv, run.started, frames, options=options_of(args))
    print(
        f"# {CONVENTION}; test accuracy on the held-out test set, mean over seeds {seeds} [95 % t CI]; gain = paired "
        f"difference to the step before [95 % t CI]; {args.latency} latency, steps timed interleaved: median (IQR)"
    )
    columns = ["step", "test_acc", "acc_lo", "acc_hi", "gain", "gain_lo", "gain_hi", "gain_significant"]
    columns += ["train_seconds", "macs", "latency_ms", "latency_iqr_ms"]
    summary = frames["ladder_summary"]
    print(summary[[c for c in columns if c in summary]].round(4).to_string(index=False))
    print(f"wrote {run.folder / 'ladder.csv'}, {run.folder / 'ladder_summary.csv'}, {run.folder / 'run.json'}")
    return 0


def cmd_compare_scaling(args: argparse.Namespace, argv: Argv) -> int:
    """scaler compare-scaling: depth, width, resolution, compound and dWr at 2x and 4x FLOPs, over paired seeds."""
    from scaler.experiments import compare
    from scaler.run import setup, write

    bad = [factor for factor in args.factors if not (math.isfinite(factor) and factor > 1)]
    if bad:
        raise UserError(f"--factors are FLOPs multiples of the base and must be finite numbers > 1 (got {bad[0]:g})")
    seeds = seeds_of(args)
    config, coefficients = experiment_config(args, argv)
    run = setup(config)
    frames = compare.run(compare.plan(coefficients, args.factors, seeds), run)
    summary = frames["compare_scaling_summary"]
    write(run.folder, config, argv, run.started, frames, compare.figures(summary), options_of(args))
    print(
        f"# {CONVENTION}; test accuracy mean over seeds {seeds} [95 % t CI]; vs_compound = paired difference to "
        "compound scaling at the same factor [95 % t CI]"
    )
    columns = ["rule", "factor", "macs_ratio", "resolution", "test_acc", "acc_lo", "acc_hi"]
    columns += ["vs_compound", "vs_compound_lo", "vs_compound_hi", "vs_compound_significant", "train_seconds"]
    print(summary[[c for c in columns if c in summary]].round(4).to_string(index=False))
    written = [run.folder / f"{name}.csv" for name in frames] + [run.folder / "compare_scaling.png"]
    print(f"wrote {', '.join(map(str, written))}, {run.folder / 'run.json'}")
    return 0


def cmd_flgc(args: argparse.Namespace, argv: Argv) -> int:
    """scaler flgc: dense, fixed groups, FLGC and FLGC with duplication as the group count grows, over seeds."""
    from scaler.experiments import flgc
    from scaler.plots import flgc_figure
    from scaler.run import RunConfig, buildable, grouped_share, setup, write
    from scaler.variants import apply_variant

    if any(g < 1 for g in args.groups) or args.top_k < 1 or args.seeds < 1:
        raise UserError(f"--groups, --top-k and --seeds must be >= 1 (got {args.groups}, {args.top_k}, {args.seeds})")
    if not args.width > 0:
        raise UserError(f"--width must be > 0 (got {args.width})")
    arms = tuple(args.arms)
    config = RunConfig(
        command="flgc",
        base=args.base,
        width=args.width,
        dataset=args.dataset,
        task=task_of(args),
        folder=output_folder(args.out, args.base, args.dataset, prefix="flgc-"),
        argv=argv,
        **data_options(args),
    )
    check_seed("--seed", args.seed, more=args.seeds - 1)
    seeds = list(range(args.seed, args.seed + (1 if args.profile_only else args.seeds)))
    points = flgc.plan(args.groups, seeds, args.top_k, args.spatial, arms)
    base_spec = config.base_spec()
    specs = {variant: buildable(apply_variant(base_spec, variant)) for variant in points.variant.unique()}
    run = setup(config, data=not args.profile_only)
    frames = flgc.run(points, run)
    grouped = points[points.arm != "dense"]
    share = grouped_share(base_spec, specs[grouped.variant.iloc[-1]]) if len(grouped) else 0.0
    write(
        run.folder, config, argv, run.started, frames, {"flgc": flgc_figure(frames["flgc_summary"])}, options_of(args)
    )
    print(
        f"# {run.spec.name} x{args.width:g} width on {args.dataset}, seeds {seeds}; {CONVENTION}; "
        f"{share:.1%} of the dense MACs are in grouped convolutions; MACs, params and latency of the deployed model"
    )
    print(frames["flgc_summary"].round(4).to_string(index=False))
    if not frames["flgc_probe"].empty:
        print("\n# zero-shot duplication on the trained FLGC models (validation gain, paired by seed):")
        print(frames["flgc_probe"].round(4).to_string(index=False))
    written = ", ".join(str(run.folder / f"{name}.csv") for name in frames)
    print(f"wrote {written}, {run.folder / 'flgc.png'}, {run.folder / 'run.json'}")
    return 0


def add_seeds_arg(parser: argparse.ArgumentParser, per: str, across: str) -> None:
    """--seeds: how many training seeds, from --seed on, each run paired across the compared networks."""
    parser.add_argument(
        "--seeds",
        type=int,
        default=3,
        help=f"training seeds per {per} from --seed on, paired across {across} (default 3)",
    )


def add_decision_args(parser: argparse.ArgumentParser, candidate: str) -> None:
    """--seeds (paired across candidates) and --latency (the form every candidate is timed in, interleaved)."""
    add_seeds_arg(parser, candidate, f"{candidate}s")
    add_latency_arg(parser, candidate)


def add_latency_arg(parser: argparse.ArgumentParser, candidate: str) -> None:
    """--latency: the form every candidate is timed in, all of them interleaved in one run."""
    parser.add_argument(
        "--latency",
        choices=("eager", "folded", "deployed"),
        default="deployed",
        help=f"form every {candidate} is timed in, interleaved: deployed (BN folded, compiled; default), folded "
        "(no compile) or eager",
    )


def seeds_of(args: argparse.Namespace) -> list[int]:
    """--seeds training seeds from --seed on; a UserError below one."""
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1 (got {args.seeds})")
    check_seed("--seed", args.seed, more=args.seeds - 1)
    return list(range(args.seed, args.seed + args.seeds))


def make_parser() -> Parser:
    """The whole command line."""
    parser = Parser(prog="scaler", description="Compound scaling of CNNs with FReLU and FLGC variants.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("profile", help="MACs, params, activations and latency of a base network across phi")
    add_architecture_args(p)
    add_task_args(p)
    p.add_argument("--phi", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0])
    p.add_argument("--alpha", type=float, help="depth coefficient (default EfficientNet's 1.2)")
    p.add_argument("--beta", type=float, help="width coefficient (default 1.1)")
    p.add_argument("--gamma", type=float, help="resolution coefficient (default 1.15)")
    p.add_argument("--width", type=float, help="direct width multiplier w (instead of alpha/beta/gamma)")
    p.add_argument("--depth", type=float, help="direct depth multiplier d")
    p.add_argument("--resolution", type=float, help="direct resolution multiplier r")
    p.add_argument("--runs", type=int, default=30, help="latency runs (median is reported)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch threads for latency")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--out", help="also write profile.csv and run.json into studies/OUT")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser(
        "search",
        help="Optuna grid search of alpha, beta, gamma at phi with real proxy training",
        description="Builds every alpha in [1,2], beta and gamma in [1,1.5] on a grid of --step at phi, keeps each "
        "distinct network once and measures its MACs with fvcore; networks within --ratio-tolerance of 2^phi the "
        "base's MACs are feasible. With more than --confirm of them, each is screened on 1/--halving of the "
        "training budget; the best --confirm and EfficientNet's (1.2, 1.1, 1.15) as a control are then trained "
        "with the full budget on --confirm-seeds fresh seeds beside the base, paired by seed, and the winner is "
        "reported with 95 %% confidence intervals.",
    )
    add_architecture_args(p)
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (1x28x28), mnist, cifar10 (3x32x32)")
    p.add_argument("--width", type=float, help="width multiplier of the base network before the search (default 0.25)")
    p.add_argument("--phi", type=float, default=1.0)
    p.add_argument("--step", type=float, help="grid step of alpha, beta, gamma (default 0.05)")
    p.add_argument(
        "--ratio-tolerance",
        type=float,
        default=0.05,
        help="feasible: measured MACs within this fraction of 2^phi times the base's (default 0.05)",
    )
    p.add_argument(
        "--halving",
        type=int,
        default=3,
        help="the screen trains each network on 1/halving of the budget's images (2 or 3; default 3)",
    )
    p.add_argument("--n-trials", type=int, help="run at most N trainings this time (the rest on a rerun)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--confirm", type=int, help="networks the screen passes to the confirmation (default 3)")
    p.add_argument(
        "--confirm-seeds", type=int, help="fresh seeds of the confirmation, paired across networks (default 3)"
    )
    p.add_argument("--study", help="study name (default <base>-<dataset>)")
    p.add_argument("--storage", help="Optuna RDB URL (default sqlite:///studies/<study>/study.db)")
    p.add_argument(
        "--workers", type=int, default=1, help="local worker processes sharing the study (each training runs once)"
    )
    p.add_argument(
        "--heartbeat",
        type=int,
        default=10,
        help="seconds between trial heartbeats; a trial silent for 3x is failed and re-queued (0 = off)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke preset where not given explicitly: step 0.1, 6000 images, 1 epoch at batch 64, 500 validation "
        "images, 1 finalist on 2 seeds (about a minute)",
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--val-size", type=int, help="validation images per epoch (default 0: the whole 6,000-image split)")
    add_train_args(p, epochs=None, subset=None, batch_size=None)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "scale", help="carry alpha, beta, gamma to larger phi for each variant: profile, train, extrapolate"
    )
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
    add_seeds_arg(p, "trained point", "variants and phi")
    add_latency_arg(p, "network")
    p.set_defaults(func=cmd_scale)

    p = sub.add_parser("frelu", help="which blocks get FReLU: multi-objective study of per-stage masks")
    add_experiment_args(p, epochs=2, subset=3000)
    p.add_argument("--at-phi", type=float, default=0.0, help="scale the network to this phi first")
    add_decision_args(p, "mask")
    p.add_argument(
        "--n-trials",
        type=int,
        help="masks to evaluate (default: all when <= 64, else 40): ReLU and FReLU everywhere, the rest at random",
    )
    p.add_argument("--storage", help="Optuna RDB URL of the runs (default sqlite:///studies/<name>/runs.db)")
    p.set_defaults(func=cmd_frelu)

    p = sub.add_parser("ladder", help="MobileNet -> + compound scaling -> + Fused-MBConv & progressive -> + FReLU")
    add_experiment_args(p, epochs=5, subset=0)
    p.add_argument("--frelu", default="frelu-early", help="FReLU placement of step 3 (a variant, e.g. frelu:1,2)")
    add_decision_args(p, "step")
    p.set_defaults(func=cmd_ladder)

    p = sub.add_parser("compare-scaling", help="depth / width / resolution / compound / dWr scaling at equal FLOPs")
    add_experiment_args(p, epochs=3, subset=6000)
    p.add_argument("--factors", type=float, nargs="+", default=[2.0, 4.0], help="FLOPs factors")
    add_seeds_arg(p, "network", "rules")
    p.set_defaults(func=cmd_compare_scaling)

    p = sub.add_parser("flgc", help="dense, fixed groups, FLGC and FLGC + duplication as the number of groups grows")
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
    p.add_argument("--val-size", type=int, default=2000, help="validation images (0 = the whole split)")
    p.add_argument("--test-size", type=int, default=0, help="test images (default 0: the whole test split)")
    p.add_argument("--out", help="output folder under studies/ (default flgc-<base>-<dataset>)")
    p.add_argument("--profile-only", action="store_true", help="deployed MACs, params and latency only; no training")
    add_train_args(p, epochs=3, subset=6000)
    p.set_defaults(func=cmd_flgc)

    p = sub.add_parser("plot", help="accuracy/MACs/latency trade-off plots of a study's scale.csv")
    p.add_argument("--study", required=True)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "worker", help="join a study started by scaler search (e.g. on PostgreSQL) and run its queued trainings"
    )
    p.add_argument("--study", required=True)
    p.add_argument("--storage", required=True, help="the study's Optuna RDB URL, e.g. postgresql://user@host/db")
    p.add_argument("--data-dir", help="folder with the dataset files on this machine")
    p.set_defaults(func=cmd_worker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `scaler` console script: user errors exit 2, failed runs 1, interruptions 130 (143 on SIGTERM)."""
    import signal

    from scaler.search import raise_keyboard_interrupt

    argv = tuple(sys.argv[1:] if argv is None else argv)
    args = make_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    try:
        return args.func(args, argv)
    except UserError as error:
        print(f"scaler: error: {one_line(error)}", file=sys.stderr)
        return 2
    except RunFailed as error:
        print(f"scaler: failed: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupt:
        print(
            "scaler: interrupted; finished trials are kept and unfinished ones stay queued: rerun the same command to go on",
            file=sys.stderr,
        )
        return 143 if str(interrupt) == "SIGTERM" else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def one_line(error: BaseException) -> str:
    """An error's text on one line."""
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
