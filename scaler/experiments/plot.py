"""`scaler plot`: the trade-off figures of a study, redrawn from its scale.csv."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

from scaler.errors import UserError
from scaler.experiments import Argv, Command
from scaler.experiments.scale import PLOTTED_COLUMNS, summarise
from scaler.report.figures import form_of, tradeoff_figures
from scaler.report.files import read_frame, write
from scaler.study.storage import study_folder


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the command."""
    p.add_argument("--study", required=True)


def main(args: argparse.Namespace, argv: Argv) -> int:
    """scaler plot: trade-off figures from a study's scale.csv."""
    path = study_folder(args.study) / "scale.csv"
    if not path.is_file():
        raise UserError(f"no {path}; run scaler scale --study {args.study} first")
    started = time.time()
    frame = read_frame(path, PLOTTED_COLUMNS, f"rerun scaler scale --study {args.study}", tuple(PLOTTED_COLUMNS[1:]))
    figures = tradeoff_figures(summarise(frame), latency_form=form_of(frame))
    paths = write(path.parent, PlotConfig(args.study, path.name), argv, started, figures=figures)
    print("wrote " + ", ".join(map(str, paths)))
    return 0


COMMAND = Command(
    "plot",
    "accuracy/MACs/latency trade-off plots of a study's scale.csv",
    add_arguments,
    main,
)


@dataclass(frozen=True)
class PlotConfig:
    """What `scaler plot` ran on, for run.json: the study and the file it read."""

    study: str
    source: str

    def to_json(self) -> dict[str, Any]:
        """Plain dict."""
        return {"command": "plot", "study": self.study, "source": self.source}
