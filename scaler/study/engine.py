"""The engine: every planned run is a job in one resumable store, claimed once, re-queued when interrupted."""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import multiprocessing
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import optuna
import pandas as pd
import torch
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState
from torch import nn

from scaler.errors import RunFailed, UserError
from scaler.model.spec import NetSpec
from scaler.study.examples import Examples, split_arrays
from scaler.study.run import (
    ENGINE_FILES,
    PLAN_COLUMNS,
    Cost,
    Log,
    Row,
    RunConfig,
    Setup,
    evaluate_model,
    planned_spec,
)
from scaler.study.storage import (
    FAILURE,
    INTERRUPTED,
    GridExhausted,
    QueueStudy,
    enqueue_missing,
    open_study,
    queued_key,
    redact,
    redact_secrets,
    removed_if_left_empty,
)
from scaler.study.workers import run_workers, worker_process
from scaler.training.train import Outputs, Progressive, TrainConfig, TrainingDiverged

STORE = "runs.db"
JOB = "job"  # user attribute naming the planned run a trial is for
ROW = "row"  # user attribute holding what the run measured
RUNNER = "runner"  # study attribute: the hook and cost rule a worker needs to evaluate the plan's runs
OUTPUTS = "outputs"  # user attribute holding a trained run's per-example outputs by split
EXTRA = "extra"  # user attribute holding what an experiment read off the trained model (columns and tables)
HEARTBEAT = 10  # seconds; a run silent for 3 beats (a killed process) is failed and queued again
DUPLICATION_COLUMNS = ("val_before_dup", "val_after_dup")
UNFINGERPRINTED = ("argv", "progress", "folder", "storage", "workers")
UNFINGERPRINTED_TRAIN = ("threads", "device", "seed")


def interruption(error: BaseException) -> str:
    """How a trial stopped from outside is recorded: it is not final, its job is queued again."""
    return redact(f"{type(error).__name__}: {str(error)[:200]}".rstrip(": ")) + " (queued again)"


def recording_interruptions(objective: Callable[[optuna.Trial], Any]) -> Callable[[optuna.Trial], Any]:
    """The objective, marking a trial stopped from outside (signal, crash) so that its job is queued again."""

    def recorded(trial: optuna.Trial) -> Any:
        try:
            return objective(trial)
        except TrainingDiverged:
            raise
        except BaseException as error:
            trial.set_user_attr(INTERRUPTED, interruption(error))
            raise

    return recorded


def store_url(folder: Path) -> str:
    """sqlite:///<folder>/runs.db: the store of a command's planned runs, beside its results."""
    return f"sqlite:///{folder / STORE}"


def identities(base: str, dataset: str) -> dict[str, str]:
    """What a name alone does not say: the table of a network file and the files of a dataset folder, whose path
    gives way to its name (nothing for zoo bases and known datasets, so their fingerprints stay as they were)."""
    from scaler.model.zoo import base_identity
    from scaler.training.folder import data_identity, dataset_label, is_folder_dataset

    found = {"base_table": base_identity(base), "data_files": data_identity(dataset)}
    if is_folder_dataset(dataset):  # the folder is its files, wherever it lies
        found["dataset"] = dataset_label(dataset)
    return {key: value for key, value in found.items() if value}


