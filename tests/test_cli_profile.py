"""`scaler profile` end to end, through the console entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import Cli

from scaler.cli import main


def test_profile_json_rows(capsys) -> None:
    assert main(["profile", "--base", "mobilenet", "--phi", "0", "1", "--json", "--runs", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["phi"] for r in rows] == [0.0, 1.0]
    assert set(rows[0]) == {
        "phi",
        "depth",
        "width",
        "resolution",
        "params",
        "macs",
        "macs_ratio",
        "target_ratio",
        "activations",
        "latency_ms",
        "latency_iqr_ms",
    }
    assert rows[0]["resolution"] == 32 and rows[1]["resolution"] == 40  # 32 * 1.15 rounds to the /8 stride
    assert rows[0]["macs_ratio"] == 1.0
    assert 2.5 < rows[1]["macs_ratio"] < 3.2  # ceil of repeats (1, 2, 2 -> 2, 3, 3) and 40 px: x2.91, not 2
    assert rows[1]["latency_ms"] > 0


def test_profile_table_states_the_convention(capsys) -> None:
    assert (
        main(
            [
                "profile",
                "--base",
                "mobilenetv2",
                "--phi",
                "0",
                "--runs",
                "2",
                "--activation",
                "frelu",
                "--frelu-stages",
                "1,2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "conv + linear" in out and "BN" in out
    assert "MACs/φ0" in out


def test_profile_direct_multipliers(capsys) -> None:
    args = [
        "profile",
        "--base",
        "resnet50",
        "--input",
        "3x224x224",
        "--classes",
        "1000",
        "--width",
        "1",
        "--depth",
        "1",
        "--resolution",
        "1",
        "--json",
        "--runs",
        "1",
    ]
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[1]["phi"] is None and rows[1]["params"] == 25557032 == rows[0]["params"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["profile", "--base", "alexnet"], "--base 'alexnet' is not a base network"),
        (["profile", "--alpha", "0.8"], "alpha must be >= 1"),
        (["profile", "--phi", "-1"], "phi must be >= 0"),
        (["profile", "--dataset", "imagenet21k"], "unknown dataset"),
        (["profile", "--input", "3x224"], "--input"),
        (["profile", "--variant", "frelu:7"], "stage 7"),
        (["profile", "--width", "0.0001"], "rounds to zero"),
        (["profile", "--phi", "x"], "invalid float"),
    ],
)
def test_user_errors_are_one_line_exit_2(args: list[str], needle: str, cli: Cli) -> None:
    code, _, stderr = cli(args)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], stderr
    assert "Traceback" not in stderr


def test_a_user_error_through_the_real_entry_point() -> None:
    """The console entry point itself: one line on stderr, exit status 2."""
    result = subprocess.run(
        [sys.executable, "-m", "scaler.cli", "profile", "--alpha", "0.8"], capture_output=True, text=True
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "alpha must be >= 1" in lines[0], result.stderr


def test_profile_out_writes_its_table_and_run_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`profile --out NAME`: profile.csv with one row per phi and a run.json naming the command, beside the table."""
    monkeypatch.chdir(tmp_path)
    assert main(["profile", "--phi", "0", "1", "--runs", "2", "--out", "p"]) == 0
    assert "wrote studies/p/profile.csv" in capsys.readouterr().out
    frame = pd.read_csv(tmp_path / "studies" / "p" / "profile.csv")
    assert frame.phi.tolist() == [0.0, 1.0] and (frame.macs > 0).all()
    record = json.loads((tmp_path / "studies" / "p" / "run.json").read_text())
    assert record["command"] == "scaler profile --phi 0 1 --runs 2 --out p" and record["outputs"] == ["profile.csv"]
