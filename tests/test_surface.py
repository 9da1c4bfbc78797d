"""Least-squares response surfaces over grid points: model choice, collinear columns, leave-one-out, best_of."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from scaler.study.surface import best_of, fit_surface


def quadratic(x: np.ndarray) -> np.ndarray:
    """A known full quadratic in two coordinates, peaked at (1.2, 0.7)."""
    a, b = x[:, 0] - 1.2, x[:, 1] - 0.7
    return 5.0 - 2.0 * a**2 - 1.5 * b**2 + 0.8 * a * b


def grid(*levels: list[float]) -> np.ndarray:
    """Every combination of the levels, one row per point."""
    return np.array(list(itertools.product(*levels)), dtype=float)


def test_full_quadratic_recovered_exactly() -> None:
    x = grid([0, 1, 2, 3], [0, 1, 2])
    surface = fit_surface(x, quadratic(x))
    assert surface is not None
    assert surface.model == "full quadratic"
    assert (surface.n, surface.parameters) == (12, 6)
    assert surface.loo_rmse == pytest.approx(0, abs=1e-9)
    assert surface.fit_rmse == pytest.approx(0, abs=1e-9)
    fresh = np.array([[0.5, 1.5], [2.5, -1.0], [4.0, 3.0]])
    np.testing.assert_allclose(surface.predict(fresh), quadratic(fresh), atol=1e-9)


def test_falls_back_as_points_run_short() -> None:
    x = np.random.default_rng(0).uniform(0, 3, size=(8, 2))
    diagonal = lambda p: 1.0 + p[:, 0] - 0.5 * p[:, 0] ** 2 + 2.0 * p[:, 1] ** 2  # no cross term
    linear = lambda p: 1.0 + 0.3 * p[:, 0] - 0.2 * p[:, 1]
    eight = fit_surface(x[:8], diagonal(x[:8]))
    assert eight is not None and (eight.model, eight.parameters) == ("full quadratic", 6)
    seven = fit_surface(x[:7], diagonal(x[:7]))
    assert seven is not None and (seven.model, seven.parameters) == ("quadratic without cross terms", 5)
    assert seven.loo_rmse == pytest.approx(0, abs=1e-8)
    for n in (5, 6):
        surface = fit_surface(x[:n], linear(x[:n]))
        assert surface is not None and (surface.model, surface.parameters) == ("linear", 3)
        assert surface.loo_rmse == pytest.approx(0, abs=1e-9)
    assert fit_surface(x[:4], linear(x[:4])) is None
    assert fit_surface(x[:2], linear(x[:2])) is None


def test_noise_shows_in_the_errors() -> None:
    x = grid([0, 1, 2, 3], [0, 1, 2])
    noisy = quadratic(x) + np.random.default_rng(1).normal(0, 0.1, size=len(x))
    surface = fit_surface(x, noisy)
    assert surface is not None
    assert 0 < surface.fit_rmse < surface.loo_rmse


def test_constant_coordinate_is_dropped() -> None:
    x = np.column_stack([np.arange(5.0), np.full(5, 3.0)])
    y = 2.0 + x[:, 0] - 0.25 * x[:, 0] ** 2
    surface = fit_surface(x, y)
    assert surface is not None
    assert (surface.model, surface.parameters) == ("full quadratic", 3)
    assert surface.terms == ((), (0,), (0, 0))
    fresh = np.array([[0.5, 3.0], [6.0, 3.0]])
    np.testing.assert_allclose(surface.predict(fresh), 2.0 + fresh[:, 0] - 0.25 * fresh[:, 0] ** 2, atol=1e-9)
    assert surface.loo_rmse == pytest.approx(0, abs=1e-9)


def test_coordinate_varying_only_by_rounding_counts_as_constant() -> None:
    x = np.column_stack([np.arange(5.0), [0.3, 0.1 + 0.2, 0.3, 0.1 + 0.2, 0.3]])
    surface = fit_surface(x, 1.0 + 2.0 * x[:, 0])
    assert surface is not None
    assert surface.terms == ((), (0,), (0, 0))
    np.testing.assert_allclose(surface.predict(np.array([[7.0, 0.3]])), [15.0], atol=1e-9)


def test_two_level_coordinate_loses_its_square() -> None:
    x = grid([0, 1, 2, 3], [10, 20])  # x2^2 is a combination of 1 and x2 on two levels
    y = 1.0 + x[:, 0] ** 2 - 0.1 * x[:, 1] + 0.05 * x[:, 0] * x[:, 1]
    surface = fit_surface(x, y)
    assert surface is not None
    assert (surface.model, surface.parameters) == ("full quadratic", 5)
    assert (1, 1) not in surface.terms
    np.testing.assert_allclose(surface.predict(x), y, atol=1e-9)


def test_best_of_picks_the_maximum() -> None:
    x = grid([0, 1, 2, 3], [0, 1, 2])
    surface = fit_surface(x, quadratic(x))
    assert surface is not None
    candidates = np.array([[0.0, 0.0], [1.2, 0.7], [3.0, 2.0], [1.0, 1.0]])
    label, value = best_of(surface, candidates, ["origin", "peak", "corner", "near"])
    assert label == "peak"
    assert value == pytest.approx(5.0)
    with pytest.raises(ValueError):
        best_of(surface, candidates, ["too", "few"])


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError):
        fit_surface(np.arange(6.0), np.arange(6.0))
    with pytest.raises(ValueError):
        fit_surface(np.zeros((6, 2)), np.zeros(5))
    x = grid([0, 1, 2], [0, 1, 2])
    surface = fit_surface(x, quadratic(x))
    assert surface is not None
    with pytest.raises(ValueError):
        surface.predict(np.zeros((2, 3)))
