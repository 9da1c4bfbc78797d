"""scale, frelu, ladder, compare-scaling and plot on a Fashion-MNIST subset; the notebooks execute."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from notebook_runner import run_notebook

from scaler.cli import main
from scaler.experiments.frelu import chosen_masks

ROOT = Path(__file__).resolve().parents[1]
TINY = [  # width 0.25: at 32 px the /8 layout makes the full-width network's phi = 2 costly to train and time
    "--width",
    "0.25",
    "--subset",
    "200",
    "--val-size",
    "100",
    "--test-size",
    "500",
    "--epochs",
    "1",
    "--batch-size",
    "64",
    "--no-progress",
]
COEFFS = ["--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15"]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small study made for the purpose: scale.csv and frelu.csv under studies/tiny."""
    cwd = tmp_path_factory.mktemp("experiments")
    before = os.getcwd()
    os.chdir(cwd)
    try:
        assert (
            main(
                [
                    "scale",
                    *COEFFS,
                    "--out",
                    "tiny",
                    "--phi",
                    "0",
                    "0.5",
                    "1",
                    "2",
                    "--variant",
                    "relu",
                    "frelu:1",
                    "--train-max-phi",
                    "1",
                    "--seeds",
                    "2",
                    "--latency",
                    "folded",
                    *TINY,
                ]
            )
            == 0
        )
        frelu = ["frelu", *COEFFS, "--out", "tiny", "--n-trials", "4", "--seeds", "2", "--latency", "folded", *TINY]
        assert main(frelu) == 0
    finally:
        os.chdir(before)
    return cwd / "studies" / "tiny"


def test_scale_writes_frame_and_plots(study: Path) -> None:
    frame = pd.read_csv(study / "scale.csv")
    assert len(frame) == 14  # 2 variants x (3 trained phi x 2 seeds + 1 measured phi)
    assert set(frame.variant) == {"relu", "frelu:1"}
    assert frame[frame.phi == 0].macs_ratio.tolist() == [1.0] * 4
    trained = frame[frame.trained]
    assert sorted(trained.phi.unique()) == [0.0, 0.5, 1.0] and sorted(trained.seed.unique()) == [0, 1]
    assert frame.groupby(["variant", "phi"]).latency_ms.nunique().eq(1).all()  # timed once per network
    assert (
        (frame.latency_form == "folded").all() and (frame.latency_ms > 0).all() and frame.latency_iqr_ms.notna().all()
    )
    assert trained.test_acc.between(0, 1).all()
    untrained = frame[~frame.trained]
    assert untrained.test_acc.isna().all() and untrained.predicted_acc.notna().all()
    assert (frame[frame.variant == "frelu:1"].macs.values > frame[frame.variant == "relu"].macs.values).all()
    summary = pd.read_csv(study / "scale_summary.csv")
    assert len(summary) == 8 and summary.seeds.tolist() == [2, 2, 2, 0] * 2
    measured = summary[summary.seeds > 0]
    assert (measured.acc_lo <= measured.test_acc).all() and (measured.test_acc <= measured.acc_hi).all()
    assert measured.floor.gt(0).all() and measured.seed_sd.notna().all()  # from the per-example outputs
    assert (summary.pred_lo <= summary.predicted_acc + 1e-9).all() and summary.pred_hi.notna().all()
    held = pd.read_csv(study / "extrapolation.csv")
    assert set(held.variant) == {"relu", "frelu:1"} and (held.held_out_phi == 1.0).all()
    assert (held.fit_seeds == 2).all() and (held.measured_seeds == 2).all()
    assert frame.held_out.tolist() == (frame.trained & (frame.phi == 1.0)).tolist()
    assert held[["pred_lo", "pred_hi", "last_value_error", "log_linear_error"]].notna().all().all()
    for name in ("acc_vs_macs", "acc_vs_latency", "macs_vs_latency"):
        assert (study / f"{name}.png").stat().st_size > 0
    examples = np.load(study / "scale_examples.npz")
    assert len(examples["label"]) == len(frame) and examples["test_predicted"].shape[0] == len(frame)
    record = json.loads((study / "run.json").read_text())  # frelu ran last in the same folder
    assert "scale_examples.npz" in record["earlier"][0]["outputs"] and "frelu_examples.npz" in record["outputs"]
    assert frame[frame.trained].val_loss.gt(0).all()


def test_run_json_records_both_commands(study: Path) -> None:
    record = json.loads((study / "run.json").read_text())
    assert record["command"].startswith("scaler frelu") and record["options"]["n_trials"] == 4
    assert [run["command"].split()[1] for run in record["earlier"]] == ["scale"]
    assert set(record["earlier"][0]["outputs"]) >= {"scale.csv", "extrapolation.csv", "acc_vs_macs.png"}


def test_frelu_writes_pareto_front(study: Path) -> None:
    masks = pd.read_csv(study / "frelu.csv", dtype={"mask": str})
    assert len(masks) == 4 and (masks.seeds == 2).all() and (masks.latency_form == "folded").all()
    assert masks["mask"].str.fullmatch("[01]{5}").all()
    assert (masks.acc_lo <= masks.val_acc).all() and (masks.val_acc <= masks.acc_hi).all()
    assert masks.val_accs.str.split().map(len).eq(2).all() and (masks.latency_iqr_ms >= 0).all()
    assert masks.pareto.any() and masks.latency_ms.is_monotonic_increasing
    front = pd.read_csv(study / "frelu_front.csv", dtype={"mask": str})
    assert front["mask"].tolist() == masks[masks.pareto]["mask"].tolist()
    assert front.in_best_set_within.any()
    effects = pd.read_csv(study / "frelu_effects.csv")
    assert (effects.d_val_acc_lo <= effects.d_val_acc).all() and (effects.d_val_acc <= effects.d_val_acc_hi).all()
    assert (study / "frelu_pareto.png").stat().st_size > 0


