"""Command line: parse, dispatch to the command's module; user errors end in one line and exit status 2."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from scaler.errors import RunFailed, UserError, one_line
from scaler.experiments import (
    Command,
    compare,
    export,
    flgc,
    frelu,
    ladder,
    plot,
    profile,
    report,
    scale,
    search,
    spec,
    worker,
)
from scaler.study.workers import raise_keyboard_interrupt

COMMANDS: tuple[Command, ...] = (
    profile.COMMAND,
    spec.COMMAND,
    search.COMMAND,
    scale.COMMAND,
    frelu.COMMAND,
    ladder.COMMAND,
    compare.COMMAND,
    flgc.COMMAND,
    export.COMMAND,
    plot.COMMAND,
    report.COMMAND,
    worker.COMMAND,
)


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"scaler: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def make_parser() -> Parser:
    """The whole command line: one subcommand per entry of COMMANDS."""
    parser = Parser(prog="scaler", description="Compound scaling of CNNs with FReLU and FLGC variants.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        options = sub.add_parser(command.name, help=command.help, description=command.description)
        command.add_arguments(options)
        options.set_defaults(func=command.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `scaler` console script: user errors exit 2, failed runs 1, interruptions 130 (143 on SIGTERM)."""
    argv = tuple(sys.argv[1:] if argv is None else argv)
    args = make_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    try:
        return int(args.func(args, argv))
    except UserError as error:
        print(f"scaler: error: {one_line(error)}", file=sys.stderr)
        return 2
    except RunFailed as error:
        print(f"scaler: failed: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupt:
        print(
            "scaler: interrupted; finished trials are kept and unfinished ones stay queued: rerun the same command to go on",
            file=sys.stderr,
        )
        return 143 if str(interrupt) == "SIGTERM" else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


if __name__ == "__main__":
    sys.exit(main())
