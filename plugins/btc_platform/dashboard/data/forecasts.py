"""The forecast view: the served forecast with its band, past forecasts against the actual closes,
the metrics per model version and per horizon, and the model registry's versions and decisions.

The model registry (written by ``models.registry``) is read as files through
``btc_platform.lakehouse.model_registry``, its layout's one definition: the library never
imports ``models``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from btc_platform.dashboard.data.tables import age_s, column, iso, number, read, utc_now, utc_timestamp
from btc_platform.lakehouse import datasets
from btc_platform.settings import Settings


def registry(settings: Settings, symbol: str) -> dict:
    """The served model of ``symbol`` (its ``current`` pointer) and every version with its promotion decision."""
    from btc_platform.lakehouse.model_registry import DECISION, RegistryFiles

    files = RegistryFiles(settings, symbol)
    versions = []
    for version in files.versions():
        decision = files.read_json_or_none(version, DECISION) or {}
        versions.append({
            "version": version,
            "status": decision.get("status", "undecided"),
            "reason": decision.get("reason"),
            "forced": decision.get("forced"),
            "policy": decision.get("policy"),
            "decided_at": decision.get("decided_at"),
        })
    if not versions:
        return {"current": None, "versions": [], "reason": f"no model of {symbol} in the registry yet "
                "(btc_retrain writes it)"}
    current = files.current()
    for entry in versions:
        entry["current"] = bool(current and current.get("version") == entry["version"])
    versions.sort(key=lambda v: v["decided_at"] or "", reverse=True)
    reason = None
    if current is None:
        reason = "no LSTM is served: no candidate has beaten persistence yet (or been force-promoted)"
    return {"current": current, "versions": versions, "reason": reason}


def per_horizon(settings: Settings, symbol: str, version: str | None) -> dict:
    """Skill and interval coverage per horizon of ``version`` next to the baselines (its metrics)."""
    from btc_platform.lakehouse.model_registry import METRICS, RegistryFiles

    if version is None:
        return {"version": None, "rows": [], "reason": "no model to show the metrics of"}
    metrics = RegistryFiles(settings, symbol).read_json_or_none(version, METRICS)
    if metrics is None:
        return {"version": version, "rows": [], "reason": f"model {version} has no {METRICS}"}
    keep = ("horizon", "model_rmse", "persistence_rmse", "drift_rmse", "model_skill", "drift_skill",
            "interval_coverage")
    rows = [{k: r.get(k) for k in keep} for r in metrics.get("per_horizon", [])]
    overall = {k: metrics.get("overall", {}).get(k) for k in keep}
    return {"version": version, "rows": rows, "overall": overall, "n_windows": metrics.get("n_windows"),
            "reason": None if rows else f"model {version} has no per-horizon metrics"}


def forecast(settings: Settings, symbol: str, days: float, now: datetime | None = None) -> dict:
    """Served forecast (latest issue) with its band, past forecasts vs actual closes, the metrics
    per model version and per horizon, and the registry's versions and decisions."""
    now = now or utc_now()
    reg = registry(settings, symbol)
    served = _served(settings, symbol, now)
    version = (reg["current"] or {}).get("version") or served.get("model_version")
    return {
        "symbol": symbol,
        "days": days,
        "to": iso(now),
        "future": served,
        "past": _past(settings, symbol, days, now),
        "metrics": _metrics(settings, symbol),
        "per_horizon": per_horizon(settings, symbol, version),
        "registry": reg,
    }


_FUTURE_OPTIONAL = ("lower", "upper", "interval_level", "model_version", "issue_time", "origin_hour_start",
                    "last_close", "horizon", "point_model", "point_reason", "band_model", "band_reason")
#: rows read to find the latest served forecast (more than the longest horizon a run may serve)
LATEST_FORECAST_ROWS = 2 * 168


