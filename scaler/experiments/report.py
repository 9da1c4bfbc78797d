"""`scaler report`: a study's report.md, generated from its files alone."""

from __future__ import annotations

import argparse
from pathlib import Path

from scaler.errors import UserError
from scaler.experiments import Argv, Command
from scaler.report.study import REPORT, SECTIONS, refreshed_readme, study_report
from scaler.study.storage import study_folder


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the command."""
    p.add_argument("--study", required=True, help="the folder under studies/ to report on")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if report.md differs from its files")
    p.add_argument(
        "--readme",
        type=Path,
        help="also refresh this file's generated blocks (study summaries, benchmark outputs) from their files",
    )


def main(args: argparse.Namespace, argv: Argv) -> int:
    """scaler report: studies/NAME/report.md from the study's CSV, JSON and PNG files (deterministic)."""
    folder = study_folder(args.study)
    if args.readme is not None and not args.readme.is_file():
        raise UserError(f"--readme {args.readme}: no such file")
    if not folder.is_dir():
        raise UserError(f"no study folder {folder}; run an experiment with --study {args.study} or --out first")
    if not any((folder / name).exists() for name, _ in SECTIONS):
        known = ", ".join(name for name, _ in SECTIONS)
        raise UserError(f"{folder} holds no results to report ({known})")
    text = study_report(folder)
    path = folder / REPORT
    if args.check:
        same = path.exists() and path.read_text() == text
        print(f"{path} {'is' if same else 'is not'} what its files give")
        return 0 if same else 1
    readme, refreshed = "", ""
    if args.readme is not None:
        readme = args.readme.read_text()
        try:
            refreshed = refreshed_readme(readme, Path.cwd())
        except OSError as error:
            raise UserError(f"--readme {args.readme}: a generated block names a file it cannot read: {error}") from None
    path.write_text(text)
    print(f"wrote {path}")
    if refreshed != readme:
        assert args.readme is not None
        args.readme.write_text(refreshed)
        print(f"refreshed the generated blocks of {args.readme}")
    return 0


COMMAND = Command("report", "a study's report.md, generated from its files", add_arguments, main)
