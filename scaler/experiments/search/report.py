"""The search's answer: the confirmation with its intervals, the response surface, the files and the printout."""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from scaler.experiments.search.queue import BASE, CONFIRM, SCREEN, GridSearch, diverged
from scaler.model.complexity import CONVENTION
from scaler.report.files import write
from scaler.study.grid import CONTROL, GridPoint
from scaler.study.run import present
from scaler.study.stats import accuracy_interval, best_set, family_columns, paired_difference, seed_mean
from scaler.study.storage import (
    redact,
)
from scaler.study.surface import best_of, fit_surface


def confirmation(
    frame: pd.DataFrame, finalists: list[str], seeds: list[int], roles: dict[str, str]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Each finalist on the fresh seeds: mean with its CI, paired differences to the winner and the base, and
    whether it is in the 95 % confidence set of the best scaled network (`stats.best_set`). The differences to the
    winner and to the base are each one family (simultaneous intervals, Holm p, `*_significant` adjusted).

    A finalist whose training diverged on a seed is left out (`diverged`); of the others, only seeds every one
    has finished are used, so every comparison is paired. `complete` once every remaining finalist has every
    seed. The winner is the best mean among the scaled networks (the base is the reference, not a candidate);
    `significant` means the winner's paired CI against the runner-up excludes zero.
    """
    confirm = frame[frame.stage == CONFIRM]
    failed = sorted(set(confirm[diverged(confirm)].network))
    done = confirm[(confirm.state == "COMPLETE") & ~confirm.network.isin(failed)]
    table = done.pivot_table(index="seed", columns="network", values="val_acc", aggfunc="first").dropna()
    table.index = table.index.astype(int)
    remaining = [label for label in finalists if label not in failed]
    complete = set(table.columns) == set(remaining) and sorted(table.index) == sorted(seeds)
    if table.empty or len(table) < 2 or len(table.columns) < 2:
        return pd.DataFrame(), {"seeds": [int(s) for s in table.index], "complete": False, "diverged": failed}
    scaled = [label for label in table.columns if label != BASE]
    means = table.mean()
    ranked = sorted(scaled, key=lambda label: (-means[label], label))
    winner = ranked[0]
    in_best = best_set({label: table[label].tolist() for label in scaled})
    labels = [*ranked, *([BASE] if BASE in table else [])]
    families = {
        name: family_columns(
            f"vs_{name}",
            {
                label: seed_mean((table[label] - table[other]).tolist())
                for label in labels
                if other in table and other != label
            },
        )
        for other, name in ((winner, "winner"), (BASE, "base"))
    }
    rows = []
    for label in labels:
        mean, low, high = accuracy_interval(table[label].tolist())
        row: dict[str, Any] = {
            "network": label,
            "role": roles.get(label, "candidate"),
            "seeds": len(table),
            "mean_val_acc": round(mean, 5),
            "acc_lo": round(low, 5),
            "acc_hi": round(high, 5),
            "std": round(statistics.stdev(table[label]), 5),
            "in_best_set": in_best.get(label),
        }
        for columns in families.values():
            row |= {
                key: round(value, 5) if isinstance(value, float) else value
                for key, value in columns.get(label, {}).items()
            }
        rows.append(row)
    result: dict[str, Any] = {
        "seeds": [int(s) for s in table.index],
        "complete": complete,
        "diverged": failed,
        "winner": winner,
    }
    if len(ranked) > 1:
        diff = paired_difference(table[ranked[1]].tolist(), table[winner].tolist())
        result |= {
            "runner_up": ranked[1],
            "gap": round(diff.mean, 5),
            "gap_ci95": [round(diff.low, 5), round(diff.high, 5)],
            "significant": diff.significant,
        }
    return pd.DataFrame(rows), result


def response_surface(frame: pd.DataFrame, networks: dict[str, GridPoint]) -> dict[str, Any]:
    """A polynomial over the screened networks' log (depth, width, resolution) as built: its best network and fit error."""
    screened = frame[(frame.stage == SCREEN) & (frame.state == "COMPLETE")]
    if screened.empty:
        screened = frame[(frame.stage == CONFIRM) & (frame.state == "COMPLETE") & (frame.network != BASE)]
        screened = screened.groupby("network", as_index=False).val_acc.mean()
    labels = [label for label in screened.network if label in networks]
    if not labels:
        return {"fitted": False, "reason": "no trained network yet"}

    def coordinates(names: list[str]) -> np.ndarray:
        return np.log([[networks[name].depth, networks[name].width, networks[name].resolution] for name in names])

    values = screened.set_index("network").loc[labels].val_acc.to_numpy(dtype=float)
    surface = fit_surface(coordinates(labels), values)
    if surface is None:
        return {"fitted": False, "reason": f"{len(labels)} trained networks are too few for a surface"}
    feasible = sorted(networks)
    best, predicted = best_of(surface, coordinates(feasible), feasible)
    mean_rmse = float(np.std(values, ddof=1) * np.sqrt(len(values) / (len(values) - 1)))  # leave-one-out of the mean
    return {
        "fitted": True,
        "skill": surface.loo_rmse < mean_rmse,
        "mean_loo_rmse": round(mean_rmse, 5),
        "model": surface.model,
        "points": surface.n,
        "parameters": surface.parameters,
        "loo_rmse": round(surface.loo_rmse, 5),
        "fit_rmse": round(surface.fit_rmse, 5),
        "best": best,
        "predicted_val_acc": round(predicted, 5),
    }


def space_frame(search: GridSearch) -> pd.DataFrame:
    """grid.csv: every distinct network of the grid, its members, measured MACs ratio and feasibility."""
    rows = []
    for network in search.networks:
        data = network.to_json()
        data["members"] = " ".join(network.members)
        data["role"] = search.role(network.label) if network.feasible else ""
        rows.append(data)
    return pd.DataFrame(rows)


def summarise(search: GridSearch, wall_seconds: float) -> tuple[dict[str, Any], pd.DataFrame]:
    """The winner (None until the confirmation is done), the confirmation table and what the user needs to judge it."""
    frame = search.trials()
    roles = {label: search.role(label) for label in [*search.feasible, BASE]}
    table, verdict = confirmation(frame, search.finalists() or [], search.config.confirm_seed_list, roles)
    summary: dict[str, Any] = {
        key: None for key in ("alpha", "beta", "gamma", "val_acc", "ci95", "macs", "macs_ratio", "params", "latency_ms")
    }
    winner = verdict.get("winner") if verdict.get("complete") else None
    if winner:
        network = search.feasible[winner]
        row = table.set_index("network").loc[winner]
        cost = search.cost_of(winner)
        summary.update(
            asdict(network.candidate),
            val_acc=float(row.mean_val_acc),
            ci95=[float(row.acc_lo), float(row.acc_hi)],
            macs=cost.macs,
            macs_ratio=network.macs_ratio,
            params=cost.params,
            latency_ms=cost.latency_ms,
            depth=network.depth,
            width=network.width,
            resolution=network.resolution,
            members=list(network.members),
        )
    trained = frame[frame.epochs > 0]
    stage_counts = {stage: int((frame.stage == stage).sum()) for stage in (SCREEN, CONFIRM)}
    return summary | {
        "study": search.config.study_name,
        "grid": search.study.user_attrs.get("grid"),
        "trials": int(len(frame)),
        "networks": len(search.networks),
        "feasible": len(search.feasible),
        "control": {
            "network": search.control.label,
            "coefficients": asdict(CONTROL),
            "snapped": search.control_snapped,
        },
        "finalists": search.finalists(),
        "stages": stage_counts,
        "failed": int((frame.state == "FAIL").sum()),
        "failures": [
            {"number": int(row.number), "job": f"{row.stage}:{row.network}:{row.seed}", "reason": row.failure}
            for row in frame[frame.state == "FAIL"].itertuples()
        ],
        "confirmation": verdict,
        "ranking": [present({str(k): v for k, v in row.items()}) for row in table.to_dict("records")],
        "surface": response_surface(frame, search.feasible),
        "seconds_per_trial": {
            stage: round(float(trained[trained.stage == stage].train_seconds.mean()), 1)
            for stage in (SCREEN, CONFIRM)
            if (trained.stage == stage).any()
        },
        "wall_seconds": round(wall_seconds, 1),
    }, table


def write_outputs(search: GridSearch, started: float) -> dict[str, Any]:
    """trials.csv, grid.csv, confirm.csv, search.png and summary.json of the study as it stands; the summary."""
    from scaler.report.figures import search_figure

    summary, table = summarise(search, time.time() - started)
    frame = search.trials()
    write(
        search.config.folder,
        search.config,
        search.config.argv,
        started,
        frames={"trials": frame, "grid": space_frame(search), "confirm": table},
        figures={"search": search_figure(frame, table, summary)},
        options={"storage": redact(search.config.storage_url)},
        files={"summary.json": json.dumps(summary, indent=1, default=float)},
    )
    return summary


def print_search_summary(summary: dict[str, Any], config: Any) -> None:
    """Human summary of a finished search: the space, the screen, the confirmation with its intervals."""
    from scaler.study.storage import redact

    control = summary["control"]
    snapped = f", snapped to {control['network']}" if control["snapped"] else ""
    print(
        f"\n# {summary['study']}: {summary['networks']} distinct networks on the grid, {summary['feasible']} within "
        f"{config.ratio_tolerance:.0%} of {2**config.phi:g}x MACs; {summary['stages']['screen']} screen and "
        f"{summary['stages']['confirm']} confirmation trainings, {summary['failed']} failed"
    )
    print(f"# {CONVENTION}; control: EfficientNet (1.2, 1.1, 1.15){snapped}")
    verdict = summary["confirmation"]
    if summary["alpha"] is None:
        print("the confirmation has not finished: rerun the same command to go on")
    else:
        print(
            f"winner: alpha={summary['alpha']:.2f} beta={summary['beta']:.2f} gamma={summary['gamma']:.2f} "
            f"(built: depth x{summary['depth']:.2f}, width x{summary['width']:.2f}, resolution x{summary['resolution']:.2f})  "
            f"MACs {summary['macs'] / 1e6:.2f} M (x{summary['macs_ratio']:.3f} of φ=0)  params {summary['params'] / 1e6:.2f} M  "
            f"latency {summary['latency_ms']:.2f} ms"
        )
        print(
            f"{'network':<22}{'role':<11}{'mean val_acc':>13}{'95% CI':>20}{'vs winner (95% CI)':>30}{'vs base (95% CI)':>30}{'best set':>10}"
        )
        for row in summary["ranking"]:
            cells = []
            for name in ("winner", "base"):
                if isinstance(row.get(f"vs_{name}"), float) and not math.isnan(row[f"vs_{name}"]):
                    cells.append(
                        f"{100 * row[f'vs_{name}']:+.2f} [{100 * row[f'vs_{name}_lo']:+.2f}, {100 * row[f'vs_{name}_hi']:+.2f}] pt"
                    )
                else:
                    cells.append("")
            best = {True: "yes", False: "no"}.get(row.get("in_best_set"), "")
            interval = f"[{row['acc_lo']:.4f}, {row['acc_hi']:.4f}]"
            print(
                f"{row['network']:<22}{row['role']:<11}{row['mean_val_acc']:>13.4f}"
                f"{interval:>20}{cells[0]:>30}{cells[1]:>30}{best:>10}"
            )
        if "significant" in verdict:
            word = "significant" if verdict["significant"] else "NOT significant (the CI includes 0)"
            low, high = verdict["gap_ci95"]
            print(
                f"winner vs runner-up {verdict['runner_up']}: {100 * verdict['gap']:+.2f} points, 95% CI "
                f"[{100 * low:+.2f}, {100 * high:+.2f}] over {len(verdict['seeds'])} paired seeds -> {word}"
            )
    surface = summary["surface"]
    if surface.get("fitted"):
        answer = (
            f"best {surface['best']}, predicted {surface['predicted_val_acc']:.4f}"
            if surface["skill"]
            else "no skill (predicting the mean does as well), so its argmax means nothing"
        )
        print(
            f"response surface ({surface['model']}, {surface['points']} points, leave-one-out error "
            f"{100 * surface['loo_rmse']:.2f} points against {100 * surface['mean_loo_rmse']:.2f} for the mean): {answer}"
        )
    else:
        print(f"response surface not fitted: {surface['reason']}")
    per_trial = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in summary["seconds_per_trial"].items())
    print(f"time: {summary['wall_seconds']:.0f} s wall; per training: {per_trial or 'none yet'}")
    print(
        f"wrote {config.folder}/trials.csv, grid.csv, confirm.csv, search.png, summary.json, run.json; "
        f"storage {redact(config.storage_url)}"
    )
