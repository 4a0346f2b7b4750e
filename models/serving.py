"""What is served: the choice of the point and band model (``choose_served``) and the forecast of
the next hours written to future_predictions (``predict_future``).

A forecast is always served once a symbol has one hour of history. The point is the ``current``
LSTM when there is one and it can run; otherwise persistence (the last close), each row saying
why ("persistence — LSTM candidate rejected: ..."). The band is, in this order of preference:

1. the model with the lowest interval score on the newest evaluated version's test window (its
   LSTM band or a fitted baseline), when the LSTM can run (the latest ``lookback + 1`` hours are
   consecutive);
2. else that version's best fitted baseline band (constant, EWMA, GARCH), applied to the hours
   there are, when they number at least :data:`WARM_RETURNS` returns;
3. else the uncalibrated small-sample EWMA band of ``models.fallback`` (wider the fewer the hours);
4. else (fewer than 3 consecutive hours anywhere) no band, and the reason.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from btc_platform.lakehouse import datasets, lake
from btc_platform.lakehouse.model_registry import DECISION, METRICS, TRAINING, ModelNotFoundError
from models.config import RetrainParams
from models.context import Context, resolve
from models.data import HistoryNotFoundError, segment_ids
from models.fallback import TooFewReturnsError, fallback_band
from models.features import build_features, hours_needed
from models.registry import Registry, utcnow_iso

log = logging.getLogger(__name__)

#: what identifies one forecast in future_predictions (a repeat replaces those rows)
FUTURE_KEYS = ("symbol", "model_version", "origin_hour_start")
#: hourly returns a fitted baseline band needs to warm its volatility up (a week) before it is
#: used on history the LSTM cannot run on
WARM_RETURNS = 168
#: model_version of a forecast served without any evaluated model
NO_MODEL = "persistence"


def latest_version(registry: Registry) -> str | None:
    """The newest complete model version that has been evaluated (versions start with their data end)."""
    evaluated = [v for v in registry.versions() if registry.exists(v, METRICS)]
    if not evaluated:
        return None
    end = max(v.split("-")[0] for v in evaluated)  # several models on the same data: the last saved
    same = [v for v in evaluated if v.split("-")[0] == end]
    return max(same, key=lambda v: (registry.read_json(v, TRAINING).get("saved_at") or "", v))


def choose_served(registry: Registry) -> dict:
    """Which point and band model serve the forecast, and why.

    Point: the ``current`` LSTM (promoted because it beat persistence beyond noise, or forced),
    else persistence. Band: the model with the lowest interval score on the test window of the
    newest evaluated version (its LSTM band or one of its fitted baselines). Raises
    ModelNotFoundError when no version was ever evaluated.
    """
    ref = latest_version(registry)
    if ref is None:
        raise ModelNotFoundError(f"no evaluated model version of {registry.symbol} yet: run btc_retrain first")
    current = registry.current()
    if current is not None:
        point, point_version = "lstm", current["version"]
        point_reason = f"LSTM {current['version']} is the current model: {current['reason']}"
    else:
        point, point_version = "persistence", None
        decision = registry.read_json_or_none(ref, DECISION) or {}
        point_reason = (f"persistence — LSTM candidate rejected: {decision['reason']} (candidate {ref})"
                        if decision.get("reason") else f"persistence — LSTM candidate {ref} is not judged yet")
    overall = registry.read_json(ref, METRICS)["overall"]
    band = overall.get("band_best") or "lstm"
    if overall.get(f"band_{band}_winkler") is not None:
        band_reason = f"lowest interval score on the test window of {ref} ({_winklers(overall)})"
    else:
        band_reason = f"model {ref} was evaluated before band baselines existed: its own interval"
    return {"reference_version": ref, "point_model": point, "point_version": point_version,
            "point_reason": point_reason, "band_model": band, "band_reason": band_reason}


def _winklers(overall: dict) -> str:
    return ", ".join(f"{k[len('band_'):-len('_winkler')]} {v:.1f}" for k, v in overall.items()
                     if k.startswith("band_") and k.endswith("_winkler") and v is not None)


def lstm_blocked(frame: pd.DataFrame, lookback: int, symbol: str) -> str | None:
    """Why the LSTM cannot forecast from the latest hours (None when it can)."""
    need = lookback + 1
    if len(frame) < need:
        return f"{len(frame)} hours of {symbol} history, the LSTM needs the latest {need} consecutive hours"
    seg = segment_ids(frame["hour_start"])
    if seg[-need] != seg[-1]:
        return (f"the latest {need} hours up to {frame['hour_start'].iloc[-1].isoformat()} contain a gap "
                "(consolidate or backfill the missing hours)")
    return None


def predict_future(params: dict | RetrainParams | None = None) -> dict:
    """Forecast the next ``horizon`` hours from the latest data (see the module docstring) into
    future_predictions. Returns status "skipped" with the reason, writing nothing, only when the
    symbol has no history at all. A repeat for the same symbol, model version and last observed
    hour replaces those rows, never duplicates them."""
    ctx = resolve(params)
    registry = ctx.registry()
    try:
        data = ctx.load(version=ctx.params.as_of_version)
    except HistoryNotFoundError as exc:
        log.warning("future predictions of %s skipped: %s", ctx.symbol, exc)
        return {"status": "skipped", "reason": str(exc)}
    frame = data.frame
    if frame.empty:
        reason = f"no hourly history of {ctx.symbol} in {data.origin}: nothing to forecast from"
        log.warning("future predictions skipped: %s", reason)
        return {"status": "skipped", "reason": reason}
    try:
        served = choose_served(registry)
    except ModelNotFoundError:
        needed = hours_needed(ctx.config, ctx.params.test_hours)
        served = {"reference_version": None, "point_model": "persistence", "point_version": None,
                  "point_reason": (f"persistence — no LSTM of {ctx.symbol} evaluated yet (btc_retrain trains one "
                                   f"from {needed} hours of history, {len(frame)} found)"),
                  "band_model": None, "band_reason": None}
    forecaster = registry.load_forecaster(served["reference_version"]) if served["reference_version"] else None
    cfg = forecaster.config if forecaster is not None else ctx.config
    feats = build_features(frame)
    close = frame["close"].to_numpy(dtype=np.float64)
    blocked = lstm_blocked(frame, cfg.lookback, ctx.symbol) if forecaster is not None else "no model"
    if blocked is None:
        point, low, high = _model_forecast(registry, forecaster, served, feats, close)
    else:
        low, high = _fallback(registry, forecaster, served, feats, close, blocked, cfg)
        point = np.full(cfg.horizon, close[-1])
    result = _rows(ctx, served, frame, data.table_version, cfg, point, low, high)
    # add_columns: tables written before point_model/band_model... existed gain them (old rows null)
    table_version = lake.write_table(datasets.FUTURE_PREDICTIONS, result, ctx.settings, replace_on=FUTURE_KEYS,
                                     add_columns=True)
    uri = lake.table_uri(datasets.FUTURE_PREDICTIONS, ctx.settings)
    log.info("future predictions of %s from %s (point %s, band %s) written to %s (version %d): %s; %s", ctx.symbol,
             result["origin_hour_start"].iloc[0], served["point_model"], served["band_model"], uri, table_version,
             served["point_reason"], served["band_reason"])
    return {
        "status": "written",
        "symbol": ctx.symbol,
        "model_version": result["model_version"].iloc[0],
        **{k: served[k] for k in ("point_model", "point_version", "band_model", "point_reason", "band_reason")},
        "origin_hour_start": result["origin_hour_start"].iloc[0].isoformat(),
        "uri": uri,
        "table_version": table_version,
        "predicted_close": [round(float(v), 2) for v in point],
    }


def _model_forecast(registry: Registry, forecaster, served: dict, feats: np.ndarray, close: np.ndarray):
    """Point (current LSTM or persistence) and the chosen band, from the latest window."""
    origin = np.array([len(close) - 1])
    out = forecaster.forecast(feats, close, origin)
    if served["point_model"] == "lstm":
        ref = served["reference_version"]
        lstm = forecaster if served["point_version"] == ref else registry.load_forecaster(served["point_version"])
        point = (out if lstm is forecaster else lstm.forecast(feats, close, origin))["prices"][0]
    else:
        point = np.full(forecaster.config.horizon, close[-1])
    low, high = out["bands"][served["band_model"]]
    return point, low[0], high[0]


def _fallback(registry: Registry, forecaster, served: dict, feats: np.ndarray, close: np.ndarray, blocked: str,
              cfg) -> tuple[np.ndarray, np.ndarray]:
    """Persistence is the point (``served`` is updated to say so and why); the band from what the
    history allows (module docstring, 2.-4.)."""
    if served["point_model"] == "lstm":
        served["point_reason"] = f"persistence — LSTM {served['point_version']} cannot run: {blocked}"
    elif forecaster is not None:
        served["point_reason"] += f"; the LSTM could not run anyway: {blocked}"
    served["point_model"], served["point_version"] = "persistence", None
    returns = feats[:, 0]
    horizon = cfg.horizon
    finite = int(np.isfinite(returns).sum())
    baselines = forecaster.bands if forecaster is not None else {}
    if baselines and finite >= WARM_RETURNS:
        name = served["band_model"] if served["band_model"] in baselines else _best_baseline(
            registry, served["reference_version"], baselines)
        low, high = baselines[name].bounds(returns, close, np.array([len(close) - 1]), horizon)
        served["band_model"] = name
        served["band_reason"] = (f"{name} band fitted for model {served['reference_version']}, on the {finite} "
                                 f"hourly returns available (the LSTM band cannot run: {blocked})")
        return low[0], high[0]
    try:
        band = fallback_band(returns, close[-1], horizon, cfg.interval_level)
    except TooFewReturnsError as exc:
        served["band_model"], served["band_reason"] = "none", f"no band: {exc}"
        return np.full(horizon, np.nan), np.full(horizon, np.nan)
    served["band_model"], served["band_reason"] = "ewma_t", band.describe()
    return band.low, band.high


def _best_baseline(registry: Registry, ref: str, baselines: dict) -> str:
    """The fitted baseline with the lowest interval score on ``ref``'s test window."""
    overall = registry.read_json(ref, METRICS)["overall"]
    scored = {n: overall.get(f"band_{n}_winkler") for n in baselines}
    known = {n: v for n, v in scored.items() if v is not None}
    return min(known, key=known.get) if known else ("ewma" if "ewma" in baselines else next(iter(baselines)))


