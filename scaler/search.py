"""Optuna studies (the only module that imports Optuna): the grid search of alpha, beta, gamma."""
from __future__ import annotations

import json
import math
import random
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import optuna
import pandas as pd
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

from scaler.complexity import count_macs, measure_latency
from scaler.data import Dataset, load_dataset
from scaler.errors import UserError
from scaler.grid import Candidate, feasible_grid
from scaler.nn.build import build
from scaler.profile import profile_spec
from scaler.scaling import scale_compound
from scaler.spec import NetSpec
from scaler.storage import STUDIES_DIR, check_url, default_url, describe_error, redact
from scaler.tasks import dataset_task
from scaler.train import Progressive, TrainConfig, TrainingDiverged, train
from scaler.variants import apply_variant
from scaler.zoo import base as base_spec

warnings.filterwarnings("ignore", category=ExperimentalWarning)
TRIAL_COLUMNS = [
    "number", "state", "alpha", "beta", "gamma", "constraint", "macs", "macs_ratio", "params",
    "latency_ms", "val_acc", "epochs", "train_seconds",
]
PRUNERS = ("median", "hyperband", "none")


@dataclass(frozen=True)
class SearchConfig:
    """Everything one `scaler search` needs."""

    base: str = "mobilenet"
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
    heartbeat: int | None = 10
    workers: int = 1
    train: TrainConfig = field(default_factory=TrainConfig)
    progress: bool = True

    @property
    def study_name(self) -> str:
        """--study, or '<base>-<dataset>[-<variant>][-phiN]'."""
        if self.study:
            return self.study
        name = f"{self.base}-{self.dataset}"
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
            progressive = {k: tuple(v) if isinstance(v, list) else v for k, v in train_data["progressive"].items()}
            train_data["progressive"] = Progressive(**progressive)
        fields = {**data, "train": TrainConfig(**train_data), "studies_dir": Path(data["studies_dir"]), "ratio_range": tuple(data["ratio_range"])}
        return replace(cls(**fields), **overrides)

    @property
    def storage_url(self) -> str:
        """--storage, or the study's embedded SQLite file."""
        return self.storage or default_url(self.study_name, self.studies_dir)

    @property
    def folder(self) -> Path:
        """studies/<study>: where CSV, PNG and JSON go."""
        folder = self.studies_dir / self.study_name
        folder.mkdir(parents=True, exist_ok=True)
        return folder


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


class GridExhausted(Exception):
    """No grid point is waiting in the study's queue."""


class QueueStudy(optuna.Study):
    """A study whose trials come only from its queue: each enqueued grid point is claimed atomically once.

    Optuna's GridSampler hands a point out again when every point has started, so several workers
    repeat work; here `ask` pops a WAITING trial (a compare-and-set in the storage) or stops.
    """

    def ask(self, fixed_distributions: dict[str, Any] | None = None) -> optuna.Trial:
        trial_id = self._pop_waiting_trial_id()
        if trial_id is None:
            raise GridExhausted()
        return optuna.Trial(self, trial_id)

    def _pop_waiting_trial_id(self) -> int | None:
        """Claim one WAITING trial with a conditional UPDATE, atomic on every backend.

        Optuna's claim reads the state and then writes it; SQLite ignores the read's FOR UPDATE,
        so two workers could both see WAITING and both run the trial.
        """
        engine = getattr(self._storage, "_backend", self._storage).engine  # RDBStorage, inside Optuna's cache
        for trial in self._storage.get_all_trials(self._study_id, deepcopy=False, states=(TrialState.WAITING,)):
            if claim_waiting_trial(engine, trial._trial_id):
                return trial._trial_id
        return None


def claim_waiting_trial(engine: Any, trial_id: int) -> bool:
    """Set a trial RUNNING only if it is still WAITING; whether this caller got it."""
    from datetime import datetime

    from optuna.storages._rdb.models import TrialModel
    from sqlalchemy import update

    claim = (
        update(TrialModel)
        .where(TrialModel.trial_id == trial_id, TrialModel.state == TrialState.WAITING)
        .values(state=TrialState.RUNNING, datetime_start=datetime.now())
    )
    with engine.begin() as connection:
        return connection.execute(claim).rowcount == 1


