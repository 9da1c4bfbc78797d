"""Several workers on one study, on embedded SQLite and on a real PostgreSQL: each grid point runs once, a killed worker's trial is retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from conftest import FAST
from optuna.trial import FrozenTrial, TrialState

from scaler.experiments.search.config import SearchConfig
from scaler.experiments.search.plan import job_name, job_of
from scaler.experiments.search.queue import GridSearch
from scaler.study.racing import SCREEN_SEEDS
from scaler.study.storage import QueueStudy
from scaler.study.workers import max_workers
from scaler.training.train import TrainConfig

KILL_STEP, KILL_TOLERANCE, KILL_EPOCHS = 0.5, 0.12, 2
FINISHED = (TrialState.COMPLETE, TrialState.FAIL)
# measure_latency uses 2 threads in every worker: with OpenMP's default spin-waiting, oversubscribed cores make it ~70x slower.
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}


def run_scaler(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """`python -m scaler.cli ARGS` in cwd."""
    return subprocess.run(
        [sys.executable, "-m", "scaler.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=ENV
    )


def storage_for(backend: str, tmp_path: Path, request: pytest.FixtureRequest, name: str) -> str:
    """A fresh PostgreSQL database, or an SQLite file under tmp_path."""
    if backend == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / f'{name}.db'}"


def load_trials(url: str, study: str) -> list[FrozenTrial]:
    """Every trial of a stored study, read afresh."""
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=True)
    finally:
        storage.engine.dispose()


def figures(trials: list[FrozenTrial], jobs: list[str]) -> dict[str, int]:
    """trials (started), duplicates (a job completed more than once), lost (jobs with no completed trial)."""
    started = [t for t in trials if t.state != TrialState.WAITING]
    done = Counter(job_name(job_of(t)) for t in started if t.state == TrialState.COMPLETE)
    return {
        "trials": len(started),
        "duplicates": sum(n - 1 for n in done.values() if n > 1),
        "lost": sum(1 for job in jobs if not done.get(job)),
    }


def every_job(feasible: list[str], rounds: list[dict[str, Any]], screened: bool) -> list[str]:
    """The jobs of a finished search: the screen of every feasible network on its seeds (if any), then each race
    round's."""
    seeds = range(SCREEN_SEEDS) if screened else range(0)
    screen = [f"screen:{label}:{seed}" for label in feasible for seed in seeds]
    return screen + [f"race:{label}:{r['seed']}" for r in rounds for label in r["networks"]]


def claim_all(url: str, study: str, claimed: Any) -> None:
    """Body of one racing process: pop queued trials until none is left; put the ids it got."""
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    queue = QueueStudy(study, storage)
    got = []
    while (trial_id := queue.claim_next()) is not None:
        got.append(trial_id)
    claimed.put(got)


