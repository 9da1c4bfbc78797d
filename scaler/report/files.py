"""A study's files: CSVs, figures and run.json (the command, config, code, machine and times) written together,
and the files later commands read back, validated."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shlex
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd
import torch

from scaler.errors import UserError, one_line
from scaler.model.zoo import BASES, is_spec_file
from scaler.study.run import ENGINE_FILES, STOPWATCH, data_record
from scaler.study.storage import STUDIES_DIR, redact_secrets, study_folder
from scaler.training.folder import is_folder_dataset
from scaler.training.tasks import DATASET_TASKS
from scaler.training.train import resolve_device

if TYPE_CHECKING:
    from matplotlib.figure import Figure


RUN_JSON = "run.json"


RECORDED_PACKAGES = ("torch", "torchvision", "optuna", "fvcore", "numpy", "pandas", "scipy", "matplotlib")


class Recorded(Protocol):
    """A config run.json can hold."""

    def to_json(self) -> dict[str, Any]:
        """Plain dict."""
        ...


RESULT_PATHS = (":(top,exclude)studies", ":(top,exclude)benchmarks/results", ":(top,exclude)notebooks/*.ipynb")


PACKAGE = Path(__file__).resolve().parent.parent


def git_commit(here: Path = PACKAGE) -> tuple[str | None, bool | None]:
    """(commit, has uncommitted changes to anything but results) of the scaler checkout, or (None, None) outside
    git: a resumed study rewrites its own tracked files, which says nothing about the code that made them."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode:
            return None, None
        status = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--", ":/", *RESULT_PATHS],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return commit.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def versions() -> dict[str, str | None]:
    """Installed versions of scaler and the packages its numbers depend on."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("scaler", *RECORDED_PACKAGES):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def device_name(device: str) -> str:
    """The device a run trained on, in words."""
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(resolved)}"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


def command_line(argv: tuple[str, ...]) -> str:
    """The shell command a run came from: `scaler ARGS`, or `python SCRIPT.py ARGS` for a benchmark script."""
    if argv and argv[0].endswith(".py"):
        return shlex.join(["python", *argv])
    return shlex.join(["scaler", *argv])


def provenance(
    config: Recorded, argv: tuple[str, ...], started: float, outputs: list[str], options: Mapping[str, Any]
) -> dict[str, Any]:
    """What run.json records: the command and its full config, code and package versions, machine, times;
    every password a storage URL holds is redacted, wherever it appears."""
    commit, dirty = git_commit()
    data = config.to_json()
    ended = time.time()
    record = {
        "command": command_line(redact_secrets(tuple(argv))),
        "config": data,
        "options": dict(options),
        "git_commit": commit,
        "git_dirty": dirty,
        "versions": versions(),
        "device": device_name(data.get("train", {}).get("device", "auto")),
        "threads": torch.get_num_threads(),
        "started": _iso(started),
        "ended": _iso(ended),
        "seconds": round(ended - started, 1),
        "seconds_by_phase": STOPWATCH.report(),  # this process's; workers' trainings are in their trials
        "outputs": sorted(outputs),
    }
    read = data_record(getattr(config, "dataset", None))
    if read is not None:
        record["data"] = read
    return dict(redact_secrets(record))


def write_run_json(folder: Path, record: dict[str, Any]) -> Path:
    """Write run.json; the runs before it in the same folder (a resumed study) are kept under `earlier`."""
    path = folder / RUN_JSON
    earlier: list[dict[str, Any]] = []
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
            earlier = previous.pop("earlier", []) + [
                {k: previous.get(k) for k in ("command", "git_commit", "started", "ended", "outputs")}
            ]
        except (json.JSONDecodeError, AttributeError, TypeError):
            earlier = []
    path.write_text(json.dumps(redact_secrets(record | {"earlier": earlier}), indent=1, default=str) + "\n")
    return path


def write(
    folder: Path,
    config: Recorded,
    argv: tuple[str, ...],
    started: float,
    frames: Mapping[str, pd.DataFrame] | None = None,
    figures: Mapping[str, Figure] | None = None,
    options: Mapping[str, Any] | None = None,
    files: Mapping[str, str] | None = None,
) -> list[Path]:
    """Save frames as CSV, figures as PNG, text files as given, and run.json beside them; the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, frame in (frames or {}).items():
        frame.to_csv(folder / f"{name}.csv", index=False)
        paths.append(folder / f"{name}.csv")
    for name, figure in (figures or {}).items():
        figure.savefig(folder / f"{name}.png", dpi=120, bbox_inches="tight")
        paths.append(folder / f"{name}.png")
    for name, text in (files or {}).items():
        (folder / name).write_text(text)
        paths.append(folder / name)
    paths += sorted(path for path in ENGINE_FILES if path.parent == folder and path.is_file())
    record = provenance(config, argv, started, [p.name for p in paths], options or {})
    paths.append(write_run_json(folder, record))
    return paths


