"""The search's queue on Optuna: a plan sized to the budget, the screen, the race in rounds of fresh paired seeds,
and its workers."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from scaler.errors import UserError
from scaler.experiments.search.config import SearchConfig, differences, grid_fingerprint, recorded_fingerprint
from scaler.model.guard import check_fits
from scaler.model.scaling import compound, scale_compound
from scaler.model.spec import NetSpec
from scaler.study.engine import (
    HEARTBEAT,
    JOB,
    OUTPUTS,
    ROW,
    JobRunner,
    TrialBudget,
    drain,
    job_key,
    recording_interruptions,
    removed_if_left_empty,
)
from scaler.study.fidelity import NOT_LEARNING, Fidelity, Rung, climb, ladder_start, plateau_at, read_ladder
from scaler.study.grid import CONTROL, Candidate, GridPoint, built_multipliers, control_network, representatives, space
from scaler.study.racing import (
    CONFIDENCE,
    FIDELITY_ROUNDS,
    MIN_IMAGES,
    MIN_ROUNDS,
    PlanCosts,
    SearchPlan,
    base_resolved,
    best_set,
    budget_text,
    contenders_after,
    eliminated,
    look_confidence,
    looks,
    pick,
    plan_search,
    race_images_after_screen,
    screened_out,
)
from scaler.study.racing import Cost as RacingCost
from scaler.study.run import Cost, count, evaluate, measure, setup
from scaler.study.storage import (
    INTERRUPTED,
    QueueStudy,
    check_url,
    describe_error,
    enqueue_missing,
    holds_its_point,
    open_study,
    queued_key,
    redact,
    sqlite_path,
    storage_errors,
    study_lock,
)
from scaler.study.workers import worker_process
from scaler.training.train import Outputs, TrainConfig, TrainingDiverged

TRIAL_COLUMNS = [
    "number",
    "state",
    "stage",
    "network",
    "role",
    "seed",
    "alpha",
    "beta",
    "gamma",
    "depth",
    "width",
    "resolution",
    "pixels",
    "macs",
    "macs_ratio",
    "params",
    "latency_ms",
    "images",
    "val_acc",
    "epochs",
    "train_seconds",
    "failure",
]


SCREEN, RACE = "screen", "race"
BASE = "base"
RACE_WITHOUT_SCREEN = 3  # this many feasible networks or fewer race from the start, unscreened
PROBE_IMAGES = 4096  # the timed trainings (the base, the dearest network) that size the plan


QUEUE = (
    "engine"  # study attribute "queue": its trainings are the engine's planned runs (older studies queued their own)
)


@dataclass(frozen=True)
class Job:
    """One training of the search: a network at a stage (screen, race, or phiP: a member of the pick's class at
    --disambiguate-phi P) with a seed."""

    stage: str
    network: str
    seed: int

    @property
    def label(self) -> str:
        """How logs and progress bars name it, e.g. 'screen a1.35_b1.10_g1.00 seed 0'."""
        return f"{self.stage} {self.network} seed {self.seed}"


class GridSearch:
    """One study: the measured space, its plan, the screen, the race on fresh seeds, the outputs."""

    def __init__(self, config: SearchConfig, log: Callable[[str], None] = print, enqueue: bool = True) -> None:
        config.check()
        self.config = config
        self.log = log
        self.setup = setup(config.run_config(), data=False)
        self.base = self.setup.spec
        self.costs: dict[str, Cost] = {}
        self.counted: dict[str, int] = {}
        stored = None
        if not enqueue:  # a worker joins a study whose space was measured by the command that made it
            self.study = self.open(create=False)
            stored = self.study.user_attrs.get("space")
        else:
            stored = self.stored_space()
        self.networks = (
            [GridPoint.from_json(data) for data in stored]
            if stored
            else space(self.base, config.phi, config.step, config.ratio_tolerance, self.count, extra=(CONTROL,))
        )
        self.feasible = {n.label: n for n in self.networks if n.feasible}
        self.control, self.control_snapped = control_network(self.networks)
        for network in self.feasible.values():
            check_fits(self.spec_of(network.label), config.train.batch_size, training=True)
        self.setup = self.setup.with_data()
        self.runner = JobRunner(self.setup, log)
        if enqueue:
            with removed_if_left_empty(config.storage_url):  # a refused plan leaves no study behind
                self.study = self.open(create=True)
                if "space" not in self.study.user_attrs:
                    self.study.set_user_attr("space", [network.to_json() for network in self.networks])
                self.study.set_user_attr("deadline", config.deadline or time.time() + config.budget)
                self.ensure_plan()
            queued = self.enqueue_missing() + self.advance()
            waiting, running = self.pending()
            snapped = f", snapped to {self.control.label}" if self.control_snapped else ""
            self.log(
                f"study {config.study_name}: {len(self.networks)} distinct networks on the grid, "
                f"{len(self.feasible)} within {config.ratio_tolerance:.0%} of {2**config.phi:g}x MACs; "
                f"control {CONTROL.label}{snapped}; {queued} newly queued, {waiting} waiting, {running} running elsewhere"
            )

    def stored_space(self) -> list[dict[str, Any]] | None:
        """The space a resumed study was made with (None for a new study), so that a rerun trains the same networks."""
        url = self.config.storage_url
        check_url(url)
        path = sqlite_path(url)
        if path is not None and not path.is_file():
            return None
        try:
            study = open_study(url, self.config.study_name, create=False)
        except UserError:
            return None
        stored = study.user_attrs.get("grid")
        if stored is not None and recorded_fingerprint(stored) != grid_fingerprint(self.config):
            return None  # open() refuses it in one line
        return study.user_attrs.get("space")

    def count(self, spec: NetSpec) -> tuple[int, int]:
        """fvcore MACs and parameters of a spec as built (refused in one line, unbuilt, when it cannot fit in memory)."""
        return count(spec, self.config.train.batch_size, training=True)

    def open(self, create: bool) -> QueueStudy:
        """The study, created (or resumed) with this fingerprint under the study's lock; a mismatch is an error."""
        config = self.config
        study = open_study(
            config.storage_url,
            config.study_name,
            create=create,
            heartbeat=config.heartbeat,
            sampler=optuna.samplers.RandomSampler(seed=config.seed),
            pruner=optuna.pruners.NopPruner(),
        )
        assert isinstance(study, QueueStudy)
        fingerprint = grid_fingerprint(config)
        try:
            existing = study.user_attrs.get("grid")
            if existing and recorded_fingerprint(existing) != fingerprint and create:
                changed = differences(recorded_fingerprint(existing), fingerprint)
                raise UserError(
                    f"study {config.study_name!r} was made with other settings ({'; '.join(changed)}); "
                    "choose another --study or rerun with the same options"
                )
            if existing and study.user_attrs.get("queue") != QUEUE:
                raise UserError(
                    f"study {config.study_name!r} was made by an older scaler search, which queued its trainings "
                    "its own way; start a new study (--study) or use the scaler version that made it"
                )
            if not existing:
                study.set_user_attr("grid", fingerprint)
                study.set_user_attr("queue", QUEUE)
                study.set_user_attr("config", config.stored())
        except storage_errors() as error:
            raise UserError(
                f"storage {redact(config.storage_url)} failed: {describe_error(error, config.storage_url)}"
            ) from None
        return study

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

    def point(self, job: Job) -> dict[str, Any]:
        """A job as the engine's planned run: the network's multipliers at its stage's phi, its seed, the stage's
        images, the test split read outside the screen, judged on validation; what trials.csv says of it besides."""
        phi = self.phi_of(job.stage)
        if job.network == BASE:
            candidate, ratio = Candidate(1.0, 1.0, 1.0), 1.0
        else:
            candidate = Candidate.from_label(job.network)
            member = job.stage == self.phi_stage
            at_phi = self.macs_at_phi(job.network) / self.macs_of(BASE) if member else None
            ratio = round(at_phi, 4) if at_phi is not None else float(self.feasible[job.network].macs_ratio or math.nan)
        multipliers = (
            (1.0, 1.0, 1.0) if job.network == BASE else compound(candidate.alpha, candidate.beta, candidate.gamma, phi)
        )
        return {
            "label": job.label,
            "variant": "base",
            **dict(zip(("depth", "width", "res_mult"), multipliers)),
            "train": True,
            "progressive": False,
            "seed": job.seed,
            "images": self.budget(job.stage).max_images,
            "test": job.stage != SCREEN,  # read only after selection: the pick, the base, the member exported
            "selection": True,
            "stage": job.stage,
            "network": job.network,
            "role": "member" if job.stage == self.phi_stage else self.role(job.network),
            **asdict(candidate),
            "macs_ratio": ratio,
        }

    def key(self, job: Job) -> str:
        """The engine's key of a job's planned run."""
        return job_key(self.point(job))

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

    def ensure_plan(self) -> SearchPlan:
        """The stored plan, or a new one from timed trainings of the base (the fidelity ladder when the fidelity is
        planned, else one probe) and of the dearest network, and the time left to the deadline."""
        plan = self.plan()
        if plan is not None:
            return plan
        assert self.setup.dataset is not None
        fixed_images = len(self.setup.dataset.train) * self.config.train.epochs
        base_rate, overhead = self.probe(BASE, fixed_images) if not self.config.planned_fidelity else self.rung_speed()
        dearest = max(self.feasible.values(), key=lambda network: (network.macs or 0, network.label), default=None)
        per_image: dict[str, float] = {}
        base_macs, slope = self.macs_of(BASE), 0.0
        if dearest is not None:
            dear_rate, _ = self.probe(dearest.label, fixed_images)
            dear_macs = float(dearest.macs or 0)
            slope = (dear_rate - base_rate) / (dear_macs - base_macs) if dear_macs > base_macs else 0.0
            per_image = {
                label: base_rate + slope * (float(network.macs or dear_macs) - base_macs)
                for label, network in sorted(self.feasible.items())
            }
        full_images, least = fixed_images, None
        if self.config.planned_fidelity:
            climbed = self.climb_ladder(per_image, overhead)
            full_images, least = climbed.target, climbed.least
        left = (self.deadline or math.inf) - time.time()

        def planned(seconds: float) -> SearchPlan:
            return plan_search(
                seconds,
                per_image,
                base_rate,
                full_images,
                contenders=min(RACE_WITHOUT_SCREEN, len(self.feasible)),
                screen_fraction=1 / self.config.halving,
                overhead=overhead,
                screen=self.screens(),
                least=least,
                budget_text=budget_text(self.config.budget),
                min_rounds=self.min_rounds,
            )

        plan = planned(left)
        if self.phi_stage is not None:  # kept back: two seeds of the dearest class at the race's images
            reserve = self.phi_reserve(sorted(self.feasible), (base_rate, slope), plan.race_images, overhead)
            plan = planned(left - min(reserve, left / 3))
        plan = replace(plan, race_images=self.batches(plan.race_images), screen_images=self.batches(plan.screen_images))
        self.study.set_user_attr("plan", asdict(plan))
        self.log(
            f"plan for {left / 60:.1f} min at {1 / base_rate:.0f} images/s (the base, timed): screen "
            f"{len(self.screen_jobs())} networks on {plan.screen_images} images each, then race on "
            f"{plan.race_images} images per training{' (the full budget)' if plan.race_images >= full_images else ''}"
        )
        ladder = self.fidelity()
        if ladder is not None:
            self.log(ladder.verdict(plan.race_images))
        return plan

    @property
    def min_rounds(self) -> int:
        """The race rounds the plan keeps its images for: fewer with a planned fidelity (fidelity first, then seeds)."""
        return FIDELITY_ROUNDS if self.config.planned_fidelity else MIN_ROUNDS

    def fidelity(self) -> Fidelity | None:
        """What the fidelity ladder said (None when the fidelity is fixed or the ladder has not ended)."""
        stored = self.study.user_attrs.get("fidelity")
        return Fidelity.from_json(stored) if stored else None

    def rungs(self) -> list[Rung]:
        """The ladder's trainings of the base so far."""
        return [Rung.from_json(rung) for rung in self.study.user_attrs.get("fidelity_rungs", [])]

    def rung_speed(self) -> tuple[float, float]:
        """The base's seconds per training image and seconds per training besides, from the ladder's first rung
        (trained now when the study has none)."""
        assert self.setup.dataset is not None
        if not self.rungs():
            self.train_rung(ladder_start(self.config.train.batch_size))
        first = self.study.user_attrs["fidelity_rungs"][0]
        return float(first["rate"]), float(first["overhead"])

    def train_rung(self, images: int) -> Rung:
        """Train the base once for `images` images at the selection seed, judged on the validation images; stored."""
        config = replace(self.training(images), seed=self.config.seed)
        started = time.perf_counter()
        try:
            row = evaluate(
                self.base, self.setup, config, test=False, cost=self.cost_of(BASE), description=f"fidelity {images}"
            )
        except TrainingDiverged as error:
            raise UserError(
                f"the base diverged on the fidelity ladder at {images} images ({error}): lower --lr"
            ) from None
        seconds = time.perf_counter() - started
        rate = 1 / row.images_per_second
        rung = Rung(images, row.val_acc, round(seconds, 2))
        stored = asdict(rung) | {"rate": rate, "overhead": max(0.0, seconds - images * rate)}
        self.study.set_user_attr("fidelity_rungs", [*self.study.user_attrs.get("fidelity_rungs", []), stored])
        self.log(f"fidelity: the base reaches val_acc {row.val_acc:.4f} after {images} images ({seconds:.0f} s)")
        return rung

    def climb_ladder(self, per_image: dict[str, float], overhead: float) -> Fidelity:
        """Train the base on doubling lengths until twice as long gains no more than the validation floor, or the
        next rung and then the least search at the longest rung so far would not fit the time left; what it says
        is stored. A base that does not learn at any length the budget affords ends the search in one line."""
        assert self.setup.dataset is not None
        dataset = self.setup.dataset
        rate = float(self.study.user_attrs["fidelity_rungs"][0]["rate"])
        costs = PlanCosts(
            per_image,
            rate,
            overhead,
            min(RACE_WITHOUT_SCREEN, len(self.feasible)),
            1 / self.config.halving,
            self.screens(),
            0,
            self.min_rounds,
        )

        def affordable(next_images: int, proxy_images: int) -> bool:
            left = (self.deadline or math.inf) - time.time()
            return costs.training(rate, next_images) + costs.minimum(proxy_images) <= left

        stopped = False
        while True:
            rungs = self.rungs()
            following = climb(rungs, len(dataset.val), affordable)
            if following is None:
                stopped = plateau_at(rungs, len(dataset.val)) is None
                break
            self.train_rung(following)
        labels = dataset.val.labels.numpy()
        chance = float(np.bincount(labels).max() / len(labels))
        fidelity = read_ladder(self.rungs(), len(dataset.val), chance, stopped)
        self.study.set_user_attr("fidelity", fidelity.to_json())
        if fidelity.status == NOT_LEARNING:
            raise UserError(fidelity.verdict(fidelity.target) + ": no ranking of untrained networks is made")
        return fidelity

    def training(self, images: int) -> TrainConfig:
        """The search's training cut to `images` images, with enough passes over the data to reach them."""
        assert self.setup.dataset is not None
        passes = math.ceil(images / max(1, len(self.setup.dataset.train)))
        return replace(self.config.train, max_images=images, epochs=max(self.config.train.epochs, passes))

    def probe(self, network: str, full_images: int) -> tuple[float, float]:
        """Time a short training of a network with its evaluation: seconds per training image, and the seconds a
        training spends besides (building, validating, testing)."""
        images = min(PROBE_IMAGES, full_images)
        config = replace(self.training(images), seed=self.config.seed)
        cost = self.cost_of(network)
        started = time.perf_counter()
        try:
            row = evaluate(
                self.spec_of(network), self.setup, config, test=True, cost=cost, description=f"timing {network}"
            )
        except TrainingDiverged as error:
            raise UserError(f"{network} diverged while the search timed it ({error}): lower --lr") from None
        rate = 1 / row.images_per_second
        return rate, max(0.0, time.perf_counter() - started - images * rate)

    def batches(self, images: int) -> int:
        """`images` rounded down to whole batches (at least one)."""
        size = self.config.train.batch_size
        return max(1, images // size) * size

    def budget(self, stage: str) -> TrainConfig:
        """Training of a stage: the plan's images for the screen, and for the race and the disambiguation."""
        plan = self.plan()
        if plan is None:
            raise UserError(f"study {self.config.study_name!r} has no plan yet: run scaler search to start it")
        return self.training(plan.screen_images if stage == SCREEN else plan.race_images)

    def objective(self, trial: optuna.Trial) -> float:
        """The engine's evaluation of the planned run a trial holds, an interruption or crash recorded so that its
        job is queued again."""
        return recording_interruptions(self.runner.objective)(trial)

    def enqueue_missing(self) -> int:
        """Queue, in a seeded order, every job of the decided stages no trial holds (interrupted ones again)."""
        keys = [self.key(job) for job in self.queued_jobs()]
        random.Random(self.config.seed).shuffle(keys)
        return enqueue_missing(self.study, self.config.storage_url, JOB, keys, as_param=False)

    def finished(self, jobs: list[Job]) -> bool:
        """Whether every one of `jobs` has a trial that completed or failed on its own merits."""
        done = {
            queued_key(t, JOB)
            for t in self.study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.FAIL) and holds_its_point(t)
        }
        return all(self.key(job) in done for job in jobs)

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

    def seconds_per_training(self) -> dict[str, float]:
        """Each network's mean wall seconds per race training (train, evaluate, store); before it raced, its screen
        training's scaled to the race's images."""
        plan = self.plan()
        assert plan is not None
        durations = self.durations()
        screen_scale = plan.race_images / max(1, plan.screen_images)
        out = {}
        for label in [*self.feasible, BASE]:
            if durations.get((RACE, label)):
                out[label] = float(np.mean(durations[(RACE, label)]))
            elif durations.get((SCREEN, label)):
                out[label] = float(np.mean(durations[(SCREEN, label)])) * screen_scale
            else:
                out[label] = plan.seconds_per_training.get(label, math.inf)
        return out

    def durations(self) -> dict[tuple[str, str], list[float]]:
        """Wall seconds of every completed training, by (stage, network)."""
        durations: dict[tuple[str, str], list[float]] = {}
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.datetime_start and t.datetime_complete:
                point = job_of(t)
                key = (point.get("stage", ""), point.get("network", ""))
                durations.setdefault(key, []).append((t.datetime_complete - t.datetime_start).total_seconds())
        return durations

    def macs_at_phi(self, member: str) -> int:
        """fvcore MACs of a class member's network at --disambiguate-phi, counted once per process."""
        at = self.config.disambiguate_phi
        assert at is not None
        key = f"{member}@{at:g}"
        if key not in self.counted:
            self.counted[key] = self.count(self.spec_of(member, at))[0]
        return self.counted[key]

    def macs_of(self, network: str) -> float:
        """fvcore MACs of a feasible network or the base, at the searched phi."""
        return float(self.cost_of(BASE).macs) if network == BASE else float(self.feasible[network].macs or 0)

    def fitted_speed(self, per_image: dict[str, float], fallback: float) -> tuple[float, float]:
        """(seconds per image at the base's MACs, seconds per image per extra MAC): the line in MACs through the
        networks' measured seconds per image; (`fallback`, 0) when fewer than two of them differ in MACs."""
        macs = [self.macs_of(label) for label in per_image]
        if len(set(macs)) < 2:
            return fallback, 0.0
        slope, intercept = np.polyfit(macs, list(per_image.values()), 1)
        return float(intercept + slope * self.macs_of(BASE)), float(slope)

    def speed_line(self) -> tuple[float, float]:
        """`fitted_speed` through every network's seconds per race training so far."""
        plan = self.plan()
        assert plan is not None
        per_image = {
            label: (value - plan.overhead) / plan.race_images
            for label, value in self.seconds_per_training().items()
            if math.isfinite(value)
        }
        return self.fitted_speed(per_image, plan.base_seconds_per_image)

    def phi_classes(self, networks: list[str]) -> list[list[str]]:
        """The classes of `networks` that build more than one network at --disambiguate-phi, by representative."""
        classes = (sorted(self.class_at(label)) for label in networks if label in self.feasible)
        return [members for members in classes if len(members) > 1]

    def phi_rate(self, member: str, speed: tuple[float, float]) -> float:
        """Seconds per image of a class member's network at --disambiguate-phi, on the `speed` line in MACs."""
        rate, slope = speed
        return rate + max(0.0, slope) * (self.macs_at_phi(member) - self.macs_of(BASE))

    def phi_seconds(
        self, members: list[str], speed: tuple[float, float], images: int, overhead: float
    ) -> dict[str, float]:
        """Each class member's seconds per training at --disambiguate-phi: measured once it trained there, before
        that `images` at its `phi_rate` plus the `overhead`."""
        measured = self.durations()
        return {
            member: float(np.mean(measured[(str(self.phi_stage), member)]))
            if measured.get((str(self.phi_stage), member))
            else images * self.phi_rate(member, speed) + overhead
            for member in members
        }

    def phi_reserve(self, networks: list[str], speed: tuple[float, float], images: int, overhead: float) -> float:
        """Seconds the disambiguation will need if one of `networks` is picked: two seeds of every distinct network
        its class builds at --disambiguate-phi (the dearest class; 0 without the option)."""
        if self.phi_stage is None:
            return 0.0
        needs = [2 * sum(self.phi_seconds(c, speed, images, overhead).values()) for c in self.phi_classes(networks)]
        return max(needs, default=0.0) / max(1, self.config.workers)

    def phi_load(self, contenders: list[str], per_image: dict[str, float]) -> dict[str, float]:
        """Seconds per race image the disambiguation adds per race round if the dearest class of `contenders` is
        picked: its distinct networks at --disambiguate-phi on two seeds, over MIN_ROUNDS rounds, each network's
        speed on the line through `per_image` in MACs (empty without the option)."""
        if self.phi_stage is None:
            return {}
        speed = self.fitted_speed(per_image, max(per_image.values()))
        rates = [{m: self.phi_rate(m, speed) for m in members} for members in self.phi_classes(contenders)]
        dearest = max(rates, key=lambda load: sum(load.values()), default={})
        return {f"{self.phi_stage}:{m}": rate * 2 / MIN_ROUNDS for m, rate in dearest.items()}

    def advance(self) -> int:
        """Once a stage has finished, decide the next (`decide`, under the study's lock) and queue it; how many jobs
        were queued."""
        if not self.over() and self.deadline is not None:
            with study_lock(self.config.storage_url, self.config.study_name):
                self.decide()
        return self.enqueue_missing()

    def decide(self) -> None:
        """After the screen, who races; after each round, who stays, whether the base still runs, and whether another
        round fits the deadline (or why the race ends); then the disambiguation's rounds. Nothing while a stage is
        unfinished."""
        if not self.finished(self.queued_jobs()):
            return
        if "race_end" not in self.study.user_attrs:
            self.decide_race()
        if "race_end" in self.study.user_attrs and self.phi_stage is not None and self.phi_end() is None:
            self.decide_phi()

    def look_level(self, phi: bool = False) -> float:
        """The confidence each look keeps: the search's error spent evenly over the looks it may take (the screen's
        and one per race round), or with `phi` the disambiguation's over its own rounds."""
        return look_confidence(CONFIDENCE, looks(self.config.max_seeds) - (1 if phi else 0))

    def decide_race(self) -> None:
        """The race's next round, or its end."""
        rounds = self.rounds()
        if not rounds:
            contenders = self.after_screen()
        else:
            val = self.tables(RACE, "val")
            raced = [label for label in rounds[-1]["networks"] if label in val and label != BASE]
            out = eliminated(val, raced, self.look_level())
            if out:
                left = dict(self.study.user_attrs.get("left", {}))
                left |= {label: {"round": len(rounds), **asdict(beaten)} for label, beaten in sorted(out.items())}
                self.study.set_user_attr("left", left)
            contenders = [label for label in raced if label not in out]
        decision = self.next_round(contenders, rounds)
        if isinstance(decision, str):
            self.study.set_user_attr("race_end", decision)
            self.log(f"race over: {decision}")
            return
        seed = self.config.race_seed_list[len(rounds)]
        self.study.set_user_attr("rounds", [*rounds, {"seed": seed, "networks": decision}])
        self.log(f"race round {len(rounds) + 1} on seed {seed}: {', '.join(decision)}")

    def after_screen(self) -> list[str]:
        """The screen's rule applied (every feasible network races when there was no screen)."""
        if not self.screens():
            return sorted(self.feasible)
        screen = self.tables(SCREEN, "val")
        out = screened_out(screen, self.look_level()) if screen else {}
        self.study.set_user_attr("screened_out", {label: asdict(behind) for label, behind in sorted(out.items())})
        kept = [label for label in sorted(screen) if label not in out]
        self.log(
            f"screen done: {len(out)} of {len(screen)} networks significantly behind the leader leave "
            f"({', '.join(f'{label} -{100 * b.mean:.2f} pt' for label, b in out.items()) or 'none'}); "
            f"{', '.join(kept)} race"
        )
        if kept:
            self.replan(kept)
        return kept

    def replan(self, contenders: list[str]) -> None:
        """Size the race's images from the speeds the screen measured: the full budget when three rounds of the
        contenders and the base fit in the time left, else as many images as do."""
        plan = self.plan()
        assert plan is not None and self.setup.dataset is not None and self.deadline is not None
        per_image = {
            label: seconds / plan.race_images  # the screen's seconds per image (its evaluation included)
            for label, seconds in self.seconds_per_training().items()
            if label in contenders
        }
        per_image[BASE] = plan.base_seconds_per_image
        fidelity = self.fidelity()
        full_images = fidelity.target if fidelity else len(self.setup.dataset.train) * self.config.train.epochs
        fixed = plan.overhead * len(per_image)
        load = self.phi_load(contenders, per_image)  # the disambiguation's two seeds, spread over the race's rounds
        fixed += plan.overhead * len(load) * 2 / MIN_ROUNDS
        least = plan.least_images or MIN_IMAGES
        images = race_images_after_screen(
            self.deadline - time.time(), per_image | load, fixed, full_images, least, self.min_rounds
        )
        images = self.batches(images)
        seconds = {
            label: images * rate + (plan.overhead if label == BASE else 0.0) for label, rate in per_image.items()
        }
        self.study.set_user_attr(
            "plan", asdict(replace(plan, race_images=images, seconds_per_training=plan.seconds_per_training | seconds))
        )
        self.log(
            f"race on {images} images per training (timed in the screen){' (the full budget)' if images >= full_images else ''}"
        )

    def next_round(self, contenders: list[str], rounds: list[dict[str, Any]]) -> list[str] | str:
        """The networks of the next round, or why the race ends: resolved, out of seeds, or out of time (a race
        that ends before the budget does says how much of it is left unused)."""
        assert self.deadline is not None
        unused = f"; {max(0.0, self.deadline - time.time()) / 60:.1f} of the budget's {self.config.budget / 60:.1f} min unused"
        if not contenders:
            return "no network left to race (every race training diverged)" + unused
        if len(rounds) >= self.config.max_seeds:
            return f"{self.config.max_seeds} seeds raced (--max-seeds)" + unused
        val = self.tables(RACE, "val")
        base_needed = not base_resolved(val, contenders, BASE)
        if len(contenders) == 1 and not base_needed:
            return "resolved: one network left and its difference to the base excludes zero" + unused
        networks = [*contenders, *([BASE] if base_needed else [])]
        seconds = sum(self.seconds_per_training()[label] for label in networks) / max(1, self.config.workers)
        plan = self.plan()
        assert plan is not None
        reserve = self.phi_reserve(contenders, self.speed_line(), plan.race_images, plan.overhead)
        left = self.deadline - time.time() - reserve
        if seconds > left:
            kept = f" ({reserve / 60:.1f} min kept for --disambiguate-phi)" if reserve else ""
            return (
                f"budget: round {len(rounds) + 1} needs about {seconds / 60:.1f} min, {max(0, left) / 60:.1f} left"
                + kept
            )
        return networks

    def best_now(self) -> tuple[str, dict[str, np.ndarray], list[str]]:
        """The stage the answer comes from (race, else screen), its validation tables, and the confidence set of
        the best there (the race's last round's contenders still in it)."""
        race_val = self.tables(RACE, "val")
        stage = RACE if any(label != BASE for label in race_val) else SCREEN
        val = race_val if stage == RACE else self.tables(SCREEN, "val")
        candidates = [label for label in val if label != BASE]
        if not candidates:
            return stage, val, []
        if stage == RACE:
            last = [label for label in self.rounds()[-1]["networks"] if label in candidates] or candidates
            return stage, val, contenders_after(val, last, self.look_level())
        kept = best_set({label: val[label] for label in candidates}, self.look_level())
        return stage, val, [label for label in candidates if kept[label]]

    def pick_of(self, best: list[str], phi: float | None = None) -> str:
        """The answer's rule applied to `best` (networks at phi, the search's unless given): cheapest by MACs,
        then latency."""
        costs = {
            label: RacingCost(self.cost_of(label, phi).macs, self.cost_of(label, phi).latency_ms) for label in best
        }
        return pick(best, costs)

    def decide_phi(self) -> None:
        """The disambiguation: the distinct networks the pick's class builds at --disambiguate-phi race on two seeds,
        then one more per round, until one is left, --max-seeds, or the deadline; the exported member is then the
        cheapest of their best set."""
        rounds = self.phi_rounds()
        _, _, best = self.best_now()
        if not best:
            self.end_phi("no pick to disambiguate (nothing finished training)")
            return
        chosen = self.pick_of(best)
        members = sorted(self.class_at(chosen))
        if len(members) == 1:
            self.end_phi(f"the pick's class builds one network at phi={self.config.disambiguate_phi:g}")
            return
        val = self.tables(str(self.phi_stage), "val")
        if not rounds:
            contenders, seeds = members, self.config.race_seed_list[:2]
        else:
            raced = [label for label in rounds[-1]["networks"] if label in val]
            contenders = contenders_after(val, raced, self.look_level(phi=True))
            if not contenders:
                self.end_phi("every training of the class diverged")
                return
            if len(contenders) == 1:
                self.end_phi("resolved: one of the class's networks left")
                return
            if len(rounds) >= self.config.max_seeds:
                self.end_phi(f"{self.config.max_seeds} seeds raced (--max-seeds)")
                return
            seeds = [self.config.race_seed_list[len(rounds)]]
        plan = self.plan()
        assert plan is not None and self.deadline is not None
        each = self.phi_seconds(contenders, self.speed_line(), plan.race_images, plan.overhead)
        seconds = len(seeds) * sum(each.values()) / max(1, self.config.workers)
        left = self.deadline - time.time()
        if seconds > left:
            self.end_phi(
                f"budget: {len(seeds)} more seed(s) need about {seconds / 60:.1f} min, {max(0, left) / 60:.1f} left"
            )
            return
        if not rounds:
            self.study.set_user_attr("phi_of", chosen)
        self.study.set_user_attr("phi_rounds", [*rounds, *({"seed": seed, "networks": contenders} for seed in seeds)])
        self.log(
            f"disambiguation at phi={self.config.disambiguate_phi:g} on seed(s) {', '.join(map(str, seeds))}: "
            f"{', '.join(contenders)} (the networks {chosen}'s class builds there)"
        )

    def end_phi(self, reason: str) -> None:
        """Record why the disambiguation ended."""
        self.study.set_user_attr("phi_end", reason)
        self.log(f"disambiguation over: {reason}")

    def trials(self) -> pd.DataFrame:
        """trials.csv: `trials_frame` with each network's multipliers and input size as built, from the space."""
        frame = trials_frame(self.study)
        for column in ("depth", "width", "resolution"):
            values = {label: getattr(network, column) for label, network in self.feasible.items()} | {BASE: 1.0}
            frame[column] = frame.network.map(values)
        at = frame.stage == self.phi_stage
        for index in frame.index[at]:  # the class's members as built at --disambiguate-phi
            built = built_multipliers(self.spec_of(frame.network[index], self.config.disambiguate_phi), self.base)
            frame.loc[index, ["depth", "width", "resolution"]] = built
        frame["pixels"] = [
            self.spec_of(label, self.phi_of(stage)).resolution if isinstance(label, str) else None
            for label, stage in zip(frame.network, frame.stage)
        ]
        return frame

    def pending(self) -> tuple[int, int]:
        """(waiting, running) trials in the study."""
        states = [t.state for t in self.study.get_trials(deepcopy=False)]
        return states.count(TrialState.WAITING), states.count(TrialState.RUNNING)

    def run_queue(self, budget: TrialBudget | None = None) -> int:
        """Claim and run queued jobs until none is left or the budget is spent; how many this process ran.

        When the queue runs dry with nothing running, the next stage is queued (the confirmation after the
        screen). An interrupted or crashed trial goes back to the queue before the interruption goes on up.
        """
        return drain(
            self.study,
            self.objective,
            budget=budget,
            on_empty=self.advance,
            catch=(TrainingDiverged,),
            requeue=self.enqueue_missing,
            heartbeat=self.config.heartbeat or HEARTBEAT,
        )


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per started trial with the columns of trials.csv: what its planned run names, what it measured (as
    far as it got) and why it failed."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        attrs = job_of(t) | t.user_attrs | t.user_attrs.get(ROW, {})
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        for column in TRIAL_COLUMNS[2:]:
            row[column] = attrs.get(column)
        row["val_acc"] = attrs.get("val_acc", math.nan)
        row["epochs"] = attrs.get("epochs", 0)
        row["train_seconds"] = attrs.get("train_seconds", 0.0)
        row["failure"] = attrs.get("failure") or attrs.get(INTERRUPTED) or failure_of_stale(t)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=TRIAL_COLUMNS)
    return frame.astype({"val_acc": float, "train_seconds": float})


