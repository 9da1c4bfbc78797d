"""Shared fixtures: a real PostgreSQL server (see tests/pg.py) and scaler's command line run in process."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pg import postgres_server, postgres_url  # noqa: F401

from scaler.cli import main

Cli = Callable[[list[str]], tuple[object, str, str]]


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
