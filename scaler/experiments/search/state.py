"""What a search knows: its configuration, space and store, the stages decided so far and what they trained."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from optuna.trial import TrialState

from scaler.experiments.search.config import SearchConfig
from scaler.experiments.search.plan import BASE, RACE, SCREEN, Job, job_of
from scaler.model.scaling import scale_compound
from scaler.model.spec import NetSpec
from scaler.study.engine import OUTPUTS, JobRunner
from scaler.study.grid import Candidate, GridPoint, representatives
from scaler.study.racing import SearchPlan
from scaler.study.run import Cost, Setup, count, measure
from scaler.study.storage import QueueStudy, holds_its_point
from scaler.training.train import Outputs

RACE_WITHOUT_SCREEN = 3  # this many feasible networks or fewer race from the start, unscreened


class SearchState:
    """The search's state, read from its study: the layers above it (speed, budget, decisions) and GridSearch,
    which makes it, share these."""

    config: SearchConfig
    log: Callable[[str], None]
    setup: Setup
    base: NetSpec
    costs: dict[str, Cost]
    counted: dict[str, int]
    networks: list[GridPoint]
    feasible: dict[str, GridPoint]
    control: GridPoint
    control_snapped: bool
    runner: JobRunner
    study: QueueStudy

    def count(self, spec: NetSpec) -> tuple[int, int]:
        """fvcore MACs and parameters of a spec as built (refused in one line, unbuilt, when it cannot fit in memory)."""
        return count(spec, self.config.train.batch_size, training=True)

    def spec_of(self, network: str, phi: float | None = None) -> NetSpec:
        """The base (label 'base') or the base scaled by a network's representative coefficients at phi (the
        search's unless given)."""
        if network == BASE:
            return self.base
        c = Candidate.from_label(network)
        return scale_compound(self.base, c.alpha, c.beta, c.gamma, self.config.phi if phi is None else phi)

    def cost_of(self, network: str, phi: float | None = None) -> Cost:
        """fvcore counts and eager latency of a network (at phi, the search's unless given), measured once per
        process."""
        key = network if phi is None or phi == self.config.phi else f"{network}@{phi:g}"
        if key not in self.costs:
            self.costs[key] = measure(self.spec_of(network, phi), runs=self.setup.config.latency_runs)
        return self.costs[key]

    @property
    def phi_stage(self) -> str | None:
        """The disambiguation's stage name, e.g. 'phi2' (None without --disambiguate-phi)."""
        at = self.config.disambiguate_phi
        return None if at is None else f"phi{at:g}"

    def phi_of(self, stage: str) -> float:
        """The phi a stage trains at."""
        at = self.config.disambiguate_phi
        return at if stage == self.phi_stage and at is not None else self.config.phi

    def class_at(self, network: str) -> dict[str, tuple[str, ...]]:
        """The distinct networks a feasible network's class builds at --disambiguate-phi, by representative."""
        at = self.config.disambiguate_phi
        assert at is not None
        return representatives(self.base, self.feasible[network].members, self.config.phi, at)

    def role(self, network: str) -> str:
        """base, control (EfficientNet's point, as built or snapped) or candidate."""
        return BASE if network == BASE else "control" if network == self.control.label else "candidate"

    def screens(self) -> bool:
        """Whether a screen pays: more feasible networks than the race could carry from the start."""
        return len(self.feasible) > RACE_WITHOUT_SCREEN

    def screen_jobs(self) -> list[Job]:
        """Every feasible network on each of the screen's seeds."""
        if not self.screens():
            return []
        return [Job(SCREEN, label, seed) for seed in self.config.screen_seed_list for label in sorted(self.feasible)]

    def plan(self) -> SearchPlan | None:
        """How this study spends its budget, decided once by the command that made it (None before)."""
        stored = self.study.user_attrs.get("plan")
        return SearchPlan(**stored) if stored else None

    @property
    def deadline(self) -> float | None:
        """When the race must end: this command's deadline (now + --budget), else the one the command that runs
        the study stored, so that a worker joining from elsewhere keeps to it."""
        if self.config.deadline is not None:
            return self.config.deadline
        stored = self.study.user_attrs.get("deadline") if hasattr(self, "study") else None
        return float(stored) if stored is not None else None

    def rounds(self) -> list[dict[str, Any]]:
        """The race's rounds decided so far: each a fresh seed and the networks it trains."""
        return list(self.study.user_attrs.get("rounds", []))

    def race_end(self) -> str | None:
        """Why the race stopped (None while it may go on)."""
        return self.study.user_attrs.get("race_end")

    def phi_rounds(self) -> list[dict[str, Any]]:
        """The disambiguation's rounds decided so far: each a seed and the class members' networks it trains."""
        return list(self.study.user_attrs.get("phi_rounds", []))

    def phi_end(self) -> str | None:
        """Why the disambiguation stopped (None while it may go on or never ran)."""
        return self.study.user_attrs.get("phi_end")

    def over(self) -> bool:
        """Whether every stage has ended: the race, and the disambiguation when asked for."""
        return self.race_end() is not None and (self.phi_stage is None or self.phi_end() is not None)

    def queued_jobs(self) -> list[Job]:
        """The jobs of the stages decided so far."""
        race = [Job(RACE, label, int(r["seed"])) for r in self.rounds() for label in r["networks"]]
        stage = self.phi_stage
        phi = [Job(stage, label, int(r["seed"])) for r in self.phi_rounds() for label in r["networks"]] if stage else []
        return self.screen_jobs() + race + phi

    def finished(self, jobs: list[Job]) -> bool:
        """Whether every one of `jobs` has a trial that completed or failed on its own merits."""
        ended = (TrialState.COMPLETE, TrialState.FAIL)
        points = [job_of(t) for t in self.study.get_trials(deepcopy=False) if t.state in ended and holds_its_point(t)]
        done = {Job(point["stage"], point["network"], int(point["seed"])) for point in points if "stage" in point}
        return all(job in done for job in jobs)

    def tables(self, stage: str, split: str) -> dict[str, np.ndarray]:
        """Per network, its seeds x images correctness on `split` at `stage`, seeds increasing (trainings that
        diverged or kept no outputs are left out)."""
        assert self.setup.dataset is not None
        labels = getattr(self.setup.dataset, split).labels.numpy()
        rows: dict[str, dict[int, np.ndarray]] = {}
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            stored, point = t.user_attrs.get(OUTPUTS, {}).get(split), job_of(t)
            if point.get("stage") == stage and stored:
                outputs = Outputs.from_json(stored)
                rows.setdefault(point["network"], {})[int(point["seed"])] = outputs.correct(labels)
        return {
            label: np.stack([by_seed[seed] for seed in sorted(by_seed)]).astype(float)
            for label, by_seed in sorted(rows.items())
        }

    def durations(self) -> dict[tuple[str, str], list[float]]:
        """Wall seconds of every completed training, by (stage, network)."""
        durations: dict[tuple[str, str], list[float]] = {}
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.datetime_start and t.datetime_complete:
                point = job_of(t)
                key = (point.get("stage", ""), point.get("network", ""))
                durations.setdefault(key, []).append((t.datetime_complete - t.datetime_start).total_seconds())
        return durations
