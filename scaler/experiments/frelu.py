"""`scaler frelu`: which stages get FReLU, as a two-objective Optuna study over per-stage masks."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from scaler.engine import recording_interruptions
from scaler.errors import UserError
from scaler.plots import pareto_mask
from scaler.run import Cost, Log, Setup, evaluate, interleaved_costs
from scaler.spec import NetSpec
from scaler.stats import accuracy_interval, bootstrap_p_best, mean_interval, paired_difference
from scaler.storage import GridExhausted, enqueue_missing, open_study
from scaler.train import TrainingDiverged
from scaler.variants import apply_variant

EFFECT_COLUMNS = ["stage", "d_val_acc", "d_val_acc_lo", "d_val_acc_hi", "significant", "d_latency_ms", "latency_ratio"]
TRIAL_COLUMNS = ("mask", "variant", "val_accs", "macs", "params", "train_seconds")
MASK_COLUMNS = (
    "mask",
    "variant",
    "seeds",
    "val_acc",
    "acc_lo",
    "acc_hi",
    "val_accs",
    "latency_ms",
    "latency_iqr_ms",
    "latency_form",
    "macs",
    "params",
    "train_seconds",
    "pareto",
)


def mask_variant(mask: str) -> str:
    """'01100' -> 'frelu:2,3' (stages numbered from 1); all zeros -> 'relu'."""
    stages = [str(i) for i, bit in enumerate(mask, start=1) if bit == "1"]
    return f"frelu:{','.join(stages)}" if stages else "relu"


def all_masks(stages: int) -> list[str]:
    """Every per-stage mask, '00000' to '11111'."""
    return [format(i, f"0{stages}b") for i in range(2**stages)]


def frelu_masks(
    spec: NetSpec,
    setup: Setup,
    storage_url: str,
    study_name: str,
    n_trials: int | None = None,
    latency_form: str = "deployed",
    seeds: Sequence[int] = (0, 1, 2),
    exhaustive_limit: int = 64,
    latency_rounds: int = 30,
    log: Log = print,
) -> pd.DataFrame:
    """Maximise mean validation accuracy over `seeds` and minimise latency over FReLU masks of `spec`'s stages.

    A trial is one mask trained on every seed (paired across masks). Every mask is queued when there are at most
    `exhaustive_limit`; otherwise NSGA-II proposes them, guided by each trial's own (uncompiled) latency. At the
    end every finished mask is timed again, all interleaved in `latency_form`, and the Pareto front is taken on
    mean accuracy and that latency.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    seeds = list(seeds)
    stages = len(spec.stages)
    exhaustive = 2**stages <= exhaustive_limit
    seed = setup.config.seed
    sampler = optuna.samplers.RandomSampler(seed=seed) if exhaustive else optuna.samplers.NSGAIISampler(seed=seed)
    study = open_study(
        storage_url, study_name, create=True, directions=("maximize", "minimize"), sampler=sampler, queue=exhaustive
    )
    stored = study.user_attrs.get("seeds")
    if stored is None:
        study.set_user_attr("seeds", seeds)
    elif list(stored) != seeds:
        raise UserError(
            f"study {study_name!r} trained every mask on seeds {list(stored)}, not {seeds}; pass the same --seeds "
            "or another --storage"
        )
    costs: dict[str, Cost] = {}

    @recording_interruptions
    def objective(trial: optuna.Trial) -> tuple[float, float]:
        if exhaustive:
            mask = trial.suggest_categorical("mask", all_masks(stages))
        else:
            mask = "".join(str(trial.suggest_categorical(f"stage{i}", [0, 1])) for i in range(1, stages + 1))
        variant = mask_variant(mask)
        rows = []
        for run_seed in seeds:
            try:
                row = evaluate(
                    apply_variant(spec, variant),
                    setup,
                    replace(setup.config.train, seed=run_seed),
                    form="folded" if latency_form == "deployed" else latency_form,  # compiled once, at the end
                    test=False,
                    cost=costs.get(mask),
                    description=f"mask {mask} seed {run_seed}",
                )
            except TrainingDiverged as error:
                log(f"mask {mask} ({variant}) seed {run_seed} failed: {error}")
                trial.set_user_attr("failure", str(error))
                raise
            costs[mask] = row.cost()
            rows.append(row)
        accuracies = [row.val_acc for row in rows]
        record = rows[0].record() | {
            "mask": mask,
            "variant": variant,
            "val_accs": accuracies,
            "val_acc": statistics.fmean(accuracies),
            "train_seconds": round(sum(row.train_seconds for row in rows), 2),
        }
        for key, value in record.items():
            trial.set_user_attr(key, value)
        log(
            f"mask {mask} ({variant}): val_acc {statistics.fmean(accuracies):.4f} over seeds {seeds} "
            f"({' '.join(f'{a:.4f}' for a in accuracies)}), latency {rows[0].latency_ms:.2f} ms ({rows[0].latency_form}), "
            f"{rows[0].macs / 1e6:.2f} M MACs"
        )
        return statistics.fmean(accuracies), rows[0].latency_ms

    if exhaustive:
        enqueue_missing(study, storage_url, "mask", all_masks(stages))
        try:
            study.optimize(objective, n_trials=n_trials, catch=(TrainingDiverged,))
        except GridExhausted:
            pass
    else:
        study.optimize(objective, n_trials=n_trials or 40, catch=(TrainingDiverged,))
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not trials:
        raise UserError(f"no FReLU mask of study {study_name!r} finished training (see the failures above); lower --lr")
    frame = pd.DataFrame([{k: t.user_attrs.get(k) for k in TRIAL_COLUMNS} for t in trials])
    frame = frame.drop_duplicates("mask", keep="last").reset_index(drop=True)
    log(f"timing {len(frame)} masks interleaved ({latency_form}, {latency_rounds} rounds)")
    latency = interleaved_costs(
        {mask: apply_variant(spec, mask_variant(mask)) for mask in frame["mask"]}, latency_form, rounds=latency_rounds
    )
    frame["latency_ms"] = [latency[mask][0] for mask in frame["mask"]]
    frame["latency_iqr_ms"] = [latency[mask][1] for mask in frame["mask"]]
    frame["latency_form"] = latency_form
    return summarise_masks(frame)


