"""The search's answer: the best set, the pick and its test accuracy, the race table, the response surface, the
files and the printout."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from typing import Any, cast

import numpy as np
import pandas as pd

from scaler.experiments.search.examples import search_examples
from scaler.experiments.search.plan import BASE, RACE, SCREEN
from scaler.experiments.search.queue import GridSearch
from scaler.model.complexity import CONVENTION
from scaler.report.files import write
from scaler.report.study import disambiguation_text
from scaler.study.grid import CONTROL, Candidate, GridPoint
from scaler.study.racing import (
    RACE_RULE,
    SCREEN_RULE,
    contenders_after,
    difference,
    leader,
    next_budget,
)
from scaler.study.run import present
from scaler.study.stats import MOST_SEEDS, crossed_mean, family_columns
from scaler.study.storage import redact
from scaler.study.surface import best_of, fit_surface

PICK_RULE = "the cheapest network of the best set, by MACs, then latency"


def race_table(search: GridSearch, val: dict[str, np.ndarray], best: list[str]) -> pd.DataFrame:
    """race.csv: every network that raced and the base, on the validation images: mean accuracy with its interval
    (seeds and images crossed), the seeds' spread beside the images' floor, the paired difference to the leader
    and to the base (each one family: simultaneous intervals, Holm p, adjusted significance, the seeds an
    unresolved difference needs) and whether it is in the confidence set of the best."""
    raced = [label for label in val if label != BASE]
    if not raced:
        return pd.DataFrame()
    first = leader({label: val[label] for label in best or raced})
    families = {
        "vs_leader": family_columns(
            "vs_leader", {label: difference(val, first, label) for label in raced if label != first}
        ),
        "vs_base": family_columns(
            "vs_base", {label: difference(val, BASE, label) for label in raced} if BASE in val else {}
        ),
    }
    rounds = search.rounds()
    left = search.study.user_attrs.get("left", {})
    rows = []
    for label in sorted(val, key=lambda name: (name == BASE, -float(val[name].mean()), name)):
        estimate = crossed_mean(val[label])
        low, high = estimate.interval()
        cost = search.cost_of(label)
        row: dict[str, Any] = {
            "network": label,
            "role": search.role(label),
            "seeds": len(val[label]),
            "rounds": sum(label in r["networks"] for r in rounds),
            "mean_val_acc": estimate.mean,
            "acc_lo": low,
            "acc_hi": high,
            "seed_sd": estimate.seed_sd,
            "floor": estimate.floor,
            "in_best_set": label in best if label != BASE else None,
            **left_columns(left.get(label)),
            "macs": cost.macs,
            "latency_ms": cost.latency_ms,
        }
        for columns in families.values():
            row |= columns.get(label, {})
        rows.append({key: round(value, 5) if isinstance(value, float) else value for key, value in row.items()})
    return pd.DataFrame(rows)


def left_columns(beaten: dict[str, Any] | None) -> dict[str, Any]:
    """race.csv's account of why a network left: the round whose look left it out, the network that beat it, and
    the difference and interval that decided, as computed then (empty for a network that stayed)."""
    if beaten is None:
        return {"left_round": None, "beaten_by": None, "left_by": None, "left_lo": None, "left_hi": None}
    return {
        "left_round": beaten["round"],
        "beaten_by": beaten["by"],
        "left_by": beaten["mean"],
        "left_lo": beaten["low"],
        "left_hi": beaten["high"],
    }


def answer(search: GridSearch) -> dict[str, Any]:
    """The search's answer from the stage it reached: the confidence set of the best on the validation images
    (the race's seeds, or the screen's seeds before the race), the pick by its stated rule, the pick's test
    accuracy and its difference to the base on the test images (read once, after selection), the class of
    coefficients that builds the pick, and what more budget would buy."""
    stage, val, best = search.best_now()
    if not best:
        return {"stage": None, "best_set": [], "pick": None, "significant": False}
    chosen = search.pick_of(best)
    network = search.feasible[chosen]
    members = [Candidate.from_label(member) for member in network.members]
    settled = disambiguation(search, chosen)
    exported = settled["exported"] if settled else network.label
    rule = (
        "every member builds the same network at this phi; exported is the member whose nominal "
        "alpha*beta^2*gamma^2 is nearest 2^phi (ties by label)"
    )
    if settled:
        rule += f"; then {settled['rule']}"
    result: dict[str, Any] = {
        "stage": stage,
        "best_set": best,
        "leader": leader({label: val[label] for label in best}),
        "pick": chosen,
        "pick_rule": PICK_RULE,
        "resolved": len(best) == 1,
        "class": {
            "members": list(network.members),
            **{
                name: [min(getattr(m, name) for m in members), max(getattr(m, name) for m in members)]
                for name in ("alpha", "beta", "gamma")
            },
            "exported": exported,
            "rule": rule,
        },
        "disambiguation": settled,
    }
    test = search.tables(RACE, "test")
    if chosen in test:
        accuracy = crossed_mean(test[chosen])
        result |= {"pick_test_acc": round(accuracy.mean, 5), "pick_test_ci95": rounded(accuracy.interval())}
    else:
        result |= {"pick_test_acc": None, "pick_test_ci95": None}
    if chosen in test and BASE in test:
        gain = difference(test, BASE, chosen)
        low, high = gain.interval()
        result["vs_base"] = {
            "mean": round(gain.mean, 5),
            "ci95": rounded((low, high)),
            "p": round(gain.p, 5),
            "seeds": min(len(test[chosen]), len(test[BASE])),
            "images": "test",
            "significant": bool(low > 0 or high < 0),
        }
        needed = None if low > 0 or high < 0 else gain.seeds_needed()
        result["vs_base"]["seeds_needed"] = needed if needed is not None or low > 0 or high < 0 else "more images"
    else:
        result["vs_base"] = None
    result["significant"] = bool(result["vs_base"] and result["vs_base"]["significant"])
    if stage == RACE:
        more = next_budget(val, best, search.seconds_per_training())
        result["next_budget"] = {
            "seeds": more.seeds,
            "trainings": more.trainings,
            "minutes": more.minutes,
            "unresolvable": more.unresolvable,
            "rule": "seeds per network at which every member of the best set would differ from the leader "
            "(family-adjusted, 80 % power) if the differences stayed as measured",
        }
    else:
        result["next_budget"] = None
    return result


def disambiguation(search: GridSearch, chosen: str) -> dict[str, Any] | None:
    """With --disambiguate-phi: the distinct networks the pick's class builds there, each on the validation images
    with its interval, their confidence set of the best, and the member exported (the cheapest of that set, by
    MACs at that phi); None without the option. Before it ran (or when it could not), the class's own label."""
    at, stage = search.config.disambiguate_phi, search.phi_stage
    if at is None or stage is None:
        return None
    groups = search.class_at(chosen)
    val, test = search.tables(stage, "val"), search.tables(stage, "test")
    rounds = search.phi_rounds()
    raced = [label for label in (rounds[-1]["networks"] if rounds else []) if label in val]
    best = contenders_after(val, raced) if raced else []
    exported = search.pick_of(best, at) if best else search.feasible[chosen].label
    networks = []
    for label, members in sorted(groups.items()):
        cost = search.cost_of(label, at)
        row: dict[str, Any] = {
            "member": label,
            "members": list(members),
            "macs": cost.macs,
            "latency_ms": cost.latency_ms,
        }
        if label in val:
            estimate = crossed_mean(val[label])
            row |= {"seeds": len(val[label]), "val_acc": round(estimate.mean, 5), "ci95": rounded(estimate.interval())}
            row |= {"seed_sd": round(estimate.seed_sd, 5), "floor": round(estimate.floor, 5)}
        if label in test:
            row["test_acc"] = round(float(test[label].mean()), 5)
        row["in_best_set"] = label in best
        networks.append(row)
    others = [label for label in best if label != exported]
    versus = (
        family_columns("vs_exported", {label: difference(val, exported, label) for label in others}) if others else {}
    )
    for row in networks:
        row |= {
            key: round(value, 5) if isinstance(value, float) else value
            for key, value in versus.get(row["member"], {}).items()
        }
    return {
        "phi": at,
        "of": chosen,
        "distinct": len(groups),
        "networks": networks,
        "best_set": best,
        "exported": exported,
        "rule": f"at phi={at:g} the class's distinct networks race on the validation images; exported is the member "
        "building the cheapest network (MACs, then latency) of their 95 % confidence set of the best"
        + ("" if best else " (not raced: the class's own label)"),
        "rounds": rounds,
        "end": search.phi_end(),
        "resolved": len(best) == 1 or len(groups) == 1,
    }


