"""Offline evaluation (``python -m models.cli evaluate``, the models benchmark): train on a candle
file or an hourly_metrics table before a date and evaluate after it, once or as a rolling-origin
backtest. Nothing is written to the registry or the tables."""

from __future__ import annotations

import time

import pandas as pd

from btc_platform.settings import Settings, get_settings
from models.backtest import parse_every, rolling_backtest
from models.candidate import skills
from models.config import ModelConfig
from models.context import check_history
from models.data import HOUR, InsufficientHistoryError, describe, load_series
from models.evaluate import evaluate_forecasts, format_band_table, format_table
from models.promotion import served_point
from models.train import backtest, train


def evaluate_offline(
    data: str,
    test_from: str | None = None,
    config: ModelConfig | None = None,
    symbol: str | None = None,
    settings: Settings | None = None,
    as_of_version: int | None = None,
    retrain_every: str | int | None = None,
) -> dict:
    """Train on the data before ``test_from`` (default: the last 6 months) and evaluate after it;
    with ``retrain_every`` (e.g. "30d") a rolling-origin backtest refitting every that often.

    ``data`` is a candle CSV or an hourly_metrics Delta table (read at ``as_of_version`` if
    given). Returns metrics, the formatted table and timings.
    """
    s = settings or get_settings()
    cfg = config or ModelConfig()
    started = time.perf_counter()
    loaded = load_series(data, (symbol or s.binance_symbols[0]).upper(), version=as_of_version)
    frame = loaded.frame
    load_seconds = time.perf_counter() - started
    if frame.empty:
        raise InsufficientHistoryError(1, 0, detail=f"no rows in {data}")
    if test_from:
        start = pd.Timestamp(test_from)
        start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    else:
        start = (frame["hour_start"].iloc[-1] + HOUR) - pd.DateOffset(months=6)
    check_history(frame, cfg, start)
    common = {"load_seconds": load_seconds, "data": describe(frame), "data_origin": loaded.origin,
              "data_table_version": loaded.table_version}
    if retrain_every:
        return {**_evaluate_rolling(frame, data, cfg, start, retrain_every, s), **common}
    forecaster, split, info = train(frame, cfg, start, threads=s.model_tf_threads)
    bt = backtest(forecaster, frame, split.test)
    metrics = evaluate_forecasts(bt["actual"], bt["last_close"], bt["forecasts"], bt["low"], bt["high"],
                                 bands=bt["bands"], level=cfg.interval_level)
    summary = split.summary(frame)
    title = (
        f"{data}: trained on {info['data_start']} .. {info['train_rows_end']} "
        f"({summary['fit_windows']} fit + {summary['val_windows']} val windows, {info['epochs_run']} epochs, "
        f"{info['train_seconds']:.1f} s); test origins {summary['test_origins'][0]} .. {summary['test_origins'][1]}; "
        f"{summary['windows_skipped_gap']} windows skipped across gaps"
    )
    return {
        "metrics": metrics,
        "skill": skills(metrics),
        "served_point": served_point(metrics),
        "table": format_table(metrics, title=title) + "\n" + format_band_table(metrics),
        "train_seconds": info["train_seconds"],
        "predict_seconds": bt["predict_seconds"],
        "predict_ms_per_window": 1000.0 * bt["predict_seconds"] / max(len(split.test), 1),
        "epochs_run": info["epochs_run"],
        "split": summary,
        **common,
    }


def _evaluate_rolling(frame, data: str, cfg: ModelConfig, start, retrain_every, s: Settings) -> dict:
    every = parse_every(retrain_every)
    bt = rolling_backtest(frame, cfg, start, every, threads=s.model_tf_threads)
    metrics = evaluate_forecasts(bt["actual"], bt["last_close"], bt["forecasts"], bt["low"], bt["high"],
                                 bands=bt["bands"], level=cfg.interval_level)
    refits = bt["refits"]
    origins = pd.to_datetime(bt["origin_time"], utc=True)
    title = (f"{data}: rolling-origin backtest, {len(refits)} refits every {every} h from {start.isoformat()}; "
             f"test origins {origins.min().isoformat()} .. {origins.max().isoformat()}; {bt['seconds']:.1f} s")
    lines = [f"  refit {r['refit']}: block from {r['block_start']}, {r['windows']} windows, trained on rows up to "
             f"{r['train_rows_end']} ({r['epochs_run']} epochs, {r['train_seconds']:.1f} s)" for r in refits]
    return {
        "metrics": metrics,
        "skill": skills(metrics),
        "served_point": served_point(metrics),
        "table": "\n".join([format_table(metrics, title=title), format_band_table(metrics), "refits:", *lines]),
        "refits": refits,
        "backtest_seconds": bt["seconds"],
        "train_seconds": sum(r["train_seconds"] for r in refits),
        "predict_seconds": None,
        "predict_ms_per_window": None,
        "epochs_run": sum(r["epochs_run"] for r in refits),
    }