def summarise_masks(frame: pd.DataFrame) -> pd.DataFrame:
    """Per mask: seeds, mean validation accuracy with its 95 % t interval, per-seed accuracies, Pareto flag (mean
    accuracy up, latency down), cheapest first."""
    frame = frame.copy()
    accuracies = [list(values) for values in frame.val_accs]
    intervals = [accuracy_interval(values) for values in accuracies]
    frame["seeds"] = [len(values) for values in accuracies]
    frame["val_acc"] = [mean for mean, _, _ in intervals]
    frame["acc_lo"] = [low for _, low, _ in intervals]
    frame["acc_hi"] = [high for _, _, high in intervals]
    frame["val_accs"] = [" ".join(f"{value:.4f}" for value in values) for values in accuracies]
    frame["pareto"] = pareto_mask(frame.latency_ms, frame.val_acc)
    return frame[list(MASK_COLUMNS)].sort_values("latency_ms").reset_index(drop=True)


def seed_table(frame: pd.DataFrame) -> dict[str, list[float]]:
    """Per mask, its validation accuracy on each seed (from the space-separated `val_accs`)."""
    return {mask: [float(v) for v in str(values).split()] for mask, values in zip(frame["mask"], frame.val_accs)}


def stage_effects(frame: pd.DataFrame) -> pd.DataFrame:
    """Per stage, the main effect of FReLU there: accuracy with FReLU minus without, averaged over the other
    stages' settings seed by seed (95 % t interval over seeds), and the mean latency change and ratio."""
    table = seed_table(frame)
    stages = len(frame["mask"].iloc[0])
    rows = []
    for stage in range(stages):
        on = [mask for mask in table if mask[stage] == "1"]
        off = [mask for mask in table if mask[stage] == "0"]
        if not on or not off:
            continue
        seeds = min(len(values) for values in table.values())
        per_seed = [
            statistics.fmean(table[m][j] for m in on) - statistics.fmean(table[m][j] for m in off) for j in range(seeds)
        ]
        effect, low, high = mean_interval(per_seed)
        latency = frame.set_index("mask").latency_ms
        rows.append(
            {
                "stage": stage + 1,
                "d_val_acc": effect,
                "d_val_acc_lo": low,
                "d_val_acc_hi": high,
                "significant": bool(low > 0 or high < 0) if seeds > 1 else None,
                "d_latency_ms": latency[on].mean() - latency[off].mean(),
                "latency_ratio": latency[on].mean() / latency[off].mean(),
            }
        )
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS)