def open_storage(url: str, heartbeat: int | None = None) -> optuna.storages.BaseStorage:
    """An Optuna RDB storage for `url` (heartbeats re-queue dead workers' trials); errors in one line."""
    check_url(url)
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs(url),
                heartbeat_interval=heartbeat,
                grace_period=3 * heartbeat if heartbeat else None,
                failed_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3) if heartbeat else None,
            )
    except ImportError:
        raise UserError(f"cannot open storage {redact(url)}: its database driver is not installed (pip install 'scaler[postgres]')") from None
    except (SQLAlchemyError, OSError, RuntimeError, ValueError) as error:
        raise UserError(f"cannot open storage {redact(url)}: {describe_error(error, url)}") from None


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLite waits for locks instead of failing; servers get a short connect timeout."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    if url.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}
    return {}


def grid_fingerprint(config: SearchConfig) -> dict[str, Any]:
    """What makes two searches the same study."""
    return {"base": config.base, "dataset": config.dataset, "variant": config.variant, "phi": config.phi, "step": config.step, "tolerance": config.tolerance}


def load_or_create(config: SearchConfig, create: bool = True) -> QueueStudy:
    """The study as a QueueStudy, created (or resumed) with this grid; a mismatched grid is an error."""
    storage = open_storage(config.storage_url, config.heartbeat)
    from sqlalchemy.exc import SQLAlchemyError

    pruner = make_pruner(config.pruner, config.train.epochs)
    fingerprint = grid_fingerprint(config)
    try:
        if create:
            optuna.create_study(storage=storage, study_name=config.study_name, direction="maximize", load_if_exists=True)
        elif config.study_name not in optuna.get_all_study_names(storage):
            raise UserError(f"no study {config.study_name!r} in {redact(config.storage_url)}; start it with scaler search")
        study = QueueStudy(config.study_name, storage, sampler=optuna.samplers.RandomSampler(seed=config.seed), pruner=pruner)
        existing = study.user_attrs.get("grid")
        if existing and existing != fingerprint and create:
            raise UserError(f"study {config.study_name!r} was made for {existing}; choose another --study for {fingerprint}")
        if not existing:
            study.set_user_attr("grid", fingerprint)
            study.set_user_attr("config", config.to_json())
    except SQLAlchemyError as error:
        raise UserError(f"storage {redact(config.storage_url)} failed: {describe_error(error, config.storage_url)}") from None
    return study


def measure(spec: NetSpec) -> dict[str, Any]:
    """Params, MACs, activations and batch-1 latency of the model a spec builds."""
    return profile_spec(spec, runs=15)


