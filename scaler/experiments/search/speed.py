"""How long a search's trainings take: the timed trainings that measure it (probes, the fidelity ladder of the
base), seconds per training so far, the speed line in MACs through them, and the time kept back for the
disambiguation at a larger phi."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, replace

import numpy as np

from scaler.errors import UserError
from scaler.experiments.search.plan import BASE, RACE, SCREEN
from scaler.experiments.search.state import RACE_WITHOUT_SCREEN, SearchState
from scaler.study.engine import cut_to
from scaler.study.fidelity import NOT_LEARNING, Fidelity, Rung, climb, ladder_start, plateau_at, read_ladder
from scaler.study.racing import FIDELITY_ROUNDS, MIN_ROUNDS, PlanCosts
from scaler.study.run import evaluate
from scaler.training.train import TrainConfig, TrainingDiverged

PROBE_IMAGES = 4096  # the timed trainings (the base, the dearest network) that size the plan


class SearchSpeeds(SearchState):
    """Seconds per training, the speed line and the disambiguation's reserve, from what the study measured."""

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


class SearchTiming(SearchSpeeds):
    """Timed trainings: the probes that size the plan and the fidelity ladder of the base."""

    def training(self, images: int) -> TrainConfig:
        """The search's training cut to `images` images, with enough passes over the data to reach them."""
        assert self.setup.dataset is not None
        return cut_to(self.config.train, images, len(self.setup.dataset.train))

    def batches(self, images: int) -> int:
        """`images` rounded down to whole batches (at least one)."""
        size = self.config.train.batch_size
        return max(1, images // size) * size

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
