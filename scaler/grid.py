"""The candidate grid of (alpha, beta, gamma) with alpha * beta^2 * gamma^2 close to 2."""

from __future__ import annotations

from dataclasses import dataclass

from scaler.errors import UserError

ALPHA_RANGE = (1.0, 2.0)
BETA_RANGE = (1.0, 1.5)
GAMMA_RANGE = (1.0, 1.5)


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
        """Stable text key, e.g. 'a1.20_b1.10_g1.15' (the Optuna grid parameter)."""
        return f"a{self.alpha:.2f}_b{self.beta:.2f}_g{self.gamma:.2f}"

    @classmethod
    def from_label(cls, label: str) -> Candidate:
        """Inverse of `label`."""
        a, b, g = (float(part[1:]) for part in label.split("_"))
        return cls(a, b, g)


def _axis(low: float, high: float, step: float) -> list[float]:
    count = int(round((high - low) / step))
    return [round(low + i * step, 6) for i in range(count + 1) if low + i * step <= high + 1e-9]


def feasible_grid(step: float = 0.1, tolerance: float = 0.1, target: float = 2.0) -> list[Candidate]:
    """Grid points of alpha in [1, 2], beta and gamma in [1, 1.5] with |a*b^2*g^2 - target| <= tolerance."""
    if not 0 < step <= 0.5:
        raise UserError(f"--step must be in (0, 0.5] (got {step})")
    if tolerance < 0:
        raise UserError(f"--tolerance must be >= 0 (got {tolerance})")
    points = [
        Candidate(a, b, g)
        for a in _axis(*ALPHA_RANGE, step)
        for b in _axis(*BETA_RANGE, step)
        for g in _axis(*GAMMA_RANGE, step)
    ]
    feasible = [c for c in points if abs(c.product - target) <= tolerance]
    if not feasible:
        raise UserError(
            f"no grid point has |alpha*beta^2*gamma^2 - {target}| <= {tolerance} at step {step}; raise --tolerance"
        )
    return feasible
