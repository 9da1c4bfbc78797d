"""Response surfaces over trained grid points: least-squares polynomials in the coordinates, judged by leave-one-out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

# A term is the tuple of coordinate indices multiplied together: () the constant, (j,) x_j, (j, j) x_j^2, (j, l) x_j*x_l.
Term = tuple[int, ...]

MODELS = ("full quadratic", "quadratic without cross terms", "linear")
# A feature whose unit-norm column is within this (relative) distance of the span of the kept ones is dropped.
COLLINEAR_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Surface:
    """A least-squares polynomial in the coordinates, its leave-one-out error and the points it was fitted on."""

    model: str  # "full quadratic", "quadratic without cross terms" or "linear"
    coefficients: tuple[float, ...]  # one per kept term, in the standardized coordinates (x - center) / scale
    n: int  # points fitted
    parameters: int  # kept terms
    loo_rmse: float  # leave-one-out root mean square prediction error (same units as y)
    fit_rmse: float  # in-sample residual RMS
    terms: tuple[Term, ...]  # the kept terms, in the order of `coefficients`
    center: tuple[float, ...]  # per-coordinate mean over the fitted points
    scale: tuple[float, ...]  # per-coordinate standard deviation over the fitted points (1 where constant)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions at x, an (m, k) array of coordinates, as an (m,) array."""
        points = _coordinates(x)
        if points.shape[1] != len(self.center):
            raise ValueError(f"surface was fitted on {len(self.center)} coordinates, got {points.shape[1]}")
        z = (points - np.array(self.center)) / np.array(self.scale)
        return _design(z, self.terms) @ np.array(self.coefficients)


def fit_surface(x: np.ndarray, y: np.ndarray) -> Surface | None:
    """The richest polynomial (full quadratic, no cross terms, linear) with n >= parameters + 2; None if even linear is short."""
    points = _coordinates(x)
    values = np.asarray(y, dtype=float)
    if values.shape != (points.shape[0],):
        raise ValueError(
            f"y must be 1-D with one value per point (x has {points.shape[0]}, y has shape {values.shape})"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError("y must be finite")
    n, k = points.shape
    center = points.mean(axis=0) if n else np.zeros(k)
    spread = points.std(axis=0) if n else np.ones(k)
    # A coordinate that varies only by rounding (0.1 + 0.2 against 0.3) counts as constant: its terms drop out.
    constant = spread <= 1e-12 * np.maximum(1.0, np.abs(center))
    scale = np.where(constant, 1.0, spread)
    z = (points - center) / scale
    z[:, constant] = 0.0
    for model in MODELS:
        terms = _independent(z, _candidates(model, k))
        if n >= len(terms) + 2:
            design = _design(z, terms)
            coefficients = _solve(design, values)
            residuals = values - design @ coefficients
            errors = [
                values[i] - design[i] @ _solve(np.delete(design, i, axis=0), np.delete(values, i)) for i in range(n)
            ]
            return Surface(
                model=model,
                coefficients=tuple(float(c) for c in coefficients),
                n=n,
                parameters=len(terms),
                loo_rmse=float(np.sqrt(np.mean(np.square(errors)))),
                fit_rmse=float(np.sqrt(np.mean(np.square(residuals)))),
                terms=terms,
                center=tuple(float(c) for c in center),
                scale=tuple(float(s) for s in scale),
            )
    return None


def best_of(surface: Surface, x: np.ndarray, labels: Sequence[str]) -> tuple[str, float]:
    """The label whose coordinates the surface predicts highest, and that prediction."""
    predictions = surface.predict(x)
    if len(labels) != len(predictions) or not len(labels):
        raise ValueError(f"best_of needs one label per point, at least one (got {len(labels)} for {len(predictions)})")
    best = int(np.argmax(predictions))
    return labels[best], float(predictions[best])


def _coordinates(x: np.ndarray) -> np.ndarray:
    """x as a finite float (points, coordinates) array."""
    points = np.asarray(x, dtype=float)
    if points.ndim != 2:
        raise ValueError(f"coordinates must be a 2-D (points, coordinates) array, got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("coordinates must be finite")
    return points


def _candidates(model: str, k: int) -> list[Term]:
    """The terms of `model` in k coordinates: constant, linear, squares, then cross products."""
    terms: list[Term] = [(), *((j,) for j in range(k))]
    if model != "linear":
        terms += [(j, j) for j in range(k)]
    if model == "full quadratic":
        terms += list(combinations(range(k), 2))
    return terms


def _design(z: np.ndarray, terms: Sequence[Term]) -> np.ndarray:
    """One column per term: the product of its coordinates (ones for the constant)."""
    columns = [np.prod(z[:, list(term)], axis=1) for term in terms]
    return np.column_stack(columns) if columns else np.empty((z.shape[0], 0))


def _independent(z: np.ndarray, terms: Sequence[Term]) -> tuple[Term, ...]:
    """The terms, in order, whose columns are not numerically collinear with the earlier kept ones."""
    kept: list[Term] = []
    basis = np.empty((z.shape[0], 0))
    for term in terms:
        column = _design(z, [term])
        norm = float(np.linalg.norm(column))
        if norm == 0:
            continue
        candidate = np.hstack([basis, column / norm])
        singular = np.linalg.svd(candidate, compute_uv=False)
        if len(singular) == candidate.shape[1] and singular[-1] > COLLINEAR_TOLERANCE * singular[0]:
            kept.append(term)
            basis = candidate
    return tuple(kept)


def _solve(design: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Least-squares coefficients (minimum norm when the design is rank-deficient)."""
    return np.linalg.lstsq(design, values, rcond=None)[0]
