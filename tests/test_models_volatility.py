"""Range-based variance estimators, the seasonal profile, the HAR regression and the ``har``
band's calibration, on hand-computed values and simulated candles (no TensorFlow)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models import bands as bd
from models import features as fx
from models import volatility as vo

# three candles (open, high, low, close); the third is flat
CANDLES = [(100.0, 110.0, 95.0, 105.0), (105.0, 106.0, 100.0, 101.0), (101.0, 101.0, 101.0, 101.0)]


def _ratios():
    o, h, lo, c = (np.array(x) for x in zip(*CANDLES, strict=True))
    return np.log(h / o), np.log(lo / o), np.log(c / o)


def test_range_estimators_on_three_candles_by_hand():
    u, d, c = _ratios()
    ln = math.log
    parkinson = [ln(110 / 95) ** 2 / (4 * ln(2)), ln(106 / 100) ** 2 / (4 * ln(2)), 0.0]
    garman_klass = [0.5 * ln(110 / 95) ** 2 - (2 * ln(2) - 1) * ln(105 / 100) ** 2,
                    0.5 * ln(106 / 100) ** 2 - (2 * ln(2) - 1) * ln(101 / 105) ** 2, 0.0]
    # Rogers-Satchell in its textbook form ln(H/C) ln(H/O) + ln(L/C) ln(L/O)
    rogers_satchell = [ln(110 / 105) * ln(110 / 100) + ln(95 / 105) * ln(95 / 100),
                       ln(106 / 101) * ln(106 / 105) + ln(100 / 101) * ln(100 / 105), 0.0]
    np.testing.assert_allclose(vo.range_variance(u, d, c, "parkinson"), parkinson, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(vo.range_variance(u, d, c, "garman_klass"), garman_klass, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(vo.range_variance(u, d, c, "rogers_satchell"), rogers_satchell, rtol=1e-12,
                               atol=1e-15)
    # the first candle by hand: 0.5 * 0.146603^2 - 0.386294 * 0.048790^2 = 0.010746 - 0.000920
    assert garman_klass[0] == pytest.approx(0.009827, abs=1e-6)
    with pytest.raises(ValueError, match="unknown range estimator"):
        vo.range_variance(u, d, c, "yang_zhang")


def test_the_ratios_are_recovered_from_the_feature_matrix():
    frame = pd.DataFrame({
        "hour_start": pd.date_range("2024-01-07T22:00Z", periods=3, freq="h"),  # Sunday 22:00 .. Monday 00:00
        **{k: [row[i] for row in CANDLES] for i, k in enumerate(("open", "high", "low", "close"))},
        "volume": 1.0, "source": "backfill",
    })
    x = fx.ohlc_log_ratios(fx.build_features(frame))
    u, d, c = _ratios()
    np.testing.assert_allclose(x["u"], u, atol=1e-15)
    np.testing.assert_allclose(x["d"], d, atol=1e-15)
    np.testing.assert_allclose(x["c"], c, atol=1e-15)
    assert list(x["hour_of_week"]) == [6 * 24 + 22, 6 * 24 + 23, 0]


def test_trailing_and_leading_means_by_hand():
    x = np.array([1.0, 3.0, np.nan, 5.0, 7.0])
    np.testing.assert_allclose(vo.trailing_mean(x, 2), [1.0, 2.0, 3.0, 5.0, 6.0])  # a NaN is skipped
    assert np.isnan(vo.trailing_mean(np.array([np.nan, 1.0]), 1)[0])
    lead = vo.leading_means(np.array([1.0, 2.0, 4.0, 6.0]), np.array([0, 1]), 2)
    np.testing.assert_allclose(lead, [[2.0, 3.0], [4.0, 5.0]])


def test_seasonal_profile_finds_a_busy_hour():
    hours = np.arange(24 * 7 * 20)
    how = hours % 168
    v = np.where(hours % 24 == 14, 4.0, 1.0)  # 14:00 UTC every day four times the variance
    prof = vo.SeasonalProfile.fit(v, how)
    assert prof.factor[14] / prof.factor[13] == pytest.approx(4.0)
    assert np.mean(prof.at(how)) == pytest.approx(1.0)
    # sum of the factors of the next 2 hours after 13:00 on Monday: 14:00 and 15:00
    np.testing.assert_allclose(prof.ahead(np.array([13]), 2), [[prof.factor[14], prof.factor[14] + prof.factor[15]]])
    jumpy = v.copy()
    jumpy[14 * 24 + 13] = 1e6  # one jump hour at 13:00: the median ignores it, the mean does not
    assert vo.SeasonalProfile.fit(jumpy, how).factor[13] == pytest.approx(prof.factor[13])
    assert vo.SeasonalProfile.fit(jumpy, how, statistic="mean").factor[13] > 10 * prof.factor[13]
    partial = vo.SeasonalProfile.fit(v[:24], how[:24])  # Monday only: other cells at the overall level
    assert partial.factor[14] / partial.factor[30] == pytest.approx(4.0 / np.median(v[:24]))


def test_seasonal_profile_shrinks_each_cell_towards_its_hour_times_weekday_product():
    hours = np.arange(24 * 7 * 20)
    how = hours % 168
    one_cell = np.where(how == 14, 4.0, 1.0)  # only Monday 14:00 four times the variance
    # hour 14 and Monday each have median 1 (one busy cell in 7 and 24): the product says 1
    for shrink, ratio in ((0.0, 4.0), (0.5, 2.0), (1.0, 1.0)):
        prof = vo.SeasonalProfile.fit(one_cell, how, shrink=shrink)
        assert prof.factor[14] / prof.factor[13] == pytest.approx(ratio)
        assert np.mean(prof.at(how)) == pytest.approx(1.0)
    daily = np.where(hours % 24 == 14, 4.0, 1.0) * np.where(how // 24 == 5, 0.5, 1.0)  # 14:00 busy, Saturday calm
    for shrink in (0.0, 0.5, 1.0):  # a pure hour x weekday pattern is the product: shrinking changes nothing
        prof = vo.SeasonalProfile.fit(daily, how, shrink=shrink)
        assert prof.factor[14] / prof.factor[13] == pytest.approx(4.0)
        assert prof.factor[5 * 24 + 14] / prof.factor[14] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shrink"):
        vo.SeasonalProfile.fit(one_cell, how, shrink=1.5)


def test_har_is_the_least_squares_fit_of_log_future_variance_on_log_trailing_means():
    rng = np.random.default_rng(3)
    v = np.exp(rng.standard_normal(60))
    origins = np.arange(5, 55)
    har = vo.HarModel.fit(v, origins, 2, lags=(1, 3), floor=1e-9)
    x = np.column_stack([np.ones(len(origins)), np.log(v[origins]),
                         np.log([v[t - 2: t + 1].mean() for t in origins])])
    y = np.log(np.column_stack([v[origins + 1], (v[origins + 1] + v[origins + 2]) / 2]))
    expected, *_ = np.linalg.lstsq(x, y, rcond=None)
    np.testing.assert_allclose(har.coef, expected, rtol=1e-10)
    np.testing.assert_allclose(har.predict_log(v, origins[:3]), x[:3] @ expected, rtol=1e-10)
    flat = vo.HarModel.fit(np.full(60, 2.0), origins, 2, lags=(1, 3))
    np.testing.assert_allclose(flat.predict_log(np.full(60, 2.0), origins[:2]), math.log(2.0))
    assert vo.HarModel.from_dict(har.to_dict()).coef.tolist() == har.coef.tolist()


def _simulated_candles(hours: int, seed: int = 7, substeps: int = 20) -> pd.DataFrame:
    """Candles from a simulated path: a slowly varying volatility regime times a daily pattern
    (15:00 UTC twice as volatile), Student-t(5) sub-steps; OHLC from the sub-steps."""
    rng = np.random.default_rng(seed)
    log_regime = np.zeros(hours)
    for t in range(1, hours):
        log_regime[t] = 0.995 * log_regime[t - 1] + 0.06 * rng.standard_normal()
    start = pd.Timestamp("2023-01-02T00:00Z")
    hour = (np.arange(hours) + start.hour) % 24
    sigma = 0.004 * np.exp(log_regime) * np.where(hour == 15, 2.0, 1.0)
    steps = rng.standard_t(5, size=(hours, substeps)) / math.sqrt(5 / 3) * (sigma / math.sqrt(substeps))[:, None]
    path = 10.0 + np.cumsum(steps.ravel()).reshape(hours, substeps)
    open_ = np.concatenate([[10.0], path[:-1, -1]])
    return pd.DataFrame({
        "hour_start": pd.date_range(start, periods=hours, freq="h"),
        "open": np.exp(open_), "high": np.exp(np.maximum(path.max(axis=1), open_)),
        "low": np.exp(np.minimum(path.min(axis=1), open_)), "close": np.exp(path[:, -1]),
        "volume": 1.0, "source": "backfill",
    })


def test_har_band_covers_80_percent_of_unseen_windows_and_beats_the_constant_band():
    """The split-conformal step: quantiles of the standardised returns on the training windows
    only give about 80 % coverage on later windows of the same process, at every horizon."""
    frame = _simulated_candles(6000)
    feats = fx.build_features(frame)
    close = frame["close"].to_numpy()
    horizon = 6
    train = np.arange(800, 4000 - horizon)  # targets before row 4000
    test = np.arange(4100, 6000 - horizon)
    har = bd.fit_band("har", feats, close, train, horizon)
    constant = bd.fit_band("constant", feats, close, train, horizon)
    actual = close[test[:, None] + np.arange(1, horizon + 1)[None, :]]
    scores = {b.name: bd.band_scores(actual, *b.bounds(feats, close, test, horizon)) for b in (har, constant)}
    assert np.all(np.abs(scores["har"]["coverage"] - 0.8) < 0.04), scores["har"]["coverage"]
    assert scores["har"]["winkler_all"] < 0.9 * scores["constant"]["winkler_all"]
    assert har.season.factor[15] > 2.5 * har.season.factor[14]  # the busy hour (variance x4, GK noise)
    restored = bd.BandModel.from_dict(har.to_dict())
    np.testing.assert_allclose(restored.bounds(feats, close, test[:5], horizon), har.bounds(feats, close, test[:5],
                                                                                               horizon))


def test_har_band_forecasts_the_next_hour_with_the_shrunk_profile_and_later_hours_without():
    frame = _simulated_candles(3000)
    feats = fx.build_features(frame)
    close = frame["close"].to_numpy()
    horizon = 6
    train = np.arange(800, 2500 - horizon)
    har = bd.fit_band("har", feats, close, train, horizon)
    proxy, how = bd.har_variance_proxy(feats)
    seen = slice(0, train[-1] + horizon + 1)  # fewer than HAR_SEASON_ROWS training rows: all of them
    shrunk = vo.SeasonalProfile.fit(proxy[seen], how[seen], shrink=bd.HAR_SHORT_SHRINK)
    np.testing.assert_allclose(har.season_short.factor, shrunk.factor)
    assert har.har_short.coef.shape == (1 + len(vo.HAR_LAGS), bd.HAR_SHORT_STEPS)
    origins = np.arange(2600, 2650)
    scale = har.scale(feats, origins, horizon)
    next_hour = np.sqrt(np.exp(har.har_short.predict_log(proxy / shrunk.at(how), origins)[:, 0])
                        * shrunk.at(how[origins] + 1))
    np.testing.assert_allclose(scale[:, 0], next_hour)
    week = np.sqrt(np.exp(har.har.predict_log(proxy / har.season.at(how), origins))
                   * har.season.ahead(how[origins], horizon))
    np.testing.assert_allclose(scale[:, 1:], week[:, 1:])
    assert np.max(np.abs(scale[:, 0] / week[:, 0] - 1.0)) > 1e-3  # the two profiles do differ
    restored = bd.BandModel.from_dict(har.to_dict())
    np.testing.assert_allclose(restored.scale(feats, origins, horizon), scale)
    older = har.to_dict()  # a band saved before the short-step model: its own HAR at every step
    del older["har_short"], older["season_short"]
    np.testing.assert_allclose(bd.BandModel.from_dict(older).scale(feats, origins, horizon), week)


def test_har_band_refuses_a_returns_only_series():
    frame = _simulated_candles(1200)
    close = frame["close"].to_numpy()
    returns = fx.build_features(frame)[:, 0]
    with pytest.raises(ValueError, match="build_features matrix"):
        bd.fit_band("har", returns, close, np.arange(800, 1000), 3)
    assert "har" not in bd.fit_baselines(returns, close, np.arange(800, 1000), 3)
