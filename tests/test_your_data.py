"""A search on a folder of images and a network file, end to end: identity, run.json, the fidelity ladder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import Cli
from PIL import Image

from scaler.training import folder

SMALL = "--width 0.25 --step 0.5 --ratio-tolerance 0.45 --max-seeds 2 --batch-size 32 --no-progress".split()


@pytest.fixture(autouse=True)
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Decoded folders under tmp_path; the tests run in tmp_path (studies/ lands there)."""
    monkeypatch.setenv("SCALER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(folder, "_HEADERS", {})
    monkeypatch.chdir(tmp_path)


def shapes(root: Path, per_class: int = 40, size: int = 12) -> Path:
    """root/<shape>/<i>.png: noisy gray squares with a bright bar whose direction is the class."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(("horizontal", "vertical", "diagonal")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, (size, size)).astype(np.uint8)
            offset = int(rng.integers(2, size - 2))
            if label == 0:
                image[offset, :] = 255
            elif label == 1:
                image[:, offset] = 255
            else:
                np.fill_diagonal(image, 255)
            Image.fromarray(image).save(root / name / f"{i}.png")
    return root


def test_a_search_on_a_folder_records_its_data_and_refuses_a_changed_folder(tmp_path: Path, cli: Cli) -> None:
    data = shapes(tmp_path / "bars")
    args = ["search", "--dataset", str(data), "--study", "f", "--epochs", "2", *SMALL]
    status, out, err = cli(args)
    assert status == 0, err[-2000:]
    record = json.loads((tmp_path / "studies" / "f" / "run.json").read_text())
    assert record["data"]["classes"] == ["diagonal", "horizontal", "vertical"]
    assert record["data"]["images"]["train"] + record["data"]["images"]["val"] + record["data"]["images"]["test"] == 120
    assert record["data"]["fingerprint"] and record["data"]["shape"] == [1, 12, 12]
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(data / "vertical" / "new.png")
    status, out, err = cli(args)
    assert status == 2 and "data_files" in err, err[-2000:]


def test_the_fidelity_ladder_plans_the_race_on_a_folder(tmp_path: Path, cli: Cli) -> None:
    data = shapes(tmp_path / "bars")
    status, out, err = cli(["search", "--dataset", str(data), "--study", "p", "--budget", "3m", *SMALL])
    assert status == 0, err[-2000:]
    summary = json.loads((tmp_path / "studies" / "p" / "summary.json").read_text())
    fidelity = summary["fidelity"]
    rungs = [rung["images"] for rung in fidelity["rungs"]]
    assert rungs[0] == 32 * 32 and all(b == 2 * a for a, b in zip(rungs, rungs[1:]))
    assert fidelity["least"] <= summary["plan"]["race_images"] <= fidelity["target"] + 32
    assert fidelity["verdict"] in out
    assert summary["grid"]["planned_fidelity"] is True


def test_a_network_file_is_searched_under_its_own_name_and_identity(tmp_path: Path, cli: Cli) -> None:
    status, table, _ = cli(["spec", "--base", "mobilenet"])
    assert status == 0
    (tmp_path / "mine.toml").write_text(table)
    args = ["search", "--base", "mine.toml", "--dataset", str(shapes(tmp_path / "bars")), "--epochs", "1", *SMALL]
    status, out, err = cli([*args, "--n-trials", "1"])
    assert status == 0, err[-2000:]
    assert (tmp_path / "studies" / "mine-w0.25-bars" / "run.json").is_file()
    (tmp_path / "mine.toml").write_text(table.replace("out_channels = 64", "out_channels = 72", 1))
    status, out, err = cli([*args, "--n-trials", "1"])
    assert status == 2 and "base_table" in err, err[-2000:]


def test_scale_and_profile_take_a_network_file(tmp_path: Path, cli: Cli) -> None:
    status, table, _ = cli(["spec", "--base", "mobilenetv2"])
    (tmp_path / "v2.toml").write_text(table)
    coefficients = ["--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15"]
    status, out, err = cli(["scale", "--base", "v2.toml", *coefficients, "--phi", "0", "1", "--train-max-phi", "-1"])
    assert status == 0, err[-2000:]
    written = json.loads((tmp_path / "studies" / "v2-fashion-mnist" / "run.json").read_text())
    assert written["config"]["base"] == "v2.toml"
    status, from_file, _ = cli(["profile", "--base", "v2.toml", "--phi", "1", "--runs", "1", "--json"])
    status, from_zoo, _ = cli(["profile", "--base", "mobilenetv2", "--phi", "1", "--runs", "1", "--json"])
    assert [row["macs"] for row in json.loads(from_file)] == [row["macs"] for row in json.loads(from_zoo)]
