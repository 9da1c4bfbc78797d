"""The grid search of alpha, beta, gamma on Optuna: queue, trials, confirmation, outputs and local workers."""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import random
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from scaler.engine import HEARTBEAT, TrialBudget, drain, recording_interruptions
from scaler.errors import RunFailed, UserError
from scaler.grid import CONTROL, Candidate, Network, control_network, space
from scaler.guard import check_fits
from scaler.run import Cost, RunConfig, count, evaluate, measure, present, setup, write
from scaler.scaling import scale_compound
from scaler.spec import NetSpec
from scaler.stats import accuracy_interval, bootstrap_p_best, paired_difference
from scaler.storage import (
    INTERRUPTED,
    STUDIES_DIR,
    QueueStudy,
    check_url,
    default_url,
    describe_error,
    enqueue_missing,
    holds_its_point,
    open_study,
    queued_key,
    redact,
    redact_secrets,
    sqlite_path,
    storage_errors,
    study_folder,
    study_lock,
)
from scaler.surface import best_of, fit_surface
from scaler.tasks import dataset_task
from scaler.train import Progressive, TrainConfig, TrainingDiverged

TRIAL_COLUMNS = [
    "number",
    "state",
    "stage",
    "network",
    "role",
    "seed",
    "alpha",
    "beta",
    "gamma",
    "depth",
    "width",
    "resolution",
    "pixels",
    "macs",
    "macs_ratio",
    "params",
    "latency_ms",
    "images",
    "val_acc",
    "epochs",
    "train_seconds",
    "failure",
]
SCREEN, CONFIRM = "screen", "confirm"
BASE = "base"
TRAINED_ATTRS = ("val_acc", "val_curve", "epochs", "train_seconds", "images_per_second")


@dataclass(frozen=True)
class SearchConfig:
    """Everything one `scaler search` needs.

    The search measures every distinct network of the grid at `phi` and keeps those within
    `ratio_tolerance` of 2^phi the base's MACs. With more of them than `confirm`, each is screened on
    1/`halving` of the training budget at `seed`; the best `confirm` (and EfficientNet's point, the control)
    are then trained with the full budget on `confirm_seeds` fresh seeds, beside the base on the same seeds.
    """

    base: str = "mobilenet"
    width: float = 1.0
    dataset: str = "fashion-mnist"
    variant: str = "relu"
    phi: float = 1.0
    step: float = 0.05
    ratio_tolerance: float = 0.05
    halving: int = 3
    n_trials: int | None = None
    timeout: float | None = None
    confirm: int = 3
    confirm_seeds: int = 3
    subset: int | None = 3000
    val_size: int | None = 1000
    data_dir: str | None = None
    study: str | None = None
    storage: str | None = None
    studies_dir: Path = STUDIES_DIR
    seed: int = 0
    data_seed: int = 0
    heartbeat: int | None = 10
    workers: int = 1
    train: TrainConfig = field(default_factory=TrainConfig)
    progress: bool = True
    argv: tuple[str, ...] = ()

    @property
    def study_name(self) -> str:
        """--study, or '<base>[-wW]-<dataset>[-<variant>][-phiN]'."""
        if self.study:
            return self.study
        name = self.base if self.width == 1 else f"{self.base}-w{self.width:g}".replace("+", "")
        name = f"{name}-{self.dataset}"
        if self.variant != "relu":
            name += "-" + self.variant.replace(":", "").replace(",", "").replace("+", "-")
        return name if self.phi == 1 else f"{name}-phi{self.phi:g}"

    @property
    def confirm_seed_list(self) -> list[int]:
        """The fresh seeds of the confirmation: the next ones after the selection seed."""
        return [self.seed + offset for offset in range(1, self.confirm_seeds + 1)]

    def to_json(self) -> dict[str, Any]:
        """Plain dict a worker elsewhere can rebuild the search from."""
        data = asdict(self)
        data["studies_dir"] = str(self.studies_dir)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], **overrides: Any) -> SearchConfig:
        """Inverse of `to_json`, with some fields replaced (storage, data_dir, threads...)."""
        train_data = dict(data["train"])
        if train_data.get("progressive"):
            progressive: dict[str, Any] = {
                k: tuple(v) if isinstance(v, list) else v for k, v in train_data["progressive"].items()
            }
            train_data["progressive"] = Progressive(**progressive)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise UserError(
                f"this study was made by an older scaler search (it has {', '.join(sorted(unknown))}); "
                "start a new study or use the scaler version that made it"
            )
        fields = {
            **data,
            "train": TrainConfig(**train_data),
            "studies_dir": Path(data["studies_dir"]),
            "argv": tuple(data.get("argv", ())),
        }
        return replace(cls(**fields), **overrides)

    @property
    def storage_url(self) -> str:
        """--storage, or the study's embedded SQLite file."""
        return self.storage or default_url(self.study_name, self.studies_dir)

    @property
    def folder(self) -> Path:
        """studies/<study>: where CSV, PNG and JSON go (checked to stay under studies/, not created)."""
        return study_folder(self.study_name, self.studies_dir)

    def run_config(self) -> RunConfig:
        """The run layer's view of this search: base, variant, data sizes, training, folder."""
        return RunConfig(
            command="search",
            base=self.base,
            width=self.width,
            variant=self.variant,
            dataset=self.dataset,
            task=dataset_task(self.dataset),
            data_dir=self.data_dir,
            subset=self.subset,
            val_size=self.val_size,
            data_seed=self.data_seed,
            train=self.train,
            folder=self.folder,
            latency_runs=15,
            progress=self.progress,
            argv=self.argv,
        )

    def stored(self) -> dict[str, Any]:
        """`to_json` as kept in the study: no password, neither in the storage URL nor in the command line."""
        return dict(redact_secrets(self.to_json()))

    def check(self) -> None:
        """The options that can be wrong on their own: one line, before anything is built."""
        if not 2 <= self.halving <= 3:
            raise UserError(
                f"--halving must be 2 or 3 (got {self.halving}): the screen trains on 1/halving of the budget, "
                "at least a third, so that it ranks networks by more than their first steps"
            )
        if self.train.progressive:
            raise UserError(
                "the search trains without --progressive: its screen cuts runs short, which would leave progressive "
                "learning in its first, smallest stage; use it in scale or ladder"
            )
        if self.confirm < 1 or self.confirm_seeds < 2:
            raise UserError(
                f"--confirm must be >= 1 and --confirm-seeds >= 2 (got {self.confirm}, {self.confirm_seeds}): "
                "the winner is chosen on fresh seeds with a confidence interval"
            )


