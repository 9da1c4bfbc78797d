"""When a search moves on: after the screen, who races; after each round, who stays and whether another round
fits; then the disambiguation. The rules themselves are scaler.study.racing's pure functions."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np

from scaler.experiments.search.budget import SearchBudget
from scaler.experiments.search.plan import BASE, RACE, SCREEN
from scaler.study.racing import (
    CONFIDENCE,
    base_resolved,
    best_set,
    contenders_after,
    eliminated,
    look_confidence,
    looks,
    pick,
    screened_out,
)
from scaler.study.racing import Cost as RacingCost


class SearchRace(SearchBudget):
    """The screen's and the race's decisions and the confidence set of the best they leave."""

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


class SearchDecisions(SearchRace):
    """The stages' decisions, each taken once under the study's lock by whichever process finds a stage finished:
    the race's, then the disambiguation's."""

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
