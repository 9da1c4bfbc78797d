"""Shared fixtures: a real PostgreSQL server (see tests/pg.py) and scaler's command line run in process."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pg import postgres_server, postgres_url  # noqa: F401

from scaler.cli import main

Cli = Callable[[list[str]], tuple[object, str, str]]
# The smallest search that still screens and confirms: 300 images, 1 epoch, a coarse grid, 1 finalist on 2 seeds.
FAST = "--subset 300 --val-size 100 --epochs 1 --batch-size 64 --step 0.5 --ratio-tolerance 0.45 --confirm 1".split()
FAST += ["--confirm-seeds", "2", "--no-progress"]


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
