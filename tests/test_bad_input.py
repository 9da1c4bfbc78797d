"""Bad input through the real CLI: exit status 2, one line on stderr, no traceback, no password; diverging trials fail alone."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import torch
from conftest import Cli
from optuna.trial import TrialState

from scaler.search import GridSearch, SearchConfig
from scaler.train import TrainConfig

FAST = [
    "--subset",
    "300",
    "--val-size",
    "100",
    "--epochs",
    "1",
    "--batch-size",
    "64",
    "--step",
    "0.5",
    "--ratio-tolerance",
    "0.45",
    "--confirm",
    "1",
    "--confirm-seeds",
    "2",
    "--no-progress",
]
SECRET = "s3cret-pw"
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def corrupt_study(cwd: Path) -> None:
    """studies/broken/study.db full of garbage."""
    folder = cwd / "studies" / "broken"
    folder.mkdir(parents=True)
    (folder / "study.db").write_bytes(b"this is not an SQLite database\x00\xff" * 64)


def no_setup(cwd: Path) -> None:
    """Nothing to prepare."""


def foreign_sqlite(cwd: Path) -> None:
    """studies/foreign/study.db: another program's SQLite database that happens to have a `studies` table."""
    folder = cwd / "studies" / "foreign"
    folder.mkdir(parents=True)
    with sqlite3.connect(folder / "study.db") as db:
        db.execute("create table studies (id integer primary key, title text)")
        db.execute("insert into studies (title) values ('not optuna')")


def three_of_four_idx_files(cwd: Path) -> None:
    """data/ with three of the four Fashion-MNIST IDX files."""
    folder = cwd / "data"
    folder.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (folder / stem).write_bytes(b"")


def study_without_winner(cwd: Path) -> None:
    """studies/open/summary.json of a search in which no feasible candidate has trained yet."""
    folder = cwd / "studies" / "open"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text('{"alpha": null, "beta": null, "gamma": null, "grid": {}}')


