"""Bad input through the real CLI: exit status 2, one line on stderr, no traceback, no password; diverging trials fail alone."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import test_folder_data as folder_cases
import torch
from conftest import FAST, Cli
from optuna.trial import TrialState

from scaler.experiments.search.config import SearchConfig
from scaler.experiments.search.plan import job_name, job_of
from scaler.experiments.search.queue import GridSearch
from scaler.model.specfile import spec_text
from scaler.model.zoo import mobilenet
from scaler.training.train import TrainConfig

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


def study_path_is_a_file(cwd: Path) -> None:
    """studies/x is a file where the study's folder would go."""
    (cwd / "studies").mkdir()
    (cwd / "studies" / "x").write_text("not a folder")


def studies_is_a_file(cwd: Path) -> None:
    """studies itself is a file."""
    (cwd / "studies").write_text("not a folder")


def scale_csv(text: str) -> Callable[[Path], None]:
    """studies/p/scale.csv holding `text`."""

    def make(cwd: Path) -> None:
        (cwd / "studies" / "p").mkdir(parents=True)
        (cwd / "studies" / "p" / "scale.csv").write_text(text)

    return make


def summary_json(text: str) -> Callable[[Path], None]:
    """studies/s/summary.json holding `text`."""

    def make(cwd: Path) -> None:
        (cwd / "studies" / "s").mkdir(parents=True)
        (cwd / "studies" / "s" / "summary.json").write_text(text)

    return make


def idx_header_of_huge_sizes(cwd: Path) -> None:
    """data/ with the four Fashion-MNIST IDX files, each header claiming 2^32 - 1 items per dimension."""
    (cwd / "data").mkdir()
    for stem, magic, dims in (
        ("train-images-idx3-ubyte", 0x803, 3),
        ("train-labels-idx1-ubyte", 0x801, 1),
        ("t10k-images-idx3-ubyte", 0x803, 3),
        ("t10k-labels-idx1-ubyte", 0x801, 1),
    ):
        (cwd / "data" / stem).write_bytes(struct.pack(">I", magic) + struct.pack(">I", 2**32 - 1) * dims + bytes(10))


def empty_folder(cwd: Path) -> None:
    """An empty folder `empty`."""
    (cwd / "empty").mkdir()


