"""Forecast vs actual: score served forecasts once the closes they predicted have arrived.

``score_forecasts`` joins the rows of ``future_predictions`` whose target hour is now in
``hourly_metrics`` with that hour's close, and appends to ``forecast_actuals`` one row per
forecast step: the realised error of the served point (and of persistence, the last close
then), whether the actual fell inside the served band, and which model version / point model /
band model issued it. A forecast step whose target hour has no hourly row yet (not consolidated,
or a gap) is left for a later run, never filled in. Running it again re-scores nothing already
scored (steps are appended as their hours arrive) unless ``rescore`` (then the rows of the
forecasts scored again are replaced, e.g. after a backfill corrected an hour).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from btc_platform.lakehouse import datasets, lake
from btc_platform.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: one forecast step
KEYS = ("symbol", "model_version", "origin_hour_start", "horizon")
_FORECAST_COLUMNS = ("symbol", "model_version", "issue_time", "origin_hour_start", "last_close", "horizon",
                     "target_hour_start", "predicted_close", "lower", "upper", "interval_level", "point_model",
                     "band_model")


def _read(name: str, settings: Settings, **kwargs) -> pd.DataFrame | None:
    try:
        return lake.read_table(name, settings, **kwargs)
    except lake.TableNotFoundError:
        return None


def score_forecasts(settings: Settings | None = None, symbol: str | None = None, rescore: bool = False) -> dict:
    """Append realised errors and band hits of forecasts whose targets have arrived; returns counts."""
    from models.registry import utcnow_iso

    s = settings or get_settings()
    sym = (symbol or s.binance_symbols[0]).upper()
    forecasts = _read(datasets.FUTURE_PREDICTIONS, s, filters=[("symbol", "=", sym)])
    if forecasts is None or forecasts.empty:
        reason = f"no served forecasts of {sym} yet"
        log.info("nothing to score: %s", reason)
        return {"status": "skipped", "reason": reason, "scored_rows": 0}
    for col in ("point_model", "band_model"):  # forecasts served before these columns existed
        if col not in forecasts.columns:
            forecasts[col] = pd.Series([None] * len(forecasts), dtype="string")
    forecasts = forecasts[list(_FORECAST_COLUMNS)]
    if not rescore:
        done = _read(datasets.FORECAST_ACTUALS, s, columns=list(KEYS), filters=[("symbol", "=", sym)])
        if done is not None and not done.empty:
            seen = pd.MultiIndex.from_frame(done[list(KEYS)].drop_duplicates())
            forecasts = forecasts[~pd.MultiIndex.from_frame(forecasts[list(KEYS)]).isin(seen)]
    if forecasts.empty:
        log.info("every served forecast of %s is scored already", sym)
        return {"status": "up_to_date", "scored_rows": 0, "awaiting_rows": 0}
    lo, hi = forecasts["target_hour_start"].min(), forecasts["target_hour_start"].max()
    hourly = _read(datasets.HOURLY_METRICS, s, columns=["hour_start", "close"],
                   filters=[("symbol", "=", sym), ("hour_start", ">=", lo), ("hour_start", "<=", hi)])
    if hourly is None:
        hourly = pd.DataFrame({"hour_start": pd.Series([], dtype="datetime64[us, UTC]"), "close": []})
    actual = hourly.rename(columns={"hour_start": "target_hour_start", "close": "actual_close"})
    joined = forecasts.merge(actual, on="target_hour_start", how="left")
    arrived = joined["actual_close"].notna()
    awaiting = int((~arrived).sum())
    rows = joined[arrived].copy()
    if rows.empty:
        log.info("no forecast step of %s has its actual close yet (%d steps await it)", sym, awaiting)
        return {"status": "waiting", "scored_rows": 0, "awaiting_rows": awaiting}
    err = rows["predicted_close"] - rows["actual_close"]
    rows["error"] = err
    rows["abs_error"] = err.abs()
    rows["abs_pct_error"] = 100.0 * err.abs() / rows["actual_close"].abs()
    rows["persistence_error"] = rows["last_close"] - rows["actual_close"]
    banded = rows["lower"].notna() & rows["upper"].notna()  # a forecast served without a band: no hit, no miss
    rows["inside_band"] = ((rows["actual_close"] >= rows["lower"]) & (rows["actual_close"] <= rows["upper"])) \
        .astype("boolean").where(banded, pd.NA)
    width = rows["upper"] - rows["lower"]
    alpha = 1.0 - rows["interval_level"]
    rows["interval_score"] = (
        width + (2.0 / alpha) * np.maximum(rows["lower"] - rows["actual_close"], 0.0)
        + (2.0 / alpha) * np.maximum(rows["actual_close"] - rows["upper"], 0.0)
    )
    rows["scored_at"] = pd.Timestamp(utcnow_iso())
    for col in ("point_model", "band_model"):
        rows[col] = rows[col].astype("string")
    # unscored steps are appended; a rescore replaces the rows of the forecasts it scores again
    version = lake.write_table(datasets.FORECAST_ACTUALS, rows.reset_index(drop=True), s,
                               replace_on=KEYS[:3] if rescore else None)
    n_forecasts = int(rows[list(KEYS[:3])].drop_duplicates().shape[0])
    hits = rows["inside_band"].mean()
    hit_rate = float("nan") if pd.isna(hits) else float(hits)
    log.info("scored %d forecast(s) of %s (%d rows, %d steps awaiting their close): band hit rate %.3f, "
             "MAE %.2f (persistence %.2f); forecast_actuals version %d", n_forecasts, sym, len(rows), awaiting,
             hit_rate, rows["abs_error"].mean(), rows["persistence_error"].abs().mean(), version)
    return {"status": "scored", "scored_forecasts": n_forecasts, "scored_rows": int(len(rows)),
            "awaiting_rows": awaiting, "table_version": version,
            "band_hit_rate": hit_rate}
