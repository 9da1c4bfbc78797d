"""Shared fixtures: a real PostgreSQL server (see tests/pg.py) and scaler's command line run in process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pg import postgres_server, postgres_url  # noqa: F401

from scaler.cli import main
from scaler.study.run import RunConfig
from scaler.training.train import TrainConfig

Cli = Callable[[list[str]], tuple[object, str, str]]
# The smallest search that still screens and races: 300 images, 1 epoch, a coarse grid, at most 2 seeds.
FAST = "--subset 300 --val-size 100 --test-size 200 --epochs 1 --batch-size 64 --step 0.5".split()
FAST += ["--ratio-tolerance", "0.45", "--max-seeds", "2", "--no-progress"]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run `scaler ARGS` in process: (exit status, stdout, stderr), argparse's own exits included."""

    def run(args: list[str]) -> tuple[object, str, str]:
        try:
            status: object = main(args)
        except SystemExit as exit:
            status = exit.code
        out, err = capsys.readouterr()
        return status, out, err

    return run


def tiny_config(folder: Path, epochs: int = 1) -> RunConfig:
    """MobileNet x0.25 on 200 real Fashion-MNIST images (100 to validate, 200 to test), writing into `folder`."""
    return RunConfig(
        command="test",
        width=0.25,
        subset=200,
        val_size=100,
        test_size=200,
        train=TrainConfig(epochs=epochs, batch_size=64),
        folder=folder,
        latency_runs=3,
        progress=False,
    )
