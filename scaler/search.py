"""The grid search of alpha, beta, gamma on Optuna: queue, trials, confirmation, outputs and local workers."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import random
import signal
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

from scaler.errors import RunFailed, UserError
from scaler.grid import Candidate, feasible_grid
from scaler.guard import check_fits
from scaler.run import RunConfig, evaluate, measure, present, setup, write
from scaler.scaling import scale_compound
from scaler.spec import NetSpec
from scaler.storage import (
    INTERRUPTED,
    STUDIES_DIR,
    GridExhausted,
    QueueStudy,
    default_url,
    describe_error,
    enqueue_missing,
    open_study,
    redact,
    storage_errors,
    study_folder,
)
from scaler.tasks import dataset_task
from scaler.train import Progressive, TrainConfig, TrainingDiverged

TRIAL_COLUMNS = [
    "number",
    "state",
    "alpha",
    "beta",
    "gamma",
    "constraint",
    "macs",
    "macs_ratio",
    "params",
    "latency_ms",
    "val_acc",
    "epochs",
    "train_seconds",
    "failure",
]
PRUNERS = ("median", "hyperband", "none")
TRAINED_ATTRS = ("val_acc", "val_curve", "epochs", "train_seconds", "images_per_second")


@dataclass(frozen=True)
class SearchConfig:
    """Everything one `scaler search` needs."""

    base: str = "mobilenet"
    width: float = 1.0
    dataset: str = "fashion-mnist"
    variant: str = "relu"
    phi: float = 1.0
    step: float = 0.1
    tolerance: float = 0.1
    ratio_range: tuple[float, float] = (1.7, 2.3)
    pruner: str = "median"
    n_trials: int | None = None
    timeout: float | None = None
    confirm: int = 3
    confirm_seeds: int = 1
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
        name = self.base if self.width == 1 else f"{self.base}-w{self.width:g}"
        name = f"{name}-{self.dataset}"
        if self.variant != "relu":
            name += "-" + self.variant.replace(":", "").replace(",", "").replace("+", "-")
        return name if self.phi == 1 else f"{name}-phi{self.phi:g}"

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
        fields = {
            **data,
            "train": TrainConfig(**train_data),
            "studies_dir": Path(data["studies_dir"]),
            "ratio_range": tuple(data["ratio_range"]),
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
        """`to_json` as kept in the study: the storage URL without its password."""
        data = self.to_json()
        data["storage"] = redact(self.storage) if self.storage else None
        return data


class AfterTrained(optuna.pruners.BasePruner):
    """Ask `inner` only once `startup` trials have trained to the end.

    Optuna's own n_startup_trials counts every COMPLETE trial, and infeasible grid points complete
    without training, so pruning would start after a single trained trial.
    """

    def __init__(self, inner: optuna.pruners.BasePruner, startup: int) -> None:
        self.inner, self.startup = inner, startup

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        trained = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.intermediate_values]
        return len(trained) >= self.startup and self.inner.prune(study, trial)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """median (after 3 trained trials), hyperband (1..epochs), or none."""
    if name == "median":
        return AfterTrained(optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0), startup=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs), reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"unknown pruner {name!r}; choose from {', '.join(PRUNERS)}")


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


def grid_fingerprint(config: SearchConfig) -> dict[str, Any]:
    """What makes two searches the same study."""
    fingerprint = {
        "base": config.base,
        "dataset": config.dataset,
        "variant": config.variant,
        "phi": config.phi,
        "step": config.step,
        "tolerance": config.tolerance,
    }
    return fingerprint if config.width == 1 else fingerprint | {"width": config.width}


def interruption(error: BaseException) -> str:
    """How a trial stopped from outside is recorded: it is not final, its grid point is queued again."""
    return f"{type(error).__name__}: {str(error)[:200]}".rstrip(": ") + " (queued again)"


def recording_interruptions(objective: Callable[[optuna.Trial], Any]) -> Callable[[optuna.Trial], Any]:
    """The objective, marking a trial stopped from outside (signal, crash) so that its point is queued again."""

    def recorded(trial: optuna.Trial) -> Any:
        try:
            return objective(trial)
        except (optuna.TrialPruned, TrainingDiverged):
            raise
        except BaseException as error:
            trial.set_user_attr(INTERRUPTED, interruption(error))
            raise

    return recorded


class GridSearch:
    """One study: reference training, grid trials, confirmation seeds, outputs."""

    def __init__(self, config: SearchConfig, log: Callable[[str], None] = print, enqueue: bool = True) -> None:
        self.config = config
        self.log = log
        self.grid = feasible_grid(config.step, config.tolerance)
        if config.pruner not in PRUNERS:
            raise UserError(f"unknown pruner {config.pruner!r}; choose from {', '.join(PRUNERS)}")
        lo, hi = config.ratio_range
        if not 0 < lo < hi:
            raise UserError(f"--ratio-range must be two numbers 0 < low < high (got {lo} {hi})")
        self.setup = setup(config.run_config(), data=False)
        self.base = self.setup.spec
        for candidate in self.grid:
            check_fits(self.candidate_spec(candidate), config.train.batch_size, training=True)
        self.base_cost = measure(self.base, runs=self.setup.config.latency_runs)
        self.setup = self.setup.with_data()
        self.study = self.open(create=enqueue)
        if enqueue:
            queued = self.enqueue_missing()
            waiting, running = self.pending()
            self.log(
                f"study {config.study_name}: {len(self.grid)} feasible candidates, {queued} newly queued, "
                f"{waiting} waiting, {running} running elsewhere"
            )

    def open(self, create: bool) -> QueueStudy:
        """The study, created (or resumed) with this grid under the study's lock; a mismatched grid is an error."""
        config = self.config
        study = open_study(
            config.storage_url,
            config.study_name,
            create=create,
            heartbeat=config.heartbeat,
            sampler=optuna.samplers.RandomSampler(seed=config.seed),
            pruner=make_pruner(config.pruner, config.train.epochs),
        )
        assert isinstance(study, QueueStudy)
        fingerprint = grid_fingerprint(config)
        try:
            existing = study.user_attrs.get("grid")
            if existing and existing != fingerprint and create:
                raise UserError(
                    f"study {config.study_name!r} was made for {existing}; choose another --study for {fingerprint}"
                )
            if not existing:
                study.set_user_attr("grid", fingerprint)
                study.set_user_attr("config", config.stored())
        except storage_errors() as error:
            raise UserError(
                f"storage {redact(config.storage_url)} failed: {describe_error(error, config.storage_url)}"
            ) from None
        return study

    def candidate_spec(self, candidate: Candidate) -> NetSpec:
        """The base scaled by a candidate's coefficients at the search's phi."""
        return scale_compound(self.base, candidate.alpha, candidate.beta, candidate.gamma, self.config.phi)

    def reference(self) -> dict[str, Any]:
        """The base network (phi = 0), trained once per study."""
        if "reference" not in self.study.user_attrs:
            self.log(f"training the base {self.base.name} (phi=0) as the reference")
            row = evaluate(self.base, self.setup, test=False, cost=self.base_cost, description="base φ=0")
            self.study.set_user_attr("reference", row.record())
        return self.study.user_attrs["reference"]

    def objective(self, trial: optuna.Trial) -> float:
        """`evaluate_candidate`, recording an interruption or crash so that its grid point is queued again."""
        return recording_interruptions(self.evaluate_candidate)(trial)

    def evaluate_candidate(self, trial: optuna.Trial) -> float:
        """Measure the phi-scaled candidate; train it only when its measured MACs ratio is in range."""
        candidate = Candidate.from_label(trial.suggest_categorical("candidate", [c.label for c in self.grid]))
        spec = self.candidate_spec(candidate)
        cost = measure(spec, runs=self.setup.config.latency_runs)
        ratio = cost.macs / self.base_cost.macs
        lo, hi = self.config.ratio_range
        target = 2.0**self.config.phi
        violation = max(lo * target / 2 - ratio, ratio - hi * target / 2) if self.config.phi else 0.0
        for key, value in asdict(candidate).items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("product", round(candidate.product, 4))
        trial.set_user_attr("macs_ratio", round(ratio, 4))
        for key, value in present(asdict(cost)).items():
            trial.set_user_attr(key, value)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a retried trial carries its first run's constraint
            trial.set_constraint("macs_ratio", violation)
        if violation > 0:
            self.log(
                f"trial {trial.number}: {candidate.label} measured MACs ratio {ratio:.3f} outside [{lo}, {hi}]: infeasible, not trained"
            )
            return 0.0
        started = time.perf_counter()

        def report(epoch: int, accuracy: float) -> None:
            trial.set_user_attr("epochs", epoch + 1)
            trial.set_user_attr("val_acc", accuracy)
            trial.set_user_attr("train_seconds", round(time.perf_counter() - started, 2))
            trial.report(accuracy, epoch)
            if trial.should_prune():
                self.log(
                    f"trial {trial.number}: {candidate.label} pruned after epoch {epoch + 1} at val_acc {accuracy:.4f}"
                )
                raise optuna.TrialPruned()

        try:
            row = evaluate(
                spec,
                self.setup,
                report=report,
                test=False,
                cost=cost,
                description=f"trial {trial.number} {candidate.label}",
            )
        except TrainingDiverged as error:
            self.log(f"trial {trial.number}: {candidate.label} failed: {error}")
            trial.set_user_attr("failure", str(error))
            raise
        for key in TRAINED_ATTRS:
            trial.set_user_attr(key, getattr(row, key) if key != "val_curve" else list(row.val_curve))
        self.log(
            f"trial {trial.number}: {candidate.label} ratio {ratio:.3f} val_acc {row.val_acc:.4f} ({row.epochs} epochs, {row.train_seconds:.0f} s)"
        )
        return row.val_acc

    def enqueue_missing(self) -> int:
        """Queue, in a seeded order, every grid point no trial holds (interrupted ones again); how many were queued."""
        labels = [c.label for c in self.grid]
        random.Random(self.config.seed).shuffle(labels)
        return enqueue_missing(self.study, self.config.storage_url, "candidate", labels)

    def pending(self) -> tuple[int, int]:
        """(waiting, running) trials in the study."""
        states = [t.state for t in self.study.get_trials(deepcopy=False)]
        return states.count(TrialState.WAITING), states.count(TrialState.RUNNING)

    def run_queue(self, budget: TrialBudget | None = None) -> int:
        """Claim and run queued grid points until none is left or the budget is spent; how many this process ran.

        An interrupted or crashed trial goes back to the queue before the interruption goes on up.
        """
        budget = budget or TrialBudget(None, None)
        ran = 0
        while budget.take():
            try:
                self.study.optimize(self.objective, n_trials=1, catch=(TrainingDiverged,))
            except GridExhausted:
                budget.give_back()
                waiting, running = self.pending()
                if not waiting and not running:
                    break
                time.sleep(max(1, (self.config.heartbeat or 10) // 2))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ExperimentalWarning)
                    optuna.storages.fail_stale_trials(self.study)
                continue
            except BaseException as error:
                self.enqueue_missing()
                if isinstance(error, Exception) and not isinstance(error, UserError):
                    raise RunFailed(
                        f"a trial crashed ({interruption(error)}); rerun the same command to go on"
                    ) from error
                raise
            ran += 1
        return ran

    def confirm(self) -> dict[str, dict[str, Any]]:
        """Retrain the top --confirm candidates with --confirm-seeds more seeds each."""
        frame = trials_frame(self.study)
        done = frame[(frame.state == "COMPLETE") & (frame.constraint <= 0)].sort_values("val_acc", ascending=False)
        confirmations: dict[str, dict[str, Any]] = dict(self.study.user_attrs.get("confirm", {}))
        for _, row in done.head(self.config.confirm).iterrows():
            candidate = Candidate(row.alpha, row.beta, row.gamma)
            entry = confirmations.get(candidate.label, {"seeds": {str(self.config.seed): row.val_acc}})
            for offset in range(1, self.config.confirm_seeds + 1):
                seed = self.config.seed + offset
                if str(seed) in entry["seeds"]:
                    continue
                config = replace(self.config.train, seed=seed)
                row = evaluate(
                    self.candidate_spec(candidate),
                    self.setup,
                    config,
                    test=False,
                    description=f"confirm {candidate.label} seed {seed}",
                )
                entry["seeds"][str(seed)] = row.val_acc
                self.log(f"confirm {candidate.label} seed {seed}: val_acc {row.val_acc:.4f}")
                confirmations[candidate.label] = entry
                self.study.set_user_attr("confirm", confirmations)
            confirmations[candidate.label] = entry
        self.study.set_user_attr("confirm", confirmations)
        return confirmations


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per started trial with the columns of trials.csv (plus product, resolution, candidate)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        attrs = t.user_attrs
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "alpha": attrs.get("alpha"),
                "beta": attrs.get("beta"),
                "gamma": attrs.get("gamma"),
                "constraint": t.constraints.get("macs_ratio", math.nan) if hasattr(t, "constraints") else math.nan,
                "macs": attrs.get("macs"),
                "macs_ratio": attrs.get("macs_ratio"),
                "params": attrs.get("params"),
                "latency_ms": attrs.get("latency_ms"),
                "val_acc": attrs.get("val_acc", math.nan),
                "epochs": attrs.get("epochs", 0),
                "train_seconds": attrs.get("train_seconds", 0.0),
                "failure": attrs.get("failure") or attrs.get(INTERRUPTED) or failure_of_stale(t),
                "product": attrs.get("product"),
                "resolution": attrs.get("resolution"),
                "candidate": t.params.get("candidate"),
            }
        )
    frame = pd.DataFrame(rows, columns=TRIAL_COLUMNS + ["product", "resolution", "candidate"])
    return frame.astype({"constraint": float, "val_acc": float, "train_seconds": float})


