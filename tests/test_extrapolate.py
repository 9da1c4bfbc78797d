"""Saturating accuracy-vs-MACs fits and their extrapolation across phi."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scaler.errors import UserError
from scaler.study.extrapolate import (
    DEFAULT_EXPONENT,
    HELD_OUT_COLUMNS,
    SaturatingFit,
    extrapolate,
    fit_saturating,
    held_out_error,
    last_value,
    log_linear,
    prediction_interval,
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


def seeded_frame(noise: float, seeds: int = 4, rng_seed: int = 0) -> pd.DataFrame:
    """Variant A's curve at phi 0..3 trained on `seeds` seeds, each seed shifted by its own noise per point."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for seed in range(seeds):
        for phi, (macs, acc) in enumerate(zip(MACS[:4], curve(MACS[:4], 0.93, 0.30, 0.45))):
            rows.append(
                {"variant": "A", "phi": phi, "seed": seed, "macs": macs, "test_acc": acc + rng.normal(0, noise)}
            )
    return pd.DataFrame(rows)


def test_naive_predictors() -> None:
    assert last_value(MACS[:3], [0.5, 0.6, 0.7]) == pytest.approx(0.7)
    assert last_value([MACS[0], MACS[1], MACS[1]], [0.5, 0.6, 0.8]) == pytest.approx(0.7)
    line = 0.4 + 0.02 * np.log(MACS[:3])
    assert log_linear(MACS[:3], line, MACS[4]) == pytest.approx(0.4 + 0.02 * np.log(MACS[4]))
    assert log_linear(MACS[:1], [0.6], MACS[3]) == pytest.approx(0.6)


def test_held_out_fit_beats_naive_predictors_on_a_saturating_curve() -> None:
    row = held_out_error(synthetic_frame()).iloc[0]
    assert row.abs_error < 1e-6 and row.beats_naive
    assert abs(row.last_value_error) > 0.01 and abs(row.log_linear_error) > 1e-3
    assert not row.at_bound and math.isnan(row.pred_lo) and row.covered is None  # one seed: no interval


def test_prediction_interval_widens_with_seed_noise_and_needs_two_seeds() -> None:
    widths = []
    for noise in (0.002, 0.02):
        frame = seeded_frame(noise)
        low, high = prediction_interval(frame.macs, frame.test_acc, frame.seed, [MACS[4]], draws=60)
        assert low[0] < high[0]
        widths.append(high[0] - low[0])
    assert widths[1] > 3 * widths[0]
    one_seed = seeded_frame(0.01, seeds=1)
    assert np.isnan(prediction_interval(one_seed.macs, one_seed.test_acc, one_seed.seed, [MACS[4]])[0]).all()


def test_held_out_interval_covers_the_truth_in_most_draws() -> None:
    """Over simulated studies with seed noise 0.01, the held-out phi's interval covers its measured mean often."""
    covered = [bool(held_out_error(seeded_frame(0.01, rng_seed=r), draws=60).covered.iloc[0]) for r in range(8)]
    assert sum(covered) >= 6


def test_extrapolate_carries_intervals_and_bound_flags() -> None:
    frame = seeded_frame(0.005)
    frame = pd.concat([frame, pd.DataFrame([{"variant": "A", "phi": 4, "seed": 0, "macs": MACS[4]}])])
    out = extrapolate(frame, draws=60)
    assert (out.pred_lo <= out.predicted_acc).all() and (out.predicted_acc <= out.pred_hi).all()
    assert out.pred_hi.iloc[-1] - out.pred_lo.iloc[-1] > 0
    assert out.at_bound.eq(False).all()
    flat = pd.DataFrame({"variant": "B", "phi": [0, 1, 2], "macs": MACS[:3], "test_acc": [0.8, 0.7, 0.75]})
    assert extrapolate(flat).at_bound.all()  # falling accuracy: the fit sits on b = 0


def test_the_held_out_verdict_decides_only_where_the_interval_excludes_the_halfway_point() -> None:
    from scaler.study.extrapolate import held_out_verdict

    far = {"last value": 0.78, "log-linear": 0.83}
    assert held_out_verdict(0.80, far, (0.795, 0.805), 0.004, False) == "the fit beats both naive predictors"
    assert held_out_verdict(0.80, far, (0.824, 0.834), 0.004, True) == (
        "the fit does not beat log-linear; the fit beats last value; the fit sits at a bound of its parameters"
    )
    near = held_out_verdict(0.80, {"last value": 0.801, "log-linear": 0.803}, (0.795, 0.805), 0.004, False)
    assert near.startswith("untested against last value: the measurement's 95 % interval holds the point halfway")
    assert "(0.10 points apart; " in near and near.count("untested") == 2
    wide = held_out_verdict(0.80, far, (0.785, 0.812), 0.01, False)  # 2 points apart, but the interval holds 0.79
    assert wide.startswith("the fit beats log-linear; untested against last value: the measurement's 95 % interval")
    one_seed = held_out_verdict(0.80, far, (0.80, 0.80), float("nan"), False)
    assert one_seed == (
        "untested against last value: one seed gives the measurement no interval; "
        "untested against log-linear: one seed gives the measurement no interval"
    )


def test_seeds_to_narrow_follows_the_t_interval() -> None:
    from scaler.study.extrapolate import seeds_text, seeds_to_narrow

    assert seeds_to_narrow(0.43, 0.15) == 5  # 4 seeds: 2·3.18·0.15/2 = 0.48; 5: 2·2.78·0.15/√5 = 0.37
    assert seeds_to_narrow(1.0, 0.1) == 3  # 2 seeds: 2·12.7·0.1/√2 = 1.80; 3: 2·4.30·0.1/√3 = 0.50
    assert seeds_to_narrow(0.001, 1.0) is None and seeds_to_narrow(0.0, 0.1) is None
    assert seeds_text(0.43, 0.15) == "≈5 seeds" and seeds_text(0.001, 1.0) == ">100 seeds"


def test_a_hold_out_judges_every_trained_phi_from_it_on_with_the_same_fit() -> None:
    at_four = {
        "variant": "A",
        "phi": 4,
        "seed": range(4),
        "macs": MACS[4],
        "test_acc": curve(MACS[4], 0.93, 0.30, 0.45),
    }
    frame = pd.concat([seeded_frame(0.003, seeds=4), pd.DataFrame(at_four)], ignore_index=True)
    table = held_out_error(frame, draws=40, hold_out=3)
    assert table.held_out_phi.tolist() == [3, 4] and (table.fit_points == 12).all()
    marked = held_out_error(frame.assign(held_out=frame.phi >= 3), draws=40)
    pd.testing.assert_frame_equal(marked, table)
    assert held_out_error(frame, draws=40).held_out_phi.tolist() == [4]
    assert table.abs_error.max() < 0.01 and table.last_value_error.iloc[1] < table.last_value_error.iloc[0] < 0
