"""Metrics, baselines and intervals on hand-checked numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.evaluate import drift_forecast, evaluate_forecasts, format_table, persistence_forecast
from models.intervals import IntervalCalibration, coverage, window_volatility
from models.promotion import promotion_rule

# two windows, lookback 4, horizon 3 (worked out by hand below)
FIRST = np.array([96.0, 208.0])  # close at t - lookback
LAST = np.array([100.0, 200.0])  # close at t
ACTUAL = np.array([[102.0, 99.0, 104.0], [201.0, 195.0, 190.0]])
MODEL = np.array([[101.0, 100.0, 105.0], [199.0, 197.0, 192.0]])


def _result():
    forecasts = {
        "model": MODEL,
        "persistence": persistence_forecast(LAST, 3),
        "drift": drift_forecast(FIRST, LAST, 4, 3),
    }
    return evaluate_forecasts(ACTUAL, LAST, forecasts, MODEL - 1.5, MODEL + 1.5)


def test_baseline_forecasts_by_hand():
    np.testing.assert_array_equal(persistence_forecast(LAST, 3), [[100, 100, 100], [200, 200, 200]])
    # slope (100-96)/4 = +1 per hour, (200-208)/4 = -2 per hour
    np.testing.assert_array_equal(drift_forecast(FIRST, LAST, 4, 3), [[101, 102, 103], [198, 196, 194]])


def test_metrics_per_horizon_by_hand():
    rows = _result()["per_horizon"]
    h1, h2, h3 = rows
    # persistence errors: h1 (-2, -1), h2 (1, 5), h3 (-4, 10)
    assert h1["persistence_mse"] == pytest.approx(2.5)
    assert h1["persistence_mae"] == pytest.approx(1.5)
    assert h2["persistence_rmse"] == pytest.approx(math.sqrt(13))
    assert h3["persistence_mse"] == pytest.approx(58)
    assert h3["persistence_mae"] == pytest.approx(7)
    assert h1["persistence_mape"] == pytest.approx(100 * (2 / 102 + 1 / 201) / 2)
    assert h1["persistence_directional_accuracy"] is None  # makes no directional call
    # drift errors: h1 (-1, -3), h2 (3, 1), h3 (-1, 4)
    assert h1["drift_mse"] == pytest.approx(5)
    assert h2["drift_mae"] == pytest.approx(2)
    assert h3["drift_mse"] == pytest.approx(8.5)
    assert h1["drift_directional_accuracy"] == pytest.approx(0.5)
    # model errors: h1 (-1, -2), h2 (1, 2), h3 (1, 2)
    for row in rows:
        assert row["model_mse"] == pytest.approx(2.5)
        assert row["model_mae"] == pytest.approx(1.5)
    assert [r["model_directional_accuracy"] for r in rows] == [0.5, 0.5, 1.0]
    assert h1["model_skill"] == pytest.approx(0.0)
    assert h2["model_skill"] == pytest.approx(1 - math.sqrt(2.5 / 13))
    assert h3["drift_skill"] == pytest.approx(1 - math.sqrt(8.5 / 58))
    assert [r["interval_coverage"] for r in rows] == [0.5, 0.5, 0.5]


def test_overall_metrics_by_hand():
    overall = _result()["overall"]
    assert overall["persistence_mse"] == pytest.approx((4 + 1 + 16 + 1 + 25 + 100) / 6)
    assert overall["model_mse"] == pytest.approx(2.5)
    assert overall["model_skill"] == pytest.approx(1 - math.sqrt(2.5 / 24.5))
    assert overall["interval_coverage"] == pytest.approx(0.5)
    assert overall["model_directional_accuracy"] == pytest.approx(4 / 6)


def test_table_shows_every_horizon_and_the_baselines():
    table = format_table(_result(), title="t")
    lines = table.splitlines()
    assert any(line.strip().startswith("all |") for line in lines)
    assert "RMSE persist" in table and "RMSE drift" in table and "skill" in table
    h2 = next(line for line in lines if line.strip().startswith("2 |"))
    assert f"{math.sqrt(13):,.1f}" in h2 and f"{1 - math.sqrt(2.5 / 13):.4f}" in h2


def test_interval_calibration_and_coverage():
    rng = np.random.default_rng(1)
    sigma = np.full(4000, 0.01)
    pred = np.zeros((4000, 2))
    truth = pred + sigma[:, None] * rng.standard_normal((4000, 2)) * np.array([1.0, 2.0])
    cal = IntervalCalibration.fit(truth, pred, sigma, 0.8)
    # normalised residuals ~ N(0, 1) and N(0, 2): 10 %/90 % quantiles ~ -+1.2816 * scale
    np.testing.assert_allclose(cal.q_high, [1.2816, 2.5631], rtol=0.08)
    np.testing.assert_allclose(cal.q_low, [-1.2816, -2.5631], rtol=0.08)
    low, high = cal.bounds(np.full(4000, 100.0), pred, sigma)
    cov = coverage(100.0 * np.exp(truth), low, high)
    np.testing.assert_allclose(cov, [0.8, 0.8], atol=0.001)  # in-sample: exact by construction
    back = IntervalCalibration.from_dict(cal.to_dict())
    np.testing.assert_allclose(back.q_low, cal.q_low)


def test_window_volatility_parkinson():
    raw = np.zeros((1, 4, 8))
    raw[0, :, 1] = 0.02  # log(high/low) every hour
    assert window_volatility(raw)[0] == pytest.approx(math.sqrt(0.02**2 / (4 * math.log(2))))


@pytest.mark.parametrize(
    "kwargs, status, forced, reason_part",
    [
        (dict(candidate_rmse=90, persistence_rmse=100), "promoted", False, "beats persistence"),
        (dict(candidate_rmse=110, persistence_rmse=100), "rejected", False, "not below persistence"),
        (dict(candidate_rmse=100, persistence_rmse=100), "rejected", False, "not below persistence"),
        (
            dict(candidate_rmse=90, persistence_rmse=100, current_version="v1", current_rmse=80, candidate_rmse_common=91),
            "rejected", False, "not below current model v1",
        ),
        (
            dict(candidate_rmse=90, persistence_rmse=100, current_version="v1", current_rmse=95, candidate_rmse_common=91),
            "promoted", False, "and current model v1",
        ),
        (dict(candidate_rmse=110, persistence_rmse=100, force=True), "promoted", True, "FORCED despite"),
    ],
)
def test_promotion_rule(kwargs, status, forced, reason_part):
    got_status, reason, got_forced = promotion_rule(**kwargs)
    assert (got_status, got_forced) == (status, forced)
    assert reason_part in reason


def test_diebold_mariano_per_horizon():
    """A model far better than persistence at step 1 and no different at step 2: the per-step
    one-sided p-values say so separately, and the table shows them."""
    import numpy as np

    from models.evaluate import evaluate_forecasts, format_table

    rng = np.random.default_rng(0)
    n = 400
    last = np.full(n, 100.0)
    actual = 100.0 + rng.standard_normal((n, 2))
    model = np.column_stack([actual[:, 0] + 0.1 * rng.standard_normal(n), np.full(n, 100.0)])
    result = evaluate_forecasts(actual, last, {"model": model, "persistence": np.full((n, 2), 100.0)})
    h1, h2 = result["per_horizon"]
    assert h1["dm_p_model_better"] < 1e-6
    assert h2["dm_statistic"] == 0.0 and h2["dm_p_model_better"] == pytest.approx(0.5)  # identical losses
    assert "DM p" in format_table(result)