@pytest.mark.parametrize(  # SQLite with -m slow: test_interrupts' searches started together race on it too
    "backend", [pytest.param("sqlite", marks=pytest.mark.slow), "postgresql"]
)
def test_racing_processes_claim_each_queued_trial_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Four processes claiming from one queue of 200 trials (`QueueStudy.claim_next`): every trial claimed by exactly
    one (Optuna's own pop double-claims on SQLite)."""
    import multiprocessing

    url = storage_for(backend, tmp_path, request, "race")
    study = optuna.create_study(study_name="race", storage=url)
    for x in range(200):
        study.enqueue_trial({"x": x}, skip_if_exists=False)
    context = multiprocessing.get_context("spawn")
    claimed = context.Queue()
    processes = [context.Process(target=claim_all, args=(url, "race", claimed)) for _ in range(4)]
    for process in processes:
        process.start()
    per_process = [claimed.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    ids = [trial_id for got in per_process for trial_id in got]
    print(
        f"\n[claim race, {backend}] claims per process {[len(got) for got in per_process]}, total {len(ids)}, unique {len(set(ids))}"
    )
    assert len(ids) == len(set(ids)) == 200
    assert all(t.state == TrialState.RUNNING for t in load_trials(url, "race"))


@pytest.mark.parametrize(  # claiming on both is covered by test_racing_processes_claim_each_queued_trial_once, and
    # local workers on PostgreSQL by test_engine's flgc --workers 2 run
    "backend",
    [pytest.param("sqlite", marks=pytest.mark.slow), pytest.param("postgresql", marks=pytest.mark.slow)],
)
def test_several_workers_run_every_grid_point_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """`scaler search --workers N` (as many as the machine allows, up to 4): each job once, none lost, no 'database is locked'."""
    workers = min(4, max_workers())
    args = ["search", "--study", "w4", "--workers", str(workers), *FAST]
    if backend == "postgresql":
        url = request.getfixturevalue("postgres_url")
        args += ["--storage", url]
    else:
        url = f"sqlite:///{tmp_path / 'studies' / 'w4' / 'study.db'}"
    started = time.perf_counter()
    result = run_scaler(args, tmp_path, timeout=300)
    wall = time.perf_counter() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "database is locked" not in output
    assert "exited with status" not in output, output[-4000:]
    if backend == "sqlite":
        assert (tmp_path / "studies" / "w4" / "study.db").stat().st_size > 0
    trials = load_trials(url, "w4")
    started_trials = [t for t in trials if t.state != TrialState.WAITING]
    counts = Counter(job_name(job_of(t)) for t in started_trials)
    grid = pd.read_csv(tmp_path / "studies" / "w4" / "grid.csv")
    labels = every_job(sorted(grid[grid.feasible].label), load_rounds(url, "w4"), screened=True)
    numbers = figures(trials, labels)
    print(
        f"\n[{workers} workers, {backend}] jobs={len(labels)} trials={numbers['trials']} "
        f"duplicates={numbers['duplicates']} lost={numbers['lost']} wall={wall:.1f}s"
    )
    assert all(t.state in FINISHED for t in trials), [t.state for t in trials]
    assert sum(n - 1 for n in counts.values()) == 0, counts
    assert set(counts) == set(labels) and len(counts) == len(labels)
    assert numbers["duplicates"] == 0 and numbers["lost"] == 0, numbers
    assert not any(t.state == TrialState.FAIL for t in trials)


def load_rounds(url: str, study: str) -> list[dict[str, Any]]:
    """The race rounds the search stored."""
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    try:
        return list(optuna.load_study(study_name=study, storage=storage).user_attrs["rounds"])
    finally:
        storage.engine.dispose()


def kill_config(url: str, study: str) -> SearchConfig:
    """Two feasible networks (no screen) race beside the base on 2 seeds, about 4 s per epoch on 2 cores, 2 s
    heartbeats."""
    return SearchConfig(
        step=KILL_STEP,
        ratio_tolerance=KILL_TOLERANCE,
        study=study,
        storage=url,
        heartbeat=2,
        max_seeds=2,
        subset=400,
        val_size=100,
        test_size=200,
        train=TrainConfig(epochs=KILL_EPOCHS, batch_size=64),
        progress=False,
    )


def wait_for_training(url: str, study: str, process: subprocess.Popen[bytes], timeout: float) -> FrozenTrial:
    """Poll the storage until the worker has a RUNNING feasible trial between two epochs; that trial."""
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    try:
        polled = optuna.load_study(study_name=study, storage=storage)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            for trial in polled.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if 1 <= trial.user_attrs.get("epochs", 0) < KILL_EPOCHS:
                    return trial
            time.sleep(0.1)
    finally:
        storage.engine.dispose()
    raise AssertionError(f"no trial was training within {timeout} s (worker exit status {process.poll()})")


def snapshot(trials: list[FrozenTrial]) -> dict[int, tuple[Any, ...]]:
    """What must not change in finished trials."""
    return {t.number: (t.state, t.values, t.params, t.user_attrs) for t in trials if t.state in FINISHED}


@pytest.mark.parametrize(  # 100 s: with -m slow; the heartbeat's stale-trial path is Optuna's, shared by both
    "backend", [pytest.param("postgresql", marks=pytest.mark.slow), pytest.param("sqlite", marks=pytest.mark.slow)]
)
def test_sigkilled_worker_trial_is_failed_and_retried_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """SIGKILL a `scaler worker` mid-training: its trial ends FAIL, a retry completes, nothing lost or duplicated."""
    url = storage_for(backend, tmp_path, request, "kill")
    study = "kill"
    started = time.perf_counter()
    search = GridSearch(kill_config(url, study), log=lambda line: None)
    first = every_job([], search.rounds(), screened=False)
    assert len(first) == 3 and search.pending() == (len(first), 0), "the first round is queued with the study"
    command = [sys.executable, "-m", "scaler.cli", "worker", "--study", study, "--storage", url]
    with open(tmp_path / "killed.log", "wb") as log:
        worker = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=ENV, start_new_session=True
        )
        try:
            victim = wait_for_training(url, study, worker, timeout=180)
            os.killpg(worker.pid, signal.SIGKILL)
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()
    before = load_trials(url, study)
    assert next(t for t in before if t.number == victim.number).state == TrialState.RUNNING
    finished_before = snapshot(before)

    result = run_scaler(["worker", "--study", study, "--storage", url], tmp_path, timeout=300)
    wall = time.perf_counter() - started
    labels = every_job([], load_rounds(url, study), screened=False)
    assert len(labels) == 6, labels
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "database is locked" not in output
    trials = load_trials(url, study)
    killed = next(t for t in trials if t.number == victim.number)
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    numbers = figures(trials, labels)
    complete = Counter(job_name(job_of(t)) for t in trials if t.state == TrialState.COMPLETE)
    print(
        f"\n[SIGKILL, {backend}] jobs={len(labels)} trials={numbers['trials']} duplicates={numbers['duplicates']} "
        f"lost={numbers['lost']} killed=#{victim.number} {job_name(job_of(victim))} at epoch {victim.user_attrs.get('epochs')} "
        f"-> {killed.state.name}, retries={[(t.number, t.state.name) for t in retries]} wall={wall:.1f}s"
    )
    assert killed.state == TrialState.FAIL
    assert len(retries) == 1 and job_of(retries[0]) == job_of(victim)
    assert retries[0].state == TrialState.COMPLETE
    assert all(t.state in FINISHED for t in trials), [(t.number, t.state.name) for t in trials]
    assert numbers["lost"] == 0 and numbers["duplicates"] == 0, numbers
    assert all(n == 1 for n in complete.values()), complete
    assert snapshot([t for t in trials if t.number in finished_before]) == finished_before