COEFFS = ["--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15"]
TINY = ["--subset", "200", "--val-size", "100", "--test-size", "100", "--epochs", "1", "--no-progress"]
PORT = closed_port()
CASES: list[tuple[str, list[str], str, Callable[[Path], None]]] = [
    ("alpha below 1", ["profile", "--alpha", "0.5"], "alpha must be >= 1", no_setup),
    ("phi below 0", ["profile", "--phi", "-1"], "phi must be >= 0", no_setup),
    ("unknown base (profile)", ["profile", "--base", "vgg"], "unknown base", no_setup),
    ("unknown dataset", ["profile", "--dataset", "imagenet21k"], "unknown dataset", no_setup),
    ("unknown variant", ["profile", "--variant", "sparkly"], "unknown variant", no_setup),
    ("no feasible network", ["search", *FAST, "--ratio-tolerance", "0.001"], "no network", no_setup),
    ("ratio tolerance 0.5", ["search", *FAST, "--ratio-tolerance", "0.5"], "base itself", no_setup),
    ("halving 1", ["search", *FAST, "--halving", "1"], "--halving", no_setup),
    ("one confirm seed", ["search", *FAST, "--confirm-seeds", "1"], "--confirm-seeds", no_setup),
    ("missing data directory", ["search", "--data-dir", "/nonexistent", *FAST], "/nonexistent", no_setup),
    ("corrupt study.db", ["search", "--study", "broken", *FAST], "studies/broken/study.db", corrupt_study),
    (
        "unreachable storage",
        ["search", "--storage", f"postgresql://postgres@127.0.0.1:{PORT}/db", *FAST],
        "cannot open storage",
        no_setup,
    ),
    (
        "storage with password",
        ["search", "--storage", f"postgresql://user:{SECRET}@127.0.0.1:{PORT}/db", *FAST],
        "cannot open storage",
        no_setup,
    ),
    (
        "worker, storage with password",
        ["worker", "--study", "s", "--storage", f"postgresql://user:{SECRET}@127.0.0.1:{PORT}/db"],
        "cannot open storage",
        no_setup,
    ),
    ("malformed URL", ["search", "--storage", "not a url", *FAST], "not a database URL", no_setup),
    (
        "malformed port",
        ["search", "--storage", f"postgresql://user:{SECRET}@127.0.0.1:notaport/db", *FAST],
        "not a database URL",
        no_setup,
    ),
    (
        "raw @ in password",
        ["search", "--storage", f"postgresql://user:{SECRET}@{SECRET}@127.0.0.1:{PORT}/db", *FAST],
        "%40",
        no_setup,
    ),
    ("profile phi 50", ["profile", "--phi", "50"], "bytes", no_setup),
    ("profile resolution 500", ["profile", "--resolution", "500"], "bytes", no_setup),
    ("search phi 50", ["search", "--phi", "50", *FAST], "bytes", no_setup),
    ("search phi nan", ["search", "--phi", "nan", *FAST], "--phi", no_setup),
    ("search phi inf", ["search", "--phi", "inf", *FAST], "--phi", no_setup),
    ("runs 0", ["profile", "--runs", "0"], "--runs", no_setup),
    ("threads 0", ["profile", "--threads", "0"], "--threads", no_setup),
    ("threads -1 (training)", ["search", "--threads", "-1", *FAST], "--threads", no_setup),
    ("device bogus", ["search", "--device", "bogus", *FAST], "--device", no_setup),
    ("seed -1", ["search", "--seed", "-1", *FAST], "--seed", no_setup),
    ("foreign SQLite with a studies table", ["search", "--study", "foreign", *FAST], "another program", foreign_sqlite),
    ("--input on search", ["search", "--input", "3x32x32", *FAST], "unrecognized arguments", no_setup),
    ("--classes on search", ["search", "--classes", "5", *FAST], "unrecognized arguments", no_setup),
    ("timeout 0", ["search", "--timeout", "0", *FAST], "--timeout", no_setup),
    ("negative timeout", ["search", "--timeout", "-5", *FAST], "--timeout", no_setup),
    ("negative n-trials", ["search", "--n-trials", "-1", *FAST], "--n-trials", no_setup),
    ("confirm 0", ["search", *FAST, "--confirm", "0"], "--confirm", no_setup),
    ("workers 0", ["search", "--workers", "0", *FAST], "--workers", no_setup),
    ("workers 10000", ["search", "--workers", "10000", *FAST], "--workers", no_setup),
    ("data dir with 3 of 4 files", ["search", "--data-dir", "data", *FAST], "3 of the 4", three_of_four_idx_files),
    (
        "worker on a missing SQLite file",
        ["worker", "--study", "s", "--storage", "sqlite:///missing.db"],
        "no study database",
        no_setup,
    ),
    ("study ../escape", ["search", "--study", "../escape", *FAST], "not a study name", no_setup),
    ("study absolute path", ["search", "--study", "/tmp/scaler-escape", *FAST], "not a study name", no_setup),
    ("study ..", ["search", "--study", "..", *FAST], "not a study name", no_setup),
    ("study 300 characters", ["search", "--study", "x" * 300, *FAST], "not a study name", no_setup),
    ("study with a newline", ["search", "--study", "a\nb", *FAST], "not a study name", no_setup),
    (
        "out ../escape (scale)",
        ["scale", "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15", "--out", "../escape", "--train-max-phi", "-1"],
        "not a study name",
        no_setup,
    ),
    ("plot ../escape", ["plot", "--study", "../escape"], "not a study name", no_setup),
    (
        "scale on a study without a winner",
        ["scale", "--study", "open", "--train-max-phi", "-1"],
        "no winner yet",
        study_without_winner,
    ),
    (
        "scale diverging",
        ["scale", *COEFFS, "--out", "div", "--phi", "0", "--variant", "relu", "--lr", "1e30", *TINY],
        "training diverged",
        no_setup,
    ),
    (
        "ladder diverging",
        ["ladder", *COEFFS, "--out", "div", "--lr", "1e30", *TINY, "--epochs", "4"],
        "training diverged",
        no_setup,
    ),
    ("ladder too short to ramp", ["ladder", *COEFFS, "--out", "short", *TINY], "at least 4 epochs", no_setup),
    (
        "compare-scaling diverging",
        ["compare-scaling", *COEFFS, "--out", "div", "--lr", "1e30", *TINY],
        "training diverged",
        no_setup,
    ),
    (
        "flgc diverging",
        ["flgc", "--groups", "1", "--width", "0.25", "--lr", "1e30", *TINY],
        "training diverged",
        no_setup,
    ),
    ("flgc fixed groups not dividing", ["flgc", "--groups", "3", "--width", "0.25", *TINY], "divisible", no_setup),
    ("flgc duplicate-after 2", ["flgc", "--duplicate-after", "2", *TINY], "--duplicate-after", no_setup),
    ("flgc spatial on mobilenet", ["flgc", "--base", "mobilenet", "--spatial", *TINY], "after flgc:G", no_setup),
    ("flgc seeds 0", ["flgc", "--seeds", "0", *TINY], "--seeds", no_setup),
]
CUDA_CASE = ("device cuda without a GPU", ["search", "--device", "cuda", *FAST], "no CUDA GPU", no_setup)