def train_spec(spec: NetSpec, dataset: Dataset, config: TrainConfig, report: Callable[[int, float], None] | None = None, progress: bool = True, description: str = "train") -> dict[str, Any]:
    """Build and train a spec; the measured accuracy curve and time."""
    result = train(build(spec, seed=config.seed), dataset, spec.resolution, config, report=report, progress=progress, description=description)
    return {"val_acc": result.final_val_acc, "val_curve": result.val_acc, "epochs": result.epochs, "train_seconds": round(result.train_seconds, 2), "images_per_second": round(result.images_per_second, 1)}


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
        task = dataset_task(config.dataset)
        self.base = apply_variant(base_spec(config.base, task.in_channels, task.resolution, task.num_classes), config.variant)
        self.base_macs = count_macs(build(self.base), self.base.input_shape)
        self.study = load_or_create(config, create=enqueue)
        self.dataset = load_dataset(config.dataset, config.data_dir, subset=config.subset, seed=config.seed)
        if config.val_size:
            self.dataset = replace(self.dataset, val=self.dataset.val.subset(config.val_size, config.seed))

    def reference(self) -> dict[str, Any]:
        """The base network (phi = 0), trained once per study."""
        if "reference" not in self.study.user_attrs:
            self.log(f"training the base {self.base.name} (phi=0) as the reference")
            try:
                trained = train_spec(self.base, self.dataset, self.config.train, progress=self.config.progress, description="base φ=0")
            except TrainingDiverged as error:
                raise UserError(f"the base network diverged ({error}); lower --lr or check the data") from None
            self.study.set_user_attr("reference", measure(self.base) | trained)
        return self.study.user_attrs["reference"]

    def objective(self, trial: optuna.Trial) -> float:
        """Measure the phi-scaled candidate; train it only when its measured MACs ratio is in range."""
        candidate = Candidate.from_label(trial.suggest_categorical("candidate", [c.label for c in self.grid]))
        spec = scale_compound(self.base, candidate.alpha, candidate.beta, candidate.gamma, self.config.phi)
        row = measure(spec)
        ratio = row["macs"] / self.base_macs
        lo, hi = self.config.ratio_range
        target = 2.0**self.config.phi
        violation = max(lo * target / 2 - ratio, ratio - hi * target / 2) if self.config.phi else 0.0
        for key, value in asdict(candidate).items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("product", round(candidate.product, 4))
        trial.set_user_attr("macs_ratio", round(ratio, 4))
        for key, value in row.items():
            trial.set_user_attr(key, value)
        trial.set_constraint("macs_ratio", violation)
        if violation > 0:
            self.log(f"trial {trial.number}: {candidate.label} measured MACs ratio {ratio:.3f} outside [{lo}, {hi}]: infeasible, not trained")
            return 0.0
        started = time.perf_counter()

        def report(epoch: int, accuracy: float) -> None:
            trial.set_user_attr("epochs", epoch + 1)
            trial.set_user_attr("val_acc", accuracy)
            trial.set_user_attr("train_seconds", round(time.perf_counter() - started, 2))
            trial.report(accuracy, epoch)
            if trial.should_prune():
                self.log(f"trial {trial.number}: {candidate.label} pruned after epoch {epoch + 1} at val_acc {accuracy:.4f}")
                raise optuna.TrialPruned()

        try:
            result = train_spec(spec, self.dataset, self.config.train, report, self.config.progress, f"trial {trial.number} {candidate.label}")
        except TrainingDiverged as error:
            self.log(f"trial {trial.number}: {candidate.label} failed: {error}")
            trial.set_user_attr("failure", str(error))
            raise
        for key, value in result.items():
            trial.set_user_attr(key, value)
        self.log(f"trial {trial.number}: {candidate.label} ratio {ratio:.3f} val_acc {result['val_acc']:.4f} ({result['epochs']} epochs, {result['train_seconds']:.0f} s)")
        return result["val_acc"]

    def enqueue_missing(self) -> int:
        """Queue every grid point that has no trial yet, in a seeded order; how many were queued."""
        seen = {t.params.get("candidate") or t.system_attrs.get("fixed_params", {}).get("candidate") for t in self.study.get_trials(deepcopy=False)}
        missing = [c.label for c in self.grid if c.label not in seen]
        random.Random(self.config.seed).shuffle(missing)
        for label in missing:
            self.study.enqueue_trial({"candidate": label})
        return len(missing)

    def pending(self) -> tuple[int, int]:
        """(waiting, running) trials in the study."""
        states = [t.state for t in self.study.get_trials(deepcopy=False)]
        return states.count(TrialState.WAITING), states.count(TrialState.RUNNING)

    def run_queue(self, n_trials: int | None = None, timeout: float | None = None) -> None:
        """Claim and run queued grid points until none is left (waiting for other workers' running ones)."""
        deadline = time.monotonic() + timeout if timeout else None
        ran = 0
        while n_trials is None or ran < n_trials:
            try:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if left == 0.0:
                    break
                self.study.optimize(self.objective, n_trials=1, timeout=left, catch=(TrainingDiverged,))
                ran += 1
            except GridExhausted:
                waiting, running = self.pending()
                if not waiting and not running:
                    break
                time.sleep(max(1, (self.config.heartbeat or 10) // 2))
                optuna.storages.fail_stale_trials(self.study)

    def run_grid(self) -> None:
        """Queue the grid points without a trial and run them (at most --n-trials, within --timeout)."""
        queued = self.enqueue_missing()
        waiting, running = self.pending()
        self.log(f"study {self.config.study_name}: {len(self.grid)} feasible candidates, {queued} newly queued, {waiting} waiting, {running} running elsewhere")
        self.run_queue(self.config.n_trials, self.config.timeout)

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
                spec = scale_compound(self.base, candidate.alpha, candidate.beta, candidate.gamma, self.config.phi)
                config = replace(self.config.train, seed=seed)
                result = train_spec(spec, self.dataset, config, progress=self.config.progress, description=f"confirm {candidate.label} seed {seed}")
                entry["seeds"][str(seed)] = result["val_acc"]
                self.log(f"confirm {candidate.label} seed {seed}: val_acc {result['val_acc']:.4f}")
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
                "product": attrs.get("product"),
                "resolution": attrs.get("resolution"),
                "candidate": t.params.get("candidate"),
            }
        )
    frame = pd.DataFrame(rows, columns=TRIAL_COLUMNS + ["product", "resolution", "candidate"])
    return frame.astype({"constraint": float, "val_acc": float, "train_seconds": float})


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
        "ranking": [{"candidate": label, "mean_val_acc": round(mean, 4), "seeds": len(accs)} for mean, label, accs in stats],
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
    summary: dict[str, Any] = {key: None for key in ("alpha", "beta", "gamma", "val_acc", "macs", "macs_ratio", "params", "latency_ms")}
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
        "trial_epochs": int(frame.epochs.sum()),
        "seconds_per_trial": round(float(trained.train_seconds.mean()), 1) if len(trained) else None,
        "reference": search.study.user_attrs.get("reference"),
        "significance": sig,
        "wall_seconds": round(wall_seconds, 1),
    }


