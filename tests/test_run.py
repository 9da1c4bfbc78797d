"""The run layer: one evaluate path, plan frames in and result frames out, run.json beside every result."""

from __future__ import annotations

import json
import math
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_config

from scaler.errors import UserError
from scaler.model.scaling import scale
from scaler.report.files import git_commit, study_info, write
from scaler.study.engine import evaluate_plan
from scaler.study.run import PHASES, STOPWATCH, evaluate, interleaved_costs, latency_form_of, measure, setup
from scaler.training.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = TrainConfig(epochs=1, batch_size=64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """A Setup on 200 real Fashion-MNIST images: MobileNet at width 0.25."""
    return setup(tiny_config(tmp_path_factory.mktemp("run") / "tiny"))


def test_evaluate_trains_tests_and_measures(tiny) -> None:
    row = evaluate(tiny.spec, tiny)
    assert row.trained and row.seed == 0 and row.epochs == 1
    assert 0 <= row.val_acc <= 1 and 0 <= row.test_acc <= 1 and len(row.val_curve) == 1
    assert row.macs == measure(tiny.spec, runs=1).macs and row.params > 0 and row.latency_ms > 0
    assert row.latency_iqr_ms >= 0 and row.latency_form == "eager"
    again = evaluate(tiny.spec, tiny)
    assert (again.val_acc, again.test_acc) == (row.val_acc, row.test_acc), "same seed, same numbers"


def test_evaluate_without_training_only_measures(tiny) -> None:
    row = evaluate(tiny.spec, tiny, False)
    assert not row.trained and row.seed is None and math.isnan(row.test_acc)
    assert set(row.record()) >= {"params", "macs", "latency_ms"} and "test_acc" not in row.record()


def test_evaluate_follows_the_train_config_it_is_given(tiny) -> None:
    row = evaluate(tiny.spec, tiny, replace(TINY_TRAIN, seed=3, epochs=2), test=False)
    assert row.seed == 3 and row.epochs == 2 and math.isnan(row.test_acc)


def test_evaluate_plan_keeps_the_plan_and_adds_measurements(tiny) -> None:
    plan = pd.DataFrame(
        [
            {
                "label": "base",
                "variant": "relu",
                "depth": 1.0,
                "width": 1.0,
                "res_mult": 1.0,
                "train": False,
                "progressive": False,
            },
            {
                "label": "wide",
                "variant": "relu",
                "depth": 1.0,
                "width": 2.0,
                "res_mult": 1.0,
                "train": False,
                "progressive": False,
            },
            {
                "label": "frelu",
                "variant": "frelu:1",
                "depth": 1.0,
                "width": 1.0,
                "res_mult": 1.0,
                "train": False,
                "progressive": False,
            },
        ]
    )
    frame = evaluate_plan(plan, tiny, log=lambda line: None)
    assert frame.label.tolist() == ["base", "wide", "frelu"]
    assert list(frame.columns[: len(plan.columns)]) == list(plan.columns)
    assert frame.macs[1] > 2.5 * frame.macs[0] and frame.macs[2] > frame.macs[0]
    with pytest.raises(ValueError, match="plan lacks"):
        evaluate_plan(plan.drop(columns=["res_mult"]), tiny)


def test_measure_forms_agree_on_macs(tiny) -> None:
    eager, folded = measure(tiny.spec, runs=2), measure(tiny.spec, form="folded", runs=2)
    assert eager.macs == folded.macs and folded.params < eager.params, "folding BN removes its parameters, not MACs"
    with pytest.raises(UserError, match="latency form"):
        measure(tiny.spec, form="warp")


def test_every_deployed_network_compiles_through_its_own_forward(tiny) -> None:
    import torch._dynamo

    torch._dynamo.reset()
    specs = {width: scale(tiny.spec, 1.0, width, 1.0) for width in (1.0, 2.0)}
    with torch._dynamo.config.patch(recompile_limit=1):
        costs = interleaved_costs(specs, "deployed", rounds=2)  # raises if the second network would run eager
    assert all(median > 0 and iqr >= 0 for median, iqr in costs.values())
    first, second = (latency_form_of(spec, "deployed")._orig_mod.forward.__code__ for spec in specs.values())
    assert first is not second, "one code object: one dynamo cache, each call walking the other's guards"


def test_write_records_provenance_and_keeps_earlier_runs(tiny) -> None:
    frames = {"numbers": pd.DataFrame({"x": [1, 2]})}
    paths = write(tiny.folder, tiny.config, ("scale", "--out", "tiny"), tiny.started, frames, options={"phi": [0, 1]})
    assert {p.name for p in paths} == {"numbers.csv", "run.json"}
    record = json.loads((tiny.folder / "run.json").read_text())
    assert record["command"] == "scaler scale --out tiny"
    assert record["config"]["train"]["epochs"] == 1 and record["config"]["width"] == 0.25
    assert record["options"] == {"phi": [0, 1]} and record["outputs"] == ["numbers.csv"]
    assert record["versions"]["torch"] and record["versions"]["optuna"] and record["versions"]["fvcore"]
    assert record["git_commit"] is None or re.fullmatch("[0-9a-f]{40}", record["git_commit"])
    assert (
        record["started"] <= record["ended"] and record["device"].startswith(("cpu", "cuda")) and record["threads"] >= 1
    )
    assert set(record["seconds_by_phase"]) == set(PHASES)
    write(tiny.folder, tiny.config, ("scale", "--again"), tiny.started, frames)
    again = json.loads((tiny.folder / "run.json").read_text())
    assert again["command"] == "scaler scale --again" and [e["command"] for e in again["earlier"]] == [
        "scaler scale --out tiny"
    ]


def test_the_stopwatch_says_where_the_time_went(tiny) -> None:
    """Building, counting and timing an untrained network, then training and testing one, each add to its phase."""
    STOPWATCH.reset()
    evaluate(tiny.spec, tiny, False)
    untrained = dict(STOPWATCH.seconds)
    assert untrained["building"] > 0 and untrained["counting"] > 0 and untrained["timing"] > 0
    assert untrained["training"] == untrained["testing"] == 0
    evaluate(tiny.spec, tiny)
    assert STOPWATCH.seconds["training"] > 0 and STOPWATCH.seconds["testing"] > 0


def test_study_without_a_winner_is_a_user_error(tmp_path: Path) -> None:
    folder = tmp_path / "studies" / "open"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"alpha": None, "beta": None, "gamma": None, "grid": {}}))
    with pytest.raises(UserError, match="no winner"):
        study_info("open", tmp_path / "studies")