def run_cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m scaler.cli ARGS` in cwd."""
    return subprocess.run(
        [sys.executable, "-m", "scaler.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=ENV
    )


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under folder with its content."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


ALL_CASES = CASES + ([] if torch.cuda.is_available() else [CUDA_CASE])


@pytest.mark.parametrize("name,args,phrase,setup", ALL_CASES, ids=[case[0] for case in ALL_CASES])
def test_bad_input_is_one_line_exit_2(
    name: str,
    args: list[str],
    phrase: str,
    setup: Callable[[Path], None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: Cli,
) -> None:
    """Exit status 2, exactly one stderr line holding the phrase, the password nowhere, no file written (in-process: an exception fails the test)."""
    work = tmp_path / "work"
    work.mkdir()
    setup(work)
    before = tree(tmp_path)
    monkeypatch.chdir(work)
    status, out, err = cli(args)
    output = out + err
    lines = err.strip().splitlines()
    assert status == 2, output[-3000:]
    assert len(lines) == 1, err[-3000:]
    assert phrase in lines[0] and lines[0].startswith("scaler: error: "), lines[0]
    assert SECRET not in output
    assert tree(tmp_path) == before, "a refused command wrote or changed files"
    assert not Path("/tmp/scaler-escape").exists()


def diverging_config(url: str) -> SearchConfig:
    """A small study whose learning rate makes every trained trial's loss NaN."""
    return SearchConfig(
        step=0.5,
        ratio_tolerance=0.45,
        study="nan",
        storage=url,
        confirm=1,
        confirm_seeds=2,
        subset=300,
        val_size=100,
        train=TrainConfig(epochs=1, batch_size=64, lr=1e30),
        progress=False,
    )


def test_diverging_trials_fail_alone_and_the_study_goes_on(tmp_path: Path) -> None:
    """Every full-budget training diverges and ends FAIL on its own; the worker still runs every job, exit 0.

    The screen's one step cannot diverge yet (the loss is checked after it), so the screen completes and picks finalists.
    """
    url = f"sqlite:///{tmp_path / 'nan.db'}"
    search = GridSearch(diverging_config(url), log=lambda line: None)
    screen = len(search.feasible)
    assert search.pending() == (screen, 0)
    result = run_cli(["worker", "--study", "nan", "--storage", url], tmp_path, timeout=240)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    trials = optuna.load_study(study_name="nan", storage=url).get_trials()
    finalists = optuna.load_study(study_name="nan", storage=url).user_attrs["finalists"]
    assert finalists[-1] == "base" and search.control.label in finalists and len(finalists) in (2, 3)
    expected = [f"screen:{label}:0" for label in search.feasible] + [
        f"confirm:{label}:{seed}" for label in finalists for seed in (1, 2)
    ]
    assert f"worker finished: {len(expected)} trial(s) run by this worker" in result.stdout
    assert sorted(t.params["job"] for t in trials) == sorted(expected)
    confirm = [t for t in trials if t.params["job"].startswith("confirm:")]
    print(f"\n[NaN loss] jobs={len(expected)} failed={sum(t.state == TrialState.FAIL for t in trials)}")
    assert confirm and all(t.state == TrialState.FAIL for t in confirm)
    for trial in confirm:
        assert "loss became" in trial.user_attrs["failure"]
    assert "Traceback" not in result.stderr


def test_search_whose_every_training_diverges_is_one_line_error(tmp_path: Path) -> None:
    """`scaler search --lr 1e30`: no trial can be trained, which must be one line with exit status 2."""
    result = run_cli(
        ["search", "--study", "nan", "--lr", "1e30", *FAST],
        tmp_path,
        timeout=240,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scaler: error: "), result.stderr[-4000:]
