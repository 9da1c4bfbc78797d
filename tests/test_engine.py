"""The engine: a plan's runs are jobs in one store, so a rerun goes on where an interrupted one stopped."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import tiny_config
from optuna.trial import TrialState

import scaler.study.engine as engine
from scaler.errors import UserError
from scaler.study.engine import JOB, PlanRun, evaluate_plan, fingerprint
from scaler.study.run import Setup, setup
from scaler.study.storage import INTERRUPTED

ROOT = Path(__file__).resolve().parents[1]


def tiny_setup(folder: Path, epochs: int = 1) -> Setup:
    """MobileNet x0.25 on 200 real Fashion-MNIST images, writing into `folder`."""
    return setup(tiny_config(folder, epochs))


def plan(seeds: list[int]) -> pd.DataFrame:
    """The base measured once, and the base and a wider network trained on every seed."""
    rows = [{"label": "base", "variant": "relu", "width": 1.0, "train": False, "seed": math.nan}]
    for seed in seeds:
        rows += [
            {"label": f"base seed {seed}", "variant": "relu", "width": 1.0, "train": True, "seed": float(seed)},
            {"label": f"wide seed {seed}", "variant": "relu", "width": 1.5, "train": True, "seed": float(seed)},
        ]
    return pd.DataFrame(rows).assign(depth=1.0, res_mult=1.0, progressive=False)


def quiet(line: str) -> None:
    """Drop a log line."""


def test_a_rerun_reads_every_finished_run_back_and_a_longer_plan_runs_only_the_new_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same plan twice: nothing is evaluated again and the frame is the same; one more seed runs two more jobs."""
    run = tiny_setup(tmp_path / "study")
    first = evaluate_plan(plan([0]), run, quiet)
    assert (tmp_path / "study" / "runs.db").is_file()
    assert list(first.columns[:8]) == list(plan([0]).columns)
    calls: list[str] = []
    real = engine.evaluate_model
    monkeypatch.setattr(
        engine, "evaluate_model", lambda spec, *a, **k: calls.append(k["description"]) or real(spec, *a, **k)
    )
    again = evaluate_plan(plan([0]), run, quiet)
    assert calls == []
    pd.testing.assert_frame_equal(again, first)
    more = evaluate_plan(plan([0, 1]), run, quiet)
    assert calls == ["base seed 1", "wide seed 1"]
    pd.testing.assert_frame_equal(more.iloc[:3].reset_index(drop=True), first)


def test_every_trained_run_keeps_its_per_example_outputs_on_the_same_images(tmp_path: Path) -> None:
    """<command>_examples.npz holds, row by plan row, each trained run's prediction and true-class probability on
    every validation and test image: they give back the row's accuracies and losses, and the untrained row is empty."""
    run = tiny_setup(tmp_path / "ex")
    frame = evaluate_plan(plan([0]), run, quiet)
    examples = np.load(tmp_path / "ex" / "test_examples.npz")
    assert examples["label"].tolist() == frame.label.tolist() and examples["seed"].tolist() == [-1, 0, 0]
    assert run.dataset is not None and str(examples["val_images"]) == run.dataset.val.fingerprint
    assert (examples["val_predicted"][0] == -1).all() and np.isnan(examples["test_p_true"][0]).all()
    for split, size in (("val", 100), ("test", 200)):
        labels, predicted = examples[f"{split}_labels"], examples[f"{split}_predicted"][1:]
        p_true = examples[f"{split}_p_true"][1:].astype(float)
        assert predicted.shape == (2, size) and ((p_true >= 0) & (p_true <= 1)).all()
        assert (predicted == labels).mean(axis=1) == pytest.approx(frame[f"{split}_acc"].iloc[1:].to_numpy())
        losses = -np.log(np.clip(p_true, 1e-12, 1)).mean(axis=1)
        assert losses == pytest.approx(frame[f"{split}_loss"].iloc[1:].to_numpy(), abs=2e-3)
    before = dict(np.load(tmp_path / "ex" / "test_examples.npz"))
    evaluate_plan(plan([0]), run, quiet)  # read back from the store, written again the same
    after = dict(np.load(tmp_path / "ex" / "test_examples.npz"))
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[name], after[name], equal_nan=before[name].dtype.kind == "f") for name in before)


