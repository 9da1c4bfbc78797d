"""`scaler search`, the main job: the grid search of alpha, beta, gamma with proxy training."""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import optuna

from scaler.errors import RunFailed, UserError
from scaler.experiments import Argv, Command
from scaler.experiments.options import (
    DATASET_HELP,
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
from scaler.experiments.search.plan import RACE, diverged, trials_frame
from scaler.experiments.search.queue import GridSearch, run_worker
from scaler.experiments.search.report import print_search_summary, write_outputs
from scaler.study.engine import TrialBudget
from scaler.study.racing import SCREEN_SEEDS, parse_budget
from scaler.study.storage import check_study_name, check_url, check_writable
from scaler.study.workers import run_workers
from scaler.training.tasks import dataset_task

# The proxy: MobileNet-style width 0.25 (capacity-limited, so a doubling of FLOPs shows), batch 256, as many
# training images as the base needs on this data (the fidelity ladder, scaler.study.fidelity: epochs None) as far as
# the budget affords, judged on the whole validation split; 15 minutes, racing on up to 10 seeds.
SEARCH_DEFAULTS: dict[str, Any] = {
    "width": 0.25,
    "subset": 0,
    "val_size": 0,
    "epochs": None,
    "batch_size": 256,
    "n_trials": None,
    "step": 0.05,
    "budget": "15m",
    "max_seeds": 10,
}


# The smoke preset: the fewest images at which the base learns well above chance in one epoch (0.66 on 500
# validation images at 6,000; 0.14 at 1,000, where the 16 steps never leave chance).
QUICK: dict[str, Any] = SEARCH_DEFAULTS | {
    "subset": 6000,
    "val_size": 500,
    "epochs": 1,
    "batch_size": 64,
    "step": 0.1,
    "budget": "5m",
    "max_seeds": 3,
}


def search_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options --quick presets: what was given explicitly, else --quick's value, else the default."""
    presets = QUICK if args.quick else SEARCH_DEFAULTS
    return {key: presets[key] if getattr(args, key) is None else getattr(args, key) for key in SEARCH_DEFAULTS}


MIN_BUDGET = 60.0  # seconds: less cannot even measure the space and time the base
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
    if parse_budget(settings["budget"]) < MIN_BUDGET:
        raise UserError(
            f"--budget {settings['budget']} is less than a minute: the search measures its networks and times the "
            "base before it trains anything (give e.g. --budget 5m, or --quick)"
        )
    if not 0 <= args.heartbeat <= MAX_HEARTBEAT:
        raise UserError(f"--heartbeat must be between 0 (off) and {MAX_HEARTBEAT} seconds (got {args.heartbeat})")
    check_seed("--seed", args.seed, more=max(0, settings["max_seeds"]) + SCREEN_SEEDS)  # the screen's, the race's
    check_base(args.base)
    dataset_task(args.dataset)
    check_workers(args.workers)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The search's options; a default of None is resolved by `search_settings` (--quick or SEARCH_DEFAULTS)."""
    add_architecture_args(p)
    p.add_argument("--dataset", default="fashion-mnist", help=DATASET_HELP)
    p.add_argument("--input", help="with a folder dataset: the shape CxHxW its images are read at, e.g. 3x32x32")
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
        help="the screen trains each network on 1/halving of the race's images (2 or 3; default 3)",
    )
    p.add_argument(
        "--budget",
        help="wall time for the whole search, e.g. 90s, 15m, 2h (default 15m): it times the base, plans the "
        "screen and the race to fit, and answers when the time is up, whatever stage it reached",
    )
    p.add_argument(
        "--max-seeds", type=int, help="the race's most rounds, one fresh seed each, paired across networks (default 10)"
    )
    p.add_argument(
        "--disambiguate-phi",
        type=float,
        help="keep time to train the distinct networks the pick's class builds at this larger phi, race them, and "
        "export the member building the cheapest of their best set (the class's coefficients part ways there)",
    )
    p.add_argument("--n-trials", type=int, help="run at most N trainings this time (the rest on a rerun)")
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
        "images, a 5-minute budget racing on at most 3 seeds",
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--val-size", type=int, help="validation images per epoch (default 0: the whole 15,000-image split)")
    p.add_argument(
        "--test-size", type=int, default=0, help="test images, read after selection (default 0: the whole test split)"
    )
    add_train_args(
        p,
        epochs=None,
        subset=None,
        batch_size=None,
        epochs_help="passes over the training split per race training, fixed (default: planned from the data by "
        "the fidelity ladder; --quick: 1)",
    )