COEFFS = ["--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15"]
TINY = ["--subset", "200", "--val-size", "100", "--test-size", "100", "--epochs", "1", "--no-progress"]
PORT = closed_port()
CASES: list[tuple[str, list[str], str, Callable[[Path], None]]] = [
    ("alpha below 1", ["profile", "--alpha", "0.5"], "alpha must be >= 1", no_setup),
    ("phi below 0", ["profile", "--phi", "-1"], "phi must be >= 0", no_setup),
    ("unknown base (profile)", ["profile", "--base", "vgg"], "is not a base network", no_setup),
    ("unknown dataset", ["profile", "--dataset", "imagenet21k"], "unknown dataset", no_setup),
    ("unknown variant", ["profile", "--variant", "sparkly"], "unknown variant", no_setup),
    ("no feasible network", ["search", *FAST, "--ratio-tolerance", "0.001"], "no network", no_setup),
    ("ratio tolerance 0.5", ["search", *FAST, "--ratio-tolerance", "0.5"], "base itself", no_setup),
    ("halving 1", ["search", *FAST, "--halving", "1"], "--halving", no_setup),
    ("one race seed", ["search", *FAST, "--max-seeds", "1"], "--max-seeds", no_setup),
    ("budget not a duration", ["search", *FAST, "--budget", "15 minutes"], "--budget", no_setup),
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
    ("--input on search of a named dataset", ["search", "--input", "3x32x32", *FAST], "applies to a folder", no_setup),
    ("--classes on search", ["search", "--classes", "5", *FAST], "unrecognized arguments", no_setup),
    ("budget 0", ["search", "--budget", "0m", *FAST], "--budget", no_setup),
    ("negative budget", ["search", "--budget", "-5m", *FAST], "--budget", no_setup),
    ("negative n-trials", ["search", "--n-trials", "-1", *FAST], "--n-trials", no_setup),
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
        "--out '../escape' is not a study name",
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
    ("flgc dup-cap negative", ["flgc", "--dup-cap", "-0.1", *TINY], "--dup-cap", no_setup),
    ("profile cap without duplication", ["profile", "--variant", "flgc:4+cap:0.1"], "after flgc-dup", no_setup),
    ("seed 2^32", ["search", "--seed", "4294967296", *FAST], "--seed must be between 0 and", no_setup),
    ("confirm seeds past 2^32", ["search", "--seed", "4294967295", *FAST], "--seed must be between 0 and", no_setup),
    ("data seed 2^64", ["search", "--data-seed", str(2**64), *FAST], "--data-seed must be between", no_setup),
    ("scale seeds past 2^32", ["scale", *COEFFS, "--seed", str(2**32 - 2), *TINY], "--seed", no_setup),
    ("scale train-max-phi nan", ["scale", *COEFFS, "--train-max-phi", "nan"], "--train-max-phi", no_setup),
    ("scale phi inf", ["scale", *COEFFS, "--phi", "0", "inf", "--train-max-phi", "-1"], "--phi", no_setup),
    (
        "scale hold-out untrained",
        ["scale", *COEFFS, "--hold-out", "1", "--train-max-phi", "-1"],
        "--hold-out",
        no_setup,
    ),
    (
        "scale hold-out past the trained phi",
        ["scale", *COEFFS, "--phi", "0", "1", "2", "--train-max-phi", "1", "--hold-out", "2", *TINY],
        "--hold-out 2 must leave trained phi below it",
        no_setup,
    ),
    ("scale hold-out nan", ["scale", *COEFFS, "--phi", "0", "1", "--hold-out", "nan", *TINY], "--hold-out", no_setup),
    ("compare-scaling factors 0", ["compare-scaling", *COEFFS, "--factors", "0", *TINY], "--factors", no_setup),
    ("compare-scaling factors 1", ["compare-scaling", *COEFFS, "--factors", "1", *TINY], "--factors", no_setup),
    ("data dir 5000 characters", ["search", "--data-dir", "d" * 5000, *FAST], "--data-dir", no_setup),
    ("study folder is a file", ["search", "--study", "x", *FAST], "studies/x is a file", study_path_is_a_file),
    ("studies is a file", ["search", "--study", "x", *FAST], "studies is a file", studies_is_a_file),
    (
        "scale folder is a file",
        ["scale", *COEFFS, "--out", "x", "--train-max-phi", "-1"],
        "studies/x is a file",
        study_path_is_a_file,
    ),
    (
        "storage under /proc",
        ["search", "--storage", "sqlite:////proc/scaler/s.db", *FAST],
        "cannot write the storage folder /proc/scaler",
        no_setup,
    ),
    ("storage in memory", ["search", "--storage", "sqlite://", *FAST], "in-memory", no_setup),
    ("storage in memory (frelu)", ["frelu", *COEFFS, "--storage", "sqlite://", *TINY], "in-memory", no_setup),
    ("scale workers 0", ["scale", *COEFFS, "--workers", "0", "--train-max-phi", "-1"], "--workers", no_setup),
    ("ladder workers 10000", ["ladder", *COEFFS, "--workers", "10000", *TINY], "--workers", no_setup),
    ("flgc malformed storage", ["flgc", "--storage", "not a url", "--profile-only"], "not a database URL", no_setup),
    (
        "compare-scaling storage with password",
        ["compare-scaling", *COEFFS, "--storage", f"postgresql://user:{SECRET}@127.0.0.1:{PORT}/db", *TINY],
        "cannot open storage",
        no_setup,
    ),
    ("plot garbage scale.csv", ["plot", "--study", "p"], "lacks the column", scale_csv("a,b\n\x01,zz\n")),
    ("plot empty scale.csv", ["plot", "--study", "p"], "not a readable CSV", scale_csv("")),
    (
        "plot scale.csv with text MACs",
        ["plot", "--study", "p"],
        "column 'macs'",
        scale_csv("variant,phi,macs,latency_ms,latency_iqr_ms\nrelu,0,lots,1.0,0.1\n"),
    ),
    ("scale summary.json []", ["scale", "--study", "s", "--train-max-phi", "-1"], "holds a list", summary_json("[]")),
    (
        "scale summary.json width abc",
        ["scale", "--study", "s", "--train-max-phi", "-1"],
        "field 'grid.width'",
        summary_json('{"alpha": 1.2, "beta": 1.1, "gamma": 1.15, "grid": {"width": "abc"}}'),
    ),
    (
        "scale summary.json alpha text",
        ["scale", "--study", "s", "--train-max-phi", "-1"],
        "field 'alpha'",
        summary_json('{"alpha": "x", "beta": 1.1, "gamma": 1.15}'),
    ),
    ("heartbeat 1e10", ["search", "--heartbeat", "10000000000", *FAST], "--heartbeat", no_setup),
    ("search phi 1e-6", ["search", "--phi", "1e-6", *FAST], "--phi", no_setup),
    ("empty FReLU stage list", ["search", "--variant", "frelu:", *FAST], "frelu: takes at least one stage", no_setup),
    ("profile flgc:3", ["profile", "--variant", "flgc:3"], "divisible by 3", no_setup),
    ("search flgc:1000", ["search", "--variant", "flgc:1000", *FAST], "divisible by 1000", no_setup),
    ("flgc groups 1000", ["flgc", "--groups", "1000", "--profile-only", "--width", "0.25"], "by 1000", no_setup),
    ("profile resolution 1e-9", ["profile", "--resolution", "1e-9"], "resolution multiplier", no_setup),
    ("profile depth 1e-9", ["profile", "--depth", "1e-9"], "depth multiplier", no_setup),
    ("search width 1e6", ["search", "--width", "1e6", *FAST], "--width", no_setup),
    ("search empty base", ["search", "--base", "", *FAST], "--base ''", no_setup),
    ("scale empty base", ["scale", *COEFFS, "--base", "", "--train-max-phi", "-1"], "--base ''", no_setup),
    ("fused:99", ["profile", "--variant", "fused:99"], "cannot fuse 99", no_setup),
    ("fused:x", ["profile", "--variant", "fused:x"], "whole number of stages", no_setup),
    ("frelu n-trials -3", ["frelu", *COEFFS, "--n-trials", "-3", *TINY], "--n-trials", no_setup),
    ("mysql without its driver", ["search", "--storage", "mysql://u@127.0.0.1/db", *FAST], "MySQLdb", no_setup),
    (
        "IDX header of 2^32-1 sizes",
        ["search", "--data-dir", "data", *FAST],
        f"implies {4 * 4 + (2**32 - 1) ** 3}",
        idx_header_of_huge_sizes,
    ),
    (
        "mnist in an empty folder, no download possible",
        ["search", "--dataset", "mnist", "--data-dir", "empty", *FAST],
        "mnist not found",
        empty_folder,
    ),
]


