"""The search space: every (alpha, beta, gamma) of a grid, built, deduplicated and measured with fvcore."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scaler.errors import UserError
from scaler.model.scaling import EFFICIENTNET_COEFFICIENTS, scale_compound
from scaler.model.spec import NetSpec

ALPHA_RANGE = (1.0, 2.0)
BETA_RANGE = (1.0, 1.5)
GAMMA_RANGE = (1.0, 1.5)
UNREACHABLE = 0.5  # rounding never brings measured MACs below half the nominal alpha*beta^2*gamma^2 (see space())


@dataclass(frozen=True, order=True)
class Candidate:
    """One point of the grid."""

    alpha: float
    beta: float
    gamma: float

    @property
    def product(self) -> float:
        """alpha * beta^2 * gamma^2, the FLOPs factor per unit of phi."""
        return self.alpha * self.beta**2 * self.gamma**2

    @property
    def label(self) -> str:
        """Stable text key, e.g. 'a1.20_b1.10_g1.15'."""
        return f"a{self.alpha:.2f}_b{self.beta:.2f}_g{self.gamma:.2f}"

    @classmethod
    def from_label(cls, label: str) -> Candidate:
        """Inverse of `label`."""
        a, b, g = (float(part[1:]) for part in label.split("_"))
        return cls(a, b, g)

    def distance(self, other: Candidate) -> float:
        """Euclidean distance in (log alpha, log beta, log gamma)."""
        return math.dist(
            [math.log(v) for v in (self.alpha, self.beta, self.gamma)],
            [math.log(v) for v in (other.alpha, other.beta, other.gamma)],
        )


CONTROL = Candidate(*EFFICIENTNET_COEFFICIENTS)


@dataclass(frozen=True)
class GridPoint:
    """One distinct network of the space: the grid points that build it, its cost and its multipliers as built.

    `label` is the member whose nominal alpha*beta^2*gamma^2 is nearest the target: the coefficients a
    later `scaler scale` carries to other phi. `depth`, `width`, `resolution` are the built network's
    repeats, stage channels and input size over the base's. `macs` is None when the nominal product is
    so far above the target that no rounding could bring it into the band (not measured).
    """

    label: str
    members: tuple[str, ...]
    depth: float
    width: float
    resolution: float
    macs: int | None
    macs_ratio: float | None
    params: int | None
    feasible: bool

    @property
    def candidate(self) -> Candidate:
        """The representative grid point."""
        return Candidate.from_label(self.label)

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the study's storage."""
        return asdict(self) | {"members": list(self.members)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GridPoint:
        """Inverse of `to_json`."""
        return cls(**(data | {"members": tuple(data["members"])}))


def axis(low: float, high: float, step: float) -> list[float]:
    """low, low + step, ... up to high."""
    count = int(round((high - low) / step))
    return [round(low + i * step, 6) for i in range(count + 1) if low + i * step <= high + 1e-9]


def grid_points(step: float) -> list[Candidate]:
    """Every alpha in [1, 2] and beta, gamma in [1, 1.5] at `step`."""
    if not 0 < step <= 0.5 or abs(step * 100 - round(step * 100)) > 1e-6:
        raise UserError(f"--step must be a multiple of 0.01 in (0, 0.5] (got {step}): labels keep two decimals")
    return [
        Candidate(a, b, g)
        for a in axis(*ALPHA_RANGE, step)
        for b in axis(*BETA_RANGE, step)
        for g in axis(*GAMMA_RANGE, step)
    ]


def built_multipliers(spec: NetSpec, base: NetSpec) -> tuple[float, float, float]:
    """(depth, width, resolution) of `spec` over `base`: total repeats, total stage channels, input size."""
    depth = sum(s.repeats for s in spec.stages) / sum(s.repeats for s in base.stages)
    width = sum(s.out_channels for s in spec.stages) / sum(s.out_channels for s in base.stages)
    return round(depth, 4), round(width, 4), round(spec.resolution / base.resolution, 4)


def space(
    base: NetSpec,
    phi: float,
    step: float,
    ratio_tolerance: float,
    count: Callable[[NetSpec], tuple[int, int]],
    extra: Iterable[Candidate] = (CONTROL,),
) -> list[GridPoint]:
    """Every distinct network the grid (and `extra` points) builds at `phi`, measured, feasible within the band.

    Feasible: measured MACs within `ratio_tolerance` of 2^phi times the base's. `count(spec)` returns
    (MACs, params). Channels round at most 10 % down (MACs at most 19 %) and the input size by half a
    stride, so a network whose nominal product is over twice the band's top is not measured.
    """
    if not 0 < ratio_tolerance < 0.5:
        raise UserError(
            f"--ratio-tolerance must be in (0, 0.5) (got {ratio_tolerance}): at 0.5 the base itself would be feasible"
        )
    target = 2.0**phi
    low, high = target * (1 - ratio_tolerance), target * (1 + ratio_tolerance)
    groups: dict[NetSpec, list[Candidate]] = {}
    for candidate in dict.fromkeys([*grid_points(step), *extra]):
        spec = scale_compound(base, candidate.alpha, candidate.beta, candidate.gamma, phi)
        groups.setdefault(spec, []).append(candidate)
    base_macs, _ = count(base)
    networks = []
    for spec, members in groups.items():
        representative = nearest_target(members, phi)
        macs = params = ratio = None
        if representative.product**phi * UNREACHABLE <= high:
            macs, params = count(spec)
            ratio = round(macs / base_macs, 4)
        depth, width, resolution = built_multipliers(spec, base)
        networks.append(
            GridPoint(
                label=representative.label,
                members=tuple(sorted(c.label for c in members)),
                depth=depth,
                width=width,
                resolution=resolution,
                macs=macs,
                macs_ratio=ratio,
                params=params,
                feasible=ratio is not None and low <= ratio <= high,
            )
        )
    if not any(n.feasible for n in networks):
        raise UserError(
            f"no network of the grid at step {step} has measured MACs within {ratio_tolerance:.0%} of {target:g}x "
            "the base's; use a finer --step or a wider --ratio-tolerance"
        )
    return sorted(networks, key=lambda n: n.label)


def distinct_at(base: NetSpec, members: Sequence[str], phi: float) -> dict[NetSpec, list[str]]:
    """The networks a class's members build at `phi`, each with the members that build it: one entry where the
    class still holds one network, more where its coefficients part ways."""
    built: dict[NetSpec, list[str]] = {}
    for label in members:
        c = Candidate.from_label(label)
        built.setdefault(scale_compound(base, c.alpha, c.beta, c.gamma, phi), []).append(label)
    return built


def nearest_target(members: Sequence[Candidate], phi: float) -> Candidate:
    """The member whose nominal alpha*beta^2*gamma^2 at `phi` is nearest 2^phi (ties by label): a class's label."""
    return min(members, key=lambda c: (abs(math.log(c.product**phi / 2.0**phi)), c.label))


def representatives(base: NetSpec, members: Sequence[str], phi: float, at: float) -> dict[str, tuple[str, ...]]:
    """The distinct networks a class (its members at `phi`) builds at `at`, each named by the member nearest the
    FLOPs target at `phi` (the rule the class's own label follows), with the members that build it."""
    return {
        nearest_target([Candidate.from_label(m) for m in group], phi).label: tuple(sorted(group))
        for group in distinct_at(base, members, at).values()
    }


def class_note(base: NetSpec, members: Sequence[str], exported: str, phis: Sequence[float]) -> str | None:
    """One line when the members of the searched class build different networks at some of `phis`, naming the
    member used; None when they agree everywhere."""
    parted = {phi: len(distinct_at(base, members, phi)) for phi in phis if len(members) > 1}
    split = {phi: count for phi, count in parted.items() if count > 1}
    if not split:
        return None
    where = ", ".join(f"{count} at phi={phi:g}" for phi, count in sorted(split.items()))
    return (
        f"note: the search's class of {len(members)} coefficient sets builds one network at phi=1 but different "
        f"ones at larger phi ({where}); using the exported member {exported}"
    )


def control_network(networks: list[GridPoint], control: Candidate = CONTROL) -> tuple[GridPoint, bool]:
    """The feasible network EfficientNet's (1.2, 1.1, 1.15) builds, or the nearest one (and whether it was snapped)."""
    feasible = [n for n in networks if n.feasible]
    for network in feasible:
        if control.label in network.members:
            return network, False
    nearest = min(feasible, key=lambda n: (min(control.distance(Candidate.from_label(m)) for m in n.members), n.label))
    return nearest, True