def rounded(pair: tuple[float, float]) -> list[float]:
    """An interval as a JSON pair of 5-decimal floats."""
    return [round(float(pair[0]), 5), round(float(pair[1]), 5)]


def response_surface(frame: pd.DataFrame, networks: dict[str, GridPoint]) -> dict[str, Any]:
    """A polynomial over the screened networks' log (depth, width, resolution) as built: its best network and fit error."""
    screened = frame[(frame.stage == SCREEN) & (frame.state == "COMPLETE")]
    screened = screened.groupby("network", as_index=False).val_acc.mean()  # over the screen's seeds
    if screened.empty:
        screened = frame[(frame.stage == RACE) & (frame.state == "COMPLETE") & (frame.network != BASE)]
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
        "best": best if surface.loo_rmse < mean_rmse else None,
        "predicted_val_acc": round(predicted, 5) if surface.loo_rmse < mean_rmse else None,
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
    """summary.json (the answer, the plan, how the budget was spent) and race.csv, from the study as it stands."""
    frame = search.trials()
    verdict = answer(search)
    race_val = search.tables(RACE, "val")
    table = race_table(search, race_val, verdict["best_set"]) if verdict.get("stage") == RACE else pd.DataFrame()
    summary: dict[str, Any] = {
        key: None for key in ("alpha", "beta", "gamma", "val_acc", "ci95", "macs", "macs_ratio", "params", "latency_ms")
    }
    chosen = verdict.get("pick")
    if chosen:
        network = search.feasible[chosen]
        cost = search.cost_of(chosen)
        val = (race_val if verdict["stage"] == RACE else search.tables(SCREEN, "val"))[chosen]
        estimate = crossed_mean(val)
        exported = Candidate.from_label(verdict["class"]["exported"])  # the class's label or its settled member
        summary.update(
            asdict(exported),
            val_acc=round(estimate.mean, 5),
            ci95=rounded(estimate.interval()),
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
    stages = (SCREEN, RACE, *([search.phi_stage] if search.phi_stage else []))
    stage_counts = {stage: int((frame.stage == stage).sum()) for stage in stages}
    plan = search.plan()
    return summary | verdict | {
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
        "budget_seconds": search.config.budget,
        "plan": asdict(plan) if plan else None,
        "fidelity": fidelity_summary(search),
        "screen_rule": SCREEN_RULE,
        "screened_out": search.study.user_attrs.get("screened_out", {}),
        "race_rule": RACE_RULE,
        "look_confidence": round(search.look_level(), 6),
        "left": search.study.user_attrs.get("left", {}),
        "rounds": search.rounds(),
        "race_end": search.race_end(),
        "stages": stage_counts,
        "failed": int((frame.state == "FAIL").sum()),
        "failures": [
            {"number": int(row.number), "job": f"{row.stage}:{row.network}:{row.seed}", "reason": row.failure}
            for row in frame[frame.state == "FAIL"].itertuples()
        ],
        "ranking": [present({str(k): v for k, v in row.items()}) for row in table.to_dict("records")],
        "surface": response_surface(frame, search.feasible),
        "seconds_per_trial": {
            stage: round(float(trained[trained.stage == stage].train_seconds.mean()), 1)
            for stage in stages
            if (trained.stage == stage).any()
        },
        "wall_seconds": round(wall_seconds, 1),
    }, table


def fidelity_summary(search: GridSearch) -> dict[str, Any] | None:
    """The fidelity ladder's rungs, target and fewest images, with its verdict on the race's images (None when the
    fidelity was fixed by --epochs)."""
    fidelity, plan = search.fidelity(), search.plan()
    if fidelity is None or plan is None:
        return None
    base = search.tables(RACE, "val").get(BASE)
    measured = (float(base.mean()), len(base)) if base is not None and len(base) else None
    return fidelity.to_json() | {
        "race_images": plan.race_images,
        "base_at_proxy": None if measured is None else {"val_acc": round(measured[0], 5), "seeds": measured[1]},
        "verdict": fidelity.verdict(plan.race_images, measured),
    }


def write_outputs(search: GridSearch, started: float) -> dict[str, Any]:
    """trials.csv, grid.csv, race.csv, search.png, summary.json and search_examples.npz (every training's
    per-example outputs) of the study as it stands; the summary."""
    from scaler.report.figures import search_figure

    arrays = search_examples(search)
    if arrays:
        search.config.folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(search.config.folder / "search_examples.npz", **cast(dict[str, Any], arrays))
    summary, table = summarise(search, time.time() - started)
    frame = search.trials()
    write(
        search.config.folder,
        search.config,
        search.config.argv,
        started,
        frames={"trials": frame, "grid": space_frame(search), "race": table},
        figures={"search": search_figure(frame, table, summary)},
        options={"storage": redact(search.config.storage_url)},
        files={"summary.json": json.dumps(summary, indent=1, default=float)},
    )
    return summary


def print_search_summary(summary: dict[str, Any], config: Any) -> None:
    """Human summary of a search: the space, the plan, the screen, the race with its intervals, the answer."""
    control = summary["control"]
    snapped = f", snapped to {control['network']}" if control["snapped"] else ""
    plan = summary.get("plan") or {}
    print(
        f"\n# {summary['study']}: {summary['networks']} distinct networks on the grid, {summary['feasible']} within "
        f"{config.ratio_tolerance:.0%} of {2**config.phi:g}x MACs; budget {summary['budget_seconds'] / 60:.1f} min: "
        f"{summary['stages']['screen']} screen trainings on {plan.get('screen_images')} images, "
        f"{summary['stages']['race']} race trainings on {plan.get('race_images')} images; {summary['failed']} failed"
    )
    print(f"# {CONVENTION}; control: EfficientNet (1.2, 1.1, 1.15){snapped}; selection on validation images only")
    if summary.get("fidelity"):
        print(f"fidelity: {summary['fidelity']['verdict']}")
    if summary["screened_out"]:
        print(f"screen: {', '.join(summary['screened_out'])} left ({summary['screen_rule']})")
    rounds = summary["rounds"]
    if rounds:
        print(
            f"race: {len(rounds)} round(s) on seeds {', '.join(str(r['seed']) for r in rounds)}; "
            f"{summary['race_end'] or 'not over: rerun the same command to go on'}"
        )
    if summary["ranking"]:
        print(
            f"{'network':<20}{'role':<11}{'seeds':>6}{'val_acc':>9}{'95% CI':>18}{'seed sd/floor':>15}"
            f"{'vs leader (adjusted)':>27}{'vs base (adjusted)':>27}{'best set':>10}"
        )
        for row in summary["ranking"]:
            cells = []
            for name in ("vs_leader", "vs_base"):
                value = row.get(name)
                if isinstance(value, float) and not math.isnan(value) and row[f"{name}_hi"] - row[f"{name}_lo"] > 2:
                    cells.append(f"{100 * value:+.2f} (too few seeds)")
                elif isinstance(value, float) and not math.isnan(value):
                    cells.append(f"{100 * value:+.2f} [{100 * row[f'{name}_lo']:+.2f}, {100 * row[f'{name}_hi']:+.2f}]")
                else:
                    cells.append("")
            best = {True: "yes", False: "no"}.get(row.get("in_best_set"), "")
            interval = f"[{row['acc_lo']:.4f}, {row['acc_hi']:.4f}]" if "acc_lo" in row else ""
            noise = "/".join(f"{100 * row[key]:.2f}" if key in row else "–" for key in ("seed_sd", "floor"))
            print(
                f"{row['network']:<20}{row['role']:<11}{row['seeds']:>6}{row['mean_val_acc']:>9.4f}{interval:>18}"
                f"{noise:>15}{cells[0]:>27}{cells[1]:>27}{best:>10}"
            )
    for label, beaten in (summary.get("left") or {}).items():
        print(
            f"left after round {beaten['round']}: {label}, {beaten['by']} ahead by {100 * beaten['mean']:+.2f} "
            f"[{100 * beaten['low']:+.2f}, {100 * beaten['high']:+.2f}] points (one-sided error {beaten['error']:.4f})"
        )
    if summary["pick"] is None:
        print("no answer yet: nothing has finished training; rerun the same command to go on")
    else:
        klass = summary["class"]
        ranges = ", ".join(
            f"{name} {low:.2f}" if low == high else f"{name} {low:.2f}-{high:.2f}"
            for name, (low, high) in ((n, klass[n]) for n in ("alpha", "beta", "gamma"))
        )
        where = (
            "the race"
            if summary["stage"] == "race"
            else "the screen alone (its seeds, at its fewer images; the race never ran)"
        )
        print(f"best set (95 %, from {where}): {', '.join(summary['best_set'])}")
        print(
            f"pick: {summary['pick']} ({summary['pick_rule']}); alpha={summary['alpha']:.2f} beta={summary['beta']:.2f} "
            f"gamma={summary['gamma']:.2f}, exported from the class {ranges} "
            f"(built: depth x{summary['depth']:.2f}, width x{summary['width']:.2f}, "
            f"resolution x{summary['resolution']:.2f}); MACs {summary['macs'] / 1e6:.2f} M "
            f"(x{summary['macs_ratio']:.3f}), latency {summary['latency_ms']:.2f} ms"
        )
        if summary["pick_test_acc"] is not None:
            low, high = summary["pick_test_ci95"]
            print(
                f"pick test accuracy: {summary['pick_test_acc']:.4f} [{low:.4f}, {high:.4f}] (test images, read once)"
            )
        settled = summary.get("disambiguation")
        if settled:
            print(disambiguation_text(settled))
        gain = summary.get("vs_base")
        if gain:
            low, high = gain["ci95"]
            needs = gain["seeds_needed"] if isinstance(gain["seeds_needed"], str) else f"{gain['seeds_needed']} seeds"
            word = "significant" if gain["significant"] else f"NOT significant (needs {needs})"
            print(
                f"pick vs base on the test images: {100 * gain['mean']:+.2f} points [{100 * low:+.2f}, "
                f"{100 * high:+.2f}] over {gain['seeds']} paired seeds: {word}"
            )
        more = summary.get("next_budget")
        if more and more["seeds"] and more["seeds"] > MOST_SEEDS:
            print(
                f"next budget: more than {MOST_SEEDS} seeds per network would be needed to separate the best set: "
                "at this fidelity its members are as good as one another"
            )
        elif more and more["seeds"]:
            print(
                f"next budget: {more['seeds']} seeds per network ({more['trainings']} more trainings, about "
                f"{more['minutes']:.0f} min) would separate the best set"
                + (f"; {', '.join(more['unresolvable'])} need more images, not seeds" if more["unresolvable"] else "")
            )
        elif more and more["unresolvable"]:
            print(f"next budget: {', '.join(more['unresolvable'])} cannot be separated by more seeds (more images)")
    surface = summary["surface"]
    if surface.get("fitted"):
        verdict = (
            f"best {surface['best']}, predicted {surface['predicted_val_acc']:.4f}"
            if surface["skill"]
            else "no skill (predicting the mean does as well), so no argmax is reported"
        )
        print(
            f"response surface ({surface['model']}, {surface['points']} points, leave-one-out error "
            f"{100 * surface['loo_rmse']:.2f} points against {100 * surface['mean_loo_rmse']:.2f} for the mean): {verdict}"
        )
    per_trial = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in summary["seconds_per_trial"].items())
    print(f"time: {summary['wall_seconds']:.0f} s wall; per training: {per_trial or 'none yet'}")
    print(
        f"wrote {config.folder}/trials.csv, grid.csv, race.csv, search.png, summary.json, run.json; "
        f"storage {redact(config.storage_url)}"
    )