def fingerprint(setup: Setup) -> str:
    """What makes two commands' runs interchangeable: the command, base, data and how every network is trained
    and measured (not where the output goes, how many threads, or the training seed, which each job names)."""
    config = setup.config.to_json()
    kept = {key: value for key, value in config.items() if key not in UNFINGERPRINTED}
    kept["train"] = {key: value for key, value in config["train"].items() if key not in UNFINGERPRINTED_TRAIN}
    kept |= identities(setup.config.base, setup.config.dataset)
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def job_key(point: Mapping[str, Any]) -> str:
    """A planned run's identity: its row of the plan as canonical JSON (a missing seed is null)."""

    def plain(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        return value.item() if hasattr(value, "item") else value

    return json.dumps({key: plain(value) for key, value in point.items()}, sort_keys=True)


def seed_of(point: Mapping[str, Any], setup: Setup) -> int | None:
    """The seed a planned point trains with: its own, else the run's; None when it does not train."""
    if not point["train"]:
        return None
    seed = point.get("seed", math.nan)
    return setup.config.seed if seed is None or pd.isna(seed) else int(seed)


def training_of(point: Mapping[str, Any], setup: Setup) -> TrainConfig | bool:
    """How a planned point trains: not at all, or the run's config, progressively where it says, with its seed, cut
    to its `images` training images where it names them."""
    seed = seed_of(point, setup)
    if seed is None or setup.dataset is None:
        return False
    progressive = Progressive() if point["progressive"] else setup.config.train.progressive
    config = replace(setup.config.train, progressive=progressive, seed=seed)
    images = point.get("images")
    return config if images is None or pd.isna(images) else cut_to(config, int(images), len(setup.dataset.train))


def cut_to(config: TrainConfig, images: int, train_images: int) -> TrainConfig:
    """A training cut to `images` training images, with enough passes over the `train_images` to reach them."""
    passes = math.ceil(images / max(1, train_images))
    return replace(config, max_images=images, epochs=max(config.epochs, passes))


def row_of(record: Mapping[str, Any]) -> Row:
    """A Row back from what a trial stored (missing values are NaN, as `Row.record` left them out)."""
    names = {item.name for item in fields(Row)}
    values = {key: value for key, value in record.items() if key in names}
    return Row(**values | {"val_curve": tuple(values.get("val_curve", ()))})


Extra = Callable[[dict[str, Any], NetSpec, Row, nn.Module], dict[str, Any]]


@dataclass(frozen=True)
class Hook:
    """An experiment's `extra`, named so that any worker can rebuild it: `function(setup, **kwargs)` -> Extra."""

    function: str  # "module:name"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self, setup: Setup) -> Extra:
        """The Extra for this process's setup; only scaler's experiments are imported (the name comes from a store)."""
        module, _, name = self.function.partition(":")
        if not module.startswith("scaler.experiments.") or not name.isidentifier():
            raise UserError(f"the study names a hook outside scaler's experiments ({self.function!r}); refusing it")
        return cast(Extra, getattr(importlib.import_module(module), name)(setup, **self.kwargs))


class JobRunner:
    """Evaluates the planned run a claimed trial holds, in whichever process claimed it (the command's or a worker's).

    `extra(point, spec, row, model)`, when given, reads more off each evaluated model, as JSON: `columns` (added
    to the run's row) and `tables` (lists of rows by name); it is stored with the run. A network's cost is
    measured once for all its seeds unless `shared_cost` is False (FLGC: the cost of the deployed model follows
    the groups its training learned).
    """

    def __init__(self, setup: Setup, log: Log = print, extra: Hook | None = None, shared_cost: bool = True) -> None:
        self.setup, self.log, self.shared_cost = setup, log, shared_cost
        self.extra = extra(setup) if extra is not None else None
        self.costs: dict[NetSpec, Cost] = {}

    def objective(self, trial: optuna.Trial) -> float:
        """Evaluate the planned run a claimed trial holds; its test accuracy, or its validation accuracy for a
        `selection` run (0 when it only measures: Optuna fails NaN). A diverged training records why it failed."""
        point = json.loads(trial.user_attrs[JOB])
        spec = planned_spec(self.setup.spec, point)
        test, form, batch = bool(point.get("test", True)), str(point.get("form", "eager")), point.get("batch_latency")
        selection = bool(point.get("selection", False))
        try:
            row, model, outputs = evaluate_model(
                spec,
                self.setup,
                training_of(point, self.setup),
                report=live_progress(trial),
                description=point["label"],
                cost=self.costs.get(spec) if self.shared_cost else None,
                test=test,
                form=form,
                batch_latency=int(batch or 0),
            )
        except TrainingDiverged as error:
            trial.set_user_attr(FAILURE, redact(str(error)))
            self.log(f"trial {trial.number}: {point['label']} failed: {error}")
            raise
        self.costs[spec] = row.cost()
        if self.extra is not None:
            trial.set_user_attr(EXTRA, self.extra(point, spec, row, model))
        trial.set_user_attr(ROW, row.record() | {"val_curve": list(row.val_curve)})
        if outputs:
            trial.set_user_attr(OUTPUTS, {name: split.to_json() for name, split in outputs.items()})
        name, value = ("test_acc", row.test_acc) if test and not selection else ("val_acc", row.val_acc)
        accuracy = f"{name} {value:.4f}, {row.train_seconds:.0f} s" if row.trained else "not trained"
        self.log(
            f"trial {trial.number}: {point['label']}: {row.macs / 1e6:.2f} M MACs, {row.params / 1e6:.2f} M params, "
            f"{row.latency_ms:.2f} ms, {accuracy}"
        )
        return value if row.trained and not math.isnan(value) else 0.0

    def drain(self, study: optuna.Study, url: str, jobs: list[str] | None = None) -> int:
        """Claim and run the study's queued runs (of `jobs` alone when given) until none is left; an interrupted one
        is queued again first."""
        if jobs is not None and isinstance(study, QueueStudy):
            planned = frozenset(jobs)
            study.only = lambda trial: queued_key(trial, JOB) in planned
        return drain(
            study, recording_interruptions(self.objective), requeue=lambda: requeue_interrupted(study, url, jobs)
        )


def live_progress(trial: optuna.Trial) -> Callable[[int, float], None]:
    """A training's report hook that keeps the trial's epochs, validation accuracy and seconds so far in the store,
    where another process or machine can read a running training's progress."""
    started = time.perf_counter()

    def report(epoch: int, accuracy: float) -> None:
        trial.set_user_attr("epochs", epoch + 1)
        trial.set_user_attr("val_acc", accuracy)
        trial.set_user_attr("train_seconds", round(time.perf_counter() - started, 2))
        trial.report(accuracy, epoch)

    return report


def requeue_interrupted(study: optuna.Study, url: str, jobs: list[str] | None = None) -> int:
    """Queue again every job of the study (of `jobs` when given) that no trial holds any more (an interrupted or
    crashed run's)."""
    if jobs is None:
        jobs = list(dict.fromkeys(t.user_attrs[JOB] for t in study.get_trials(deepcopy=False) if JOB in t.user_attrs))
    return enqueue_missing(study, url, JOB, jobs, as_param=False)


class PlanRun:
    """One command's plan in its store: queue what no trial holds, run the queue (here or in `workers` local
    processes), read the rows back in plan order. The store is the config's `storage`, else runs.db in its folder."""

    def __init__(
        self, plan: pd.DataFrame, setup: Setup, log: Log = print, extra: Hook | None = None, shared_cost: bool = True
    ) -> None:
        missing = [c for c in PLAN_COLUMNS if c not in plan]
        if missing:
            raise ValueError(f"plan lacks columns {missing}")
        self.points: list[dict[str, Any]] = [{str(k): v for k, v in point.items()} for point in plan.to_dict("records")]
        self.keys = [job_key(point | {"seed": seed_of(point, setup)}) for point in self.points]
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("plan rows must be distinct: two rows name the same run")
        self.setup, self.log = setup, log
        self.url = setup.config.storage or store_url(setup.folder)
        self.name = f"{setup.config.command}-{fingerprint(setup)}"
        self.hook, self.shared_cost = extra, shared_cost
        self.runner = JobRunner(setup, log, extra, shared_cost)
        self.extras: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, dict[str, Outputs]] = {}
        self.per_example = Examples({})  # after `run`: every planned run's per-example outputs

    def open(self) -> optuna.Study:
        """The plan's study, created on first use, with what a worker on any machine needs to join it."""
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # the engine logs each run itself
        study = open_study(self.url, self.name, create=True, heartbeat=HEARTBEAT)
        if "config" not in study.user_attrs:
            study.set_user_attr("config", redact_secrets(self.setup.config.to_json()))
            hook = asdict(self.hook) if self.hook else None
            study.set_user_attr(RUNNER, {"extra": hook, "shared_cost": self.shared_cost})
        return study

    def enqueue_missing(self, study: optuna.Study) -> int:
        """Queue every planned run no trial holds yet (interrupted ones again), under the study's lock; how many."""
        return enqueue_missing(study, self.url, JOB, self.keys, as_param=False)

    def finished(self, study: optuna.Study) -> dict[str, Row]:
        """The row of every finished run of the study, by job (what `extra` read off it goes to `self.extras`)."""
        rows = {}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if ROW in t.user_attrs:
                rows[t.user_attrs[JOB]] = row_of(t.user_attrs[ROW])
                self.extras[t.user_attrs[JOB]] = t.user_attrs.get(EXTRA, {})
                stored = t.user_attrs.get(OUTPUTS, {})
                self.outputs[t.user_attrs[JOB]] = {name: Outputs.from_json(split) for name, split in stored.items()}
        return rows

    def tables(self, name: str) -> pd.DataFrame:
        """Table `name` of every planned run's extra, each row after its run's plan columns, in plan order."""
        return pd.DataFrame(
            [
                point | row
                for point, key in zip(self.points, self.keys)
                for row in self.extras.get(key, {}).get("tables", {}).get(name, [])
            ]
        )

    def run(self) -> pd.DataFrame:
        """Every planned run, from the store where it finished before, else evaluated now; the plan's columns first."""
        with removed_if_left_empty(self.url):
            study = self.open()
            done = self.finished(study)
            for point, key in zip(self.points, self.keys):
                if key in done and self.shared_cost:
                    self.runner.costs.setdefault(planned_spec(self.setup.spec, point), done[key].cost())
            queued = self.enqueue_missing(study)
            already = sum(key in done for key in self.keys)
            if already or queued:
                self.log(f"{already} of {len(self.keys)} planned runs already in {redact(self.url)}; {queued} queued")
            if queued:
                self.log(f"other machines can join: scaler worker --study {self.name} --storage {redact(self.url)}")
            planned = set(self.keys)
            waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            foreign = sum(queued_key(t, JOB) not in planned for t in waiting)
            if foreign:
                self.log(f"{foreign} run(s) another plan of this study queued are left to it (or to scaler worker)")
            self.run_queue(study)
            done = self.finished(study)
        lost = [json.loads(key)["label"] for key in self.keys if key not in done]
        if lost:
            raise RunFailed(f"{len(lost)} planned run(s) did not finish ({', '.join(lost[:3])}); rerun the command")
        self.per_example = Examples(self.examples())
        self.write_examples(self.per_example.arrays)
        return pd.DataFrame(
            [
                point | measured(done[key]) | self.extras.get(key, {}).get("columns", {})
                for point, key in zip(self.points, self.keys)
            ]
        )

    def examples(self) -> dict[str, np.ndarray]:
        """Per-example outputs of every planned run, one row per plan row (-1 and NaN where it did not train or saw
        other images): `<split>_predicted`, `<split>_p_true`, `<split>_labels` and the split's fingerprint
        (`val_raw`: with --ema, the last weights' own validation outputs)."""
        arrays: dict[str, np.ndarray] = {"label": np.array([point["label"] for point in self.points])}
        arrays["seed"] = np.array([seed_of(point, self.setup) if point["train"] else -1 for point in self.points])
        dataset = self.setup.dataset
        splits = (("val", dataset.val), ("val_raw", dataset.val), ("test", dataset.test)) if dataset is not None else ()
        for name, split in splits:
            arrays |= split_arrays(name, split, [self.outputs.get(key, {}).get(name) for key in self.keys])
        return arrays

    def write_examples(self, arrays: dict[str, np.ndarray]) -> None:
        """<folder>/<command>_examples.npz: `examples()`, when any run trained; recorded in run.json's outputs."""
        if any(name.endswith("_predicted") for name in arrays):
            path = self.setup.folder / f"{self.setup.config.command}_examples.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, **cast(dict[str, Any], arrays))
            ENGINE_FILES.add(path)

    def run_queue(self, study: optuna.Study) -> None:
        """Run the queue in this process, or in the config's local workers (a crashed worker is a RunFailed)."""
        workers = self.setup.config.workers
        if workers <= 1 or self.setup.dataset is None:
            self.runner.drain(study, self.url, self.keys)
            return
        config = replace(self.setup.config, progress=False, workers=1, storage=self.url)
        crashed = run_workers(plan_worker, (config.to_json(), self.name, self.keys), workers, self.url, self.log)
        if crashed:
            self.enqueue_missing(study)
            raise RunFailed(f"{crashed}; the unfinished runs are queued again: rerun the same command to finish them")


