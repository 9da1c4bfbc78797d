"""How long a proxy training must be on this data: the base trained on a ladder of doubling lengths, and the rule
that reads it (when the base has stopped gaining, how short a training still learns, whether it learns at all)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

LADDER_START_STEPS = 32  # the first rung: this many optimizer steps, so that even the shortest proxy is measured
LEARNS_SHARE = 0.9  # a proxy learns when it reaches this share of the longest training's gain over chance
ABOVE_CHANCE_FLOORS = 3.0  # the longest training must beat chance by this many validation floors

PLATEAU, BUDGET, NOT_LEARNING = "plateau", "budget", "not learning"


@dataclass(frozen=True)
class Rung:
    """One training of the base on the ladder: its length in images, validation accuracy and wall seconds."""

    images: int
    val_acc: float
    seconds: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rung:
        """Inverse of `asdict`."""
        return cls(int(data["images"]), float(data["val_acc"]), float(data["seconds"]))


def validation_floor(accuracy: float, images: int) -> float:
    """One run's binomial noise on `images` validation images at `accuracy`: sqrt(p(1-p)/n)."""
    p = min(max(accuracy, 0.0), 1.0)
    return math.sqrt(p * (1 - p) / max(1, images))


def ladder_start(batch_size: int) -> int:
    """The first rung's images: LADDER_START_STEPS optimizer steps, however large the split (the rungs above it
    show how much shorter than a pass over the data a proxy may be)."""
    return LADDER_START_STEPS * batch_size


def plateau_at(rungs: Sequence[Rung], val_images: int) -> int | None:
    """Images of the first rung that the next (twice as long) does not beat by more than the validation floor."""
    for shorter, longer in zip(rungs, rungs[1:]):
        if longer.val_acc - shorter.val_acc <= validation_floor(longer.val_acc, val_images):
            return shorter.images
    return None


def above_chance(rungs: Sequence[Rung], val_images: int, chance: float) -> bool:
    """Whether the best rung beats chance by ABOVE_CHANCE_FLOORS validation floors."""
    best = max(rung.val_acc for rung in rungs)
    return best - chance > ABOVE_CHANCE_FLOORS * validation_floor(chance, val_images)


def learns_from(rungs: Sequence[Rung], val_images: int, chance: float) -> int | None:
    """Images of the shortest rung that reaches LEARNS_SHARE of the best rung's gain over chance (None when no
    rung beats chance)."""
    if not rungs or not above_chance(rungs, val_images, chance):
        return None
    best = max(rung.val_acc for rung in rungs)
    for rung in rungs:
        if rung.val_acc - chance >= LEARNS_SHARE * (best - chance):
            return rung.images
    return None


def climb(rungs: Sequence[Rung], val_images: int, affordable: Callable[[int, int], bool]) -> int | None:
    """The next rung's images, or None: the ladder stops at a plateau, or when training the next rung and then the
    search at the longest rung so far (`affordable(next_images, proxy_images)`) would not fit the budget left."""
    if not rungs or plateau_at(rungs, val_images) is not None:
        return None
    following = 2 * rungs[-1].images
    return following if affordable(following, rungs[-1].images) else None


@dataclass(frozen=True)
class Fidelity:
    """What the ladder says: the proxy's target images (the plateau, else the longest rung, which the budget may
    shorten), the fewest images at which the base still learns, and in words why."""

    target: int
    least: int
    status: str
    reason: str
    rungs: tuple[Rung, ...]
    chance: float
    val_images: int

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the study and summary.json."""
        return asdict(self) | {"rungs": [asdict(rung) for rung in self.rungs]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fidelity:
        """Inverse of `to_json`."""
        return cls(**(data | {"rungs": tuple(Rung.from_json(rung) for rung in data["rungs"])}))

    def accuracy_at(self, images: int) -> float:
        """The base's validation accuracy at the longest rung no longer than `images` (the first rung's below it)."""
        shorter = [rung for rung in self.rungs if rung.images <= images]
        return (shorter[-1] if shorter else self.rungs[0]).val_acc

    def verdict(self, proxy: int, measured: tuple[float, int] | None = None) -> str:
        """One line: at `proxy` images, how the base compares with the longest training measured; `measured` is
        the base's mean validation accuracy at the proxy over that many seeds, once it has raced there."""
        longest = self.rungs[-1]
        floor = validation_floor(longest.val_acc, self.val_images)
        base, what = (measured[0], f"mean of {measured[1]} seeds") if measured else (self.accuracy_at(proxy), "ladder")
        against = f" against {longest.val_acc:.4f} at {longest.images}" if proxy < longest.images else ""
        where = (
            f"base {base:.4f} at {proxy} training images ({what}){against} (validation floor {100 * floor:.2f} "
            f"points on {self.val_images} images, chance {self.chance:.2f})"
        )
        if self.status == NOT_LEARNING:
            return f"the proxy does not learn: {where}; {self.reason}"
        if self.status == PLATEAU and proxy >= self.target:
            return f"the proxy has reached the base's plateau ({self.reason}): {where}"
        if measured and against and longest.val_acc - base <= floor:
            return (
                f"the proxy reaches the longest training's accuracy within the validation floor ({self.status}: "
                f"{self.reason}): {where}"
            )
        if proxy >= self.target:
            return f"the proxy is short of the base's plateau ({self.reason}): {where}"
        return (
            f"the proxy is shorter than the {self.target} images the ladder asks for ({self.status}: {self.reason}); "
            f"the budget affords {proxy}: {where}"
        )


def read_ladder(rungs: Sequence[Rung], val_images: int, chance: float, stopped_by_budget: bool) -> Fidelity:
    """The ladder's verdict: target the plateau when one was seen, else the longest rung; the fewest images are the
    shortest rung that learns; NOT_LEARNING when no rung beats chance."""
    if not rungs:
        raise ValueError("the fidelity ladder has no rung")
    plateau = plateau_at(rungs, val_images)
    least = learns_from(rungs, val_images, chance)
    longest = rungs[-1]
    if least is None:
        return Fidelity(
            longest.images,
            longest.images,
            NOT_LEARNING,
            f"no training up to {longest.images} images beats chance by {ABOVE_CHANCE_FLOORS:g} validation floors",
            tuple(rungs),
            chance,
            val_images,
        )
    if plateau is not None:
        reason = f"twice as long a training gains at most the validation floor from {plateau} images on"
        return Fidelity(plateau, min(least, plateau), PLATEAU, reason, tuple(rungs), chance, val_images)
    gain = longest.val_acc - rungs[-2].val_acc if len(rungs) > 1 else math.nan
    why = "the budget stopped the ladder" if stopped_by_budget else "the ladder ended"
    reason = (
        f"{why} while the base still gained {100 * gain:+.2f} points from {rungs[-2].images if len(rungs) > 1 else 0}"
    )
    reason += f" to {longest.images} images"
    return Fidelity(longest.images, least, BUDGET, reason, tuple(rungs), chance, val_images)