def failure_of_stale(trial: optuna.trial.FrozenTrial) -> str | None:
    """Why a FAIL trial with no recorded reason failed: its worker stopped answering (heartbeat)."""
    if trial.state != TrialState.FAIL:
        return None
    return "worker stopped answering (heartbeat); queued again"


def significance(confirmations: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Seed-to-seed std (pooled) beside the gap between the best and the runner-up mean accuracy."""
    stats = []
    for label, entry in confirmations.items():
        accs = list(entry["seeds"].values())
        stats.append((statistics.fmean(accs), label, accs))
    stats.sort(reverse=True)
    stds = [statistics.stdev(a) for _, _, a in stats if len(a) > 1]
    pooled = math.sqrt(statistics.fmean([s**2 for s in stds])) if stds else math.nan
    gap = stats[0][0] - stats[1][0] if len(stats) > 1 else math.nan
    return {
        "ranking": [
            {"candidate": label, "mean_val_acc": round(mean, 4), "seeds": len(accs)} for mean, label, accs in stats
        ],
        "seed_std": round(pooled, 4) if not math.isnan(pooled) else None,
        "gap": round(gap, 4) if not math.isnan(gap) else None,
        "significant": bool(gap > 2 * pooled) if stds and len(stats) > 1 else None,
    }


def summarise(search: GridSearch, confirmations: dict[str, dict[str, Any]], wall_seconds: float) -> dict[str, Any]:
    """The best candidate (None while no feasible trial has trained) and what the user needs to judge it."""
    frame = trials_frame(search.study)
    feasible = frame[(frame.state == "COMPLETE") & (frame.constraint <= 0)]
    sig = significance(confirmations) if confirmations else {}
    trained = frame[frame.epochs > 0]
    summary: dict[str, Any] = {
        key: None for key in ("alpha", "beta", "gamma", "val_acc", "macs", "macs_ratio", "params", "latency_ms")
    }
    if not feasible.empty:
        best_label = sig["ranking"][0]["candidate"] if sig else feasible.sort_values("val_acc").iloc[-1].candidate
        best = feasible[feasible.candidate == best_label].iloc[0]
        summary.update(
            alpha=float(best.alpha),
            beta=float(best.beta),
            gamma=float(best.gamma),
            val_acc=round(float(sig["ranking"][0]["mean_val_acc"] if sig else best.val_acc), 4),
            macs=int(best.macs),
            macs_ratio=float(best.macs_ratio),
            params=int(best.params),
            latency_ms=float(best.latency_ms),
        )
    return summary | {
        "study": search.config.study_name,
        "grid": search.study.user_attrs.get("grid"),
        "trials": int(len(frame)),
        "grid_points": len(search.grid),
        "feasible_trained": int(len(feasible)),
        "infeasible": int((frame.constraint > 0).sum()),
        "pruned": int((frame.state == "PRUNED").sum()),
        "failed": int((frame.state == "FAIL").sum()),
        "failures": [
            {"number": int(row.number), "candidate": row.candidate, "reason": row.failure}
            for row in frame[frame.state == "FAIL"].itertuples()
        ],
        "trial_epochs": int(frame.epochs.sum()),
        "seconds_per_trial": round(float(trained.train_seconds.mean()), 1) if len(trained) else None,
        "reference": search.study.user_attrs.get("reference"),
        "significance": sig,
        "wall_seconds": round(wall_seconds, 1),
    }


def run_search(config: SearchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole search: reference, grid, confirmation; writes trials.csv, search.png, summary.json.

    Interrupted (SIGINT, SIGTERM) it still writes the outputs of what finished before the interruption goes on up.
    """
    started = time.time()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    search = GridSearch(config, log)
    try:
        search.reference()
        if config.workers > 1:
            crashed = run_workers(config, config.workers, log)
            if crashed:
                search.enqueue_missing()
                waiting, _ = search.pending()
                write_outputs(search, search.study.user_attrs.get("confirm", {}), started)
                raise RunFailed(f"{crashed}; {waiting} grid point(s) are queued: rerun the same command to finish them")
        else:
            search.run_queue(TrialBudget(config.n_trials, config.timeout))
        confirmations = search.confirm() if config.confirm > 0 else {}
    except KeyboardInterrupt:
        write_outputs(search, search.study.user_attrs.get("confirm", {}), started)
        raise
    return write_outputs(search, confirmations, started)


def write_outputs(search: GridSearch, confirmations: dict[str, dict[str, Any]], started: float) -> dict[str, Any]:
    """trials.csv, search.png and summary.json of the study as it stands; the summary."""
    from scaler.plots import search_figure

    summary = summarise(search, confirmations, time.time() - started)
    frame = trials_frame(search.study)
    write(
        search.config.folder,
        search.config,
        search.config.argv,
        started,
        frames={"trials": frame[TRIAL_COLUMNS + ["product", "resolution"]]},
        figures={"search": search_figure(frame, summary)},
        options={"storage": redact(search.config.storage_url)},
        files={"summary.json": json.dumps(summary, indent=1)},
    )
    return summary


def raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    """Signal handler: SIGTERM stops like Ctrl-C, so a running trial is recorded and queued again."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def worker_main(config_json: dict[str, Any], threads: int, budget: TrialBudget) -> None:
    """Body of one local worker process: claim and run grid points until the queue or the budget is spent."""
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
