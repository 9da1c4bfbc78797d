"""`scaler worker`: join any command's study (a search, or the runs of scale, frelu, flgc...) and run its queue."""

from __future__ import annotations

import argparse

import optuna

from scaler.errors import UserError
from scaler.experiments import Argv, Command
from scaler.experiments.search.queue import join_study
from scaler.study.engine import RUNNER, join_plan
from scaler.study.run import RunConfig
from scaler.study.storage import check_study_name, open_study


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The study to join, where it is stored, and where the data are on this machine."""
    p.add_argument("--study", required=True, help="the study's name, as the command that made it printed it")
    p.add_argument("--storage", required=True, help="the study's Optuna RDB URL, e.g. postgresql://user@host/db")
    p.add_argument("--data-dir", help="folder with the dataset files on this machine")


def main(args: argparse.Namespace, argv: Argv) -> int:
    """Run the queued trainings of an existing study until its queue is empty."""
    check_study_name(args.study)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    attrs = open_study(args.storage, args.study, create=False).user_attrs
    if RUNNER in attrs:
        overrides = {"storage": args.storage, "progress": False, "workers": 1}
        try:
            config = RunConfig.from_json(
                attrs["config"], **overrides | ({"data_dir": args.data_dir} if args.data_dir else {})
            )
        except (KeyError, TypeError) as error:
            raise UserError(f"study {args.study!r} was made by another scaler version ({error})") from None
        ran = join_plan(config, args.study)
    else:
        ran = join_study(args.study, args.storage, args.data_dir)
    print(f"worker finished: {ran} trial(s) run by this worker; the queue of {args.study} is empty")
    return 0


COMMAND = Command(
    "worker",
    "join a study started by another command (e.g. on PostgreSQL) and run its queued trainings",
    add_arguments,
    main,
)