def job_of(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The planned run a trial was queued for, from the queue itself (also for a trial stopped before it recorded
    anything, by a signal or kill -9); empty for a trial that holds none."""
    key = queued_key(trial, JOB)
    try:
        point = json.loads(key) if isinstance(key, str) else {}
    except ValueError:
        return {}
    return point if isinstance(point, dict) else {}


def job_name(point: dict[str, Any]) -> str:
    """A search training's short name, 'stage:network:seed' (e.g. 'race:base:2'), from its planned run."""
    return f"{point['stage']}:{point['network']}:{point['seed']}"


def failure_of_stale(trial: optuna.trial.FrozenTrial) -> str | None:
    """Why a FAIL trial with no recorded reason failed: its worker stopped answering (heartbeat)."""
    if trial.state != TrialState.FAIL:
        return None
    return "worker stopped answering (heartbeat); queued again"


def diverged(frame: pd.DataFrame) -> pd.Series:
    """Trials that failed on their own merits: the loss diverged (final, never queued again)."""
    return (frame.state == "FAIL") & frame.failure.fillna("").str.contains("loss became")


def run_worker(config_json: dict[str, Any], budget: TrialBudget, threads: int) -> None:
    """Body of one local worker process: claim and run queued jobs until the queue or the budget is spent."""
    import torch

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    config = SearchConfig.from_json(config_json, progress=False)
    worker_process(
        lambda: GridSearch(config, log=lambda line: print(line, flush=True), enqueue=False).run_queue(budget)
    )


def join_study(study: str, storage: str, data_dir: str | None = None, log: Callable[[str], None] = print) -> int:
    """`scaler worker`: join an existing study from any machine and run its queue; how many trials this worker ran."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    opened = open_study(storage, study, create=False)
    stored = opened.user_attrs.get("config")
    if not stored:
        raise UserError(f"study {study!r} was not made by scaler search")
    overrides: dict[str, Any] = {"storage": storage, "study": study}
    if data_dir:
        overrides["data_dir"] = data_dir
    config = SearchConfig.from_json(stored, **overrides)
    return GridSearch(config, log, enqueue=False).run_queue()
