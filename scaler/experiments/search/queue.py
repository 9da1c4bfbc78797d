"""The search's queue on Optuna: the screen, the finalists, the confirmation on fresh seeds, and its workers."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from scaler.errors import UserError
from scaler.experiments.search.config import SearchConfig, differences, grid_fingerprint, recorded_fingerprint
from scaler.model.guard import check_fits
from scaler.model.scaling import scale_compound
from scaler.model.spec import NetSpec
from scaler.study.engine import HEARTBEAT, TrialBudget, drain, recording_interruptions
from scaler.study.grid import CONTROL, Candidate, GridPoint, control_network, space
from scaler.study.run import Cost, count, evaluate, measure, present, setup
from scaler.study.storage import (
    INTERRUPTED,
    QueueStudy,
    check_url,
    describe_error,
    enqueue_missing,
    holds_its_point,
    open_study,
    queued_key,
    redact,
    sqlite_path,
    storage_errors,
    study_lock,
)
from scaler.study.workers import worker_process
from scaler.training.train import TrainConfig, TrainingDiverged

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
            [GridPoint.from_json(data) for data in stored]
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


def run_worker(config_json: dict[str, Any], budget: TrialBudget, threads: int) -> None:
    """Body of one local worker process: claim and run queued jobs until the queue or the budget is spent."""
    import torch

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    config = SearchConfig.from_json(config_json, progress=False)
    worker_process(
        lambda: GridSearch(config, log=lambda line: print(line, flush=True), enqueue=False).run_queue(budget)
    )


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
