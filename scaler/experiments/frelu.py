"""`scaler frelu`: which stages get FReLU, as a two-objective Optuna study over per-stage masks."""

from __future__ import annotations

import optuna
import pandas as pd
from optuna.trial import TrialState

from scaler.errors import UserError
from scaler.run import Log, Setup, evaluate
from scaler.search import recording_interruptions
from scaler.spec import NetSpec
from scaler.storage import GridExhausted, enqueue_missing, open_study
from scaler.train import TrainingDiverged
from scaler.variants import apply_variant

MASK_COLUMNS = ("mask", "variant", "val_acc", "latency_ms", "latency_iqr_ms", "macs", "params", "train_seconds")


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
    latency_form: str = "eager",
    exhaustive_limit: int = 64,
    log: Log = print,
) -> pd.DataFrame:
    """Maximise validation accuracy and minimise measured latency over FReLU masks of `spec`'s stages.

    Every mask is queued when there are at most `exhaustive_limit`; otherwise NSGA-II proposes them.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    stages = len(spec.stages)
    exhaustive = 2**stages <= exhaustive_limit
    seed = setup.config.seed
    sampler = optuna.samplers.RandomSampler(seed=seed) if exhaustive else optuna.samplers.NSGAIISampler(seed=seed)
    study = open_study(
        storage_url, study_name, create=True, directions=("maximize", "minimize"), sampler=sampler, queue=exhaustive
    )

    @recording_interruptions
    def objective(trial: optuna.Trial) -> tuple[float, float]:
        if exhaustive:
            mask = trial.suggest_categorical("mask", all_masks(stages))
        else:
            mask = "".join(str(trial.suggest_categorical(f"stage{i}", [0, 1])) for i in range(1, stages + 1))
        variant = mask_variant(mask)
        try:
            row = evaluate(
                apply_variant(spec, variant), setup, form=latency_form, test=False, description=f"mask {mask}"
            )
        except TrainingDiverged as error:
            log(f"mask {mask} ({variant}) failed: {error}")
            trial.set_user_attr("failure", str(error))
            raise
        for key, value in (row.record() | {"mask": mask, "variant": variant}).items():
            trial.set_user_attr(key, value)
        log(
            f"mask {mask} ({variant}): val_acc {row.val_acc:.4f}, latency {row.latency_ms:.2f} ms ({latency_form}), {row.macs / 1e6:.2f} M MACs"
        )
        return row.val_acc, row.latency_ms

    if exhaustive:
        enqueue_missing(study, storage_url, "mask", all_masks(stages))
        try:
            study.optimize(objective, n_trials=n_trials, catch=(TrainingDiverged,))
        except GridExhausted:
            pass
    else:
        study.optimize(objective, n_trials=n_trials or 40, catch=(TrainingDiverged,))
    front = {t.number for t in study.best_trials}
    rows = [
        {"number": t.number, **{k: t.user_attrs.get(k) for k in MASK_COLUMNS}, "pareto": t.number in front}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ]
    if not rows:
        raise UserError(f"no FReLU mask of study {study_name!r} finished training (see the failures above); lower --lr")
    return pd.DataFrame(rows).sort_values("latency_ms").reset_index(drop=True)
