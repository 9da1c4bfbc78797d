"""`scaler search` on a Fashion-MNIST subset: grid, storage, resume, outputs, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FAST, Cli
from notebook_runner import run_notebook

from scaler.cli import main
from scaler.errors import UserError
from scaler.experiments.search.plan import TRIAL_COLUMNS
from scaler.model.complexity import count_macs, count_params
from scaler.model.nn.build import build
from scaler.model.scaling import scale, scale_compound
from scaler.model.spec import NetSpec
from scaler.model.zoo import base as zoo_base
from scaler.study.grid import CONTROL, Candidate, control_network, grid_points, space


def count(spec: NetSpec) -> tuple[int, int]:
    """fvcore MACs and parameters, as the search counts them."""
    model = build(spec)
    return count_macs(model, spec.input_shape), count_params(model)


def test_space_holds_each_built_network_once_with_its_measured_ratio() -> None:
    base = scale(zoo_base("mobilenet", 1, 28, 10), 1.0, 0.25, 1.0)
    networks = space(base, 1.0, 0.25, 0.15, count)
    members = [m for n in networks for m in n.members]
    assert len(members) == len(set(members)) == len(grid_points(0.25)) + 1  # + the control
    specs = {}
    for network in networks:
        for label in network.members:
            c = Candidate.from_label(label)
            specs.setdefault(network.label, set()).add(scale_compound(base, c.alpha, c.beta, c.gamma, 1.0))
    assert all(len(built) == 1 for built in specs.values()), "one network, one spec"
    assert len({next(iter(built)) for built in specs.values()}) == len(networks), "two networks build the same spec"
    feasible = [n for n in networks if n.feasible]
    assert feasible and all(abs(n.macs_ratio - 2) <= 0.3 for n in feasible)
    assert all(n.macs_ratio is None or not 1.7 <= n.macs_ratio <= 2.3 for n in networks if not n.feasible)
    for network in feasible:
        c = network.candidate
        spec = scale_compound(base, c.alpha, c.beta, c.gamma, 1.0)
        assert count(spec)[0] / count(base)[0] == pytest.approx(network.macs_ratio, abs=1e-3)
        assert network.resolution == spec.resolution / base.resolution
    control, snapped = control_network(networks)
    assert snapped and control.feasible and CONTROL.label not in control.members
    assert Candidate.from_label(CONTROL.label) == CONTROL


def test_space_refuses_a_band_without_networks_and_a_band_holding_the_base() -> None:
    base = scale(zoo_base("mobilenet", 1, 28, 10), 1.0, 0.25, 1.0)
    with pytest.raises(UserError, match="no network"):
        space(base, 1.0, 0.5, 0.001, count)
    with pytest.raises(UserError, match="base itself"):
        space(base, 1.0, 0.5, 0.5, count)


@pytest.fixture()
def study_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path / "studies" / "t"


def test_search_screens_races_answers_and_resumes(study_dir: Path, capsys) -> None:
    assert main(["search", "--study", "t", "--n-trials", "3", "--json", *FAST]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"alpha", "beta", "gamma", "best_set", "significant", "pick_test_acc"} <= set(result)
    assert result["study"] == "t" and result["trials"] == 3
    for name in ("study.db", "trials.csv", "grid.csv", "search.png", "summary.json"):
        assert (study_dir / name).stat().st_size > 0, name
    grid = pd.read_csv(study_dir / "grid.csv")
    feasible = set(grid[grid.feasible].label)
    assert len(feasible) == 4 and grid.label.is_unique
    first = pd.read_csv(study_dir / "trials.csv")
    assert list(first.columns) == TRIAL_COLUMNS and len(first) == 3
    plan = json.loads((study_dir / "summary.json").read_text())["plan"]
    assert (first.stage == "screen").all() and set(first.seed) <= {0, 1}
    assert (first.images == plan["screen_images"]).all() and plan["screen_images"] < plan["race_images"] <= 300
    early = json.loads((study_dir / "summary.json").read_text())
    assert early["stage"] == "screen" and early["pick"] in early["best_set"], "an answer from the stage it reached"
    assert early["pick_test_acc"] is None, "the screen never reads the test images"
    assert early["plan"]["race_images"] == plan["race_images"]

    assert main(["search", "--study", "t", *FAST]) == 0
    frame = pd.read_csv(study_dir / "trials.csv")
    screen, race = frame[frame.stage == "screen"], frame[frame.stage == "race"]
    assert sorted(zip(screen.network, screen.seed)) == sorted((n, s) for n in feasible for s in (0, 1)), "2 seeds"
    summary = json.loads((study_dir / "summary.json").read_text())
    assert summary["plan"]["screen_images"] == plan["screen_images"], "the plan is made by the command that starts it"
    assert summary["plan"]["race_images"] == (race.images.iloc[0] if len(race) else plan["race_images"])
    rounds = summary["rounds"]
    assert 1 <= len(rounds) <= 2 and [r["seed"] for r in rounds] == list(range(2, len(rounds) + 2))
    assert summary["race_end"], "the race says why it ended"
    left = set(summary["screened_out"])
    assert set(rounds[0]["networks"]) == (feasible - left) | {"base"}
    assert sorted(zip(race.network, race.seed)) == sorted((n, r["seed"]) for r in rounds for n in r["networks"])
    assert (race.images == plan["race_images"]).all() and (frame.state == "COMPLETE").all()
    table = pd.read_csv(study_dir / "race.csv")
    assert set(table.network) == set(rounds[0]["networks"])
    assert (table.acc_lo <= table.mean_val_acc).all() and (table.mean_val_acc <= table.acc_hi).all()
    assert {"seed_sd", "floor", "vs_leader", "vs_base", "vs_base_p_holm", "in_best_set"} <= set(table.columns)
    assert (table.vs_base_p_holm.dropna() >= table.vs_base_p.dropna()).all(), "each column is one adjusted family"
    assert {"left_round", "beaten_by", "left_by", "left_lo", "left_hi"} <= set(table.columns)
    for row in table[table.left_round.notna()].itertuples():
        assert row.beaten_by in set(table.network) and row.left_lo > 0 and row.in_best_set is not True
    assert summary["race_rule"] and 0.95 < summary["look_confidence"] < 1
    examples = np.load(study_dir / "search_examples.npz")
    assert sorted(examples["label"]) == sorted(f"{r.stage}:{r.network}:{r.seed}" for r in frame.itertuples())
    assert examples["val_predicted"].shape == (len(frame), len(examples["val_labels"]))
    assert summary["stage"] == "race" and summary["pick"] in set(summary["best_set"]) <= set(table.network) - {"base"}
    costs = table.set_index("network").macs
    assert costs[summary["pick"]] == min(costs[label] for label in summary["best_set"]), summary["pick_rule"]
    assert 0 <= summary["pick_test_acc"] <= 1 and summary["vs_base"]["images"] == "test"
    low, high = summary["vs_base"]["ci95"]
    assert low <= summary["vs_base"]["mean"] <= high and summary["significant"] == (low > 0 or high < 0)
    klass = summary["class"]
    assert klass["exported"] == summary["pick"] and summary["pick"] in klass["members"]
    assert klass["alpha"][0] <= summary["alpha"] <= klass["alpha"][1]
    assert summary["surface"].get("best") is None or summary["surface"]["skill"]
    record = json.loads((study_dir / "run.json").read_text())
    assert record["command"].startswith("scaler search --study t") and record["config"]["train"]["epochs"] == 1
    assert set(record["outputs"]) == {"trials.csv", "grid.csv", "race.csv", "search.png", "summary.json"}
    assert len(record["earlier"]) == 1
    run_notebook("search.ipynb", study_dir)

    assert main(["search", "--study", "t", *FAST]) == 0
    assert len(pd.read_csv(study_dir / "trials.csv")) == len(frame), "a finished job ran again"
    assert main(["export", "--study", "t", "--phi", "2", "--variant", "frelu", "--out", "t.pt2"]) == 0
    about, answer = json.loads(Path("t.pt2.json").read_text()), json.loads((study_dir / "summary.json").read_text())
    assert (about["alpha"], about["beta"], about["gamma"]) == (answer["alpha"], answer["beta"], answer["gamma"])


def test_a_budget_too_small_to_start_is_refused_as_given(study_dir: Path, capsys) -> None:
    assert main(["search", "--study", "t", *FAST, "--budget", "1s"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--budget 1s is less than a minute" in err[0], err
    assert not study_dir.exists(), "a refused search leaves no study behind"


def test_a_study_refuses_other_training_settings(study_dir: Path, capsys) -> None:
    assert main(["search", "--study", "t", "--n-trials", "1", *FAST]) == 0
    capsys.readouterr()
    assert main(["search", "--study", "t", "--n-trials", "1", "--lr", "0.01", *FAST]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "train.lr 0.05 -> 0.01" in error[0], error


def test_a_study_whose_trainings_were_queued_the_old_way_is_refused_in_one_line(study_dir: Path, capsys) -> None:
    """A study made before the search queued the engine's planned runs cannot be resumed: its trials name their
    jobs another way. The command says so in one line and leaves the study as it was."""
    import optuna

    assert main(["search", "--study", "old", "--n-trials", "1", *FAST]) == 0
    url = f"sqlite:///{study_dir.parent / 'old' / 'study.db'}"
    study = optuna.load_study(study_name="old", storage=url)
    study.set_user_attr("queue", None)  # what a study made before the move holds: no queue marker
    before = len(study.get_trials())
    capsys.readouterr()
    assert main(["search", "--study", "old", "--n-trials", "1", *FAST]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "older scaler search" in error[0] and "--study" in error[0], error
    assert len(optuna.load_study(study_name="old", storage=url).get_trials()) == before


@pytest.mark.parametrize(
    "args,needle",
    [
        (["search", "--base", "vgg"], "--base 'vgg' is not a base network"),
        (["search", "--alpha", "0.5"], "unrecognized arguments"),
        (["search", "--ratio-tolerance", "0.001", "--step", "0.5"], "no network"),
        (["search", "--halving", "4"], "--halving"),
        (["search", "--max-seeds", "1"], "--max-seeds"),
        (["search", "--dataset", "mnist", "--data-dir", "/nonexistent/data"], "/nonexistent/data"),
        (["search", "--storage", "not a url"], "not a database URL"),
        (["search", "--storage", "postgresql://u:hunter2@127.0.0.1:1/db"], "cannot open storage"),
    ],
)
def test_search_user_errors(
    args: list[str], needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = cli([args[0], *FAST, *args[1:]])
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert "hunter2" not in err + out
    assert not (tmp_path / "studies").exists() or not any((tmp_path / "studies").rglob("*.csv"))


def test_a_storage_error_through_the_real_entry_point(tmp_path: Path) -> None:
    """The console entry point itself: one line, exit status 2, the password never printed."""
    url = "postgresql://u:hunter2@127.0.0.1:1/db"
    result = subprocess.run(
        [sys.executable, "-m", "scaler.cli", "search", *FAST, "--storage", url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot open storage" in lines[0], result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_a_study_made_before_a_training_setting_existed_still_resumes() -> None:
    """A stored fingerprint without a later TrainConfig field reads it at its default; another value differs."""
    from dataclasses import replace

    from scaler.experiments.search.config import SearchConfig, differences, grid_fingerprint, recorded_fingerprint

    config = SearchConfig()
    stored = grid_fingerprint(config)
    del stored["train"]["assignment_freeze"]
    assert recorded_fingerprint(stored) == grid_fingerprint(config)
    other = replace(config, train=replace(config.train, assignment_freeze=0.25))
    assert differences(recorded_fingerprint(stored), grid_fingerprint(other)) == ["train.assignment_freeze 0.5 -> 0.25"]
    del stored["val_fraction"]  # before the validation split grew to a quarter, every study held out a tenth
    assert differences(recorded_fingerprint(stored), grid_fingerprint(config)) == ["val_fraction 0.1 -> 0.25"]


def test_the_quick_preset_learns_well_above_chance() -> None:
    """`search --quick`'s images, epochs and batch train the base to well above chance (0.1) on real Fashion-MNIST:
    a smoke run that learns nothing checks nothing (the old preset's 1,000 images stayed at 0.14)."""
    from scaler.cli import make_parser
    from scaler.experiments.options import train_config
    from scaler.experiments.search import search_settings
    from scaler.study.run import RunConfig, evaluate, setup

    args = make_parser().parse_args(["search", "--quick", "--no-progress"])
    settings = search_settings(args)
    train = train_config(args, epochs=settings["epochs"], batch_size=settings["batch_size"])
    config = RunConfig(
        command="search",
        width=settings["width"],
        subset=settings["subset"],
        val_size=settings["val_size"],
        train=train,
        progress=False,
    )
    run = setup(config)
    row = evaluate(run.spec, run, test=False, description="quick preset")
    print(f"\n[--quick] base val_acc {row.val_acc:.3f} after {row.train_seconds:.1f} s")
    assert row.val_acc >= 0.5


def test_a_quick_study_is_named_apart_from_the_full_search() -> None:
    """`search --quick` must not take the full search's study: resuming it with the full settings would be refused."""
    from scaler.cli import make_parser
    from scaler.experiments.search import search_config

    def name(*args: str) -> str:
        argv = ("search", *args)
        return search_config(make_parser().parse_args(argv), argv).study_name

    assert name() == "mobilenet-w0.25-fashion-mnist"
    assert name("--quick") == "mobilenet-w0.25-fashion-mnist-quick"
    assert name("--quick", "--study", "mine") == "mine"


def test_a_class_that_parts_ways_at_larger_phi_is_named(capsys) -> None:
    """The committed search's class a1.00_b1.15_g1.15 ... g1.35 builds one network at phi = 1 (32 px -> 40 px for
    every gamma) and different ones at phi = 3; scale says so in one line and names the member it uses."""
    from scaler.study.grid import class_note, distinct_at

    base = scale(zoo_base("mobilenet", 1, 28, 10), 1.0, 0.25, 1.0)
    members = [f"a1.00_b1.15_g{g:.2f}" for g in (1.15, 1.20, 1.25, 1.30, 1.35)]
    assert len(distinct_at(base, members, 1.0)) == 1 and len(distinct_at(base, members, 3.0)) > 1
    note = class_note(base, members, "a1.00_b1.15_g1.25", [0.0, 1.0, 2.0, 3.0])
    assert note is not None and "(3 at phi=2, 5 at phi=3)" in note and note.endswith("a1.00_b1.15_g1.25")
    assert class_note(base, members[:1], members[0], [3.0]) is None


def test_a_class_is_named_at_larger_phi_by_its_members_nearest_the_target() -> None:
    """`representatives`: one entry per network the class builds at the larger phi, named by the member whose
    nominal product is nearest 2^phi at the searched phi, holding every member that builds it."""
    from scaler.study.grid import distinct_at, representatives

    base = scale(zoo_base("mobilenet", 1, 28, 10), 1.0, 0.25, 1.0)
    members = [f"a1.00_b1.15_g{g:.2f}" for g in (1.15, 1.20, 1.25, 1.30, 1.35)]
    named = representatives(base, members, 1.0, 2.0)
    assert len(named) == len(distinct_at(base, members, 2.0)) == 3
    assert sorted(m for group in named.values() for m in group) == members
    for label, group in named.items():
        assert label in group
        gap = {m: abs(Candidate.from_label(m).product - 2) for m in group}
        assert gap[label] == min(gap.values())
    assert representatives(base, members, 1.0, 1.0) == {"a1.00_b1.15_g1.25": tuple(members)}


def test_disambiguate_phi_races_the_picks_class_there_and_exports_its_cheapest_best(study_dir: Path, capsys) -> None:
    """`--disambiguate-phi 2` at step 0.1, where the feasible classes hold members that part ways at phi = 2: after
    the race, the distinct phi = 2 networks of the pick's class train on paired seeds; the exported coefficients are
    the member building the cheapest network of their best set, and the files say so."""
    args = ["search", "--study", "t", "--json", *FAST, "--step", "0.1", "--ratio-tolerance", "0.02"]
    assert main([*args, "--disambiguate-phi", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((study_dir / "summary.json").read_text())
    settled = summary["disambiguation"]
    assert result["disambiguation"] == settled and settled["of"] == summary["pick"] and settled["end"]
    members = summary["class"]["members"]
    assert settled["distinct"] >= 2 and sorted(m for row in settled["networks"] for m in row["members"]) == members
    frame = pd.read_csv(study_dir / "trials.csv")
    phi = frame[frame.stage == "phi2"]
    rounds = settled["rounds"]
    assert [r["seed"] for r in rounds] == [2, 3], "two paired seeds first, the race's"
    assert sorted(zip(phi.network, phi.seed)) == sorted((n, r["seed"]) for r in rounds for n in r["networks"])
    assert set(rounds[0]["networks"]) == {row["member"] for row in settled["networks"]}
    searched = frame[frame.stage == "race"]
    assert phi.macs.min() > searched.macs.max() and (phi.images == summary["plan"]["race_images"]).all()
    exported = summary["class"]["exported"]
    assert exported in settled["best_set"] and exported in members
    macs = {row["member"]: row["macs"] for row in settled["networks"]}
    assert macs[exported] == min(macs[label] for label in settled["best_set"])
    assert (summary["alpha"], summary["beta"], summary["gamma"]) == tuple(
        getattr(Candidate.from_label(exported), name) for name in ("alpha", "beta", "gamma")
    )
    assert all(row["ci95"][0] <= row["val_acc"] <= row["ci95"][1] for row in settled["networks"])
