"""`scaler search`, the main job: the grid search of alpha, beta, gamma with proxy training."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import optuna

from scaler.errors import RunFailed, UserError
from scaler.experiments import Argv, Command
from scaler.experiments.options import (
    add_architecture_args,
    add_train_args,
    check_base,
    check_seed,
    check_width,
    check_workers,
    train_config,
    variant_of,
)
from scaler.experiments.search.config import SearchConfig
from scaler.experiments.search.queue import CONFIRM, GridSearch, diverged, run_worker, trials_frame
from scaler.experiments.search.report import print_search_summary, write_outputs
from scaler.study.engine import TrialBudget
from scaler.study.storage import check_study_name
from scaler.study.workers import run_workers
from scaler.training.tasks import dataset_task

# The proxy: MobileNet-style width 0.25 (capacity-limited, so a doubling of FLOPs shows), the whole 45,000-image
# training split, the whole 15,000-image validation split, 2 epochs at batch 256 (benchmarks/proxy_resolution.py).
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
    check_width(settings["width"])
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
    check_workers(args.workers)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The search's options; a default of None is resolved by `search_settings` (--quick or SEARCH_DEFAULTS)."""
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
    p.add_argument("--val-size", type=int, help="validation images per epoch (default 0: the whole 15,000-image split)")
    add_train_args(p, epochs=None, subset=None, batch_size=None)


def main(args: argparse.Namespace, argv: Argv) -> int:
    """scaler search: grid search of alpha, beta, gamma with proxy training."""
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


def run_search(config: SearchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole search: screen, confirmation; writes trials.csv, grid.csv, confirm.csv, search.png, summary.json.

    Interrupted (SIGINT, SIGTERM) it still writes the outputs of what finished before the interruption goes on up.
    """
    started = time.time()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    search = GridSearch(config, log)
    try:
        if config.workers > 1:
            budget = TrialBudget(config.n_trials, config.timeout)
            crashed = run_workers(run_worker, (config.to_json(), budget), config.workers, config.storage_url, log)
            if crashed:
                search.enqueue_missing()
                waiting, _ = search.pending()
                write_outputs(search, started)
                raise RunFailed(f"{crashed}; {waiting} job(s) are queued: rerun the same command to finish them")
        else:
            search.run_queue(TrialBudget(config.n_trials, config.timeout))
    except KeyboardInterrupt:
        write_outputs(search, started)
        raise
    summary = write_outputs(search, started)
    trials = trials_frame(search.study)
    confirm = trials[trials.stage == CONFIRM]
    if len(confirm) and diverged(confirm).all():
        raise UserError(f"every confirmation training diverged ({confirm.failure.iloc[0]})")
    return summary


COMMAND = Command(
    "search",
    "Optuna grid search of alpha, beta, gamma at phi with real proxy training",
    add_arguments,
    main,
    description="Builds every alpha in [1,2], beta and gamma in [1,1.5] on a grid of --step at phi, keeps each "
    "distinct network once and measures its MACs with fvcore; networks within --ratio-tolerance of 2^phi the "
    "base's MACs are feasible. With more than --confirm of them, each is screened on 1/--halving of the "
    "training budget; the best --confirm and EfficientNet's (1.2, 1.1, 1.15) as a control are then trained "
    "with the full budget on --confirm-seeds fresh seeds beside the base, paired by seed, and the winner is "
    "reported with 95 %% confidence intervals.",
)
