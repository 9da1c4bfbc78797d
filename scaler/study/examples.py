"""Per-example outputs of a plan's runs (`<command>_examples.npz`) and the comparisons made on them: every network
judged on the same images, differences taken example by example and seed by seed (`stats.crossed_mean`)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from scaler.study.stats import Estimate, crossed_mean, family_columns, seed_mean

if TYPE_CHECKING:
    from scaler.training.data import Split
    from scaler.training.train import Outputs


def split_arrays(name: str, split: Split, kept: Sequence[Outputs | None]) -> dict[str, np.ndarray]:
    """One split's per-example arrays of runs, one row per run: `<name>_predicted` and `<name>_p_true` (-1 and NaN
    where a run kept no outputs on these images), `<name>_labels` and the split's fingerprint; empty when no run
    kept outputs on them."""
    if not any(out is not None and out.images == split.fingerprint for out in kept):
        return {}
    predicted = np.full((len(kept), len(split)), -1, dtype=np.int16)
    p_true = np.full((len(kept), len(split)), np.nan, dtype=np.float16)
    for row, out in enumerate(kept):
        if out is not None and out.images == split.fingerprint:
            predicted[row], p_true[row] = out.predicted, out.p_true
    arrays = {f"{name}_predicted": predicted, f"{name}_p_true": p_true}
    return arrays | {f"{name}_labels": split.labels.numpy(), f"{name}_images": np.array(split.fingerprint)}


class Examples:
    """The per-example arrays of a plan (one row per run, by its label): predicted class, true-class probability,
    labels and the images' fingerprint per split."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.arrays = dict(arrays)
        labels = [str(label) for label in self.arrays.get("label", [])]
        if len(set(labels)) != len(labels):
            raise ValueError("per-example outputs need one distinct label per run")
        self.row = {label: i for i, label in enumerate(labels)}

    @classmethod
    def load(cls, path: Path) -> Examples:
        """A `<command>_examples.npz` written by the engine."""
        with np.load(path) as data:
            return cls({name: data[name] for name in data.files})

    def has(self, split: str, labels: list[str]) -> bool:
        """Whether every run named kept its outputs on `split`."""
        predicted = self.arrays.get(f"{split}_predicted")
        return (
            predicted is not None
            and bool(labels)
            and all(label in self.row and predicted[self.row[label], 0] >= 0 for label in labels)
        )

    def correct(self, split: str, labels: list[str]) -> np.ndarray:
        """Runs x examples: 1.0 where the run named by the label classified the example right."""
        predicted = self.arrays[f"{split}_predicted"][[self.row[label] for label in labels]]
        return (predicted == self.arrays[f"{split}_labels"][None, :]).astype(float)

    def accuracy(self, split: str, labels: list[str]) -> Estimate:
        """Accuracy of one network over its seeds (the runs named) and the split's images."""
        return crossed_mean(self.correct(split, labels))

    def difference(self, split: str, reference: list[str], candidate: list[str]) -> Estimate:
        """candidate - reference accuracy, paired run by run (same seed) and image by image."""
        return crossed_mean(self.correct(split, candidate) - self.correct(split, reference))


INTERVALS = (
    "[95 % intervals over seeds and test images]; differences paired seed by seed and image by image, each column "
    "one family (simultaneous intervals, Holm-adjusted p)"
)
Key = Hashable
Reference = Callable[[Any], Any]


def by_seed(part: pd.DataFrame) -> dict[float, str]:
    """Label of each seed's run in one group (-1 for a run on the config's seed)."""
    seeds = part.seed.fillna(-1) if "seed" in part else pd.Series(-1.0, index=part.index)
    return dict(zip(seeds, part.label.astype(str)))


def group_statistics(
    frame: pd.DataFrame,
    keys: list[str],
    examples: Examples | None,
    split: str = "test",
    references: Mapping[str, Reference] | None = None,
) -> dict[Key, dict[str, Any]]:
    """Per group of `keys`: `{split}_acc` with acc_lo/acc_hi (95 %, seeds x images), seeds, seed_sd and floor; and
    for each named reference (a function from a group's key to the key it is compared with, or None) the paired
    difference to it as one family over the groups (`stats.family_columns`). Per-example outputs are used where
    every run kept them on `split`; otherwise the per-seed accuracies (t over seeds, floor NaN)."""
    groups = {key if isinstance(key, tuple) else (key,): part for key, part in frame.groupby(keys, sort=False)}
    runs = {key: by_seed(part) for key, part in groups.items()}
    by_label = frame.set_index("label")[f"{split}_acc"].astype(float)

    def per_seed(labels: list[str]) -> np.ndarray:
        return by_label.loc[labels].to_numpy()

    def estimate(reference: dict[float, str] | None, candidate: dict[float, str]) -> Estimate | None:
        seeds = sorted(set(candidate) & set(reference)) if reference is not None else sorted(candidate)
        labels = [candidate[s] for s in seeds]
        base = [reference[s] for s in seeds] if reference is not None else []
        if examples is not None and examples.has(split, labels + base) and seeds:
            if reference is None:
                return examples.accuracy(split, labels)
            return examples.difference(split, base, labels)
        if reference is None:
            return seed_mean(per_seed(labels).tolist())
        return seed_mean((per_seed(labels) - per_seed(base)).tolist())

    rows: dict[Key, dict[str, Any]] = {}
    for key, seeds in runs.items():
        accuracy = estimate(None, seeds) if seeds else None
        low, high = accuracy.interval() if accuracy is not None else (np.nan, np.nan)
        rows[key] = {
            "seeds": len(seeds),
            f"{split}_acc": accuracy.mean if accuracy is not None else np.nan,
            "acc_lo": float(np.clip(low, 0.0, 1.0)),
            "acc_hi": float(np.clip(high, 0.0, 1.0)),
            "seed_sd": accuracy.seed_sd if accuracy is not None else np.nan,
            "floor": accuracy.floor if accuracy is not None else np.nan,
        }
    for name, reference_of in (references or {}).items():
        estimates: dict[tuple[Any, ...], Estimate | None] = {}
        for key, seeds in runs.items():
            target = reference_of(key if len(key) > 1 else key[0])
            target = target if isinstance(target, tuple) or target is None else (target,)
            if target is not None and target != key and target in runs:
                estimates[key] = estimate(runs[target], seeds)
        for key, columns in family_columns(name, estimates).items():
            rows[key] |= columns
    return rows