def _rows(ctx: Context, served: dict, frame: pd.DataFrame, table_version: int | None, cfg, point, low,
          high) -> pd.DataFrame:
    """The forecast as future_predictions rows, one per step."""
    origin_time = frame["hour_start"].iloc[-1]
    steps = np.arange(1, cfg.horizon + 1)
    return pd.DataFrame(
        {
            "symbol": ctx.symbol,
            "model_version": served["reference_version"] or NO_MODEL,
            "issue_time": pd.Timestamp(utcnow_iso()),
            "origin_hour_start": origin_time,
            "last_close": float(frame["close"].iloc[-1]),
            "horizon": steps.astype("int32"),
            "target_hour_start": origin_time + pd.to_timedelta(steps, unit="h"),  # close of this hour
            "predicted_close": np.asarray(point, dtype=np.float64)[: cfg.horizon],
            "lower": np.asarray(low, dtype=np.float64),
            "upper": np.asarray(high, dtype=np.float64),
            "interval_level": cfg.interval_level,
            "point_model": served["point_model"],  # lstm | persistence
            "point_model_version": pd.array([served["point_version"]] * len(steps), dtype="string"),
            "point_reason": served["point_reason"],
            "band_model": served["band_model"],  # lstm | constant | ewma | garch | ewma_t | none
            "band_reason": served["band_reason"],
            "data_table_version": pd.array([table_version] * len(steps), dtype="Int64"),
            "date": f"{origin_time:%Y-%m-%d}",  # of the origin hour, for filters
            "hour": np.full(len(steps), origin_time.hour, dtype=np.int32),
        }
    )
