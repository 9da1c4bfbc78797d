"""What one search is (SearchConfig) and what makes two searches the same study (the fingerprint)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from scaler.errors import UserError
from scaler.model.zoo import base_label
from scaler.study.engine import identities
from scaler.study.racing import SCREEN_SEEDS
from scaler.study.run import RunConfig
from scaler.study.storage import (
    STUDIES_DIR,
    default_url,
    redact_secrets,
    study_folder,
)
from scaler.training.data import VAL_FRACTION
from scaler.training.folder import dataset_label, is_folder_dataset
from scaler.training.tasks import Task, dataset_task, parse_input
from scaler.training.train import TrainConfig


@dataclass(frozen=True)
class SearchConfig:
    """Everything one `scaler search` needs.

    The search measures every distinct network of the grid at `phi` and keeps those within
    `ratio_tolerance` of 2^phi the base's MACs. A plan fits it into `budget` seconds at the measured speed:
    each feasible network is screened on 1/`halving` of the race's images at `seed` and the seed after; those the screen's rule
    keeps race in rounds of fresh seeds (at most `max_seeds`), paired with the base, until the confidence set
    of the best stops shrinking or the time to `deadline` (this command's, never stored) runs out. With
    `disambiguate_phi`, time is kept for the distinct networks the pick's class builds at that phi, raced the same
    way: the member exported is the cheapest of their best set. With `planned_fidelity` the race's images are not
    `train.epochs` passes over the data but what a ladder of trainings of the base shows this data needs
    (scaler.study.fidelity), as far as the budget affords.
    """

    base: str = "mobilenet"
    width: float = 1.0
    dataset: str = "fashion-mnist"
    variant: str = "relu"
    phi: float = 1.0
    step: float = 0.05
    ratio_tolerance: float = 0.05
    halving: int = 3
    n_trials: int | None = None
    budget: float = 900.0
    max_seeds: int = 10
    disambiguate_phi: float | None = None
    planned_fidelity: bool = False
    input_shape: str | None = None
    deadline: float | None = None
    subset: int | None = 3000
    val_size: int | None = 1000
    test_size: int | None = None
    data_dir: str | None = None
    study: str | None = None
    storage: str | None = None
    studies_dir: Path = STUDIES_DIR
    seed: int = 0
    data_seed: int = 0
    heartbeat: int | None = 10
    workers: int = 1
    train: TrainConfig = field(default_factory=TrainConfig)
    progress: bool = True
    argv: tuple[str, ...] = ()

    @property
    def study_name(self) -> str:
        """--study, or '<base>[-wW]-<dataset>[-<variant>][-phiN]'."""
        if self.study:
            return self.study
        label = base_label(self.base)
        name = label if self.width == 1 else f"{label}-w{self.width:g}".replace("+", "")
        name = f"{name}-{dataset_label(self.dataset)}"
        if self.variant != "relu":
            name += "-" + self.variant.replace(":", "").replace(",", "").replace("+", "-")
        return name if self.phi == 1 else f"{name}-phi{self.phi:g}"

    @property
    def screen_seed_list(self) -> list[int]:
        """The screen's seeds: the selection seed and the one after it."""
        return [self.seed + offset for offset in range(SCREEN_SEEDS)]

    @property
    def race_seed_list(self) -> list[int]:
        """The fresh seeds the race may use, one per round: the next ones after the screen's."""
        return [self.seed + SCREEN_SEEDS + offset for offset in range(self.max_seeds)]

    def to_json(self) -> dict[str, Any]:
        """Plain dict a worker elsewhere can rebuild the search from."""
        data = asdict(self)
        data["studies_dir"] = str(self.studies_dir)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], **overrides: Any) -> SearchConfig:
        """Inverse of `to_json`, with some fields replaced (storage, data_dir, threads...)."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise UserError(
                f"this study was made by an older scaler search (it has {', '.join(sorted(unknown))}); "
                "start a new study or use the scaler version that made it"
            )
        fields = {
            **data,
            "train": TrainConfig.from_json(data["train"]),
            "studies_dir": Path(data["studies_dir"]),
            "argv": tuple(data.get("argv", ())),
        }
        return replace(cls(**fields), **overrides)

    @property
    def storage_url(self) -> str:
        """--storage, or the study's embedded SQLite file."""
        return self.storage or default_url(self.study_name, self.studies_dir)

    @property
    def folder(self) -> Path:
        """studies/<study>: where CSV, PNG and JSON go (checked to stay under studies/, not created)."""
        return study_folder(self.study_name, self.studies_dir)

    def run_config(self) -> RunConfig:
        """The run layer's view of this search: base, variant, data sizes, training, folder."""
        return RunConfig(
            command="search",
            base=self.base,
            width=self.width,
            variant=self.variant,
            dataset=self.dataset,
            task=self.task(),
            data_dir=self.data_dir,
            subset=self.subset,
            val_size=self.val_size,
            test_size=self.test_size,
            data_seed=self.data_seed,
            train=self.train,
            folder=self.folder,
            latency_runs=15,
            progress=self.progress,
            argv=self.argv,
        )

    def task(self) -> Task:
        """The dataset's input shape and classes; a folder's read at --input's shape when given."""
        if self.input_shape is None:
            return dataset_task(self.dataset)
        if not is_folder_dataset(self.dataset):
            raise UserError(f"--input applies to a folder of images; {self.dataset} is read at its own shape")
        return dataset_task(self.dataset, parse_input(self.input_shape, 2))

    def stored(self) -> dict[str, Any]:
        """`to_json` as kept in the study: no password, neither in the storage URL nor in the command line."""
        return dict(redact_secrets(self.to_json() | {"deadline": None}))

    def check(self) -> None:
        """The options that can be wrong on their own: one line, before anything is built."""
        if not 2 <= self.halving <= 3:
            raise UserError(
                f"--halving must be 2 or 3 (got {self.halving}): the screen trains on 1/halving of the budget, "
                "at least a third, so that it ranks networks by more than their first steps"
            )
        if self.train.progressive:
            raise UserError(
                "the search trains without --progressive: its screen cuts runs short, which would leave progressive "
                "learning in its first, smallest stage; use it in scale or ladder"
            )
        if self.disambiguate_phi is not None and not (
            math.isfinite(self.disambiguate_phi) and self.phi < self.disambiguate_phi <= self.phi + MAX_PHI_STEP
        ):
            raise UserError(
                f"--disambiguate-phi must be above --phi {self.phi:g} and at most {self.phi + MAX_PHI_STEP:g} "
                f"(got {self.disambiguate_phi:g}): it trains the pick's class at that larger phi"
            )
        if not 2 <= self.max_seeds <= MAX_SEEDS:
            raise UserError(
                f"--max-seeds must be between 2 and {MAX_SEEDS} (got {self.max_seeds}): the race compares networks "
                "on fresh seeds with a confidence interval"
            )


