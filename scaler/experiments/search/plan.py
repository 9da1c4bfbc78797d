"""What the search trains, as the engine's planned runs, and how its trials read back (trials.csv)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from scaler.study.engine import JOB, ROW
from scaler.study.storage import FAILURE, INTERRUPTED, queued_key

TRIAL_COLUMNS = [
    "number",
    "state",
    "stage",
    "network",
    "role",
    "seed",
    "alpha",
    "beta",
    "gamma",
    "depth",
    "width",
    "resolution",
    "pixels",
    "macs",
    "macs_ratio",
    "params",
    "latency_ms",
    "images",
    "val_acc",
    "epochs",
    "train_seconds",
    "failure",
]


SCREEN, RACE = "screen", "race"
BASE = "base"


@dataclass(frozen=True)
class Job:
    """One training of the search: a network at a stage (screen, race, or phiP: a member of the pick's class at
    --disambiguate-phi P) with a seed."""

    stage: str
    network: str
    seed: int

    @property
    def label(self) -> str:
        """How logs and progress bars name it, e.g. 'screen a1.35_b1.10_g1.00 seed 0'."""
        return f"{self.stage} {self.network} seed {self.seed}"


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per started trial with the columns of trials.csv: what its planned run names, what it measured (as
    far as it got) and why it failed."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        attrs = job_of(t) | t.user_attrs | t.user_attrs.get(ROW, {})
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        for column in TRIAL_COLUMNS[2:]:
            row[column] = attrs.get(column)
        row["val_acc"] = attrs.get("val_acc", math.nan)
        row["epochs"] = attrs.get("epochs", 0)
        row["train_seconds"] = attrs.get("train_seconds", 0.0)
        row["failure"] = attrs.get(FAILURE) or attrs.get(INTERRUPTED) or failure_of_stale(t)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=TRIAL_COLUMNS)
    return frame.astype({"val_acc": float, "train_seconds": float})


def job_of(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The planned run a trial was queued for, from the queue itself (also for a trial stopped before it recorded
    anything, by a signal or kill -9); empty for a trial that holds none."""
    key = queued_key(trial, JOB)
    try:
        point = json.loads(key) if isinstance(key, str) else {}
    except ValueError:
        return {}
    return point if isinstance(point, dict) else {}


def job_name(point: dict[str, Any]) -> str:
    """A search training's short name, 'stage:network:seed' (e.g. 'race:base:2'), from its planned run."""
    return f"{point['stage']}:{point['network']}:{point['seed']}"


def failure_of_stale(trial: optuna.trial.FrozenTrial) -> str | None:
    """Why a FAIL trial with no recorded reason failed: its worker stopped answering (heartbeat)."""
    if trial.state != TrialState.FAIL:
        return None
    return "worker stopped answering (heartbeat); queued again"


def diverged(frame: pd.DataFrame) -> pd.Series:
    """Trials that failed on their own merits: the loss diverged (final, never queued again)."""
    return (frame.state == "FAIL") & frame.failure.fillna("").str.contains("loss became")