def test_only_the_run_layer_builds_trains_and_measures() -> None:
    """No module but run.py calls build(), train() or times a model: one path for every command."""
    pattern = re.compile(r"(?<![\w.])(build|train|latency_times|count_macs|count_params|split_outputs)\(")
    allowed = {"study/run.py", "model/complexity.py", "training/train.py", "model/nn/build.py", "model/guard.py"}
    offenders = []
    for path in sorted((ROOT / "scaler").rglob("*.py")):
        name = str(path.relative_to(ROOT / "scaler"))
        if name in allowed:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if pattern.search(line) and not line.lstrip().startswith(("def ", '"""', "#")):
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


COMMITTED_RESULTS = sorted({p.parent for p in (ROOT / "studies").rglob("*.csv")})


@pytest.mark.parametrize(
    "folder", COMMITTED_RESULTS, ids=[str(f.relative_to(ROOT / "studies")) for f in COMMITTED_RESULTS]
)
def test_every_committed_result_has_a_run_json(folder: Path) -> None:
    record = json.loads((folder / "run.json").read_text())
    made_by = record["command"].startswith(("scaler ", "python ")) or record.get("reconstructed")
    assert made_by and record["outputs"] and record["git_commit"]
    assert all((folder / name).exists() for name in record["outputs"])


def test_command_line_names_the_program() -> None:
    from scaler.report.files import command_line

    assert command_line(("search", "--study", "a b")) == "scaler search --study 'a b'"
    assert command_line(("benchmarks/proxy_rank.py", "--factor", "3")) == "python benchmarks/proxy_rank.py --factor 3"


def test_a_study_rewriting_its_own_files_does_not_mark_the_code_changed(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    for name in ("scaler/code.py", "studies/s/runs.csv", "benchmarks/results/b.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("a\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    (tmp_path / "studies/s/runs.csv").write_text("b\n")
    (tmp_path / "benchmarks/results/b.txt").write_text("b\n")
    commit, dirty = git_commit(tmp_path / "scaler")
    assert commit and re.fullmatch("[0-9a-f]{40}", commit) and dirty is False
    (tmp_path / "scaler/code.py").write_text("b\n")
    assert git_commit(tmp_path / "scaler")[1] is True