MAX_SEEDS = 50  # the most race rounds --max-seeds may ask for, one fresh seed each
MAX_PHI_STEP = 3  # --disambiguate-phi trains up to 2^3 = 8x the searched network's MACs within the budget

FINGERPRINT_TRAIN = tuple(
    f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("threads", "device", "max_images")
)


def grid_fingerprint(config: SearchConfig) -> dict[str, Any]:
    """What makes two searches the same study: the space, the selection and how every network is trained."""
    train = {k: v for k, v in asdict(config.train).items() if k in FINGERPRINT_TRAIN}
    fingerprint = {
        "base": config.base,
        "width": config.width,
        "dataset": config.dataset,
        "variant": config.variant,
        "phi": config.phi,
        "step": config.step,
        "ratio_tolerance": config.ratio_tolerance,
        "halving": config.halving,
        "max_seeds": config.max_seeds,
        "disambiguate_phi": config.disambiguate_phi,
        "seed": config.seed,
        "data_seed": config.data_seed,
        "subset": config.subset,
        "val_size": config.val_size,
        "test_size": config.test_size,
        "val_fraction": VAL_FRACTION,
        "train": train,
    }
    if config.planned_fidelity:
        fingerprint["planned_fidelity"] = True
    if config.input_shape:
        fingerprint["input_shape"] = config.input_shape
    fingerprint |= identities(config.base, config.dataset)
    return dict(json.loads(json.dumps(fingerprint)))


def recorded_fingerprint(stored: dict[str, Any]) -> dict[str, Any]:
    """A study's stored fingerprint with the settings it predates filled in: training at its defaults, the
    validation share at the 0.1 every study used before it was recorded, no disambiguation."""
    defaults = json.loads(json.dumps(asdict(TrainConfig())))
    return (
        {"val_fraction": 0.1, "disambiguate_phi": None, "test_size": None}
        | stored
        | {"train": {k: v for k, v in defaults.items() if k in FINGERPRINT_TRAIN} | stored.get("train", {})}
    )


def differences(stored: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    """The keys (nested ones as train.lr) whose values differ between two fingerprints."""
    keys = sorted(set(stored) | set(wanted))
    found = []
    for key in keys:
        old, new = stored.get(key), wanted.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            found += differences(old, new, f"{prefix}{key}.")
        elif old != new:
            found.append(f"{prefix}{key} {old!r} -> {new!r}")
    return found
