"""Band baselines, band scores, the Diebold-Mariano test, band choice, rolling blocks and the
forecast-vs-actual scoring, on hand-checked numbers and simulated series (no TensorFlow)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models import bands as bd
from models.evaluate import choose_band, diebold_mariano, evaluate_forecasts


def test_ewma_variance_recursion_by_hand_and_carried_over_a_gap():
    r = np.array([0.01, np.nan, -0.02])
    var = bd.ewma_variance(r, lam=0.9, init=1e-4)
    first = 0.9 * 1e-4 + 0.1 * 0.01**2  # 1e-4
    assert var[0] == pytest.approx(first)
    assert var[1] == pytest.approx(first)  # unknown return across a gap: nothing invented
    assert var[2] == pytest.approx(0.9 * first + 0.1 * 0.02**2)


def _simulate_garch(n: int, omega=2e-6, alpha=0.1, beta=0.85, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = np.empty(n)
    s2 = omega / (1 - alpha - beta)
    for t in range(n):
        r[t] = math.sqrt(s2) * rng.standard_normal()
        s2 = omega + alpha * r[t] ** 2 + beta * s2
    return r


def test_garch_horizon_variance_matches_arch_forecast():
    from arch import arch_model

    r = _simulate_garch(3000)
    params = bd.fit_garch(r)
    assert 0.03 < params.alpha < 0.2 and 0.7 < params.beta < 0.95  # recovers the simulated process
    ours = bd.garch_horizon_variance(bd.garch_variance(r, params)[-1:], params, 5)[0]
    res = arch_model(100 * r, mean="Zero", vol="GARCH", p=1, q=1, rescale=False).fit(disp="off")
    fixed = res.model.fix(res.params)
    theirs = np.cumsum(fixed.forecast(horizon=5, reindex=False).variance.to_numpy()[-1]) / 1e4
    # same recursion; only the start of the variance filter differs, forgotten after 3000 steps
    np.testing.assert_allclose(ours, theirs, rtol=1e-3)


def test_interval_score_and_pinball_by_hand():
    actual = np.array([[100.0, 90.0, 115.0]])
    low, high = np.full((1, 3), 95.0), np.full((1, 3), 105.0)
    # alpha = 0.2: inside -> width 10; 5 below -> 10 + 2/0.2*5 = 60; 10 above -> 10 + 100 = 110
    np.testing.assert_allclose(bd.interval_score(actual, low, high, 0.8), [[10.0, 60.0, 110.0]])
    np.testing.assert_allclose(bd.pinball(np.array([100.0]), np.array([95.0]), 0.1), [0.5])
    np.testing.assert_allclose(bd.pinball(np.array([90.0]), np.array([95.0]), 0.1), [4.5])
    sc = bd.band_scores(actual, low, high, 0.8)
    np.testing.assert_allclose(sc["coverage"], [1.0, 0.0, 0.0])
    assert sc["winkler_all"] == pytest.approx(60.0)


def _windows(n_hours: int, horizon: int, r: np.ndarray):
    close = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(r[1:])]))
    origins = np.arange(30, n_hours - horizon)
    return close, origins


def test_volatility_bands_beat_the_constant_band_on_clustered_volatility():
    H = 6
    r = _simulate_garch(8000, omega=1e-6, alpha=0.15, beta=0.83, seed=3)  # strong clustering
    close, origins = _windows(8000, H, r)
    train, test = origins[origins < 5000 - H], origins[origins >= 5000]
    models = bd.fit_baselines(r, close, train, H, 0.8)
    actual = close[test[:, None] + np.arange(1, H + 1)[None, :]]
    scores = {}
    for name, model in models.items():
        low, high = model.bounds(r, close, test, H)
        assert np.all(low < close[test][:, None]) and np.all(high > close[test][:, None])
        sc = bd.band_scores(actual, low, high, 0.8)
        assert 0.75 <= sc["coverage_all"] <= 0.85, (name, sc["coverage_all"])  # calibrated on training only
        scores[name] = sc["winkler_all"]
    assert scores["garch"] < 0.96 * scores["constant"] and scores["ewma"] < 0.97 * scores["constant"]
    # the band model round-trips through its JSON form
    again = bd.BandModel.from_dict(models["garch"].to_dict())
    np.testing.assert_allclose(again.bounds(r, close, test[:5], H)[1], models["garch"].bounds(r, close, test[:5], H)[1])


def test_diebold_mariano_by_hand_and_on_noise():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 2.0, 4.0, 4.0])
    dm = diebold_mariano(a, b, horizon=1)
    d = a - b  # -1, 0, -1, 0: mean -0.5, variance 0.25
    assert dm["mean_diff"] == -0.5
    # DM = -0.5 / sqrt(0.25 / 4) = -2, times the HLN factor sqrt((n + 1 - 2h + h(h-1)/n) / n) = sqrt(3/4)
    assert dm["statistic"] == pytest.approx(-2.0 * math.sqrt(0.75))
    rng = np.random.default_rng(0)
    base = rng.exponential(size=2000)
    noise = diebold_mariano(base + rng.normal(0, 0.5, 2000), base + rng.normal(0, 0.5, 2000), horizon=24)
    assert noise["p_a_better"] > 0.05 and noise["p_value"] > 0.05
    better = diebold_mariano(base * 0.8, base, horizon=24)
    assert better["p_a_better"] < 1e-6 and better["statistic"] < 0
    assert d.mean() == dm["mean_diff"]


def test_choose_band_prefers_calibrated_bands():
    rows = [{"band_a_coverage": 0.70, "band_b_coverage": 0.79}, {"band_a_coverage": 0.72, "band_b_coverage": 0.81}]
    total = {"band_a_coverage": 0.71, "band_a_winkler": 90.0, "band_b_coverage": 0.80, "band_b_winkler": 100.0}
    assert choose_band(rows, total, ["a", "b"]) == "b"  # a is sharper but under-covers
    total["band_a_coverage"], rows[0]["band_a_coverage"], rows[1]["band_a_coverage"] = 0.8, 0.8, 0.8
    assert choose_band(rows, total, ["a", "b"]) == "a"


def test_evaluate_forecasts_reports_band_skill_against_each_baseline():
    actual = np.array([[100.0, 100.0], [110.0, 90.0]])
    last = np.array([100.0, 100.0])
    bands = {
        "lstm": (np.full((2, 2), 95.0), np.full((2, 2), 105.0)),
        "constant": (np.full((2, 2), 90.0), np.full((2, 2), 110.0)),
    }
    res = evaluate_forecasts(actual, last, {"model": np.full((2, 2), 100.0), "persistence": np.full((2, 2), 100.0)},
                             bands=bands, level=0.8)
    o = res["overall"]
    # lstm: widths 10, misses by 5 twice -> (10 + 10 + 60 + 60) / 4 = 35; constant: 20 everywhere
    assert o["band_lstm_winkler"] == pytest.approx(35.0) and o["band_constant_winkler"] == pytest.approx(20.0)
    assert o["band_lstm_winkler_skill_vs_constant"] == pytest.approx(1 - 35.0 / 20.0)
    assert o["band_lstm_coverage"] == 0.5 and o["band_constant_coverage"] == 1.0
    assert o["band_best"] == "constant"


def test_rolling_blocks():
    from models.backtest import block_starts, parse_every

    assert parse_every("30d") == 720 and parse_every("4w") == 672 and parse_every("12") == 12
    with pytest.raises(ValueError, match="30d"):
        parse_every("monthly")
    t0 = pd.Timestamp("2024-01-01", tz="UTC")
    starts = block_starts(t0, pd.Timestamp("2024-03-01", tz="UTC"), 720)
    assert starts == [t0, t0 + pd.Timedelta(days=30)]


def test_promotion_needs_enough_windows_and_a_difference_beyond_noise():
    from models.promotion import promotion_rule

    status, reason, _ = promotion_rule(99.0, 100.0, n_windows=100, min_windows=504, dm_p=0.01, dm_alpha=0.05)
    assert status == "rejected" and "only 100 test windows, promotion needs 504" in reason
    status, reason, _ = promotion_rule(99.0, 100.0, n_windows=600, min_windows=504, dm_p=0.3, dm_alpha=0.05)
    assert status == "rejected" and "within noise" in reason
    assert promotion_rule(99.0, 100.0, n_windows=600, min_windows=504, dm_p=0.01, dm_alpha=0.05)[0] == "promoted"


def test_score_forecasts_joins_arrived_closes(settings_env):
    from btc_platform.lakehouse import datasets, lake
    from btc_platform.testing.models_testdata import (
        candles_from_close,
        to_hourly_metrics,
        write_hourly_metrics,
    )
    from models.realised import score_forecasts

    s = settings_env()
    assert score_forecasts(s)["status"] == "skipped"
    close = np.linspace(100.0, 110.0, 11)  # hours 0..10
    hourly = to_hourly_metrics(candles_from_close(close))
    write_hourly_metrics(hourly.iloc[:8], s.path(datasets.HOURLY_METRICS))  # hours 0..7 have arrived
    origin = hourly["hour_start"].iloc[5]
    steps = np.arange(1, 5)  # targets hours 6..9: 6, 7 arrived
    future = pd.DataFrame({
        "symbol": "BTCUSDT", "model_version": "v1", "issue_time": origin, "origin_hour_start": origin,
        "last_close": close[5], "horizon": steps.astype("int32"),
        "target_hour_start": origin + pd.to_timedelta(steps, unit="h"),
        "predicted_close": close[5], "lower": close[5] - 1.5, "upper": close[5] + 1.5, "interval_level": 0.8,
        "point_model": "persistence", "band_model": "garch",
    })
    lake.write_table(datasets.FUTURE_PREDICTIONS, future, s)
    first = score_forecasts(s)
    assert first["scored_rows"] == 2 and first["awaiting_rows"] == 2
    rows = lake.read_table(datasets.FORECAST_ACTUALS, s).sort_values("horizon")
    np.testing.assert_allclose(rows["actual_close"], close[6:8])
    np.testing.assert_allclose(rows["error"], close[5] - close[6:8])  # persistence: last close - actual
    assert rows["inside_band"].tolist() == [True, False]  # +1 inside, +2 outside the +-1.5 band
    assert set(rows["band_model"]) == {"garch"}
    assert score_forecasts(s)["scored_rows"] == 0  # nothing new: nothing appended twice
    write_hourly_metrics(hourly.iloc[8:], s.path(datasets.HOURLY_METRICS))
    assert score_forecasts(s)["scored_rows"] == 2
    assert len(lake.read_table(datasets.FORECAST_ACTUALS, s)) == 4


def test_fallback_band_is_wider_with_few_returns_and_covers_its_level():
    """The small-sample band: with returns of known volatility (+-1 %, so the EWMA is exactly 1 %)
    the half-width is m * 1 % * sqrt(k), m far above the normal quantile for 3 returns and close to
    it for many; on simulated normal returns with 5 hours of history it covers about 80 % where the
    normal band (m = z) would not."""
    from scipy.stats import norm

    from models.fallback import MIN_RETURNS, TooFewReturnsError, fallback_band

    z = norm.ppf(0.9)
    alternating = np.tile([0.01, -0.01], 500)
    few, many = fallback_band(alternating[:3], 100.0, 4, 0.8), fallback_band(alternating, 100.0, 4, 0.8)
    for band in (few, many):
        np.testing.assert_allclose(np.log(band.high / 100.0), band.multiplier * 0.01 * np.sqrt([1, 2, 3, 4]))
        np.testing.assert_allclose(np.log(100.0 / band.low), np.log(band.high / 100.0))
    assert 1.6 < few.widening < 1.8 and 1.0 < many.widening < 1.06
    assert few.returns == 3 and many.returns == 1000
    with pytest.raises(TooFewReturnsError, match=f"needs at least {MIN_RETURNS}"):
        fallback_band(np.array([np.nan, 0.01]), 100.0, 4, 0.8)

    rng = np.random.default_rng(7)
    sims = rng.normal(0.0, 0.01, size=(4000, 6))
    inside = normal_inside = 0
    for row in sims:
        band = fallback_band(row[:5], 1.0, 1, 0.8)
        half = np.log(band.high[0])
        inside += abs(row[5]) <= half
        normal_inside += abs(row[5]) <= half / band.multiplier * z
    assert 0.77 <= inside / len(sims) <= 0.86
    assert normal_inside / len(sims) < 0.75
