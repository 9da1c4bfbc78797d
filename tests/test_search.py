"""`scaler search` on a Fashion-MNIST subset: grid, storage, resume, outputs, one-line errors."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from scaler.cli import main
from scaler.grid import Candidate, feasible_grid
from scaler.search import TRIAL_COLUMNS

FAST = [
    "--subset",
    "300",
    "--epochs",
    "1",
    "--batch-size",
    "64",
    "--confirm",
    "2",
    "--confirm-seeds",
    "1",
    "--no-progress",
]


def test_grid_counts_match_the_issue() -> None:
    assert len(feasible_grid(0.1, 0.1)) == 20
    assert len(feasible_grid(0.05, 0.1)) == 108
    for c in feasible_grid(0.05, 0.1):
        assert abs(c.product - 2) <= 0.1
        assert 1 <= c.alpha <= 2 and 1 <= c.beta <= 1.5 and 1 <= c.gamma <= 1.5
    assert Candidate.from_label(Candidate(1.2, 1.1, 1.15).label) == Candidate(1.2, 1.1, 1.15)


def test_grid_tolerance_zero_keeps_exact_points() -> None:
    exact = feasible_grid(0.1, 0.0)
    assert Candidate(2.0, 1.0, 1.0) in exact
    assert all(abs(c.product - 2) < 1e-9 for c in exact)


@pytest.fixture()
def study_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path / "studies" / "t"


def test_search_writes_outputs_and_resumes(study_dir: Path, capsys) -> None:
    wide = ["--ratio-range", "1.0", "4.5"]  # every candidate trains, so trained rows are checked too
    assert main(["search", "--study", "t", "--n-trials", "3", "--json", *wide, *FAST]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"alpha", "beta", "gamma", "val_acc", "macs", "study", "trials"}
    assert result["study"] == "t" and result["trials"] == 3
    for name in ("study.db", "trials.csv", "search.png", "summary.json"):
        assert (study_dir / name).stat().st_size > 0, name
    first = pd.read_csv(study_dir / "trials.csv")
    assert list(first.columns[: len(TRIAL_COLUMNS)]) == TRIAL_COLUMNS
    assert len(first) == 3
    assert (first.constraint <= 0).all() and len(first) == 3
    assert first.val_acc.between(0, 1).all() and (first.epochs == 1).all()
    assert first.macs_ratio.between(1.0, 4.5).all()

    assert main(["search", "--study", "t", "--n-trials", "3", "--json", *wide, *FAST]) == 0
    second = pd.read_csv(study_dir / "trials.csv")
    assert len(second) == 6
    keys = list(zip(second.alpha, second.beta, second.gamma))
    assert len(set(keys)) == 6, "a finished grid point ran again"
    with sqlite3.connect(study_dir / "study.db") as db:
        assert db.execute("select count(*) from trials where state != 'WAITING'").fetchone()[0] == 6
    record = json.loads((study_dir / "run.json").read_text())
    assert record["command"].startswith("scaler search --study t") and record["config"]["train"]["epochs"] == 1
    assert set(record["outputs"]) == {"trials.csv", "search.png", "summary.json"} and len(record["earlier"]) == 1


def test_infeasible_candidates_are_not_trained(study_dir: Path) -> None:
    assert main(["search", "--study", "t", "--n-trials", "4", "--ratio-range", "1.7", "1.75", *FAST]) == 0
    frame = pd.read_csv(study_dir / "trials.csv")
    infeasible = frame[frame.constraint > 0]
    assert len(infeasible) >= 3
    assert (infeasible.epochs == 0).all() and infeasible.val_acc.isna().all()
    assert (~infeasible.macs_ratio.between(1.7, 1.75)).all()
    assert frame["product"].between(1.9, 2.1).all()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["search", "--base", "vgg"], "unknown base"),
        (["search", "--alpha", "0.5"], "unrecognized arguments"),
        (["search", "--tolerance", "0.001", "--step", "0.3"], "no grid point"),
        (["search", "--dataset", "mnist", "--data-dir", "/nonexistent/data"], "/nonexistent/data"),
        (["search", "--storage", "not a url"], "not a database URL"),
        (["search", "--storage", "postgresql://u:hunter2@127.0.0.1:1/db"], "cannot open storage"),
        (["search", "--pruner", "sometimes"], "unknown pruner"),
    ],
)
def test_search_user_errors(args: list[str], needle: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scaler.cli", *args, *FAST], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "hunter2" not in result.stderr + result.stdout