def recommend(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Per Pareto mask (a latency budget): its gain over ReLU paired by seed and P(best) among the masks within
    that budget (seeds resampled jointly); and one sentence: the cheapest mask that beats ReLU significantly, then
    the stages whose main effect excludes zero."""
    table = seed_table(frame)
    relu = "0" * len(frame["mask"].iloc[0])
    latency = frame.set_index("mask").latency_ms
    rows = []
    for mask in frame[frame.pareto].sort_values("latency_ms")["mask"]:
        within = {m: table[m] for m in table if latency[m] <= latency[mask]}
        p_best = bootstrap_p_best(within)[mask] if len(within) > 1 and len(table[mask]) > 1 else 1.0
        row: dict[str, Any] = {
            "mask": mask,
            "latency_ms": latency[mask],
            "latency_vs_relu": latency[mask] / latency[relu] if relu in latency else math.nan,
            "val_acc": statistics.fmean(table[mask]),
            "masks_within": len(within),
            "p_best_within": p_best,
        }
        if relu in table and mask != relu and len(table[mask]) > 1:
            gain = paired_difference(table[relu], table[mask])
            row |= {
                "vs_relu": gain.mean,
                "vs_relu_lo": gain.low,
                "vs_relu_hi": gain.high,
                "significant": gain.significant,
            }
        rows.append(row)
    front = pd.DataFrame(rows)
    winners = front[front.get("significant", pd.Series(False, index=front.index)).eq(True)]
    if relu not in table:
        verdict = "ReLU everywhere (mask " + relu + ") was not evaluated, so no mask can be judged against it"
    elif winners.empty:
        verdict = (
            f"keep ReLU: no mask on the front beats it significantly over {len(table[relu])} paired seeds "
            f"(ReLU {latency[relu]:.2f} ms, val_acc {statistics.fmean(table[relu]):.4f})"
        )
    else:
        best = winners.iloc[0]
        stages = ",".join(str(i + 1) for i, bit in enumerate(best["mask"]) if bit == "1")
        verdict = (
            f"FReLU in stage(s) {stages} (mask {best['mask']}): {100 * best.vs_relu:+.2f} points over ReLU "
            f"[{100 * best.vs_relu_lo:+.2f}, {100 * best.vs_relu_hi:+.2f}] at {best.latency_vs_relu:.2f}x its latency; "
            f"P(best within {best.latency_ms:.2f} ms) = {best.p_best_within:.2f}"
        )
    return front, f"{verdict}; {effects_clause(stage_effects(frame))}"


def effects_clause(effects: pd.DataFrame) -> str:
    """The per-stage main effects whose interval excludes zero, in one clause of the recommendation."""
    clear = effects[effects.significant.eq(True)]
    if clear.empty:
        return "no stage's main effect on accuracy excludes zero"
    return "main effects that exclude zero (averaged over the other stages' settings): " + ", ".join(
        f"stage {row.stage} {100 * row.d_val_acc:+.2f} [{100 * row.d_val_acc_lo:+.2f}, {100 * row.d_val_acc_hi:+.2f}] "
        f"points at {row.latency_ratio:.2f}x latency"
        for row in clear.itertuples()
    )