def plan_worker(config_json: dict[str, Any], name: str, jobs: list[str], threads: int) -> None:
    """Body of one local worker process of a plan: join its study and run the plan's queued runs until none is left."""
    torch.set_num_threads(threads)
    config = RunConfig.from_json(config_json)
    worker_process(lambda: join_plan(config, name, log=lambda line: print(line, flush=True), jobs=jobs))


def join_plan(config: RunConfig, name: str, log: Log = print, jobs: list[str] | None = None) -> int:
    """Join a plan's study in `config.storage` from any process or machine and run its queue (`jobs` alone when
    given, else every queued run); how many runs."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    assert config.storage is not None
    study = open_study(config.storage, name, create=False, heartbeat=HEARTBEAT)
    stored = study.user_attrs.get(RUNNER) or {}
    hook = Hook(**stored["extra"]) if stored.get("extra") else None
    prepared = Setup(config, config.base_spec(), config.load_dataset(), time.time())
    return JobRunner(prepared, log, hook, bool(stored.get("shared_cost", True))).drain(study, config.storage, jobs)


def measured(row: Row) -> dict[str, Any]:
    """A run's row as columns; an untrained row has no seed of its own and keeps the plan's, and only FLGC runs
    that duplicated have the accuracies around their duplication."""
    values = row.as_dict()
    dropped = {key for key in DUPLICATION_COLUMNS if math.isnan(values[key])}
    if values["seed"] is None:
        dropped.add("seed")
    return {k: v for k, v in values.items() if k not in dropped}


class TrialBudget:
    """How many more trials may start, and until when: one count shared by every local worker of a command."""

    def __init__(self, n_trials: int | None, timeout: float | None) -> None:
        self.remaining = multiprocessing.get_context("spawn").Value("i", -1 if n_trials is None else n_trials)
        self.deadline = None if timeout is None else time.time() + timeout

    def take(self) -> bool:
        """Reserve one trial; False once the count or the time is spent."""
        if self.deadline is not None and time.time() >= self.deadline:
            return False
        with self.remaining.get_lock():
            if self.remaining.value == 0:
                return False
            if self.remaining.value > 0:
                self.remaining.value -= 1
        return True

    def give_back(self) -> None:
        """Return a reservation that found no trial to run."""
        with self.remaining.get_lock():
            if self.remaining.value >= 0:
                self.remaining.value += 1


def drain(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    *,
    budget: TrialBudget | None = None,
    on_empty: Callable[[], int] | None = None,
    catch: tuple[type[Exception], ...] = (),
    requeue: Callable[[], int] | None = None,
    heartbeat: float = HEARTBEAT,
) -> int:
    """Claim and run queued trials until none waits and none runs elsewhere, or the budget is spent; how many this
    process ran. The one loop of every command.

    When the queue runs dry with nothing running, `on_empty` may queue more (the search's confirmation after its
    screen; it returns how many). A trial another process left running is failed once its heartbeat stops (and
    queued again). Exceptions in `catch` fail their trial alone; any other fails it and goes on up after `requeue`
    put the interrupted job back: a crash as a one-line RunFailed, an interruption or a user error as it is.
    """
    budget = budget or TrialBudget(None, None)
    ran = 0
    while budget.take():
        try:
            study.optimize(objective, n_trials=1, catch=catch)
        except GridExhausted:
            budget.give_back()
            mine = study.mine if isinstance(study, QueueStudy) else lambda trial: True
            states = [t.state for t in study.get_trials(deepcopy=False) if mine(t)]
            if TrialState.RUNNING not in states:
                if TrialState.WAITING in states or (on_empty is not None and on_empty()):
                    continue
                break
            time.sleep(max(1.0, heartbeat / 2))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            continue
        except BaseException as error:
            if requeue is not None:
                requeue()
            if isinstance(error, Exception) and not isinstance(error, UserError):
                raise RunFailed(f"a trial crashed ({interruption(error)}); rerun the same command to go on") from error
            raise
        ran += 1
    return ran


def evaluate_plan(plan: pd.DataFrame, setup: Setup, log: Log = print) -> pd.DataFrame:
    """Frame in, frame out: each planned (variant, depth, width, res_mult[, seed]) of the setup's base, evaluated
    once and kept in the run's store, so that a rerun of the same command goes on where the last one stopped.

    The plan's columns come first; `train` False only measures; `progressive` trains with progressive learning;
    an optional `seed` column trains with that seed, an optional `test` False leaves the test split unlooked at
    (selection runs), an optional `form` measures the cost in that form (eager by default) and `batch_latency`
    also times a batch of that many; an optional `images` cuts the training to that many images, and `selection`
    True judges a run by its validation accuracy (the search's trainings). A network's cost is measured once,
    however many seeds.
    """
    return PlanRun(plan, setup, log).run()
