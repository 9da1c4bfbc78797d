"""A fresh machine and a hostile world: declared dependencies, interrupted trials queued again, atomic queuing, workers that tell the truth."""

from __future__ import annotations

import ast
import contextlib
import json
import multiprocessing
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import tomllib
from optuna.trial import TrialState

from scaler.experiments.search.config import SearchConfig
from scaler.experiments.search.plan import job_name, job_of
from scaler.experiments.search.queue import GridSearch
from scaler.study.grid import grid_points
from scaler.study.storage import enqueue_missing, open_study, redact
from scaler.training.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
STEP, TOLERANCE = 0.5, 0.12
SMALL = [  # width 0.5: a training lasts long enough to be stopped in its second epoch; 2 networks race (no screen) beside the base, 2 seeds
    "--width",
    "0.5",
    "--step",
    str(STEP),
    "--ratio-tolerance",
    str(TOLERANCE),
    "--val-size",
    "100",
    "--test-size",
    "200",
    "--max-seeds",
    "2",
    "--no-progress",
]
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
IMPORT_NAMES = {"sklearn": "scikit-learn", "yaml": "pyyaml", "PIL": "pillow"}


def test_pyproject_declares_every_third_party_import() -> None:
    """Every package scaler/ imports is a declared dependency (CI installs into a venv without system site-packages)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    declared = {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}
    imported = set()
    for path in (ROOT / "scaler").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = {name for name in imported if name not in sys.stdlib_module_names and name != "scaler"}
    missing = {name for name in third_party if IMPORT_NAMES.get(name, name).lower().replace("_", "-") not in declared}
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"
    assert any(r.startswith("optuna") and "<" in r for r in project["dependencies"]), (
        "Optuna's private _rdb models need an upper bound"
    )


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    """`scaler ARGS` in its own session, output to a pipe."""
    command = [sys.executable, "-m", "scaler.cli", *args]
    return subprocess.Popen(
        command, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def trials_of(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    """The stored trials, read afresh."""
    storage = optuna.storages.RDBStorage(
        url, engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    )
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=True)
    finally:
        storage.engine.dispose()


def wait_until_training(
    url: str, study: str, process: subprocess.Popen[str], timeout: float = 300
) -> optuna.trial.FrozenTrial:
    """Poll the SQLite file read-only (never creating tables beside the command) until a race training has finished an epoch.

    Confirmation trainings run the full 2 epochs; a screen training is cut short within its first and ends as it reports.
    """
    path = url.removeprefix("sqlite:///")
    query = (
        "select t.number from trials t join trial_user_attributes a on a.trial_id = t.trial_id "
        "join trial_user_attributes s on s.trial_id = t.trial_id "
        "where t.state = 'RUNNING' and a.key = 'epochs' and cast(a.value_json as integer) >= 1 "
        "and s.key = 'job' and s.value_json like '%' || ? || '%'"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)) as db:
                numbers = [row[0] for row in db.execute(query, (json.dumps('"stage": "race"')[1:-1],))]
        except sqlite3.Error:
            numbers = []
        if numbers:
            return next(t for t in trials_of(url, study) if t.number == numbers[0])
        time.sleep(0.2)
    raise AssertionError(
        f"no trial trained within {timeout} s; exit {process.poll()}: {process.stderr.read() if process.poll() is not None else ''}"
    )


def no_process_left(session: int) -> bool:
    """Whether every process of a session (the command and its workers) has exited."""
    try:
        os.killpg(session, 0)
    except ProcessLookupError:
        return True
    return False


def finished_once(trials: list[optuna.trial.FrozenTrial]) -> Counter[str]:
    """How often each job finished COMPLETE."""
    return Counter(job_name(job_of(t)) for t in trials if t.state == TrialState.COMPLETE)


def every_job(folder: Path) -> Counter[str]:
    """Each job of a finished search once: its race rounds (2 feasible networks race unscreened)."""
    grid = pd.read_csv(folder / "grid.csv")
    rounds = json.loads((folder / "summary.json").read_text())["rounds"]
    assert grid.feasible.sum() == 2 and rounds[0]["networks"] == [*sorted(grid[grid.feasible].label), "base"]
    return Counter(f"race:{label}:{r['seed']}" for r in rounds for label in r["networks"])


@pytest.mark.parametrize(  # 65 s each, with -m slow: SIGTERM becomes the same KeyboardInterrupt as Ctrl-C, and
    # that path (record, re-queue, rerun) is covered by test_sigterm_stops_every_worker_and_writes_the_outputs and
    # test_engine's test_sigterm_mid_scale_then_rerun_finishes_every_run_once
    "stop",
    [pytest.param(signal.SIGINT, marks=pytest.mark.slow), pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
    ids=["SIGINT", "SIGTERM"],
)
def test_interrupted_trial_is_queued_again_and_a_rerun_loses_nothing(stop: signal.Signals, tmp_path: Path) -> None:
    """Ctrl-C or SIGTERM mid-trial: outputs written, the trial FAIL with its reason and its point WAITING again; the rerun runs every point once."""
    args = ["search", "--study", "int", "--subset", "600", "--epochs", "2", *SMALL]
    url = f"sqlite:///{tmp_path / 'studies' / 'int' / 'study.db'}"
    process = start(args, tmp_path)
    victim = wait_until_training(url, "int", process)
    os.kill(process.pid, stop)
    out, err = process.communicate(timeout=120)
    assert process.returncode == (130 if stop == signal.SIGINT else 143), out + err
    assert err.strip().splitlines()[-1].startswith("scaler: interrupted"), err
    trials = trials_of(url, "int")
    stopped = next(t for t in trials if t.number == victim.number)
    assert stopped.state == TrialState.FAIL
    assert "KeyboardInterrupt" in stopped.user_attrs["interrupted"]
    assert any(t.state == TrialState.WAITING and job_of(t) == job_of(victim) for t in trials)
    frame = pd.read_csv(tmp_path / "studies" / "int" / "trials.csv")
    assert "queued again" in frame.loc[frame.number == victim.number, "failure"].item()
    assert (
        json.loads((tmp_path / "studies" / "int" / "summary.json").read_text())["failures"][0]["number"]
        == victim.number
    )

    rerun = subprocess.run(
        [sys.executable, "-m", "scaler.cli", *args], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    done = finished_once(trials_of(url, "int"))
    print(f"\n[{stop.name}] killed #{victim.number} {job_name(job_of(victim))}; after the rerun: {dict(done)}")
    assert done == every_job(tmp_path / "studies" / "int"), done


def race_to_enqueue(url: str, labels: list[str], errors: Any) -> None:
    """Body of a racing `scaler search`: create the study and queue the grid."""
    try:
        study = open_study(url, "race", create=True)
        enqueue_missing(study, url, "candidate", labels)
    except Exception as error:  # noqa: BLE001 - reported to the test
        errors.put(repr(error))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_searches_started_together_on_a_new_database_queue_each_point_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Four processes create one study and queue one 45-point grid at once: no error (alembic race), 45 trials."""
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else f"sqlite:///{tmp_path / 'race.db'}"
    labels = [c.label for c in grid_points(0.25)]
    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    processes = [context.Process(target=race_to_enqueue, args=(url, labels, errors)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert errors.empty(), errors.get()
    queued = Counter(t.system_attrs["fixed_params"]["candidate"] for t in trials_of(url, "race"))
    print(
        f"\n[enqueue race, {backend}] {len(processes)} processes, {sum(queued.values())} trials for {len(labels)} points"
    )
    assert queued == Counter(labels)


def test_workers_share_n_trials(tmp_path: Path) -> None:
    """`--workers 2 --n-trials 2` runs two trials in all, not two per worker."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scaler.cli",
            "search",
            "--study",
            "w",
            "--workers",
            "2",
            "--n-trials",
            "2",
            "--subset",
            "300",
            "--epochs",
            "1",
            *SMALL,
        ],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    started = [
        t
        for t in trials_of(f"sqlite:///{tmp_path / 'studies' / 'w' / 'study.db'}", "w")
        if t.state != TrialState.WAITING
    ]
    assert len(started) == 2, [(t.number, t.state.name) for t in started]


def worker_pids(parent: int) -> list[int]:
    """The spawned worker processes of a command (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(pid) for pid in children if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]


def test_sigterm_stops_every_worker_and_writes_the_outputs(tmp_path: Path) -> None:
    """SIGTERM to `scaler search --workers 2`: no orphan worker, trials.csv written, the running trials queued again."""
    url = f"sqlite:///{tmp_path / 'studies' / 'term' / 'study.db'}"
    process = start(
        ["search", "--study", "term", "--workers", "2", "--subset", "600", "--epochs", "2", *SMALL], tmp_path
    )
    wait_until_training(url, "term", process)
    assert len(worker_pids(process.pid)) == 2
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, out + err
    deadline = time.monotonic() + 30
    while not no_process_left(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert no_process_left(process.pid), "a worker outlived its command"
    assert (tmp_path / "studies" / "term" / "trials.csv").stat().st_size > 0
    trials = trials_of(url, "term")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    held = {job_name(job_of(t)) for t in trials if t.state != TrialState.FAIL}
    grid = pd.read_csv(tmp_path / "studies" / "term" / "grid.csv")
    assert {f"race:{label}:2" for label in [*grid[grid.feasible].label, "base"]} <= held


def test_a_crashed_worker_makes_the_command_fail_with_the_truth(tmp_path: Path) -> None:
    """SIGKILL one of two workers: the other finishes the grid (the killed trial is retried by heartbeat), the command exits 1 and says so."""
    url = f"sqlite:///{tmp_path / 'studies' / 'crash' / 'study.db'}"
    process = start(
        [
            "search",
            "--study",
            "crash",
            "--workers",
            "2",
            "--heartbeat",
            "2",
            "--subset",
            "600",
            "--epochs",
            "2",
            *SMALL,
        ],
        tmp_path,
    )
    wait_until_training(url, "crash", process)
    os.kill(worker_pids(process.pid)[0], signal.SIGKILL)
    out, err = process.communicate(timeout=400)
    assert process.returncode == 1, out + err
    failed = [line for line in err.splitlines() if line.startswith("scaler: failed: ")]
    assert len(failed) == 1 and "worker" in failed[0] and "status -9" in failed[0], err
    assert "0 job(s) are queued" in failed[0], err
    done = finished_once(trials_of(url, "crash"))
    assert done == every_job(tmp_path / "studies" / "crash"), done


def small_config(study: str, storage: str, **changes: Any) -> SearchConfig:
    """A search on 300 images for 1 epoch over the coarse grid of these tests."""
    fields: dict[str, Any] = {"subset": 300, "val_size": 100, "test_size": 200, "train": TrainConfig(epochs=1)}
    fields["progress"] = False
    return SearchConfig(step=STEP, ratio_tolerance=TOLERANCE, study=study, storage=storage, **fields | changes)


def test_stored_config_hides_the_password(postgres_url: str) -> None:
    """The study keeps its config for workers elsewhere, without the storage password."""
    with_password = postgres_url.replace("://postgres@", "://postgres:hunter2@")
    assert "hunter2" in with_password
    search = GridSearch(small_config("pw", with_password), log=lambda line: None)
    stored = search.study.user_attrs["config"]
    assert "hunter2" not in json.dumps(stored)
    assert stored["storage"] == redact(with_password)


def test_a_trial_failed_before_it_recorded_anything_still_names_its_job(tmp_path: Path) -> None:
    """A worker killed (kill -9) right after claiming a job leaves a FAIL trial with no attributes of its own;
    trials.csv and summary.json's failures still name the job it held, from the queue."""
    from scaler.experiments.search.plan import trials_frame
    from scaler.experiments.search.report import summarise

    url = f"sqlite:///{tmp_path / 'killed.db'}"
    search = GridSearch(small_config("killed", url, max_seeds=2), log=lambda line: None)
    trial = search.study.ask()
    point = json.loads(search.study._storage.get_trial(trial._trial_id).user_attrs["job"])
    search.study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # what the heartbeat check does
    row = trials_frame(search.study).set_index("number").loc[trial.number]
    assert (row.stage, row.network, int(row.seed)) == (point["stage"], point["network"], point["seed"])
    job = job_name(point)
    summary, _ = summarise(search, 0.0)
    assert [failure["job"] for failure in summary["failures"]] == [job]