def main(args: argparse.Namespace, argv: Argv) -> int:
    """scaler search: grid search of alpha, beta, gamma with proxy training."""
    config = search_config(args, argv)
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    summary = run_search(config, log)
    if args.json:
        keys = ("alpha", "beta", "gamma", "best_set", "pick", "significant", "pick_test_acc", "vs_base", "val_acc")
        extra = ("macs", "study", "trials", "disambiguation")
        print(json.dumps({k: summary.get(k) for k in (*keys, *extra)}))
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
        budget=parse_budget(settings["budget"]),
        max_seeds=settings["max_seeds"],
        disambiguate_phi=args.disambiguate_phi,
        planned_fidelity=settings["epochs"] is None,
        input_shape=args.input,
        subset=settings["subset"] or None,
        val_size=settings["val_size"] or None,
        test_size=args.test_size or None,
        data_dir=args.data_dir,
        study=args.study,
        storage=args.storage,
        seed=args.seed,
        data_seed=args.data_seed,
        heartbeat=args.heartbeat or None,
        workers=args.workers,
        train=train_config(args, epochs=settings["epochs"] or 1, batch_size=settings["batch_size"]),
        progress=args.progress and args.workers == 1,
        argv=argv,
    )
    if args.quick and not args.study:
        config = replace(config, study=f"{config.study_name}-quick")
    check_study_name(config.study_name, "--study" if args.study else "the name made from --base, --width and --variant")
    config.check()
    config.task()
    check_writable(config.folder, "the study folder")
    check_url(config.storage_url)
    config.run_config().load_dataset()  # missing data or a size beyond its split ends here, before the search starts
    return config


def run_search(config: SearchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole search within its budget: build the space, time the base and plan, screen, race; writes
    trials.csv, grid.csv, race.csv, search.png, summary.json with the answer of whatever stage it reached.

    Interrupted (SIGINT, SIGTERM) it still writes the outputs of what finished before the interruption goes on up.
    """
    started = time.time()
    config = replace(config, deadline=started + config.budget)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with OverallProgress(config, started) as overall:
        search = GridSearch(config, overall.wrap(log))
        try:
            budget = TrialBudget(config.n_trials, max(1.0, config.deadline - time.time()))  # type: ignore[operator]
            if config.workers > 1:
                crashed = run_workers(run_worker, (config.to_json(), budget), config.workers, config.storage_url, log)
                if crashed:
                    search.enqueue_missing()
                    waiting, _ = search.pending()
                    write_outputs(search, started)
                    raise RunFailed(f"{crashed}; {waiting} job(s) are queued: rerun the same command to finish them")
            else:
                search.run_queue(budget)
        except KeyboardInterrupt:
            write_outputs(search, started)
            raise
    summary = write_outputs(search, started)
    trials = trials_frame(search.study)
    race = trials[trials.stage == RACE]
    if len(race) and diverged(race).all():
        raise UserError(f"every race training diverged ({race.failure.iloc[0]})")
    return summary


class OverallProgress:
    """One bar over the whole budget (elapsed of the budget's minutes, trainings done, time left), kept above the
    per-training bars; log lines go through it so that they do not tear the bars."""

    def __init__(self, config: SearchConfig, started: float) -> None:
        self.config, self.started = config, started
        self.bar: Any = None
        self.stop = threading.Event()
        self.trainings = 0

    def __enter__(self) -> OverallProgress:
        if self.config.progress:
            from tqdm.auto import tqdm

            total = round(self.config.budget / 60, 1)
            self.bar = tqdm(total=total, desc="search", unit="min", position=0, leave=True, bar_format=BAR_FORMAT)
            threading.Thread(target=self.tick, daemon=True).start()
        return self

    def tick(self) -> None:
        """Move the bar with the clock, once a second."""
        while not self.stop.wait(1.0):
            self.refresh()

    def refresh(self) -> None:
        """Elapsed minutes, trainings done and minutes left to the deadline."""
        elapsed = (time.time() - self.started) / 60
        self.bar.n = round(min(elapsed, self.bar.total), 1)
        left = max(0.0, self.bar.total - elapsed)
        self.bar.set_postfix_str(f"{self.trainings} trainings done, {left:.1f} min left", refresh=True)

    def wrap(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """`log`, counting finished trainings and printing above the bars."""

        def logged(line: str) -> None:
            if line.startswith("trial "):
                self.trainings += 1
            if self.bar is None:
                log(line)
                return
            from tqdm.auto import tqdm

            tqdm.write(line, file=sys.stderr if log is not print else sys.stdout)
            self.refresh()

        return logged

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.bar is not None:
            self.refresh()
            self.bar.close()


BAR_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} min{postfix}"  # postfix: ", N trainings done, M min left"
)


COMMAND = Command(
    "search",
    "Optuna grid search of alpha, beta, gamma at phi with real proxy training",
    add_arguments,
    main,
    description="Builds every alpha in [1,2], beta and gamma in [1,1.5] on a grid of --step at phi, keeps each "
    "distinct network once and measures its MACs with fvcore; networks within --ratio-tolerance of 2^phi the "
    "base's MACs are feasible (EfficientNet's (1.2, 1.1, 1.15) among them as a control). It times the base and "
    "plans the --budget: each feasible network is screened on two seeds at 1/--halving of the race's images and "
    "leaves when the leader beats it by a one-sided t test (network + seed fit, Bonferroni over the others); the "
    "rest race in rounds of fresh seeds beside the base, compared image by image, until the 95 %% confidence set "
    "of the best stops shrinking or the budget ends. The pick is the cheapest network of that set; its test "
    "accuracy and gain over the base are read once, after. --disambiguate-phi P then races the distinct networks "
    "the pick's class builds at P and exports the member building the cheapest of their best set.",
)