def bad_folder(make: Callable[[Path], Path]) -> Callable[[Path], None]:
    """photos/ in cwd made by one of test_folder_data's bad-folder builders."""

    def made(cwd: Path) -> None:
        make(cwd / "photos")

    return made


@pytest.fixture(autouse=True)
def decoded_elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Decoded folders and image headers are cached outside the tree a test checks, and never in ~/.cache."""
    monkeypatch.setenv("SCALER_CACHE", str(tmp_path_factory.mktemp("cache")))


def bad_network(text: str) -> Callable[[Path], None]:
    """mine.toml in cwd: MobileNet's table with `text` appended to its first stage."""

    def make(cwd: Path) -> None:
        table = spec_text(mobilenet())
        (cwd / "mine.toml").write_text(table.replace("[[stages]]\n", f"[[stages]]\n{text}\n", 1))

    return make


FOLDER = ["search", "--dataset", "photos", *FAST]
CASES += [
    ("empty folder", FOLDER, "is empty", bad_folder(folder_cases.empty)),
    ("one class", FOLDER, "one class folder", bad_folder(folder_cases.one_class)),
    ("class without images", FOLDER, "class folder with no images", bad_folder(folder_cases.empty_class)),
    ("truncated image", FOLDER, "corrupt or truncated image", bad_folder(folder_cases.corrupt)),
    ("not an image", FOLDER, "not an image Pillow can read", bad_folder(folder_cases.not_an_image)),
    ("train and test classes differ", FOLDER, "only in train/: c", bad_folder(folder_cases.different_classes)),
    ("symlink loop", FOLDER, "symlink loop", bad_folder(folder_cases.loop)),
    ("network file: unknown block", ["profile", "--base", "mine.toml"], "mine.toml", bad_network('block = "vgg"')),
    ("network file: negative field", ["profile", "--base", "mine.toml"], "mine.toml", bad_network("repeats = -1")),
    ("network file: mistyped field", ["profile", "--base", "mine.toml"], "mine.toml", bad_network('kernel = "3"')),
    ("network file: unknown field", ["search", "--base", "mine.toml", *FAST], "repeat", bad_network("repeat = 2")),
]
NO_BAR = [arg for arg in FAST if arg != "--no-progress"]  # refused before the search's progress bar is drawn
CASES += [
    (
        "test size beyond its split",
        ["search", *NO_BAR, "--test-size", "1000000000"],
        "--test-size 1000000000",
        no_setup,
    ),
    ("val size beyond its split", ["search", *NO_BAR, "--val-size", "1000000000"], "--val-size 1000000000", no_setup),
    ("profile classes 0", ["profile", "--classes", "0"], "--classes must be at least 2", no_setup),
    ("profile classes -3", ["profile", "--classes", "-3"], "--classes must be at least 2", no_setup),
    ("flgc assignment rate inf", ["flgc", "--assignment-lr-scale", "inf", *TINY], "--assignment-lr-scale", no_setup),
    ("lr inf", ["search", "--lr", "inf", *NO_BAR], "--lr", no_setup),
    ("max seeds 0, before the bar", ["search", *NO_BAR, "--max-seeds", "0"], "--max-seeds", no_setup),
    ("halving 1, before the bar", ["search", *NO_BAR, "--halving", "1"], "--halving", no_setup),
    ("disambiguate phi 100", ["search", *NO_BAR, "--disambiguate-phi", "100"], "--disambiguate-phi", no_setup),
    ("missing data dir, before the bar", ["search", "--data-dir", "/nonexistent", *NO_BAR], "/nonexistent", no_setup),
    ("mysql driver, before the bar", ["search", "--storage", "mysql://u@127.0.0.1/db", *NO_BAR], "MySQLdb", no_setup),
    ("budget 1s, as given", ["search", *NO_BAR, "--budget", "1s"], "--budget 1s is less than a minute", no_setup),
]
CUDA_CASE = ("device cuda without a GPU", ["search", "--device", "cuda", *FAST], "no CUDA GPU", no_setup)