def run_search(config: SearchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole search: reference, grid, confirmation; writes trials.csv, search.png, summary.json."""
    from scaler.plots import search_figure

    started = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    search = GridSearch(config, log)
    search.reference()
    if config.workers > 1:
        search.enqueue_missing()
        run_workers(config, config.workers, log)
    else:
        search.run_grid()
    confirmations = search.confirm() if config.confirm > 0 else {}
    summary = summarise(search, confirmations, time.perf_counter() - started)
    frame = trials_frame(search.study)
    folder = config.folder
    frame[TRIAL_COLUMNS + ["product", "resolution"]].to_csv(folder / "trials.csv", index=False)
    figure = search_figure(frame, summary)
    figure.savefig(folder / "search.png", dpi=120, bbox_inches="tight")
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def worker_main(config_json: dict[str, Any], threads: int) -> None:
    """Body of one local worker process: claim and run grid points until the queue is empty."""
    import torch

    torch.set_num_threads(threads)
    config = SearchConfig.from_json(config_json, progress=False)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    GridSearch(config, log=lambda line: print(line, flush=True), enqueue=False).run_queue()


def run_workers(config: SearchConfig, workers: int, log: Callable[[str], None] = print) -> None:
    """Run the queue with `workers` local processes sharing the study's storage."""
    import multiprocessing
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads of several workers starve each other
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    data = config.to_json()
    processes = [context.Process(target=worker_main, args=(data, threads), daemon=False) for _ in range(workers)]
    log(f"{workers} workers, {threads} thread(s) each, sharing {redact(config.storage_url)}")
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [p.exitcode for p in processes if p.exitcode]
    if failed:
        log(f"{len(failed)} worker(s) exited with status {failed}; their trials were re-queued by heartbeat")


def join_study(study: str, storage: str, data_dir: str | None = None, log: Callable[[str], None] = print) -> int:
    """`scaler worker`: join an existing study from any machine and run its queue; trials run."""
    probe = SearchConfig(study=study, storage=storage)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    opened = open_storage(storage)
    try:
        names = optuna.get_all_study_names(opened)
    except Exception as error:  # noqa: BLE001 - any storage failure is one line
        raise UserError(f"storage {redact(storage)} failed: {describe_error(error, storage)}") from None
    if study not in names:
        raise UserError(f"no study {study!r} in {redact(storage)}; start it with scaler search --study {study} --storage URL")
    stored = optuna.load_study(study_name=study, storage=opened).user_attrs.get("config")
    if not stored:
        raise UserError(f"study {study!r} was not made by scaler search")
    overrides: dict[str, Any] = {"storage": storage, "study": probe.study}
    if data_dir:
        overrides["data_dir"] = data_dir
    config = SearchConfig.from_json(stored, **overrides)
    search = GridSearch(config, log, enqueue=False)
    before = len(search.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))
    search.run_queue()
    return len(search.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))) - before