def _served(settings: Settings, symbol: str, now: datetime) -> dict:
    """The latest forecast served for ``symbol`` (its last issue), with its age, and whether it
    still covers the current hour; when it does not, it is shown all the same and the reason says so."""
    got = read(
        datasets.FUTURE_PREDICTIONS, settings, required=("target_hour_start", "predicted_close"),
        optional=_FUTURE_OPTIONAL, filters=[("symbol", "=", symbol)], order_by='"target_hour_start" DESC',
        limit=LATEST_FORECAST_ROWS, empty_reason=f"no forecast of {symbol} has been served yet",
    )
    out: dict[str, Any] = {"count": 0, "target": [], "predicted": [], "lower": [], "upper": [],
                           "reason": got.reason, "band_reason": None, "served_by": {}}
    if got.empty:
        return out
    frame = got.frame
    if "issue_time" in frame.columns:  # the latest issue only
        frame = frame[frame["issue_time"] == frame["issue_time"].max()]
    frame = frame.sort_values("target_hour_start")
    out.update(count=len(frame), target=column(frame, "target_hour_start"),
               predicted=column(frame, "predicted_close"))
    if "lower" in frame.columns and "upper" in frame.columns:
        out.update(lower=column(frame, "lower"), upper=column(frame, "upper"))
    else:
        out["band_reason"] = "future_predictions has no lower/upper columns: no interval to draw"
    first = frame.iloc[0]
    for name in ("model_version", "interval_level", "last_close"):
        if name in frame.columns:
            out[name] = number(first[name]) if name != "model_version" else first[name]
    # which point and band model served it and why (null in rows served before they were recorded)
    out["served_by"] = {name: first[name] for name in ("point_model", "point_reason", "band_model", "band_reason")
                        if name in frame.columns and isinstance(first[name], str)}
    for name in ("issue_time", "origin_hour_start"):
        if name in frame.columns:
            out[name] = iso(first[name])
    out["age_s"] = age_s(first["issue_time"], now) if "issue_time" in frame.columns else None
    last_target = utc_timestamp(frame["target_hour_start"].iloc[-1])
    out["covers_now"] = bool(last_target >= utc_timestamp(now).floor("h"))
    if not out["covers_now"]:
        out["reason"] = (f"no forecast of {symbol} covers the current hour: the latest (shown) ends at "
                         f"{iso(last_target)}; btc_retrain serves the next one from the latest hourly data")
    return out


def _past(settings: Settings, symbol: str, days: float, now: datetime) -> dict:
    """Forecasts served for the hours of the last ``days`` (per hour the one issued last before it,
    i.e. the shortest horizon) against the actual close of that hour from hourly_metrics."""
    start, end = utc_timestamp(now).floor("h") - timedelta(days=days), utc_timestamp(now)
    got = read(
        datasets.FUTURE_PREDICTIONS, settings, required=("target_hour_start", "predicted_close"),
        optional=("origin_hour_start", "horizon", "lower", "upper", "model_version"),
        filters=[("symbol", "=", symbol), ("target_hour_start", ">=", start), ("target_hour_start", "<", end)],
        empty_reason=f"no forecast was served for the hours since {iso(start)}",
    )
    out: dict[str, Any] = {"count": 0, "target": [], "predicted": [], "actual": [], "reason": got.reason}
    if got.empty:
        return out
    frame = got.frame
    order = "origin_hour_start" if "origin_hour_start" in frame.columns else None
    if order:
        frame = frame.sort_values(["target_hour_start", order]).drop_duplicates("target_hour_start", keep="last")
    else:
        frame = frame.sort_values("target_hour_start").drop_duplicates("target_hour_start", keep="last")
    actual = read(
        datasets.HOURLY_METRICS, settings, required=("hour_start", "close"),
        filters=[("symbol", "=", symbol), ("hour_start", ">=", start), ("hour_start", "<", end)],
    )
    closes = {} if actual.empty else dict(zip(column(actual.frame, "hour_start"), column(actual.frame, "close"),
                                              strict=True))
    targets = column(frame, "target_hour_start")
    out.update(count=len(frame), target=targets, predicted=column(frame, "predicted_close"),
               actual=[closes.get(t) for t in targets], actual_reason=actual.reason)
    if "lower" in frame.columns and "upper" in frame.columns:
        out.update(lower=column(frame, "lower"), upper=column(frame, "upper"))
    if "horizon" in frame.columns:
        out["horizon"] = column(frame, "horizon")
    return out


_METRIC_COLUMNS = ("model_version", "trained_at", "decision", "decision_reason", "forced", "model_rmse",
                   "persistence_rmse", "drift_rmse", "model_mape", "model_skill", "interval_coverage",
                   "skill_h1", "skill_h6", "skill_h12", "skill_h24", "test_windows")


def _metrics(settings: Settings, symbol: str) -> dict:
    got = read(datasets.PREDICTION_METRICS, settings, required=("model_version",), optional=_METRIC_COLUMNS[1:],
               filters=[("symbol", "=", symbol)], empty_reason=f"prediction_metrics holds no model of {symbol} yet")
    if got.empty:
        return {"rows": [], "reason": got.reason}
    frame = got.frame
    if "trained_at" in frame.columns:
        frame = frame.sort_values("trained_at", ascending=False)
    rows = []
    for record in frame.to_dict("records"):
        rows.append({k: (v if isinstance(v, str) or v is None else bool(v) if k == "forced" else number(v))
                     for k, v in record.items()})
    return {"rows": rows, "reason": None, "missing_columns": list(got.missing)}