def run_cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m scaler.cli ARGS` in cwd."""
    return subprocess.run(
        [sys.executable, "-m", "scaler.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=ENV
    )


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every file under folder with its content, and every folder (None)."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


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
    assert tree(tmp_path) == before, "a refused command wrote or changed files or folders"
    assert not Path("/tmp/scaler-escape").exists()


def diverging_config(url: str, lr: float) -> SearchConfig:
    """A small study; at lr 1e30 every trained trial's loss becomes NaN."""
    return SearchConfig(
        step=0.5,
        ratio_tolerance=0.45,
        study="nan",
        storage=url,
        max_seeds=2,
        subset=300,
        val_size=100,
        test_size=200,
        train=TrainConfig(epochs=1, batch_size=64, lr=lr),
        progress=False,
    )


def test_diverging_trials_fail_alone_and_the_study_goes_on(tmp_path: Path) -> None:
    """Trainings that diverge end FAIL one by one; a worker still runs every queued job and the race ends with
    its reason, exit 0. (The study is planned at a sane learning rate, then its stored config is made to diverge,
    as a network that diverges where the base did not.)"""
    url = f"sqlite:///{tmp_path / 'nan.db'}"
    search = GridSearch(diverging_config(url, 0.1), log=lambda line: None)
    search.study.set_user_attr("config", diverging_config(url, 1e30).stored())
    result = run_cli(["worker", "--study", "nan", "--storage", url], tmp_path, timeout=240)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    study = optuna.load_study(study_name="nan", storage=url)
    trials = study.get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    print(f"\n[NaN loss] trials={len(trials)} failed={len(failed)} race_end={study.user_attrs.get('race_end')}")
    assert failed and all("loss became" in t.user_attrs["failure"] for t in failed)
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in trials)
    assert {job_name(job_of(t)) for t in trials} >= {f"screen:{label}:0" for label in search.feasible}
    assert study.user_attrs.get("race_end"), "the race ended with its reason"
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


def test_profile_only_scale_writes_its_cost_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli) -> None:
    """`scale --train-max-phi -1` trains nothing: it profiles every phi and plots MACs against latency only."""
    monkeypatch.chdir(tmp_path)
    args = ["scale", *COEFFS, "--out", "p", "--phi", "0", "1", "--variant", "relu", "--train-max-phi", "-1"]
    status, out, err = cli([*args, "--latency", "eager"])
    assert status == 0, (out + err)[-3000:]
    written = {path.name for path in (tmp_path / "studies" / "p").iterdir()}
    assert {"scale.csv", "scale_summary.csv", "macs_vs_latency.png", "run.json"} <= written, written
    assert not written & {"acc_vs_macs.png", "acc_vs_latency.png"}


PERMISSION_CAPABILITIES = "-dac_override,-dac_read_search"


def run_without_override(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m scaler.cli ARGS` in cwd, bound by file permissions: as root, without the capabilities that let root
    write into any folder (setpriv), as a user would be."""
    command = [sys.executable, "-m", "scaler.cli", *args]
    if os.geteuid() == 0:
        caps = PERMISSION_CAPABILITIES
        command = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd, env=ENV)


@pytest.mark.parametrize(
    "locked,args,phrase",
    [
        ("studies", ["search", "--study", "x", *FAST], "cannot write the study folder studies/x (Permission denied"),
        (
            "studies",
            ["scale", *COEFFS, "--out", "x", "--train-max-phi", "-1"],
            "cannot write the study folder studies/x",
        ),
        ("locked", ["search", "--storage", "sqlite:///locked/s.db", *FAST], "cannot write the storage folder locked"),
        ("locked", ["export", *COEFFS, "--out", "locked/net.pt2"], "folder locked is not writable"),
    ],
    ids=[
        "search in a read-only studies/",
        "scale in a read-only studies/",
        "storage in a read-only folder",
        "export into a read-only folder",
    ],
)
def test_read_only_folders_are_one_line(locked: str, args: list[str], phrase: str) -> None:
    """studies/ and a storage folder the user may not write: one line naming the path, exit 2, nothing written."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: root writes into read-only folders")
    work = Path(tempfile.mkdtemp(prefix="scaler-readonly-"))
    try:
        (work / locked).mkdir()
        (work / locked).chmod(0o555)
        before = tree(work)
        result = run_without_override(args, work)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
        assert len(lines) == 1 and phrase in lines[0], result.stderr[-3000:]
        assert tree(work) == before
    finally:
        (work / locked).chmod(0o755)
        shutil.rmtree(work, ignore_errors=True)
