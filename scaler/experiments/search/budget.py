"""How a search spends its budget: the plan, made once from the timed trainings, each stage's images, and the
race's images once the screen has measured the contenders' speeds."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, replace

from scaler.errors import UserError
from scaler.experiments.search.plan import BASE, SCREEN
from scaler.experiments.search.speed import SearchTiming
from scaler.experiments.search.state import RACE_WITHOUT_SCREEN
from scaler.study.racing import MIN_IMAGES, MIN_ROUNDS, SearchPlan, budget_text, plan_search, race_images_after_screen

PROBE_IMAGES = 4096  # the timed trainings (the base, the dearest network) that size the plan


class SearchBudget(SearchTiming):
    """The plan, made once from timed trainings (and the fidelity ladder), and the race resized after the screen."""

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

    def stage_images(self, stage: str) -> int:
        """Training images of a stage's runs: the plan's for the screen, and for the race and the disambiguation."""
        plan = self.plan()
        if plan is None:
            raise UserError(f"study {self.config.study_name!r} has no plan yet: run scaler search to start it")
        return plan.screen_images if stage == SCREEN else plan.race_images