def test_an_interrupted_run_is_queued_again_and_finishes_as_if_never_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in the second job: it is recorded as interrupted; the rerun evaluates it and the jobs after it, and
    the frame equals an uninterrupted run's (same seeds, same images)."""
    whole = evaluate_plan(plan([0]), tiny_setup(tmp_path / "whole"), quiet)
    run = tiny_setup(tmp_path / "cut")
    real = engine.evaluate_model
    calls: list[str] = []

    def interrupting(spec, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(kwargs["description"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(engine, "evaluate_model", interrupting)
    with pytest.raises(KeyboardInterrupt):
        evaluate_plan(plan([0]), run, quiet)
    study = optuna.load_study(study_name=PlanRun(plan([0]), run).name, storage=engine.store_url(run.folder))
    failed = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert len(failed) == 1 and "KeyboardInterrupt" in failed[0].user_attrs[INTERRUPTED]
    calls.clear()
    monkeypatch.setattr(
        engine, "evaluate_model", lambda spec, *a, **k: calls.append(k["description"]) or real(spec, *a, **k)
    )
    resumed = evaluate_plan(plan([0]), run, quiet)
    assert len(calls) == 2
    columns = ["label", "macs", "params", "val_acc", "test_acc", "epochs"]
    pd.testing.assert_frame_equal(resumed[columns], whole[columns])


def test_other_training_settings_are_another_study_in_the_same_store(tmp_path: Path) -> None:
    """A plan rerun with more epochs does not reuse the 1-epoch runs; the training seed and the folder do not count."""
    one, two = tiny_setup(tmp_path / "s"), tiny_setup(tmp_path / "s", epochs=2)
    assert fingerprint(one) != fingerprint(two)
    moved = tiny_setup(tmp_path / "elsewhere")
    assert fingerprint(one) == fingerprint(moved)


def test_a_plan_runs_its_own_jobs_and_leaves_another_plans_queue_waiting(tmp_path: Path) -> None:
    """Two plans of one command share a study (same settings, other networks); the second runs only its own rows,
    and the first's queued jobs stay queued for it, named in one line."""
    run = tiny_setup(tmp_path / "two")
    first = PlanRun(plan([0]).iloc[:1].assign(width=1.5, label="wide only"), run, quiet)
    first.enqueue_missing(first.open())
    lines: list[str] = []
    frame = evaluate_plan(plan([]), run, lines.append)
    assert frame.label.tolist() == ["base"]
    study = optuna.load_study(study_name=first.name, storage=engine.store_url(run.folder))
    states = {t.user_attrs[JOB]: t.state for t in study.get_trials()}
    assert states[first.keys[0]] == TrialState.WAITING
    assert list(states.values()).count(TrialState.COMPLETE) == 1
    assert any("1 run(s) another plan of this study queued are left to it" in line for line in lines)


def test_a_plan_naming_one_run_twice_is_refused(tmp_path: Path) -> None:
    """Two identical rows would be one job: refused before anything is written."""
    run = tiny_setup(tmp_path / "dup")
    with pytest.raises(ValueError, match="distinct"):
        PlanRun(pd.concat([plan([0]), plan([0]).iloc[:1]]), run)
    assert not (tmp_path / "dup").exists()


def test_sigterm_mid_scale_then_rerun_finishes_every_run_once(tmp_path: Path) -> None:
    """`scaler scale` stopped by SIGTERM during its trainings exits 143; the same command again finishes, and the
    store holds each planned run completed exactly once."""
    args = ["scale", "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15", "--out", "cut", "--phi", "0", "1"]
    args += ["--variant", "relu", "--train-max-phi", "1", "--seeds", "2", "--latency", "eager", "--width", "0.25"]
    args += ["--subset", "2000", "--val-size", "100", "--test-size", "200", "--epochs", "2", "--no-progress"]
    command = [sys.executable, "-m", "scaler.cli", *args]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    store = tmp_path / "studies" / "cut" / "runs.db"
    deadline = time.time() + 240
    while time.time() < deadline and not (store.exists() and finished(store) >= 1):
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, (out + err)[-3000:]
    assert 1 <= finished(store) < 4
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "planned runs already in" in result.stdout
    study = optuna.load_study(
        study_name=optuna.get_all_study_names(f"sqlite:///{store}")[0], storage=f"sqlite:///{store}"
    )
    complete = [t.user_attrs[JOB] for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(complete) == len(set(complete)) == 4
    summary = pd.read_csv(tmp_path / "studies" / "cut" / "scale_summary.csv")
    assert summary.seeds.tolist() == [2, 2]


def finished(store: Path) -> int:
    """Completed trials in an SQLite store (0 while it is being created)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
            return int(db.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_the_engine_prints_only_its_own_lines(tmp_path: Path) -> None:
    """Optuna's per-trial INFO lines ("Trial 0 finished with value ...") stay out of a command's output."""
    args = ["scale", "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15", "--out", "q", "--phi", "0", "1"]
    args += ["--variant", "relu", "--train-max-phi", "-1", "--latency", "eager", "--no-progress"]
    result = subprocess.run(
        [sys.executable, "-m", "scaler.cli", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "relu φ=0:" in result.stdout
    assert "Trial 0 finished" not in result.stdout + result.stderr and "A new study created" not in result.stderr


def test_a_worker_joins_a_plan_queued_by_the_command_and_the_command_reads_its_runs_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`scaler worker --study NAME --storage URL` (as from another machine) rebuilds the command's config from the
    store and runs its queue; the command then finds every run finished and evaluates none itself."""
    run = tiny_setup(tmp_path / "joined")
    planned = PlanRun(plan([0]), run, quiet)
    planned.enqueue_missing(planned.open())
    command = [sys.executable, "-m", "scaler.cli", "worker", "--study", planned.name, "--storage", planned.url]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "3 trial(s) run by this worker" in result.stdout

    def not_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("the worker ran every job")

    monkeypatch.setattr(engine, "evaluate_model", not_here)
    frame = evaluate_plan(plan([0]), run, quiet)
    assert frame.trained.tolist() == [False, True, True] and frame.test_acc.iloc[1:].between(0, 1).all()


def test_flgc_with_two_workers_on_postgresql_runs_every_job_once_with_its_hook(
    tmp_path: Path, postgres_url: str
) -> None:
    """`scaler flgc --workers 2 --storage postgresql://...`: two local processes share the queue on a real server;
    each (arm, G, seed) trains once, and FLGC's per-layer tables (the engine hook, rebuilt in each worker) are kept."""
    args = ["flgc", "--width", "0.125", "--groups", "2", "--arms", "dense", "flgc", "--seeds", "1", "--out", "w"]
    args += ["--subset", "256", "--val-size", "100", "--test-size", "100", "--epochs", "1", "--no-progress"]
    args += ["--storage", postgres_url, "--workers", "2"]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run(
        [sys.executable, "-m", "scaler.cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "2 workers, " in result.stdout
    names = optuna.get_all_study_names(postgres_url)
    study = optuna.load_study(study_name=names[0], storage=postgres_url)
    complete = [t.user_attrs[JOB] for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(complete) == len(set(complete)) == 2
    folder = tmp_path / "studies" / "w"
    layers = pd.read_csv(folder / "flgc_layers.csv")
    assert set(layers.arm) == {"flgc"} and set(layers.seed) == {0}  # dense has no FLGC layer
    assert not (folder / "runs.db").exists()


def test_a_stored_hook_outside_scalers_experiments_is_refused() -> None:
    """A worker imports the hook a store names only from scaler.experiments: a store is data, not code to run."""
    with pytest.raises(UserError, match="outside scaler's experiments"):
        engine.Hook("os:system", {})(cast(Setup, None))
