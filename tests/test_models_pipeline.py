"""Training, registry, promotion and outputs end to end on small generated data (real Keras)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from btc_platform.lakehouse import datasets
from btc_platform.testing.models_testdata import (
    candles_from_close,
    periodic_close,
    to_hourly_metrics,
    write_hourly_metrics,
)
from models.data import InsufficientHistoryError

pytestmark = pytest.mark.slow

PARAMS = {"epochs": 25, "test_hours": 120, "min_train_windows": 200, "lstm_units": [16, 8],
          "min_promotion_windows": 48}  # tiny model; 96 test windows


def _csv(tmp_path: Path, frame: pd.DataFrame) -> str:
    path = tmp_path / "candles.csv"
    pd.DataFrame(
        {
            "open_time_utc": frame["hour_start"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            **{c: frame[c] for c in ("open", "high", "low", "close", "volume")},
        }
    ).to_csv(path, index=False)
    return str(path)


def test_model_learns_a_daily_pattern_and_beats_persistence(tmp_path, settings_env):
    from models.config import ModelConfig
    from models.offline import evaluate_offline

    settings = settings_env()
    frame = candles_from_close(periodic_close(1400))
    cfg = ModelConfig(epochs=25, min_train_windows=200, lstm_units=(16, 8), learning_rate=5e-3)
    test_from = frame["hour_start"].iloc[1200].strftime("%Y-%m-%dT%H:%M")
    result = evaluate_offline(_csv(tmp_path, frame), test_from, cfg, settings=settings)
    overall = result["metrics"]["overall"]
    assert result["metrics"]["n_windows"] == 1400 - 1200 - 24
    assert overall["model_rmse"] < 0.5 * overall["persistence_rmse"]
    assert result["skill"]["h12"] > 0.5  # half a period ahead persistence is worst
    assert 0.5 <= overall["interval_coverage"] <= 1.0
    assert "RMSE persist" in result["table"]


def test_evaluate_cli_reports_hours_needed_vs_found(tmp_path, caplog):
    from models.cli import main

    frame = candles_from_close(periodic_close(300))
    code = main(["evaluate", "--data", _csv(tmp_path, frame), "--test-from", str(frame["hour_start"].iloc[250].date())])
    assert code == 3
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "need at least 296 hours of training history, found 204" in msg


def test_check_sufficiency_names_needed_and_found(tmp_path, settings_env):
    from models import pipeline

    s = settings_env()
    frame = candles_from_close(periodic_close(300))
    write_hourly_metrics(to_hourly_metrics(frame), Path(s.path("hourly_metrics").removeprefix("file://")))
    with pytest.raises(InsufficientHistoryError, match=r"need at least 500 hours, found 300.*btc_backfill"):
        pipeline.check_sufficiency({"test_hours": 168})
    with pytest.raises(InsufficientHistoryError, match="found 0"):
        pipeline.check_sufficiency({"data_uri": f"file://{tmp_path}/nothing-here"})


def _count_hourly_reads(monkeypatch) -> list[str]:
    """Record every opening of an hourly_metrics table (a read) through btc_platform.lakehouse.lake."""
    from btc_platform.lakehouse import lake

    opened: list[str] = []
    real = lake.open_at

    def counting(uri, version=None):
        if uri.rstrip("/").endswith("hourly_metrics"):
            opened.append(f"{uri}@{version}")
        return real(uri, version)

    monkeypatch.setattr(lake, "open_at", counting)
    return opened


def _reads(opened: list[str], task) -> int:
    before = len(opened)
    task()
    return len(opened) - before


def test_retrain_pipeline_registry_promotion_and_outputs(settings_env, monkeypatch):
    from btc_platform.lakehouse import lake
    from models import pipeline, promotion, serving
    from models.registry import Registry

    s = settings_env()
    frame = candles_from_close(periodic_close(1100))
    write_hourly_metrics(to_hourly_metrics(frame, stream_from=900), s.path("hourly_metrics"))  # stream hours at the end
    opened = _count_hourly_reads(monkeypatch)

    info = pipeline.check_sufficiency(PARAMS)
    assert info["hours"] == 1100 and info["gaps"] == 0 and info["table_version"] == 0
    json.dumps(info)  # XCom-safe
    assert len(opened) == 1  # each task reads hourly_metrics once

    cand = pipeline.train_candidate(PARAMS)
    assert len(opened) == 2
    assert cand["reused"] is False
    again = pipeline.train_candidate(PARAMS)
    assert again["version"] == cand["version"] and again["reused"] is True
    version = cand["version"]
    registry = Registry(s)
    for name in ("model.keras", "scaler.json", "intervals.json", "config.json", "training.json"):
        assert registry.exists(version, name), name
    training = registry.read_json(version, "training.json")
    assert training["data_table_version"] == 0
    assert registry.trained_on(version)["data_table_version"] == 0
    assert training["test_from"] == (frame["hour_start"].iloc[-1] + pd.Timedelta(hours=1 - 120)).isoformat()
    assert pd.Timestamp(training["train_rows_end"]) < pd.Timestamp(training["test_from"]) - pd.Timedelta(hours=36)
    assert training["code_version"]

    ev = {}
    assert _reads(opened, lambda: ev.update(pipeline.evaluate_candidate(version, PARAMS))) == 1
    assert opened[-1].endswith("hourly_metrics@0")  # the version it was trained on
    json.dumps(ev)
    assert "RMSE persist" in ev["table"]
    assert ev["overall"]["model_rmse"] < ev["overall"]["persistence_rmse"]

    decision = promotion.decide_promotion(version, PARAMS)
    assert decision["status"] == "promoted" and decision["forced"] is False
    assert registry.current_version() == version

    future = {}
    assert _reads(opened, lambda: future.update(serving.predict_future(PARAMS))) == 1
    assert future["status"] == "written" and future["model_version"] == version
    fut = lake.read_table("future_predictions", s)
    assert len(fut) == 24 and set(fut["model_version"]) == {version}
    assert (fut["lower"] <= fut["predicted_close"]).all() and (fut["predicted_close"] <= fut["upper"]).all()
    last = frame["hour_start"].iloc[-1]
    assert fut["target_hour_start"].min() == last + pd.Timedelta(hours=1)
    assert list(fut["date"].unique()) == [f"{last:%Y-%m-%d}"] and list(fut["hour"].unique()) == [last.hour]
    assert fut["data_table_version"].tolist() == [0] * 24
    serving.predict_future(PARAMS)  # repeat: replaces, does not duplicate
    assert len(lake.read_table("future_predictions", s)) == 24

    out = pipeline.write_outputs(version, PARAMS)
    assert pipeline.write_outputs(version, PARAMS)["predictions_table_version"] == 1  # a repeat replaces
    preds = lake.read_table("predictions", s)
    assert len(preds) == (120 - 24) * 24
    by_time = frame.set_index("hour_start")["close"]
    np.testing.assert_allclose(preds["actual_close"], by_time.loc[preds["target_hour_start"]].to_numpy())
    np.testing.assert_allclose(preds["error"], preds["predicted_close"] - preds["actual_close"])
    np.testing.assert_allclose(preds["persistence_close"], preds["last_close"])
    pm = lake.read_table("prediction_metrics", s)
    assert len(pm) == 1 and pm["decision"].iloc[0] == "promoted"
    assert pm["data_table_version"].iloc[0] == 0
    assert pm["model_rmse"].iloc[0] == pytest.approx(ev["overall"]["model_rmse"])
    assert out["version"] == version

    # a weaker candidate (1 epoch) on the same data: kept, not promoted, with the reason
    weak = dict(PARAMS, epochs=1)
    weak_v = pipeline.train_candidate(weak)["version"]
    assert weak_v != version
    pipeline.evaluate_candidate(weak_v, weak)
    rejected = {}
    assert _reads(opened, lambda: rejected.update(promotion.decide_promotion(weak_v, weak))) == 1
    assert rejected["status"] == "rejected"
    assert f"not below current model {version}" in rejected["reason"]
    assert registry.current_version() == version
    assert registry.read_json(weak_v, "decision.json")["status"] == "rejected"
    assert weak_v in registry.versions()

    # forced: promoted and recorded as forced
    forced = promotion.decide_promotion(weak_v, dict(weak, force_promotion=True))
    assert forced["status"] == "promoted" and forced["forced"] is True
    assert "FORCED" in forced["reason"]
    current = registry.current()
    assert current["version"] == weak_v and current["forced"] is True and current["previous"] == version


@pytest.mark.integration
def test_retrain_pipeline_on_hdfs(hdfs_service, monkeypatch):
    """The same task functions with the storage root on a real HDFS (WebHDFS for the registry's
    files, delta-rs on hdfs:// for hourly_metrics and the output tables)."""
    from btc_platform import settings as settings_mod
    from btc_platform.lakehouse import lake
    from btc_platform.lakehouse.storage import open_storage
    from models import pipeline, promotion, serving
    from models.registry import Registry

    hdfs = hdfs_service
    root = f"{hdfs.uri}/btc-models-test"
    env = {
        "BTC_STORAGE_ROOT": root,
        "BTC_DATA_DIR": str(hdfs.settings.data_dir),
        "BTC_HDFS_NAMENODE_HTTP_PORT": str(hdfs.settings.hdfs_namenode_http_port),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings_mod.get_settings.cache_clear()
    try:
        s = settings_mod.get_settings()
        fs = open_storage(root, s)
        frame = candles_from_close(periodic_close(700))
        write_hourly_metrics(to_hourly_metrics(frame, stream_from=600), s.path("hourly_metrics"))  # delta-rs on hdfs://
        params = {"epochs": 3, "test_hours": 100, "min_train_windows": 200, "force_promotion": True, "lstm_units": [8, 8]}
        assert pipeline.check_sufficiency(params)["hours"] == 700
        version = pipeline.train_candidate(params)["version"]
        assert "RMSE persist" in pipeline.evaluate_candidate(version, params)["table"]
        assert promotion.decide_promotion(version, params)["status"] == "promoted"
        assert Registry(s).current_version() == version
        assert Registry(s).load_forecaster(version).config.horizon == 24  # .keras round trip via WebHDFS
        assert serving.predict_future(params)["status"] == "written"
        pipeline.write_outputs(version, params)
        assert len(lake.read_table("future_predictions", s)) == 24
        assert len(lake.read_table("predictions", s)) == (100 - 24) * 24
        assert len(lake.read_table("prediction_metrics", s)) == 1
        fs.delete(root)
    finally:
        settings_mod.get_settings.cache_clear()


def test_training_records_the_table_version_and_retrains_on_it(settings_env):
    """Version A is trained on and recorded; more rows arrive (version B); as_of_version=A reads the
    old rows only and trains the same model again (same version, reused), without it B is used."""
    from models import pipeline
    from models.cli import _params, build_parser
    from models.data import load_series
    from models.registry import Registry

    s = settings_env()
    uri = s.path("hourly_metrics")
    frame = candles_from_close(periodic_close(700))
    rows = to_hourly_metrics(frame)
    version_a = write_hourly_metrics(rows.iloc[:600], uri)
    params = {"epochs": 1, "test_hours": 72, "min_train_windows": 200, "lstm_units": [4, 4]}
    first = pipeline.train_candidate(params)
    assert first["data_table_version"] == version_a
    assert Registry(s).trained_on(first["version"])["data_table_version"] == version_a

    version_b = write_hourly_metrics(rows.iloc[600:], uri)
    assert version_b == version_a + 1
    old = load_series(uri, "BTCUSDT", version=version_a)
    assert len(old.frame) == 600 and old.frame["hour_start"].iloc[-1] == frame["hour_start"].iloc[599]
    assert len(load_series(uri, "BTCUSDT").frame) == 700

    again = pipeline.train_candidate(dict(params, as_of_version=version_a))
    assert again["version"] == first["version"] and again["reused"] is True
    assert pipeline.check_sufficiency(dict(params, as_of_version=version_a))["hours"] == 600
    cli = _params(build_parser().parse_args(["train", "--as-of-version", str(version_a), "--epochs", "1"]))
    assert cli["as_of_version"] == version_a
    with pytest.raises(ValueError, match=">= 0"):
        pipeline.train_candidate(dict(params, as_of_version=-1))


def test_a_models_training_rows_outlive_the_vacuum_of_its_table_version(settings_env):
    """Version A is trained on; version B rewrites every row and VACUUM deletes A's files: reading A
    fails naming the version and the retention setting, while the model's evaluation and a retrain
    as of A read the rows kept with the model."""
    from deltalake import DeltaTable

    from btc_platform.lakehouse import lake
    from models import pipeline
    from models.data import VersionGoneDataError, load_series
    from models.registry import Registry

    s = settings_env()
    uri = s.path("hourly_metrics")
    rows = to_hourly_metrics(candles_from_close(periodic_close(600)))
    version_a = write_hourly_metrics(rows, uri)
    params = {"epochs": 1, "test_hours": 72, "min_train_windows": 200, "lstm_units": [4, 4]}
    first = pipeline.train_candidate(params)
    assert Registry(s).exists(first["version"], pipeline.TRAINING_SNAPSHOT)

    schema = lake.arrow_schema(datasets.HOURLY_METRICS_COLUMNS)
    lake.write_at(uri, rows[schema.names], schema=schema, replace_on=["symbol", "hour_start"])  # version B
    DeltaTable(uri.removeprefix("file://")).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    with pytest.raises(VersionGoneDataError,
                       match=f"version {version_a} is no longer readable.*BTC_MAINTENANCE_VACUUM_RETENTION_HOURS"):
        load_series(uri, "BTCUSDT", version=version_a)

    assert "RMSE persist" in pipeline.evaluate_candidate(first["version"], params)["table"]
    again = pipeline.train_candidate(dict(params, as_of_version=version_a))
    assert again["version"] == first["version"] and again["reused"] is True


def test_persistence_and_the_best_band_are_served_when_no_lstm_is_promoted(settings_env):
    """A candidate judged on too few windows is rejected; the forecast is still served: the
    persistence point and the best band on its evaluation, each row naming both and why. Without
    any history nothing is served and the reason is returned; with a gap in the latest hours the
    point is persistence and the band the model's best fitted baseline on the hours there are."""
    from btc_platform.lakehouse import lake
    from models import pipeline, promotion, serving
    from models.registry import Registry

    s = settings_env()
    params = {"epochs": 1, "test_hours": 72, "min_train_windows": 200, "lstm_units": [4, 4]}
    skipped = serving.predict_future(params)
    assert skipped["status"] == "skipped" and "hourly_metrics" in skipped["reason"]
    assert "does not exist" in skipped["reason"]

    uri = s.path("hourly_metrics")
    frame = candles_from_close(periodic_close(700))
    write_hourly_metrics(to_hourly_metrics(frame), uri)
    needed, reason = pipeline.retrain_needed(params, 0, frame["hour_start"].iloc[-1].isoformat())
    assert needed and reason == "no model of BTCUSDT trained yet"
    version = pipeline.train_candidate(params)["version"]
    ev = pipeline.evaluate_candidate(version, params)
    assert "80 % bands" in ev["table"] and "garch" in ev["table"]
    decision = promotion.decide_promotion(version, params)
    assert decision["status"] == "rejected" and "only 48 test windows, promotion needs 504" in decision["reason"]
    assert Registry(s).current_version() is None

    out = serving.predict_future(params)
    assert out["status"] == "written" and out["point_model"] == "persistence"
    fut = lake.read_table("future_predictions", s)
    assert len(fut) == 24
    np.testing.assert_allclose(fut["predicted_close"], frame["close"].iloc[-1])  # persistence
    metrics = Registry(s).read_json(version, "metrics.json")["overall"]
    assert set(fut["band_model"]) == {metrics["band_best"]}
    assert (fut["lower"] < fut["predicted_close"]).all() and (fut["predicted_close"] < fut["upper"]).all()
    assert fut["point_reason"].str.startswith("persistence — LSTM candidate rejected: ").all()
    assert fut["point_reason"].str.contains("only 48 test windows").all()
    assert fut["band_reason"].str.contains("lowest interval score").all()
    head = pipeline.headline_metrics(version, params)
    assert head["decision"] == "rejected" and head["served_point_model"] == "persistence"
    assert head["served_band_model"] == metrics["band_best"] and head["test_windows"] == 48

    needed, reason = pipeline.retrain_needed(params, 0, frame["hour_start"].iloc[-1].isoformat())
    assert not needed and "nothing changed" in reason
    later = (frame["hour_start"].iloc[-1] + pd.Timedelta(hours=5)).isoformat()
    needed, reason = pipeline.retrain_needed(dict(params, min_retrain_hours=20), 1, later)
    assert not needed and "5 h before the latest hour" in reason

    # the latest hours have a gap: the LSTM cannot run; persistence and the best fitted baseline band
    gap_frame = candles_from_close(periodic_close(5), start=frame["hour_start"].iloc[-1] + pd.Timedelta(hours=3))
    write_hourly_metrics(to_hourly_metrics(gap_frame), uri)
    out = serving.predict_future(params)
    assert out["status"] == "written" and out["point_model"] == "persistence"
    assert "contain a gap" in out["point_reason"] and "only 48 test windows" in out["point_reason"]
    baselines = {k: v for k, v in metrics.items() if k.startswith("band_") and k.endswith("_winkler")
                 and k != "band_lstm_winkler" and v is not None}
    best_baseline = min(baselines, key=baselines.get)[len("band_"):-len("_winkler")]
    assert out["band_model"] == (metrics["band_best"] if metrics["band_best"] != "lstm" else best_baseline)
    assert "hourly returns available" in out["band_reason"]
    fut = lake.read_table("future_predictions", s)
    assert len(fut) == 48  # the earlier forecast and this one (another origin)
    latest = fut[fut["origin_hour_start"] == gap_frame["hour_start"].iloc[-1]]
    np.testing.assert_allclose(latest["predicted_close"], gap_frame["close"].iloc[-1])
    assert (latest["lower"] < latest["predicted_close"]).all() and (latest["predicted_close"] < latest["upper"]).all()


def test_short_history_without_a_model_is_served_persistence_and_a_small_sample_band(settings_env):
    """No model can be trained from 30 hours: the forecast is served anyway, persistence with the
    EWMA band widened for few returns, both named with why; one hour gives the point and no band."""
    from btc_platform.lakehouse import lake
    from models import serving
    from models.fallback import fallback_band

    s = settings_env()
    uri = s.path("hourly_metrics")
    frame = candles_from_close(periodic_close(30))
    write_hourly_metrics(to_hourly_metrics(frame), uri)
    out = serving.predict_future({})
    assert out["status"] == "written" and out["model_version"] == "persistence"
    assert out["point_model"] == "persistence" and out["band_model"] == "ewma_t"
    assert out["point_reason"].startswith("persistence — no LSTM of BTCUSDT evaluated yet")
    assert "30 found" in out["point_reason"] and "Student-t" in out["band_reason"]
    fut = lake.read_table("future_predictions", s).sort_values("horizon")
    last = frame["close"].iloc[-1]
    assert len(fut) == 24 and (fut["predicted_close"] == last).all()
    expected = fallback_band(np.log(frame["close"]).diff().to_numpy(), last, 24, 0.8)
    np.testing.assert_allclose(fut["lower"], expected.low)
    np.testing.assert_allclose(fut["upper"], expected.high)
    half = np.log(fut["upper"].to_numpy() / last)
    np.testing.assert_allclose(half / half[0], np.sqrt(np.arange(1, 25)))  # random-walk growth

    write_hourly_metrics(to_hourly_metrics(candles_from_close(periodic_close(1), start=frame["hour_start"].iloc[-1]
                                                              + pd.Timedelta(hours=5))), uri)
    one = serving.predict_future({})  # the latest hour stands alone after a gap: still 29 returns before it
    assert one["status"] == "written" and one["band_model"] == "ewma_t"


def test_a_single_hour_of_history_is_served_without_a_band(settings_env):
    from btc_platform.lakehouse import lake
    from models import serving

    s = settings_env()
    frame = candles_from_close(periodic_close(1))
    write_hourly_metrics(to_hourly_metrics(frame), s.path("hourly_metrics"))
    out = serving.predict_future({})
    assert out["status"] == "written" and out["band_model"] == "none" and "0 hourly return(s)" in out["band_reason"]
    fut = lake.read_table("future_predictions", s)
    assert len(fut) == 24 and fut["lower"].isna().all() and (fut["predicted_close"] == frame["close"].iloc[0]).all()


def test_rolling_backtest_refits_on_data_before_each_block(tmp_path, settings_env, caplog):
    from models.cli import main

    settings_env()
    frame = candles_from_close(periodic_close(900))
    test_from = frame["hour_start"].iloc[750]
    csv_out = tmp_path / "metrics.csv"
    argv = ["evaluate", "--data", _csv(tmp_path, frame), "--test-from", test_from.strftime("%Y-%m-%dT%H:%M"),
            "--retrain-every", "50h", "--epochs", "1", "--csv", str(csv_out)]
    caplog.set_level("INFO")
    assert main(argv) == 0
    from models.offline import evaluate_offline

    table = pd.read_csv(csv_out)
    assert list(table["horizon"])[-1] == "all" and len(table) == 25
    assert {"band_garch_coverage", "band_lstm_winkler_skill_vs_constant", "model_skill"} <= set(table.columns)
    msgs = " ".join(r.getMessage() for r in caplog.records)
    assert "served point model by the promotion rule" in msgs
    from models.config import ModelConfig

    result = evaluate_offline(_csv(tmp_path, frame), test_from.isoformat(), ModelConfig(epochs=1, lstm_units=(4, 4)),
                              retrain_every="50h")
    refits = result["refits"]
    # origins 750 .. 875 (the last with 24 h of actuals): blocks of 50 h from 750 -> 3 refits
    assert [r["windows"] for r in refits] == [50, 50, 26]
    assert result["metrics"]["n_windows"] == 126
    for r in refits:  # every refit trained only on rows before its block (minus lookback + horizon)
        assert pd.Timestamp(r["train_rows_end"]) < pd.Timestamp(r["block_start"]) - pd.Timedelta(hours=36)


def test_a_point_network_saved_before_the_quantile_network_still_forecasts(settings_env):
    """Models saved before the quantile head (Dense(horizon), Parkinson-calibrated intervals, no
    bands.json) load and forecast: point = their output, band = their interval."""
    import keras

    from models.config import ModelConfig
    from models.features import FEATURES, Scaler, build_features
    from models.intervals import IntervalCalibration
    from models.registry import Registry
    from models.train import Forecaster

    s = settings_env()
    cfg = ModelConfig(lookback=4, horizon=3)
    inputs = keras.Input(shape=(4, len(FEATURES)))
    model = keras.Model(inputs, keras.layers.Dense(3, bias_initializer="ones")(keras.layers.Flatten()(inputs)))
    scaler = Scaler(np.zeros(len(FEATURES)), np.ones(len(FEATURES)), np.full(3, 0.01))
    calib = IntervalCalibration(0.8, np.full(3, -1.0), np.full(3, 1.0))
    registry = Registry(s)
    registry.save_forecaster("legacy", Forecaster(cfg, model, scaler, calib), {"symbol": "BTCUSDT"})
    registry.fs.delete(registry.uri("legacy", "bands.json"))  # as saved before bands existed
    frame = candles_from_close(periodic_close(40))
    loaded = registry.load_forecaster("legacy")
    feats = build_features(frame)
    close = frame["close"].to_numpy()
    out = loaded.forecast(np.nan_to_num(feats * 0.0), close, np.array([30, 31]))  # zero inputs: output = bias
    np.testing.assert_allclose(out["log_returns"], 0.01)  # bias 1 x target_std 0.01
    np.testing.assert_allclose(out["prices"], np.repeat(close[[30, 31]][:, None] * np.exp(0.01), 3, axis=1))
    assert set(out["bands"]) == {"lstm"} and (out["low"] < out["prices"]).all() and (out["high"] > out["prices"]).all()


def test_each_symbol_has_its_own_registry_and_a_single_symbol_registry_stays_readable(settings_env):
    """Two symbols, one without enough history: each task of one symbol reads and writes only its
    own registry (models/<SYMBOL>/) and forecast; the symbol lacking history says why and is still
    served. A registry of the single-symbol layout (versions directly under models/) stays the
    registry of the symbol its models were trained on."""
    import shutil

    from btc_platform.lakehouse import lake
    from btc_platform.lakehouse.model_registry import RegistryFiles
    from models import pipeline, promotion, serving
    from models.registry import Registry

    s = settings_env(binance_symbols="BTCUSDT,ETHUSDT")
    uri = s.path("hourly_metrics")
    frame = candles_from_close(periodic_close(700))
    write_hourly_metrics(to_hourly_metrics(frame), uri)
    write_hourly_metrics(to_hourly_metrics(candles_from_close(periodic_close(40)), symbol="ETHUSDT"), uri)
    params = {"epochs": 1, "test_hours": 72, "min_train_windows": 200, "lstm_units": [4, 4], "force_promotion": True}
    with pytest.raises(InsufficientHistoryError, match="found 40.*ETHUSDT"):
        pipeline.check_sufficiency(dict(params, symbol="ETHUSDT"))
    version = pipeline.train_candidate(params)["version"]  # default symbol: the first, BTCUSDT
    assert promotion.decide_promotion(version, params)["status"] == "promoted"
    btc, eth = Registry(s, "BTCUSDT"), Registry(s, "ethusdt")
    assert btc.root.endswith("/models/BTCUSDT") and eth.root.endswith("/models/ETHUSDT")
    assert btc.versions() == [version] and btc.current_version() == version
    assert eth.versions() == [] and eth.current() is None
    assert serving.predict_future(params)["point_model"] == "lstm"
    eth_out = serving.predict_future(dict(params, symbol="ETHUSDT"))
    assert eth_out["point_model"] == "persistence" and eth_out["model_version"] == "persistence"
    fut = lake.read_table("future_predictions", s)
    assert fut.groupby("symbol")["model_version"].agg(set).to_dict() == {"BTCUSDT": {version},
                                                                          "ETHUSDT": {"persistence"}}

    # the single-symbol layout of before: the same files directly under models/
    base = Path(s.path("models").removeprefix("file://"))
    shutil.move(str(base / "BTCUSDT" / version), str(base / version))
    shutil.move(str(base / "BTCUSDT" / "current.json"), str(base / "current.json"))
    (base / "BTCUSDT").rmdir()
    legacy = Registry(s, "BTCUSDT")
    assert legacy.legacy and legacy.root == s.path("models")
    assert legacy.versions() == [version] and legacy.current_version() == version
    assert RegistryFiles(s, "BTCUSDT").current_version() == version  # what the dashboard reads
    assert not Registry(s, "ETHUSDT").legacy and Registry(s, "ETHUSDT").versions() == []
    again = serving.predict_future(params)
    assert again["point_model"] == "lstm" and again["point_version"] == version
    needed, reason = pipeline.retrain_needed(dict(params, force_promotion=False), 1,
                                             frame["hour_start"].iloc[-1].isoformat())
    assert not needed and "nothing changed" in reason  # the legacy model is the newest model of BTCUSDT