@dataclass(frozen=True)
class StudyInfo:
    """What a finished search tells later commands: base, dataset and the winning coefficients."""

    name: str
    base: str
    width: float
    dataset: str
    alpha: float
    beta: float
    gamma: float
    folder: Path
    members: tuple[str, ...] = ()


def study_info(name: str, studies_dir: Path = STUDIES_DIR) -> StudyInfo:
    """Read studies/<name>/summary.json (written by scaler search); a study without a winner is a user error."""
    folder = study_folder(name, studies_dir)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise UserError(
            f"no finished search at {summary_path}; run scaler search --study {name} first, or pass --alpha/--beta/--gamma with --base"
        )
    try:
        summary = json.loads(summary_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{summary_path} is not JSON ({error}); rerun scaler search --study {name}") from None
    except OSError as error:
        raise UserError(f"cannot read {summary_path}: {error.strerror or error}") from None
    if not isinstance(summary, dict):
        raise UserError(f"{summary_path} holds a {type(summary).__name__}, not a search summary (an object)")
    coefficients = [summary.get(key) for key in ("alpha", "beta", "gamma")]
    if all(value is None for value in coefficients):
        raise UserError(
            f"study {name!r} has no winner yet (no feasible candidate trained); rerun scaler search --study {name} to go on"
        )
    grid = summary.get("grid") or {}
    if not isinstance(grid, dict):
        raise UserError(f"{summary_path}: field 'grid' is a {type(grid).__name__}, not an object")
    alpha, beta, gamma = (
        summary_number(summary_path, key, value) for key, value in zip(("alpha", "beta", "gamma"), coefficients)
    )
    width = summary_number(summary_path, "grid.width", grid.get("width", 1.0))
    base, dataset = grid.get("base", "mobilenet"), grid.get("dataset", "fashion-mnist")
    for key, value, known in (("grid.base", base, BASES), ("grid.dataset", dataset, DATASET_TASKS)):
        if not isinstance(value, str):
            raise UserError(f"{summary_path}: field {key!r} is {value!r}, not a name")
        if value not in known and not (is_spec_file(value) if key == "grid.base" else is_folder_dataset(value)):
            raise UserError(f"{summary_path}: field {key!r} is {value!r}, not one of {', '.join(known)}")
    members = summary.get("members") or []
    labels = tuple(str(m) for m in members) if isinstance(members, list) else ()
    return StudyInfo(name, base, width, dataset, alpha, beta, gamma, folder, labels)


def summary_number(path: Path, key: str, value: Any) -> float:
    """A positive finite number read from a study's JSON file; else one line naming the file and the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UserError(f"{path}: field {key!r} is {value!r}, not a positive number; rerun the command that wrote it")
    return float(value)


def read_frame(path: Path, columns: list[str], remedy: str, numeric: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CSV a command reads back, with the columns it needs (`numeric` ones all numbers); else one line naming the
    file and what is wrong with it."""
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"{path} is not a readable CSV ({one_line(error, 200)}); {remedy}") from None
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror or error}") from None
    missing = [column for column in columns if column not in frame]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}; {remedy}")
    if frame.empty:
        raise UserError(f"{path} has no rows; {remedy}")
    for column in numeric:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise UserError(f"{path}: column {column!r} holds values that are not numbers; {remedy}")
    return frame
