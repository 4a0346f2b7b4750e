"""A model version's evaluation on its own test window: its backtest (re-read from exactly the
table version it was trained on), the metrics stored with it (``metrics.json``, computed once) and
the rows it publishes to the predictions table."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from btc_platform.lakehouse.model_registry import BACKTEST, METRICS, TRAINING
from models.context import Context
from models.evaluate import evaluate_forecasts, format_band_table, format_table
from models.features import split_windows
from models.registry import Registry
from models.train import backtest

log = logging.getLogger(__name__)

#: horizons (hours) whose skill is reported
SKILL_HORIZONS = (1, 6, 12, 24)


def backtest_version(registry: Registry, version: str, ctx: Context):
    """(forecaster, frame, split, backtest, training) of ``version`` on its test window."""
    training = registry.read_json(version, TRAINING)
    forecaster = registry.load_forecaster(version)
    data = registry.trained_on(version)  # exactly the table version it was trained on
    frame = ctx.load(
        uri=data["data_uri"],
        symbol=data["symbol"],
        version=data["data_table_version"],
        until=pd.Timestamp(data["data_end"]),
    ).frame
    split = split_windows(frame, forecaster.config, pd.Timestamp(training["test_from"]))
    return forecaster, frame, split, backtest(forecaster, frame, split.test), training


def evaluate_version(ctx: Context, registry: Registry, version: str) -> dict:
    """Metrics of ``version`` (computed and stored on first call) with the formatted tables."""
    if registry.exists(version, METRICS):
        metrics = registry.read_json(version, METRICS)
    else:
        forecaster, _frame, _split, bt, training = backtest_version(registry, version, ctx)
        metrics = evaluate_forecasts(bt["actual"], bt["last_close"], bt["forecasts"], bt["low"], bt["high"],
                                     bands=bt["bands"], level=forecaster.config.interval_level)
        metrics.update(
            {
                "version": version,
                "test_from": training["test_from"],
                "data_end": training["data_end"],
                "predict_seconds": round(bt["predict_seconds"], 3),
                "interval_level": forecaster.config.interval_level,
            }
        )
        registry.write_frame(version, BACKTEST, backtest_frame(version, bt, registry.symbol))
        registry.write_json(version, METRICS, metrics)
    table = format_table(metrics, title=f"model {version}: test window from {metrics['test_from']} to {metrics['data_end']}")
    table += "\n" + format_band_table(metrics)
    log.info("evaluation of %s:\n%s", version, table)
    return {"version": version, "overall": metrics["overall"], "skill": skills(metrics), "table": table}


def stored_metrics(ctx: Context, registry: Registry, version: str) -> dict:
    """``metrics.json`` of ``version``, evaluating it first if that was never done."""
    if not registry.exists(version, METRICS):
        evaluate_version(ctx, registry, version)
    return registry.read_json(version, METRICS)


def skills(metrics: dict) -> dict:
    """LSTM skill per reported horizon and overall, the best band's coverage and interval-score skill."""
    rows = {r["horizon"]: r for r in metrics["per_horizon"]}
    out = {f"h{h}": rows[h].get("model_skill") for h in SKILL_HORIZONS if h in rows}
    o = metrics["overall"]
    out["overall"] = o.get("model_skill")
    out["interval_coverage"] = o.get("interval_coverage")
    best = o.get("band_best")
    if best:
        out["band_best"] = best
        out["band_coverage"] = o.get(f"band_{best}_coverage")
        for h in SKILL_HORIZONS:
            if h in rows:
                out[f"band_coverage_h{h}"] = rows[h].get(f"band_{best}_coverage")
        for other in ("constant", "ewma"):
            out[f"band_winkler_skill_vs_{other}"] = 0.0 if best == other else o.get(f"band_{best}_winkler_skill_vs_{other}")
    out["dm_p_model_better"] = o.get("dm_p_model_better")
    return out


def backtest_frame(version: str, bt: dict, symbol: str) -> pd.DataFrame:
    """The backtest as rows of the predictions table (one per origin and step)."""
    n, horizon = bt["actual"].shape
    steps = np.tile(np.arange(1, horizon + 1), n)
    origin = pd.to_datetime(np.repeat(bt["origin_time"], horizon), utc=True)
    pred = bt["forecasts"]["model"].ravel()
    actual = bt["actual"].ravel()
    low, high = bt["low"].ravel(), bt["high"].ravel()
    return pd.DataFrame(
        {
            "model_version": version,
            "symbol": symbol,
            "origin_hour_start": origin,
            "horizon": steps.astype("int32"),
            "target_hour_start": origin + pd.to_timedelta(steps, unit="h"),  # close of this hour
            "last_close": np.repeat(bt["last_close"], horizon),
            "actual_close": actual,
            "predicted_close": pred,
            "lower": low,
            "upper": high,
            "inside_interval": (actual >= low) & (actual <= high),
            "persistence_close": bt["forecasts"]["persistence"].ravel(),
            "drift_close": bt["forecasts"]["drift"].ravel(),
            **{f"{side}_{name}": bound.ravel() for name, (lo, hi) in bt["bands"].items() if name != "lstm"
               for side, bound in (("lower", lo), ("upper", hi))},
            "error": pred - actual,
            "abs_error": np.abs(pred - actual),
            "abs_pct_error": 100.0 * np.abs(pred - actual) / np.abs(actual),
        }
    )
