"""Saturating accuracy-vs-MACs fits and their extrapolation across phi."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scaler.errors import UserError
from scaler.extrapolate import (
    DEFAULT_EXPONENT,
    HELD_OUT_COLUMNS,
    SaturatingFit,
    extrapolate,
    fit_saturating,
    held_out_error,
)

MACS = 15.7e6 * 1.9 ** np.arange(5)


def curve(macs: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """Ground-truth saturating curve anchored at the smallest MACs."""
    return a - b * (np.asarray(macs) / MACS[0]) ** (-c)


def synthetic_frame() -> pd.DataFrame:
    """Two variants, phi 0..4, trained up to phi 3 (A) and phi 2 (B); noiseless."""
    rows = []
    for variant, (a, b, c), trained_up_to in (("A", (0.93, 0.30, 0.45), 3), ("B", (0.88, 0.20, 0.8), 2)):
        accuracy = curve(MACS, a, b, c)
        for phi, (macs, acc) in enumerate(zip(MACS, accuracy)):
            rows.append(
                {"variant": variant, "phi": phi, "macs": macs, "test_acc": acc if phi <= trained_up_to else math.nan}
            )
    return pd.DataFrame(rows)


def test_recovers_known_parameters_from_noiseless_points() -> None:
    fit = fit_saturating(MACS, curve(MACS, 0.931, 0.25, 0.48))
    assert fit.method == "3-param"
    assert fit.macs0 == MACS[0]
    assert (fit.a, fit.b, fit.c) == pytest.approx((0.931, 0.25, 0.48), abs=1e-6)
    assert fit.residual_rms < 1e-9
    assert fit.describe() == "acc = 0.931 - 0.250·(F/15.7M)^-0.48"


def test_two_points_use_the_prior_exponent_and_pass_through_both() -> None:
    accuracy = [0.70, 0.78]
    fit = fit_saturating(MACS[:2], accuracy)
    assert fit.method == "fixed-exponent" and fit.c == DEFAULT_EXPONENT
    assert fit.predict(MACS[:2]) == pytest.approx(accuracy, abs=1e-12)
    assert fit.b >= 0 and fit.a <= 1


def test_two_points_clamp_to_constraints() -> None:
    falling = fit_saturating(MACS[:2], [0.8, 0.7])
    assert falling.b == 0 and falling.a == pytest.approx(0.75)
    steep = fit_saturating(MACS[:2], [0.2, 0.99])
    assert steep.a <= 1 and steep.b >= 0


def test_one_point_is_flat_and_duplicates_average() -> None:
    flat = fit_saturating([MACS[0]], [0.6])
    assert flat.method == "flat" and flat.predict(MACS[-1]) == pytest.approx(0.6)
    assert isinstance(flat.predict(1e9), float)
    averaged = fit_saturating([MACS[0], MACS[0]], [0.6, 0.7])
    assert averaged.method == "flat" and averaged.a == pytest.approx(0.65)


def test_predictions_never_decrease_with_macs() -> None:
    rng = np.random.default_rng(0)
    accuracy = curve(MACS, 0.9, 0.3, 0.6) + rng.normal(0, 0.01, MACS.size)
    fit = fit_saturating(MACS, accuracy)
    assert fit.b >= 0 and fit.a <= 1 and 0.01 <= fit.c <= 3
    grid = np.geomspace(MACS[0] / 4, MACS[-1] * 100, 200)
    assert np.all(np.diff(fit.predict(grid)) >= 0)
    assert fit.predict(grid)[-1] <= fit.a <= 1


def test_held_out_error_structure_and_accuracy() -> None:
    table = held_out_error(synthetic_frame())
    assert list(table.columns) == HELD_OUT_COLUMNS
    assert table["variant"].tolist() == ["A", "B"]
    assert table["held_out_phi"].tolist() == [3, 2]
    assert table["fit_points"].tolist() == [3, 2]
    assert table["method"].tolist() == ["3-param", "fixed-exponent"]
    assert table["error"].to_numpy() == pytest.approx((table["predicted"] - table["measured"]).to_numpy())
    assert table["abs_error"].iloc[0] < 1e-6
    assert table["abs_error"].iloc[1] < 0.02


def test_held_out_error_skips_variants_with_one_trained_point() -> None:
    frame = synthetic_frame()
    frame.loc[(frame["variant"] == "B") & (frame["phi"] > 0), "test_acc"] = math.nan
    assert held_out_error(frame)["variant"].tolist() == ["A"]


def test_extrapolate_marks_untrained_rows() -> None:
    frame = synthetic_frame()
    out = extrapolate(frame)
    assert "predicted_acc" not in frame.columns
    assert out["extrapolated"].tolist() == frame["test_acc"].isna().tolist()
    assert out["predicted_acc"].notna().all()
    a_rows = out[out["variant"] == "A"]
    assert a_rows["predicted_acc"].to_numpy() == pytest.approx(curve(MACS, 0.93, 0.30, 0.45), abs=1e-6)
    assert a_rows["fit"].nunique() == 1 and a_rows["fit"].iloc[0].startswith("acc = 0.930")


@pytest.mark.parametrize(
    "macs, accuracy",
    [
        ([], []),
        ([1e6, 2e6], [0.5]),
        ([1e6, math.nan], [0.5, 0.6]),
        ([1e6, 2e6], [0.5, math.inf]),
        ([0.0, 2e6], [0.5, 0.6]),
        ([1e6, 2e6], [50.0, 60.0]),
    ],
)
def test_bad_input_raises_one_line_user_error(macs: list[float], accuracy: list[float]) -> None:
    with pytest.raises(UserError) as caught:
        fit_saturating(macs, accuracy)
    assert "\n" not in str(caught.value)


def test_missing_column_is_a_user_error() -> None:
    with pytest.raises(UserError, match="test_acc"):
        extrapolate(synthetic_frame().drop(columns="test_acc"))


def test_fit_is_frozen() -> None:
    fit = fit_saturating([MACS[0]], [0.5])
    assert isinstance(fit, SaturatingFit)
    with pytest.raises(AttributeError):
        fit.a = 0.9  # type: ignore[misc]
