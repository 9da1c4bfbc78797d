"""Does the search's proxy rank networks as longer training does? Kendall tau between short and long runs.

Reads a finished `scaler search` study (its grid.csv and trials.csv), retrains every feasible network
with `--factor` times the search's full budget (epochs x factor, the selection seed, the same split) through
scaler's one evaluate path, and prints the screen ranking, the long ranking, Kendall's tau between them
with its p-value, tau between the race means and the long run over the raced networks, and where the
search's pick lands in the long ranking (a study made before the race: its confirmation and winner). Last line:
kendall_tau=<tau> p=<p> winner_long_rank=<k> networks=<n> seconds=<s>

    python benchmarks/proxy_rank.py --study mobilenet-w0.25-fashion-mnist [--factor 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
from scipy import stats

from scaler.experiments.search.config import SearchConfig
from scaler.experiments.search.plan import RACE, SCREEN
from scaler.experiments.search.queue import GridSearch
from scaler.report.files import write
from scaler.study.run import evaluate
from scaler.study.storage import STUDIES_DIR, default_url, open_study

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="mobilenet-w0.25-fashion-mnist")
    parser.add_argument("--factor", type=int, default=3, help="long budget = the search's epochs x factor")
    parser.add_argument("--out", default=str(RESULTS / "proxy_rank"))
    args = parser.parse_args()
    folder = STUDIES_DIR / args.study
    stored = open_study(default_url(args.study), args.study, create=False).user_attrs["config"]
    config = SearchConfig.from_json(stored, storage=None, progress=False, argv=tuple(sys.argv))
    search = GridSearch(config, log=lambda line: None, enqueue=False)
    trials = pd.read_csv(folder / "trials.csv")
    summary = json.loads((folder / "summary.json").read_text())
    screen = trials[(trials.stage == SCREEN) & (trials.state == "COMPLETE")].set_index("network").val_acc
    raced = trials[trials.stage.isin([RACE, "confirm"]) & (trials.state == "COMPLETE") & (trials.network != "base")]
    race_means = raced.groupby("network").val_acc.mean()
    long_config = replace(config.train, epochs=config.train.epochs * args.factor, seed=config.seed)
    started = time.time()
    run = replace(search.setup, config=replace(search.setup.config, folder=Path(args.out), argv=tuple(sys.argv)))
    progress = Path(args.out) / "long_runs.csv"  # one row per finished long run: a rerun goes on from there
    done = (
        pd.read_csv(progress)
        if progress.is_file()
        else pd.DataFrame(columns=["network", "long_val_acc", "train_seconds"])
    )
    progress.parent.mkdir(parents=True, exist_ok=True)
    for label in sorted(search.feasible):
        if label in set(done.network):
            print(f"{label}: long run already done ({progress})")
            continue
        row = evaluate(search.spec_of(label), run, long_config, test=False, description=f"long {label}")
        result = {"network": label, "long_val_acc": row.val_acc, "train_seconds": row.train_seconds}
        done = pd.concat([done, pd.DataFrame([result])], ignore_index=True)
        done.to_csv(progress, index=False)
        print(f"{label}: long ({long_config.epochs} epochs) val_acc {row.val_acc:.4f} in {row.train_seconds:.0f} s")
    frame = done.set_index("network").astype(float)
    frame["screen_val_acc"] = screen
    frame["race_mean_val_acc"] = race_means
    frame = frame.sort_values("long_val_acc", ascending=False)
    frame["long_rank"] = range(1, len(frame) + 1)
    screened = frame.dropna(subset=["screen_val_acc"])
    tau, p = stats.kendalltau(screened.screen_val_acc, screened.long_val_acc)
    finalists = frame.dropna(subset=["race_mean_val_acc"])
    print(
        f"\n{args.study}: {len(frame)} feasible networks; long budget {long_config.epochs} epochs, seed {config.seed}"
    )
    print(frame.round(4).to_string())
    print(f"screen vs long: Kendall tau {tau:.3f} (p = {p:.3f}) over {len(screened)} networks")
    if len(finalists) > 2:
        tau_c, p_c = stats.kendalltau(finalists.race_mean_val_acc, finalists.long_val_acc)
        print(f"race means vs long: Kendall tau {tau_c:.3f} (p = {p_c:.3f}) over {len(finalists)} raced networks")
    winner = summary.get("pick") or (summary.get("confirmation") or {}).get("winner")
    rank = int(frame.long_rank[winner]) if winner in frame.index else -1
    print(f"the search's pick {winner} is number {rank} of {len(frame)} in the long run (top 3: {0 < rank <= 3})")
    seconds = time.time() - started
    write(Path(args.out), config, tuple(sys.argv), started, frames={"proxy_rank": frame.reset_index()})
    print(f"kendall_tau={tau:.3f} p={p:.3f} winner_long_rank={rank} networks={len(frame)} seconds={seconds:.0f}")


if __name__ == "__main__":
    main()