FINGERPRINT_TRAIN = tuple(
    f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("threads", "device", "max_images")
)


def grid_fingerprint(config: SearchConfig) -> dict[str, Any]:
    """What makes two searches the same study: the space, the selection and how every network is trained."""
    train = {k: v for k, v in asdict(config.train).items() if k in FINGERPRINT_TRAIN}
    fingerprint = {
        "base": config.base,
        "width": config.width,
        "dataset": config.dataset,
        "variant": config.variant,
        "phi": config.phi,
        "step": config.step,
        "ratio_tolerance": config.ratio_tolerance,
        "halving": config.halving,
        "confirm": config.confirm,
        "confirm_seeds": config.confirm_seeds,
        "seed": config.seed,
        "data_seed": config.data_seed,
        "subset": config.subset,
        "val_size": config.val_size,
        "train": train,
    }
    return dict(json.loads(json.dumps(fingerprint)))


def recorded_fingerprint(stored: dict[str, Any]) -> dict[str, Any]:
    """A study's stored fingerprint with the training settings it predates filled in at their defaults."""
    defaults = json.loads(json.dumps(asdict(TrainConfig())))
    return stored | {"train": {k: v for k, v in defaults.items() if k in FINGERPRINT_TRAIN} | stored.get("train", {})}


def differences(stored: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    """The keys (nested ones as train.lr) whose values differ between two fingerprints."""
    keys = sorted(set(stored) | set(wanted))
    found = []
    for key in keys:
        old, new = stored.get(key), wanted.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            found += differences(old, new, f"{prefix}{key}.")
        elif old != new:
            found.append(f"{prefix}{key} {old!r} -> {new!r}")
    return found


@dataclass(frozen=True)
class Job:
    """One training of the search: a network at a stage (screen or confirm) with a seed."""

    stage: str
    network: str
    seed: int

    @property
    def key(self) -> str:
        """The queued Optuna parameter, e.g. 'screen:a1.35_b1.10_g1.00:0'."""
        return f"{self.stage}:{self.network}:{self.seed}"

    @classmethod
    def parse(cls, key: str) -> Job:
        """Inverse of `key`."""
        stage, network, seed = key.split(":")
        return cls(stage, network, int(seed))


class GridSearch:
    """One study: the measured space, the screen, the confirmation on fresh seeds, the outputs."""

    def __init__(self, config: SearchConfig, log: Callable[[str], None] = print, enqueue: bool = True) -> None:
        config.check()
        self.config = config
        self.log = log
        self.setup = setup(config.run_config(), data=False)
        self.base = self.setup.spec
        self.costs: dict[str, Cost] = {}
        stored = None
        if not enqueue:  # a worker joins a study whose space was measured by the command that made it
            self.study = self.open(create=False)
            stored = self.study.user_attrs.get("space")
        else:
            stored = self.stored_space()
        self.networks = (
            [Network.from_json(data) for data in stored]
            if stored
            else space(self.base, config.phi, config.step, config.ratio_tolerance, self.count, extra=(CONTROL,))
        )
        self.feasible = {n.label: n for n in self.networks if n.feasible}
        self.control, self.control_snapped = control_network(self.networks)
        for network in self.feasible.values():
            check_fits(self.spec_of(network.label), config.train.batch_size, training=True)
        self.setup = self.setup.with_data()
        if enqueue:
            self.study = self.open(create=True)
            if "space" not in self.study.user_attrs:
                self.study.set_user_attr("space", [network.to_json() for network in self.networks])
            queued = self.enqueue_missing()
            waiting, running = self.pending()
            snapped = f", snapped to {self.control.label}" if self.control_snapped else ""
            self.log(
                f"study {config.study_name}: {len(self.networks)} distinct networks on the grid, "
                f"{len(self.feasible)} within {config.ratio_tolerance:.0%} of {2**config.phi:g}x MACs; "
                f"control {CONTROL.label}{snapped}; {queued} newly queued, {waiting} waiting, {running} running elsewhere"
            )

    def stored_space(self) -> list[dict[str, Any]] | None:
        """The space a resumed study was made with (None for a new study), so that a rerun trains the same networks."""
        url = self.config.storage_url
        check_url(url)
        path = sqlite_path(url)
        if path is not None and not path.is_file():
            return None
        try:
            study = open_study(url, self.config.study_name, create=False)
        except UserError:
            return None
        stored = study.user_attrs.get("grid")
        if stored is not None and recorded_fingerprint(stored) != grid_fingerprint(self.config):
            return None  # open() refuses it in one line
        return study.user_attrs.get("space")

    def count(self, spec: NetSpec) -> tuple[int, int]:
        """fvcore MACs and parameters of a spec as built (refused in one line, unbuilt, when it cannot fit in memory)."""
        return count(spec, self.config.train.batch_size, training=True)

    def open(self, create: bool) -> QueueStudy:
        """The study, created (or resumed) with this fingerprint under the study's lock; a mismatch is an error."""
        config = self.config
        study = open_study(
            config.storage_url,
            config.study_name,
            create=create,
            heartbeat=config.heartbeat,
            sampler=optuna.samplers.RandomSampler(seed=config.seed),
            pruner=optuna.pruners.NopPruner(),
        )
        assert isinstance(study, QueueStudy)
        fingerprint = grid_fingerprint(config)
        try:
            existing = study.user_attrs.get("grid")
            if existing and recorded_fingerprint(existing) != fingerprint and create:
                changed = differences(recorded_fingerprint(existing), fingerprint)
                raise UserError(
                    f"study {config.study_name!r} was made with other settings ({'; '.join(changed)}); "
                    "choose another --study or rerun with the same options"
                )
            if not existing:
                study.set_user_attr("grid", fingerprint)
                study.set_user_attr("config", config.stored())
        except storage_errors() as error:
            raise UserError(
                f"storage {redact(config.storage_url)} failed: {describe_error(error, config.storage_url)}"
            ) from None
        return study

    def spec_of(self, network: str) -> NetSpec:
        """The base (label 'base') or the base scaled by a network's representative coefficients at phi."""
        if network == BASE:
            return self.base
        c = Candidate.from_label(network)
        return scale_compound(self.base, c.alpha, c.beta, c.gamma, self.config.phi)

    def cost_of(self, network: str) -> Cost:
        """fvcore counts and eager latency of a network, measured once per process."""
        if network not in self.costs:
            self.costs[network] = measure(self.spec_of(network), runs=self.setup.config.latency_runs)
        return self.costs[network]

    def role(self, network: str) -> str:
        """base, control (EfficientNet's point, as built or snapped) or candidate."""
        return BASE if network == BASE else "control" if network == self.control.label else "candidate"

    def screens(self) -> bool:
        """Whether there are more feasible networks than the confirmation takes, so that a screen pays."""
        return len(self.feasible) > self.config.confirm

    def screen_jobs(self) -> list[Job]:
        """Every feasible network once, at the selection seed."""
        return [Job(SCREEN, label, self.config.seed) for label in sorted(self.feasible)] if self.screens() else []

    def confirm_jobs(self, finalists: list[str]) -> list[Job]:
        """The finalists and the base, each on every fresh seed (paired: seed by seed the same data order)."""
        return [Job(CONFIRM, label, seed) for seed in self.config.confirm_seed_list for label in finalists]

    def all_jobs(self) -> list[str]:
        """Every job this study could ever queue (the categorical distribution of the 'job' parameter)."""
        everything = [*sorted(self.feasible), BASE]
        return [j.key for j in self.screen_jobs()] + [j.key for j in self.confirm_jobs(everything)]

    def finalists(self) -> list[str] | None:
        """The networks the confirmation trains: decided once the screen has finished (None before)."""
        stored = self.study.user_attrs.get("finalists")
        if stored is not None:
            return list(stored)
        if self.screens():
            return None
        return [*sorted(self.feasible), BASE]

    def queued_jobs(self) -> list[Job]:
        """The jobs of the stages decided so far."""
        finalists = self.finalists()
        return self.screen_jobs() + (self.confirm_jobs(finalists) if finalists else [])

    def budget(self, stage: str) -> TrainConfig:
        """Training of a stage: the full budget, or 1/halving of its images for the screen."""
        config = self.config.train
        if stage == SCREEN:
            assert self.setup.dataset is not None
            images = len(self.setup.dataset.train) * config.epochs // self.config.halving
            return replace(config, max_images=max(1, images // config.batch_size) * config.batch_size)
        return config

    def objective(self, trial: optuna.Trial) -> float:
        """`evaluate_job`, recording an interruption or crash so that its job is queued again."""
        return recording_interruptions(self.evaluate_job)(trial)

    def evaluate_job(self, trial: optuna.Trial) -> float:
        """Train one network at one stage and seed; its validation accuracy."""
        job = Job.parse(trial.suggest_categorical("job", self.all_jobs()))
        for key, value in asdict(job).items():  # first, so that an interruption at any point names the job
            trial.set_user_attr(key, value)
        cost = self.cost_of(job.network)
        info = self.feasible.get(job.network)
        config = replace(self.budget(job.stage), seed=job.seed)
        coefficients = asdict(info.candidate) if info else {"alpha": 1.0, "beta": 1.0, "gamma": 1.0}
        attrs = {  # depth, width, resolution and pixels as built come from the space (`trials`)
            **present(asdict(cost)),
            "stage": job.stage,
            "network": job.network,
            "role": self.role(job.network),
            "seed": job.seed,
            **coefficients,
            "macs_ratio": info.macs_ratio if info else 1.0,
            "images": config.max_images or len(self.setup.dataset.train) * config.epochs,  # type: ignore[union-attr]
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        started = time.perf_counter()

        def report(epoch: int, accuracy: float) -> None:
            trial.set_user_attr("epochs", epoch + 1)
            trial.set_user_attr("val_acc", accuracy)
            trial.set_user_attr("train_seconds", round(time.perf_counter() - started, 2))
            trial.report(accuracy, epoch)

        description = f"{job.stage} {job.network} seed {job.seed}"
        try:
            row = evaluate(
                self.spec_of(job.network),
                self.setup,
                config,
                report=report,
                test=False,
                cost=cost,
                description=description,
            )
        except TrainingDiverged as error:
            self.log(f"trial {trial.number}: {description} failed: {error}")
            trial.set_user_attr("failure", redact(str(error)))
            raise
        for key in TRAINED_ATTRS:
            trial.set_user_attr(key, getattr(row, key) if key != "val_curve" else list(row.val_curve))
        self.log(
            f"trial {trial.number}: {description}: MACs x{attrs['macs_ratio']:.3f}, "
            f"val_acc {row.val_acc:.4f} ({attrs['images']} images, {row.train_seconds:.0f} s)"
        )
        return row.val_acc

    def enqueue_missing(self) -> int:
        """Queue, in a seeded order, every job of the decided stages no trial holds (interrupted ones again)."""
        keys = [job.key for job in self.queued_jobs()]
        random.Random(self.config.seed).shuffle(keys)
        return enqueue_missing(self.study, self.config.storage_url, "job", keys)

    def advance(self) -> int:
        """Once every screen job has finished, choose the finalists and queue the confirmation; how many jobs queued."""
        if self.finalists() is not None:
            return self.enqueue_missing()
        with study_lock(self.config.storage_url, self.config.study_name):
            if "finalists" in self.study.user_attrs:
                finalists = list(self.study.user_attrs["finalists"])
            else:
                trials = [t for t in self.study.get_trials(deepcopy=False) if t.user_attrs.get("stage") == SCREEN]
                finished = {
                    t.user_attrs["network"]
                    for t in trials
                    if t.state in (TrialState.COMPLETE, TrialState.FAIL) and holds_its_point(t)
                }
                if not set(self.feasible) <= finished:
                    return self.enqueue_missing()
                frame = trials_frame(self.study)
                screened = frame[(frame.stage == SCREEN) & (frame.state == "COMPLETE")]
                ranked = list(
                    dict.fromkeys(screened.sort_values(["val_acc", "network"], ascending=[False, True]).network)
                )
                finalists = ranked[: self.config.confirm]
                if self.control.label not in finalists:
                    finalists.append(self.control.label)
                finalists.append(BASE)
                self.study.set_user_attr("finalists", finalists)
                self.log(f"screen done: confirming {', '.join(finalists)} on seeds {self.config.confirm_seed_list}")
        return self.enqueue_missing()

    def trials(self) -> pd.DataFrame:
        """trials.csv: `trials_frame` with each network's multipliers and input size as built, from the space."""
        frame = trials_frame(self.study)
        for column in ("depth", "width", "resolution"):
            values = {label: getattr(network, column) for label, network in self.feasible.items()} | {BASE: 1.0}
            frame[column] = frame.network.map(values)
        frame["pixels"] = [
            self.spec_of(label).resolution if isinstance(label, str) else None for label in frame.network
        ]
        return frame

    def pending(self) -> tuple[int, int]:
        """(waiting, running) trials in the study."""
        states = [t.state for t in self.study.get_trials(deepcopy=False)]
        return states.count(TrialState.WAITING), states.count(TrialState.RUNNING)

    def run_queue(self, budget: TrialBudget | None = None) -> int:
        """Claim and run queued jobs until none is left or the budget is spent; how many this process ran.

        When the queue runs dry with nothing running, the next stage is queued (the confirmation after the
        screen). An interrupted or crashed trial goes back to the queue before the interruption goes on up.
        """
        return drain(
            self.study,
            self.objective,
            budget=budget,
            on_empty=self.advance,
            catch=(TrainingDiverged,),
            requeue=self.enqueue_missing,
            heartbeat=self.config.heartbeat or HEARTBEAT,
        )


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per started trial with the columns of trials.csv."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        attrs = job_of(t) | t.user_attrs
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        for column in TRIAL_COLUMNS[2:]:
            row[column] = attrs.get(column)
        row["val_acc"] = attrs.get("val_acc", math.nan)
        row["epochs"] = attrs.get("epochs", 0)
        row["train_seconds"] = attrs.get("train_seconds", 0.0)
        row["failure"] = attrs.get("failure") or attrs.get(INTERRUPTED) or failure_of_stale(t)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=TRIAL_COLUMNS)
    return frame.astype({"val_acc": float, "train_seconds": float})


def job_of(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """stage, network and seed of the job a trial was queued for, from the queue itself (also for a trial stopped
    before it recorded anything, by a signal or kill -9); empty for a trial that holds no job."""
    key = queued_key(trial, "job")
    try:
        return asdict(Job.parse(key)) if isinstance(key, str) else {}
    except ValueError:
        return {}


def failure_of_stale(trial: optuna.trial.FrozenTrial) -> str | None:
    """Why a FAIL trial with no recorded reason failed: its worker stopped answering (heartbeat)."""
    if trial.state != TrialState.FAIL:
        return None
    return "worker stopped answering (heartbeat); queued again"


def diverged(frame: pd.DataFrame) -> pd.Series:
    """Trials that failed on their own merits: the loss diverged (final, never queued again)."""
    return (frame.state == "FAIL") & frame.failure.fillna("").str.contains("loss became")


def confirmation(
    frame: pd.DataFrame, finalists: list[str], seeds: list[int], roles: dict[str, str]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Each finalist on the fresh seeds: mean with its CI, paired differences to the winner and the base, P(best).

    A finalist whose training diverged on a seed is left out (`diverged`); of the others, only seeds every one
    has finished are used, so every comparison is paired. `complete` once every remaining finalist has every
    seed. The winner is the best mean among the scaled networks (the base is the reference, not a candidate);
    `significant` means the winner's paired CI against the runner-up excludes zero.
    """
    confirm = frame[frame.stage == CONFIRM]
    failed = sorted(set(confirm[diverged(confirm)].network))
    done = confirm[(confirm.state == "COMPLETE") & ~confirm.network.isin(failed)]
    table = done.pivot_table(index="seed", columns="network", values="val_acc", aggfunc="first").dropna()
    table.index = table.index.astype(int)
    remaining = [label for label in finalists if label not in failed]
    complete = set(table.columns) == set(remaining) and sorted(table.index) == sorted(seeds)
    if table.empty or len(table) < 2 or len(table.columns) < 2:
        return pd.DataFrame(), {"seeds": [int(s) for s in table.index], "complete": False, "diverged": failed}
    scaled = [label for label in table.columns if label != BASE]
    means = table.mean()
    ranked = sorted(scaled, key=lambda label: (-means[label], label))
    winner = ranked[0]
    p_best = bootstrap_p_best({label: table[label].tolist() for label in scaled})
    rows = []
    for label in [*ranked, *([BASE] if BASE in table else [])]:
        mean, low, high = accuracy_interval(table[label].tolist())
        row: dict[str, Any] = {
            "network": label,
            "role": roles.get(label, "candidate"),
            "seeds": len(table),
            "mean_val_acc": round(mean, 5),
            "ci95_low": round(low, 5),
            "ci95_high": round(high, 5),
            "std": round(statistics.stdev(table[label]), 5),
            "p_best": round(p_best.get(label, math.nan), 4) if label in p_best else math.nan,
        }
        for other, name in ((winner, "winner"), (BASE, "base")):
            if other in table and other != label:
                diff = paired_difference(table[other].tolist(), table[label].tolist())
                row |= {
                    f"vs_{name}": round(diff.mean, 5),
                    f"vs_{name}_low": round(diff.low, 5),
                    f"vs_{name}_high": round(diff.high, 5),
                }
        rows.append(row)
    result: dict[str, Any] = {
        "seeds": [int(s) for s in table.index],
        "complete": complete,
        "diverged": failed,
        "winner": winner,
    }
    if len(ranked) > 1:
        diff = paired_difference(table[ranked[1]].tolist(), table[winner].tolist())
        result |= {
            "runner_up": ranked[1],
            "gap": round(diff.mean, 5),
            "gap_ci95": [round(diff.low, 5), round(diff.high, 5)],
            "significant": diff.significant,
        }
    return pd.DataFrame(rows), result


def response_surface(frame: pd.DataFrame, networks: dict[str, Network]) -> dict[str, Any]:
    """A polynomial over the screened networks' log (depth, width, resolution) as built: its best network and fit error."""
    screened = frame[(frame.stage == SCREEN) & (frame.state == "COMPLETE")]
    if screened.empty:
        screened = frame[(frame.stage == CONFIRM) & (frame.state == "COMPLETE") & (frame.network != BASE)]
        screened = screened.groupby("network", as_index=False).val_acc.mean()
    labels = [label for label in screened.network if label in networks]
    if not labels:
        return {"fitted": False, "reason": "no trained network yet"}

    def coordinates(names: list[str]) -> np.ndarray:
        return np.log([[networks[name].depth, networks[name].width, networks[name].resolution] for name in names])

    values = screened.set_index("network").loc[labels].val_acc.to_numpy(dtype=float)
    surface = fit_surface(coordinates(labels), values)
    if surface is None:
        return {"fitted": False, "reason": f"{len(labels)} trained networks are too few for a surface"}
    feasible = sorted(networks)
    best, predicted = best_of(surface, coordinates(feasible), feasible)
    mean_rmse = float(np.std(values, ddof=1) * np.sqrt(len(values) / (len(values) - 1)))  # leave-one-out of the mean
    return {
        "fitted": True,
        "skill": surface.loo_rmse < mean_rmse,
        "mean_loo_rmse": round(mean_rmse, 5),
        "model": surface.model,
        "points": surface.n,
        "parameters": surface.parameters,
        "loo_rmse": round(surface.loo_rmse, 5),
        "fit_rmse": round(surface.fit_rmse, 5),
        "best": best,
        "predicted_val_acc": round(predicted, 5),
    }


def space_frame(search: GridSearch) -> pd.DataFrame:
    """grid.csv: every distinct network of the grid, its members, measured MACs ratio and feasibility."""
    rows = []
    for network in search.networks:
        data = network.to_json()
        data["members"] = " ".join(network.members)
        data["role"] = search.role(network.label) if network.feasible else ""
        rows.append(data)
    return pd.DataFrame(rows)


def summarise(search: GridSearch, wall_seconds: float) -> tuple[dict[str, Any], pd.DataFrame]:
    """The winner (None until the confirmation is done), the confirmation table and what the user needs to judge it."""
    frame = search.trials()
    roles = {label: search.role(label) for label in [*search.feasible, BASE]}
    table, verdict = confirmation(frame, search.finalists() or [], search.config.confirm_seed_list, roles)
    summary: dict[str, Any] = {
        key: None for key in ("alpha", "beta", "gamma", "val_acc", "ci95", "macs", "macs_ratio", "params", "latency_ms")
    }
    winner = verdict.get("winner") if verdict.get("complete") else None
    if winner:
        network = search.feasible[winner]
        row = table.set_index("network").loc[winner]
        cost = search.cost_of(winner)
        summary.update(
            asdict(network.candidate),
            val_acc=float(row.mean_val_acc),
            ci95=[float(row.ci95_low), float(row.ci95_high)],
            macs=cost.macs,
            macs_ratio=network.macs_ratio,
            params=cost.params,
            latency_ms=cost.latency_ms,
            depth=network.depth,
            width=network.width,
            resolution=network.resolution,
            members=list(network.members),
        )
    trained = frame[frame.epochs > 0]
    stage_counts = {stage: int((frame.stage == stage).sum()) for stage in (SCREEN, CONFIRM)}
    return summary | {
        "study": search.config.study_name,
        "grid": search.study.user_attrs.get("grid"),
        "trials": int(len(frame)),
        "networks": len(search.networks),
        "feasible": len(search.feasible),
        "control": {
            "network": search.control.label,
            "coefficients": asdict(CONTROL),
            "snapped": search.control_snapped,
        },
        "finalists": search.finalists(),
        "stages": stage_counts,
        "failed": int((frame.state == "FAIL").sum()),
        "failures": [
            {"number": int(row.number), "job": f"{row.stage}:{row.network}:{row.seed}", "reason": row.failure}
            for row in frame[frame.state == "FAIL"].itertuples()
        ],
        "confirmation": verdict,
        "ranking": [present({str(k): v for k, v in row.items()}) for row in table.to_dict("records")],
        "surface": response_surface(frame, search.feasible),
        "seconds_per_trial": {
            stage: round(float(trained[trained.stage == stage].train_seconds.mean()), 1)
            for stage in (SCREEN, CONFIRM)
            if (trained.stage == stage).any()
        },
        "wall_seconds": round(wall_seconds, 1),
    }, table


def run_search(config: SearchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole search: screen, confirmation; writes trials.csv, grid.csv, confirm.csv, search.png, summary.json.

    Interrupted (SIGINT, SIGTERM) it still writes the outputs of what finished before the interruption goes on up.
    """
    started = time.time()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    search = GridSearch(config, log)
    try:
        if config.workers > 1:
            crashed = run_workers(config, config.workers, log)
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
    confirm = trials_frame(search.study).query("stage == @CONFIRM")
    if len(confirm) and diverged(confirm).all():
        raise UserError(f"every confirmation training diverged ({confirm.failure.iloc[0]})")
    return summary


def write_outputs(search: GridSearch, started: float) -> dict[str, Any]:
    """trials.csv, grid.csv, confirm.csv, search.png and summary.json of the study as it stands; the summary."""
    from scaler.plots import search_figure

    summary, table = summarise(search, time.time() - started)
    frame = search.trials()
    write(
        search.config.folder,
        search.config,
        search.config.argv,
        started,
        frames={"trials": frame, "grid": space_frame(search), "confirm": table},
        figures={"search": search_figure(frame, table, summary)},
        options={"storage": redact(search.config.storage_url)},
        files={"summary.json": json.dumps(summary, indent=1, default=float)},
    )
    return summary


def raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    """Signal handler: SIGTERM stops like Ctrl-C, so a running trial is recorded and queued again."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def worker_main(config_json: dict[str, Any], threads: int, budget: TrialBudget) -> None:
    """Body of one local worker process: claim and run queued jobs until the queue or the budget is spent."""
    import sys

    import torch

    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    torch.set_num_threads(threads)
    config = SearchConfig.from_json(config_json, progress=False)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        GridSearch(config, log=lambda line: print(line, flush=True), enqueue=False).run_queue(budget)
    except KeyboardInterrupt:
        sys.exit(130)
    except (UserError, RunFailed) as error:
        print(f"scaler worker: error: {error}", file=sys.stderr, flush=True)
        sys.exit(2 if isinstance(error, UserError) else 1)


WORKER_MEMORY = 1_500_000_000  # bytes one local worker holds on Fashion-MNIST (about 1.1 GB measured)


def max_workers() -> int:
    """Local workers this machine can hold: one per core, and no more than its available memory allows."""
    from scaler.guard import available_memory

    cores = os.cpu_count() or 1
    memory = available_memory()
    return max(1, min(cores, cores if memory is None else memory // WORKER_MEMORY))


def run_workers(config: SearchConfig, workers: int, log: Callable[[str], None] = print) -> str | None:
    """Run the queue with `workers` local processes sharing the study's storage and its trial budget.

    Returns what went wrong when a worker crashed, None when all ended well. Interrupted, it stops every
    worker (each queues its running trial again) and waits for them before the interruption goes on up.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads of several workers starve each other
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    budget = TrialBudget(config.n_trials, config.timeout)
    processes = [context.Process(target=worker_main, args=(config.to_json(), threads, budget)) for _ in range(workers)]
    log(f"{workers} workers, {threads} thread(s) each, sharing {redact(config.storage_url)}")
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
                process.join()
        raise
    crashed = [f"worker {i + 1} exited with status {p.exitcode}" for i, p in enumerate(processes) if p.exitcode]
    return ", ".join(crashed) or None


def join_study(study: str, storage: str, data_dir: str | None = None, log: Callable[[str], None] = print) -> int:
    """`scaler worker`: join an existing study from any machine and run its queue; how many trials this worker ran."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    opened = open_study(storage, study, create=False)
    stored = opened.user_attrs.get("config")
    if not stored:
        raise UserError(f"study {study!r} was not made by scaler search")
    overrides: dict[str, Any] = {"storage": storage, "study": study}
    if data_dir:
        overrides["data_dir"] = data_dir
    config = SearchConfig.from_json(stored, **overrides)
    return GridSearch(config, log, enqueue=False).run_queue()
