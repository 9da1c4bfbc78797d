"""Pruning against no pruning on the same grid: trial-epochs saved and whether the best candidate changed.

Runs (or resumes) two searches that differ only in --pruner, then compares their trials.csv. The
median-pruned one is the default study, i.e. exactly `scaler search --base mobilenet --phi 1`.

    python benchmarks/pruning.py [--pruner median] [extra `scaler search` options...]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

import pandas as pd

from scaler.cli import main as scaler_main


def run(study: str | None, pruner: str, extra: list[str]) -> dict:
    """Run one search (the default study name when `study` is None) and return the summary.json it wrote."""
    named = ["--study", study] if study else []
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = scaler_main(["search", *named, "--pruner", pruner, "--no-progress", "--json", *extra])
    if code:
        sys.exit(code)
    written = json.loads(printed.getvalue().strip().splitlines()[-1])["study"]
    return json.loads((Path("studies") / written / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pruner", default="median")
    parser.add_argument("--base", default="mobilenet")
    args, extra = parser.parse_known_args()
    extra = ["--base", args.base, *extra]
    pruned = run(None if args.pruner == "median" else f"{args.base}-pruner-{args.pruner}", args.pruner, extra)
    full = run(f"{args.base}-pruner-none", "none", extra)
    frames = {
        name: pd.read_csv(Path("studies") / s["study"] / "trials.csv")
        for name, s in (("pruned", pruned), ("full", full))
    }
    epochs = {name: int(frame.epochs.sum()) for name, frame in frames.items()}
    seconds = {name: float(frame.train_seconds.sum()) for name, frame in frames.items()}
    best = {name: (s["alpha"], s["beta"], s["gamma"]) for name, s in (("pruned", pruned), ("full", full))}
    print(f"{'':<24}{args.pruner:>12}{'none':>12}")
    print(f"{'trial-epochs':<24}{epochs['pruned']:>12}{epochs['full']:>12}")
    print(f"{'grid training seconds':<24}{seconds['pruned']:>12.0f}{seconds['full']:>12.0f}")
    print(f"{'pruned trials':<24}{pruned['pruned']:>12}{full['pruned']:>12}")
    print(f"{'best (a, b, g)':<24}{str(best['pruned']):>12}{str(best['full']):>12}")
    print(
        f"trial-epochs saved by {args.pruner}: {1 - epochs['pruned'] / epochs['full']:.0%}; "
        f"best candidate {'unchanged' if best['pruned'] == best['full'] else 'CHANGED'}"
    )
    ranked = frames["full"][frames["full"].constraint <= 0].sort_values("val_acc", ascending=False)
    print(
        "no-pruning ranking (val_acc): "
        + ", ".join(
            f"{a:.2f}/{b:.2f}/{g:.2f} {v:.4f}"
            for a, b, g, v in zip(ranked.alpha, ranked.beta, ranked.gamma, ranked.val_acc)
        )
    )


if __name__ == "__main__":
    main()