def mask_variant(mask: str) -> str:
    """'01100' -> 'frelu:2,3' (stages numbered from 1); all zeros -> 'relu'."""
    stages = [str(i) for i, bit in enumerate(mask, start=1) if bit == "1"]
    return f"frelu:{','.join(stages)}" if stages else "relu"


def deployed_latency(spec: NetSpec, runs: int = 30) -> float:
    """Batch-1 latency of the deploy form (BN folded, shift depthwise, torch.compile)."""
    import torch

    from scaler.nn.deploy import deploy

    model = deploy(build(spec))
    with torch.no_grad():
        model(torch.randn(1, *spec.input_shape))
    return measure_latency(model, spec.input_shape, 1, warmup=5, runs=runs)


def frelu_masks(
    spec: NetSpec,
    dataset: Dataset,
    config: TrainConfig,
    storage_url: str,
    study_name: str,
    seed: int = 0,
    n_trials: int | None = None,
    latency_form: str = "eager",
    exhaustive_limit: int = 64,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> pd.DataFrame:
    """Multi-objective study over per-stage FReLU masks: maximise accuracy, minimise measured latency.

    Every mask is queued when there are at most `exhaustive_limit`; otherwise NSGA-II proposes them.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    stages = len(spec.stages)
    exhaustive = 2**stages <= exhaustive_limit
    storage = open_storage(storage_url)
    sampler = optuna.samplers.RandomSampler(seed=seed) if exhaustive else optuna.samplers.NSGAIISampler(seed=seed)
    optuna.create_study(storage=storage, study_name=study_name, directions=["maximize", "minimize"], load_if_exists=True)
    study_class = QueueStudy if exhaustive else optuna.Study
    study = study_class(study_name, storage, sampler=sampler)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        if exhaustive:
            mask = trial.suggest_categorical("mask", [format(i, f"0{stages}b") for i in range(2**stages)])
        else:
            mask = "".join(str(trial.suggest_categorical(f"stage{i}", [0, 1])) for i in range(1, stages + 1))
        variant = mask_variant(mask)
        masked = apply_variant(spec, variant)
        row = profile_spec(masked, runs=30)
        if latency_form == "deployed":
            row["latency_ms"] = round(deployed_latency(masked), 4)
        result = train_spec(masked, dataset, config, progress=progress, description=f"mask {mask}")
        for key, value in (row | result | {"mask": mask, "variant": variant}).items():
            trial.set_user_attr(key, value)
        log(f"mask {mask} ({variant}): val_acc {result['val_acc']:.4f}, latency {row['latency_ms']:.2f} ms ({latency_form}), {row['macs'] / 1e6:.2f} M MACs")
        return result["val_acc"], row["latency_ms"]

    if exhaustive:
        present = {t.params.get("mask") for t in study.get_trials(deepcopy=False)}
        for i in range(2**stages):
            mask = format(i, f"0{stages}b")
            if mask not in present:
                study.enqueue_trial({"mask": mask})
        try:
            study.optimize(objective, n_trials=n_trials, catch=(TrainingDiverged,))
        except GridExhausted:
            pass
    else:
        study.optimize(objective, n_trials=n_trials or 40, catch=(TrainingDiverged,))
    front = {t.number for t in study.best_trials}
    rows = [
        {"number": t.number, **{k: t.user_attrs.get(k) for k in ("mask", "variant", "val_acc", "latency_ms", "macs", "params", "train_seconds")}, "pareto": t.number in front}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ]
    return pd.DataFrame(rows).sort_values("latency_ms").reset_index(drop=True)
