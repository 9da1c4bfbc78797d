"""`scaler spec`: a base network's table as a TOML (or JSON) file to edit and give back to --base."""

from __future__ import annotations

import argparse
import sys

from scaler.experiments import Argv, Command
from scaler.model.specfile import spec_json, spec_text
from scaler.model.zoo import BASES, table


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the command."""
    p.add_argument(
        "--base",
        default="mobilenet",
        help=f"base network: {', '.join(BASES)}, or a .toml/.json network file (default mobilenet)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of TOML")


def main(args: argparse.Namespace, argv: Argv) -> int:
    """scaler spec: the table on stdout."""
    spec = table(args.base)
    sys.stdout.write(spec_json(spec) if args.json else spec_text(spec))
    return 0


COMMAND = Command(
    "spec",
    "print a base network's table as TOML (or JSON) to edit and pass back as --base FILE",
    add_arguments,
    main,
    description="Print the table of a base network (stem, stages, head) as TOML, or JSON with --json. Save it, "
    "edit it, and give the file to any command's --base: `scaler spec --base mobilenet > mine.toml`, then "
    "`scaler profile --base mine.toml`. The input size and classes come from the task, as for a zoo name.",
)