def test_frelu_rerun_with_one_more_seed_trains_only_that_seed(
    study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The mask study's runs live in the engine's store: rerun with --seeds 3, the 8 finished (mask, seed) runs are
    read back and only seed 2's four are trained; the first two seeds' accuracies are unchanged."""
    shutil.copytree(study, tmp_path / "studies" / "tiny")
    monkeypatch.chdir(tmp_path)
    args = ["frelu", *COEFFS, "--out", "tiny", "--n-trials", "4", "--seeds", "3", "--latency", "folded", *TINY]
    assert main(args) == 0
    assert "8 of 12 planned runs already in" in capsys.readouterr().out
    before = pd.read_csv(study / "frelu.csv", dtype={"mask": str}).set_index("mask")
    after = pd.read_csv(tmp_path / "studies" / "tiny" / "frelu.csv", dtype={"mask": str}).set_index("mask")
    assert sorted(after.index) == sorted(before.index) and (after.seeds == 3).all()
    for mask in before.index:
        assert after.val_accs[mask].split()[:2] == before.val_accs[mask].split()


def test_frelu_masks_beyond_the_limit_are_drawn_with_both_ends() -> None:
    """Past 64 masks (or with --n-trials), ReLU and FReLU everywhere are always in, the rest seeded at random."""
    masks = chosen_masks(7, None, seed=0)
    assert len(masks) == 40 and {"0000000", "1111111"} <= set(masks) and masks == chosen_masks(7, None, seed=0)
    assert len(chosen_masks(5, None, seed=0)) == 32 and chosen_masks(5, 1, seed=0) == ["00000"]


def test_plot_command_redraws(study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(study.parent.parent)
    (study / "acc_vs_macs.png").unlink()
    assert main(["plot", "--study", "tiny"]) == 0
    assert (study / "acc_vs_macs.png").exists()
    record = json.loads((study / "run.json").read_text())
    assert record["command"] == "scaler plot --study tiny" and record["config"]["source"] == "scale.csv"
    assert "acc_vs_macs.png" in record["outputs"] and record["earlier"][-1]["command"].startswith("scaler frelu")


@pytest.mark.parametrize("notebook", ["tradeoff.ipynb", "frelu_placement.ipynb"])
def test_notebooks_execute(study: Path, notebook: str) -> None:
    run_notebook(notebook, study)


def test_ladder_and_compare_scaling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["ladder", *COEFFS, "--out", "lad", "--frelu", "frelu:1,2", *TINY, "--epochs", "4", "--seeds", "2"]
    assert main([*args, "--latency", "folded"]) == 0
    ladder = pd.read_csv(tmp_path / "studies" / "lad" / "ladder.csv")
    assert ladder.step.tolist() == [0, 1, 2, 3] * 2 and ladder.seed.tolist() == [0] * 4 + [1] * 4
    assert ladder.macs[1] > ladder.macs[0] and ladder.macs[3] > ladder.macs[2]
    assert (ladder.latency_form == "folded").all() and ladder.groupby("step").latency_ms.nunique().eq(1).all()
    summary = pd.read_csv(tmp_path / "studies" / "lad" / "ladder_summary.csv")
    assert summary.step.tolist() == [0, 1, 2, 3] and (summary.seeds == 2).all()
    assert summary.gain.isna().tolist() == [True, False, False, False]
    assert (summary.gain_p_holm[1:] >= summary.gain_p[1:]).all() and summary.floor.gt(0).all()
    assert (summary.gain_lo[1:] <= summary.gain[1:]).all() and (summary.acc_lo <= summary.test_acc).all()
    run_notebook("ladder.ipynb", tmp_path / "studies" / "lad")
    assert main(["compare-scaling", *COEFFS, "--out", "cmp", "--factors", "2", "--seeds", "2", *TINY]) == 0
    compare = pd.read_csv(tmp_path / "studies" / "cmp" / "compare_scaling.csv")
    assert set(compare.rule) == {"base", "depth", "width", "resolution", "compound", "dWr"}
    assert compare.seed.tolist() == [0] * 6 + [1] * 6
    assert compare[compare.rule != "base"].macs_ratio.between(1.3, 3.5).all()
    cmp_summary = pd.read_csv(tmp_path / "studies" / "cmp" / "compare_scaling_summary.csv").set_index("rule")
    assert (cmp_summary.seeds == 2).all() and (cmp_summary.acc_lo <= cmp_summary.test_acc).all()
    assert cmp_summary.vs_compound.isna()[["base", "compound"]].all() and cmp_summary.vs_compound.notna().sum() == 4
    by_rule = compare.pivot_table(index="seed", columns="rule", values="test_acc")
    assert cmp_summary.vs_compound["width"] == pytest.approx((by_rule.width - by_rule.compound).mean())
    assert (tmp_path / "studies" / "cmp" / "compare_scaling.png").exists()
    for folder, epochs in (("lad", 4), ("cmp", 1)):
        assert (
            json.loads((tmp_path / "studies" / folder / "run.json").read_text())["config"]["train"]["epochs"] == epochs
        )
