"""Experiments: each module is one command: its options, its plan of runs on the engine, and its summary."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

Argv = tuple[str, ...]


@dataclass(frozen=True)
class Command:
    """One `scaler` subcommand: what it adds to the command line and what runs it (exit status back)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    main: Callable[[argparse.Namespace, Argv], int]
    description: str | None = None
