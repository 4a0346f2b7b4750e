"""Features, windows, gaps and the honest split (no TensorFlow needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from btc_platform.testing.models_testdata import (
    candles_from_close,
    drop_hours,
    random_walk_close,
    to_hourly_metrics,
    write_hourly_metrics,
)
from models import features as fx
from models.config import ModelConfig
from models.data import (
    InsufficientHistoryError,
    find_gaps,
    load_candles_csv,
    load_hourly_metrics,
    segment_ids,
)


def test_feature_values_by_hand():
    frame = candles_from_close(np.array([100.0, 110.0, 99.0]), start=pd.Timestamp("2024-01-06T05:00Z"), wick=0.0)
    f = fx.build_features(frame)
    assert f.shape == (3, len(fx.COLUMNS)) == (3, 13)
    assert np.isnan(f[0, 0])  # first return has no previous close: NaN, not 0
    assert f[1, 0] == pytest.approx(np.log(110 / 100))
    assert f[2, 0] == pytest.approx(np.log(99 / 110))
    assert f[1, 1] == pytest.approx(np.log(110 / 100))  # high/low without wicks
    assert f[2, 2] == pytest.approx(np.log(99 / 110))  # close/open
    assert f[1, 3] == pytest.approx(0.0) and f[1, 4] == pytest.approx(0.0)
    assert f[0, 5] == pytest.approx(np.sin(2 * np.pi * 5 / 24))
    assert f[0, 6] == pytest.approx(np.cos(2 * np.pi * 5 / 24))
    assert list(f[:, 7]) == [1.0, 1.0, 1.0]  # 2024-01-06 is a Saturday
    assert list(f[:, 8]) == [5.0, 5.0, 5.0]  # day_of_week, Monday = 0: not a network input by default
    np.testing.assert_array_equal(fx.select(f, ModelConfig().features), f[:, :8])
    # GK of hour 1 (open 100, high = close = 110, low = open): 0.5 ln(1.1)^2 - 0.386 ln(1.1)^2; r = ln(1.1)
    gk1 = (0.5 - (2 * np.log(2) - 1)) * np.log(1.1) ** 2
    proxy1 = 0.5 * (gk1 + np.log(1.1) ** 2)
    proxy0 = 0.0  # first hour: open = close = high = low (no return: GK alone)
    assert f[1, 9] == pytest.approx(np.log((proxy0 + proxy1) / 2 + 1e-12))  # log_var_day over 2 rows
    np.testing.assert_allclose(f[:, 12], 0.0, atol=1e-12)  # constant volume: ratio log 1


def test_window_tensor_shapes_and_targets():
    frame = candles_from_close(random_walk_close(200))
    cfg = ModelConfig()
    wins = fx.window_origins(frame, cfg.lookback, cfg.horizon)
    assert len(wins) == 200 - cfg.lookback - cfg.horizon == wins.total_positions
    assert wins.skipped_gap == 0
    feats = fx.select(fx.build_features(frame), cfg.features)
    x = fx.make_inputs(feats, wins.origins, cfg.lookback)
    y = fx.make_targets(frame["close"].to_numpy(), wins.origins, cfg.horizon)
    assert x.shape == (len(wins), 12, 8)
    assert y.shape == (len(wins), 24)
    assert np.isfinite(x).all()
    t = wins.origins[3]
    close = frame["close"].to_numpy()
    assert y[3, 0] == pytest.approx(np.log(close[t + 1] / close[t]))
    assert y[3, 23] == pytest.approx(np.log(close[t + 24] / close[t]))
    np.testing.assert_allclose(x[3, -1], feats[t])
    np.testing.assert_allclose(x[3, 0], feats[t - 11])


def test_windows_crossing_a_gap_are_skipped_and_counted():
    frame = drop_hours(candles_from_close(random_walk_close(100)), [50])  # hour 50 missing
    assert [g.missing_hours for g in find_gaps(frame["hour_start"])] == [1]
    assert list(np.unique(segment_ids(frame["hour_start"]))) == [0, 1]
    L, H = 3, 2
    wins = fx.window_origins(frame, L, H)
    # 99 rows -> 94 positions; a window spans rows t-3..t+2 (6 rows), a span crossing the
    # boundary between row 49 and row 50 (= hour 51) is skipped: t in 47..51 -> 5 windows
    assert wins.total_positions == 99 - L - H
    assert wins.skipped_gap == 5
    assert len(wins) == 89
    times = frame["hour_start"]
    for t in wins.origins:
        span = times.iloc[t + H] - times.iloc[t - L]
        assert span == pd.Timedelta(hours=L + H)
    feats = fx.build_features(frame)
    assert np.isnan(feats[50, 0])  # return across the gap is not computed
    assert np.isfinite(fx.make_inputs(feats, wins.origins, L)).all()


def test_split_has_no_leakage():
    cfg = ModelConfig(min_train_windows=50, min_val_windows=10, val_fraction=0.2)
    frame = candles_from_close(random_walk_close(600))
    test_from = frame["hour_start"].iloc[500]
    split = fx.split_windows(frame, cfg, test_from)
    times = frame["hour_start"]
    L, H = cfg.lookback, cfg.horizon
    # every test origin is at/after test_from; every training row (inputs .. last target) ends
    # at least lookback + horizon hours before it
    assert times.iloc[split.test].min() == test_from
    last_train_row = times.iloc[max(split.val.max(), split.fit.max()) + H]
    first_test_input = times.iloc[split.test.min() - L + 1]
    assert test_from - last_train_row > pd.Timedelta(hours=L + H)
    assert first_test_input > last_train_row
    # validation comes after fit, and no fit target reaches into validation inputs
    assert times.iloc[split.fit.max() + H] < times.iloc[split.val.min() - L]
    assert len(split.val) >= cfg.min_val_windows and len(split.fit) >= cfg.min_train_windows


def test_scaler_uses_training_statistics_only():
    cfg = ModelConfig(min_train_windows=50, min_val_windows=10)
    close = random_walk_close(600)
    close[450:] *= np.exp(np.linspace(0, 1.5, 150))  # test part trends hard: leakage would show
    frame = candles_from_close(close)
    split = fx.split_windows(frame, cfg, frame["hour_start"].iloc[500])
    feats = fx.build_features(frame)
    rows = fx.scaler_rows(feats, split, cfg.lookback)
    y_fit = fx.make_targets(frame["close"].to_numpy(), split.fit, cfg.horizon)
    scaler = fx.Scaler.fit(rows, y_fit)
    first = split.fit.min() - cfg.lookback + 1
    expected = feats[first : split.fit_rows_end + 1]
    np.testing.assert_allclose(scaler.mean, expected.mean(axis=0))
    np.testing.assert_allclose(scaler.std[:3], expected.std(axis=0)[:3])
    assert split.fit_rows_end < split.val.min()
    assert not np.allclose(scaler.mean, feats[1:].mean(axis=0))  # the whole series would differ
    np.testing.assert_allclose(scaler.target_std, np.sqrt((y_fit**2).mean(axis=0)))
    back = fx.Scaler.from_dict(scaler.to_dict())
    np.testing.assert_allclose(back.transform(feats[1:5]), scaler.transform(feats[1:5]))


def test_too_little_history_names_windows_needed_and_found():
    cfg = ModelConfig(min_train_windows=200, min_val_windows=24)
    frame = candles_from_close(random_walk_close(300))
    with pytest.raises(InsufficientHistoryError, match=r"need at least 224 complete training windows, found \d+") as err:
        fx.split_windows(frame, cfg, frame["hour_start"].iloc[250])
    assert "btc_backfill" in str(err.value)


def test_hours_needed_formula():
    cfg = ModelConfig(min_train_windows=200, min_val_windows=24)
    # fit+val windows + 2 spans (first window, purge) + separation span + test hours
    assert fx.hours_needed(cfg, 168) == 200 + 24 + 2 * 36 + 36 + 168


def test_csv_and_hourly_metrics_load_the_same_series(tmp_path):
    frame = drop_hours(candles_from_close(random_walk_close(60)), [30, 31])
    csv = tmp_path / "candles.csv"
    pd.DataFrame(
        {
            "open_time_utc": frame["hour_start"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "open": frame["open"], "high": frame["high"], "low": frame["low"], "close": frame["close"],
            "volume": frame["volume"], "quote_volume": "", "trades": "",
        }
    ).to_csv(csv, index=False)
    from_csv = load_candles_csv(str(csv))
    rows = to_hourly_metrics(frame, stream_from=40)  # the last 18 hours look like stream hours
    other = to_hourly_metrics(frame, symbol="ETHUSDT")
    other["close"] = 1.0
    write_hourly_metrics(pd.concat([rows, other]), tmp_path / "hourly_metrics")
    from_hm = load_hourly_metrics(f"file://{tmp_path}/hourly_metrics", "BTCUSDT")
    assert len(from_csv) == len(from_hm) == 58
    # one frame convention whatever the source (delta-rs gives microseconds in UTC)
    assert from_csv["hour_start"].dtype == from_hm["hour_start"].dtype == "datetime64[ns, UTC]"
    pd.testing.assert_series_equal(from_csv["hour_start"], from_hm["hour_start"])
    np.testing.assert_allclose(from_csv["close"], from_hm["close"])
    assert from_hm["volume"].isna().sum() == 18  # stream hours keep their null volume
    f = fx.select(fx.build_features(from_hm), fx.FEATURES)  # the default network inputs
    assert np.isfinite(f[1:30]).all() and np.isfinite(f[31:]).all()  # features exist for both sources


def test_bad_rows_are_left_out_and_duplicates_refused(tmp_path):
    frame = candles_from_close(random_walk_close(10))
    frame.loc[4, "close"] = np.nan
    rows = to_hourly_metrics(frame)
    write_hourly_metrics(rows, tmp_path / "hm")
    loaded = load_hourly_metrics(f"file://{tmp_path}/hm", "BTCUSDT")
    assert len(loaded) == 9 and len(find_gaps(loaded["hour_start"])) == 1
    from models.data import DataError

    write_hourly_metrics(rows.iloc[:3], tmp_path / "hm2")
    write_hourly_metrics(rows.iloc[[2]], tmp_path / "hm2")  # a second commit repeats one hour
    with pytest.raises(DataError, match="share an hour_start"):
        load_hourly_metrics(f"file://{tmp_path}/hm2", "BTCUSDT")
    from btc_platform.lakehouse import lake

    lake.write_at(str(tmp_path / "hm3"), rows.drop(columns=["open"]))
    with pytest.raises(DataError, match=r"missing columns \['open'\]"):
        load_hourly_metrics(f"file://{tmp_path}/hm3", "BTCUSDT")


@pytest.mark.spark
def test_loads_hourly_metrics_written_by_spark(spark, tmp_path):
    """The loader reads the Delta table as the consolidation job's Spark writer produces it."""
    from btc_platform.lakehouse.datasets import HOURLY_METRICS_COLUMNS, struct_type

    frame = drop_hours(candles_from_close(random_walk_close(30)), [10])
    rows = to_hourly_metrics(frame, stream_from=20)
    rows["produced_at"] = pd.Timestamp("2025-01-01T00:00:00Z")

    def plain(value):
        if isinstance(value, pd.Timestamp):
            return value.to_pydatetime()  # tz-aware UTC
        if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
            return None
        return value.item() if isinstance(value, np.generic) else value

    records = [tuple(plain(v) for v in rec) for rec in rows.astype(object).itertuples(index=False)]
    df = spark.createDataFrame(records, schema=struct_type(HOURLY_METRICS_COLUMNS))
    target = tmp_path / "hourly_metrics"
    df.write.format("delta").mode("overwrite").save(f"file://{target}")
    loaded = load_hourly_metrics(f"file://{target}", "BTCUSDT")
    assert len(loaded) == 29
    assert list(loaded["hour_start"]) == list(frame["hour_start"])
    np.testing.assert_allclose(loaded["close"], frame["close"])
    assert list(loaded["source"][-9:]) == ["stream"] * 9 and loaded["volume"][-9:].isna().all()
