"""What the dashboard's JSON endpoints return: the platform's tables and status records, read
with filters pushed down, as plain JSON-ready dicts (columnar lists, ISO UTC times).

Every function takes the settings and the range, reads only the rows of that range (delta-rs
through :mod:`btc_platform.lakehouse.lake`: one SQL query per table, the range as its WHERE clause) and
never raises for data that is simply not there yet: a table that does not exist, an empty range
or a column this version of the table does not have gives that part no rows and a ``reason``
string the page shows. Nothing is filled in: a missing value is ``null``.

The model registry (written by ``models.registry``) is read as files through
``btc_platform.lakehouse.model_registry``, its layout's one definition: the library never
imports ``models``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from btc_platform.lakehouse import datasets, lake
from btc_platform.lakehouse.quality import INGEST_COMPLETE
from btc_platform.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: Choices of the page's range selectors (the endpoints accept any value within the bounds).
MARKET_HOURS = (1, 3, 6, 12, 24, 72, 168)
HISTORY_DAYS = (7, 30, 90, 180, 365)
FORECAST_DAYS = (1, 3, 7, 14)
PIPELINE_DAYS = (1, 3, 7, 30)
#: Upper bounds of the ranges (hours for market, days for the others).
MAX_MARKET_HOURS = 24 * 14
MAX_DAYS = 3 * 366

#: DAGs that write each table (the pipeline view links their runs).
PRODUCERS: dict[str, tuple[str, ...]] = {
    datasets.RAW_DATA: ("btc_stream_supervisor",),
    datasets.QUARANTINE: ("btc_stream_supervisor",),
    datasets.MINUTE_METRICS: ("btc_stream_supervisor",),
    datasets.HOURLY_METRICS: ("btc_hourly_consolidation", "btc_backfill"),
    datasets.DATA_QUALITY: ("btc_hourly_consolidation", "btc_backfill"),
    datasets.PREDICTIONS: ("btc_retrain",),
    datasets.PREDICTION_METRICS: ("btc_retrain",),
    datasets.FUTURE_PREDICTIONS: ("btc_retrain",),
    datasets.FORECAST_ACTUALS: ("btc_retrain",),
}
#: Supervised processes and their logs (the supervisor writes a ``==== <time> ...`` line per start).
PROCESSES = ("producer", "stream")
_START_LINE = re.compile(r"^==== (\S+) (?:supervisor starts|starting) ")

MINUTE_COLUMNS = (
    "mid_close", "spread_mean", "spread_pct_mean",
    "liquidity_base_mean", "liquidity_quote_mean", "volatility", "tick_count",
)  # fmt: skip
HOURLY_COLUMNS = ("open", "high", "low", "close", "volume", "coverage", "source")
QUARANTINE_SAMPLE = 5
SAMPLE_TEXT_CHARS = 300


# ---- helpers ------------------------------------------------------------------------------------
def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(value: Any) -> str | None:
    """A timestamp as ISO UTC with ``Z`` (None for null)."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    ts = pd.Timestamp(value)
    ts = ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S") + ("" if ts.microsecond == 0 else f".{ts.microsecond // 1000:03d}") + "Z"


def number(value: Any) -> float | int | None:
    """A JSON number (None for null or NaN; Decimal and numpy values converted)."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) or math.isinf(out) else out


def iso_list(series: pd.Series) -> list[str | None]:
    """A timestamp column as ISO UTC strings (``Z``; milliseconds only when a value has them)."""
    import numpy as np
    import pandas as pd

    times = pd.to_datetime(series, utc=True)
    values = times.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    unit = "s" if (times.dropna().dt.microsecond == 0).all() else "ms"
    text = np.datetime_as_string(values, unit=unit)
    return [None if t == "NaT" else t + "Z" for t in text.tolist()]


def column(frame: pd.DataFrame, name: str) -> list:
    """One column as a JSON list: times as ISO strings, numbers as numbers, null for missing."""
    import numpy as np
    import pandas as pd

    series = frame[name]
    if pd.api.types.is_datetime64_any_dtype(series):
        return iso_list(series)
    if pd.api.types.is_bool_dtype(series):
        return [None if pd.isna(v) else bool(v) for v in series.tolist()]
    if pd.api.types.is_integer_dtype(series):
        return [None if pd.isna(v) else int(v) for v in series.astype("object").tolist()]
    if pd.api.types.is_float_dtype(series):
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        out = values.tolist()
        for i in np.flatnonzero(~np.isfinite(values)).tolist():
            out[i] = None
        return out
    if pd.api.types.is_object_dtype(series) and len(series) and not isinstance(series.dropna().iloc[0] if
                                                                                  series.notna().any() else "", str):
        return [number(v) for v in series]
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in series.tolist()]


def _timestamp(value: datetime) -> pd.Timestamp:
    import pandas as pd

    ts = pd.Timestamp(value)
    return ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)


class Read:
    """Rows of one table read for the dashboard, or why there are none."""

    def __init__(self, frame: pd.DataFrame | None, reason: str | None, missing: Sequence[str] = ()):
        self.frame = frame
        self.reason = reason
        self.missing = tuple(missing)

    @property
    def empty(self) -> bool:
        return self.frame is None or self.frame.empty


def read(
    name: str,
    settings: Settings,
    *,
    required: Sequence[str],
    optional: Sequence[str] = (),
    filters: lake.Filters = (),
    order_by: str | None = None,
    limit: int | None = None,
    empty_reason: str = "no rows in the selected range",
) -> Read:
    """``required`` and ``optional`` columns of table ``name`` matching ``filters``.

    No table: a reason naming what writes it. A required column the table does not have: a
    reason naming it (the table is of another version of the platform). Optional columns the
    table lacks are left out and listed in ``missing``.
    """
    from deltalake import QueryBuilder

    try:
        table = lake.open_table(name, settings)
    except lake.TableNotFoundError:
        writers = ", ".join(PRODUCERS.get(name, ()))
        return Read(None, f"table {name} does not exist yet (written by {writers or 'the platform'})")
    present = set(lake.column_names(table))
    absent = [c for c in required if c not in present]
    if absent:
        return Read(None, f"table {name} has no column {', '.join(absent)} (written by another version?)")
    unfiltered = [f[0] for f in filters if f[0] not in present]
    if unfiltered:  # reading without that filter would show rows outside the range
        return Read(None, f"table {name} has no column {', '.join(unfiltered)} to select the rows by")
    missing = [c for c in optional if c not in present]
    columns = [*required, *(c for c in optional if c in present)]
    sql = lake.select_sql(columns, filters)
    if order_by:
        sql += f" ORDER BY {order_by}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    import pyarrow as pa

    frame = pa.table(QueryBuilder().register("t", table).execute(sql).read_all()).to_pandas()
    log.debug("dashboard read %d row(s) of %s: %s", len(frame), name, sql)
    return Read(frame, empty_reason if frame.empty else None, missing)


def _columns(frame: pd.DataFrame, names: Sequence[str]) -> dict[str, list]:
    return {n: column(frame, n) for n in names if n in frame.columns}


# ---- market -------------------------------------------------------------------------------------
def market(settings: Settings, symbol: str, hours: float, now: datetime | None = None) -> dict:
    """The last ``hours`` of minute_metrics of ``symbol`` and its latest book tick with its age."""
    now = now or utc_now()
    start = _timestamp(now) - timedelta(hours=hours)
    got = read(
        datasets.MINUTE_METRICS, settings, required=("window_start",), optional=MINUTE_COLUMNS,
        filters=[("symbol", "=", symbol), ("window_start", ">=", start)], order_by='"window_start"',
        empty_reason=f"no minute metrics of {symbol} since {iso(start)}",
    )
    minutes: dict[str, list] = {}
    if not got.empty:
        minutes = {"time": column(got.frame, "window_start"), **_columns(got.frame, MINUTE_COLUMNS)}
    return {
        "symbol": symbol,
        "hours": hours,
        "from": iso(start),
        "to": iso(now),
        "count": 0 if got.empty else len(got.frame),
        "minutes": minutes,
        "reason": got.reason,
        "missing_columns": list(got.missing),
        "latest_tick": latest_tick(settings, symbol, now),
    }


#: How far back :func:`latest_tick` looks first: raw_data's file statistics on ``event_time`` then
#: leave every file but the newest few unread; only when that window is empty does it read the
#: two days' partitions whole.
LATEST_TICK_WINDOW = timedelta(minutes=10)


def latest_tick(settings: Settings, symbol: str, now: datetime | None = None) -> dict:
    """The newest book ticker of ``symbol`` in raw_data (today's and yesterday's partitions only)."""
    now = now or utc_now()
    days = [(now.date() - timedelta(days=d)).isoformat() for d in (0, 1)]
    filters = [("date", "in", days), ("symbol", "=", symbol), ("message_type", "=", "book_ticker")]
    for since in (_timestamp(now) - LATEST_TICK_WINDOW, None):
        got = read(
            datasets.RAW_DATA, settings, required=("event_time",),
            optional=("ingest_time", "bid_price", "ask_price", "mid_price", "spread", "spread_pct", "source"),
            filters=filters if since is None else [*filters, ("event_time", ">=", since)],
            order_by='"event_time" DESC', limit=1,
            empty_reason=f"no book ticker of {symbol} in raw_data since {days[-1]}",
        )  # fmt: skip
        if got.frame is not None and got.frame.empty and since is not None:
            continue  # nothing that recent: the two days whole
        break
    if got.empty:
        return {"reason": got.reason}
    row = got.frame.iloc[0]
    event = _timestamp(row["event_time"])
    out: dict[str, Any] = {"event_time": iso(event), "age_s": round((_timestamp(now) - event).total_seconds(), 1)}
    for name in ("ingest_time",):
        if name in row:
            out[name] = iso(row[name])
    for name in ("bid_price", "ask_price", "mid_price", "spread", "spread_pct"):
        if name in row:
            out[name] = number(row[name])
    if "source" in row:
        out["source"] = row["source"]
    out["reason"] = None
    return out


# ---- history ------------------------------------------------------------------------------------
def gaps(hours: pd.Series) -> list[dict]:
    """Missing hours between the first and the last of ``hours`` (sorted), as [start, end) runs."""
    import pandas as pd

    times = pd.to_datetime(hours, utc=True).reset_index(drop=True)
    step = times.diff()
    out = []
    for i in step.index[step > timedelta(hours=1)]:
        start, end = times[i - 1] + timedelta(hours=1), times[i]
        out.append({"start": iso(start), "end": iso(end), "hours": int((end - start) / timedelta(hours=1))})
    return out


def latest_hour(settings: Settings, symbol: str) -> pd.Timestamp | None:
    """The newest ``hour_start`` of ``symbol`` in hourly_metrics (None when it has none)."""
    got = read(datasets.HOURLY_METRICS, settings, required=("hour_start",), filters=[("symbol", "=", symbol)],
               order_by='"hour_start" DESC', limit=1)
    return None if got.empty else _timestamp(got.frame["hour_start"].iloc[0])


def _hourly(settings: Settings, symbol: str, start: pd.Timestamp, empty_reason: str) -> Read:
    return read(
        datasets.HOURLY_METRICS, settings, required=("hour_start", "open", "high", "low", "close"),
        optional=("volume", "coverage", "source"),
        filters=[("symbol", "=", symbol), ("hour_start", ">=", start)], order_by='"hour_start"',
        empty_reason=empty_reason,
    )


def history(settings: Settings, symbol: str, days: float, now: datetime | None = None) -> dict:
    """hourly_metrics of ``symbol`` over the last ``days``: candles, volume, coverage, source, gaps.

    When that range holds no hour but the table has older ones (history backfilled from a candle
    file that ends long before now), the ``days`` up to the newest hour are shown instead, with
    ``latest_fallback`` set and a ``reason`` saying so."""
    now = now or utc_now()
    start = _timestamp(now).floor("h") - timedelta(days=days)
    got = _hourly(settings, symbol, start, f"no hourly metrics of {symbol} since {iso(start)}")
    out: dict[str, Any] = {"symbol": symbol, "days": days, "from": iso(start), "to": iso(now), "count": 0,
                           "candles": {}, "gaps": [], "sources": {}, "reason": got.reason,
                           "missing_columns": list(got.missing), "latest_fallback": False}
    if got.empty and got.frame is not None:
        latest = latest_hour(settings, symbol)
        if latest is not None:
            fallback_start = latest - timedelta(days=days) + timedelta(hours=1)
            got = _hourly(settings, symbol, fallback_start, got.reason)
            out.update(
                {"from": iso(fallback_start), "to": iso(latest + timedelta(hours=1)), "latest_fallback": True,
                 "missing_columns": list(got.missing),
                 "reason": f"no hourly metrics of {symbol} since {iso(start)}: showing the latest {days:g} days "
                           f"of data instead, up to the hour starting {iso(latest)}"})  # fmt: skip
    if got.empty:
        return out
    frame = got.frame
    out["count"] = len(frame)
    out["candles"] = {"time": column(frame, "hour_start"), **_columns(frame, HOURLY_COLUMNS)}
    out["gaps"] = gaps(frame["hour_start"])
    if "source" in frame.columns:
        out["sources"] = {str(k): int(v) for k, v in frame["source"].fillna("unknown").value_counts().items()}
    return out


# ---- forecast -----------------------------------------------------------------------------------
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
    out["age_s"] = _age_s(first["issue_time"], now) if "issue_time" in frame.columns else None
    last_target = _timestamp(frame["target_hour_start"].iloc[-1])
    out["covers_now"] = bool(last_target >= _timestamp(now).floor("h"))
    if not out["covers_now"]:
        out["reason"] = (f"no forecast of {symbol} covers the current hour: the latest (shown) ends at "
                         f"{iso(last_target)}; btc_retrain serves the next one from the latest hourly data")
    return out


def _past(settings: Settings, symbol: str, days: float, now: datetime) -> dict:
    """Forecasts served for the hours of the last ``days`` (per hour the one issued last before it,
    i.e. the shortest horizon) against the actual close of that hour from hourly_metrics."""
    start, end = _timestamp(now).floor("h") - timedelta(days=days), _timestamp(now)
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


# ---- pipeline health -----------------------------------------------------------------------------
def _age_s(value: Any, now: datetime) -> float | None:
    if value in (None, ""):
        return None
    try:
        return round((_timestamp(now) - _timestamp(value)).total_seconds(), 1)
    except (TypeError, ValueError):
        return None


def producer_state(settings: Settings, now: datetime) -> dict:
    from btc_platform.status import LAST_PUBLISH_KEY, read_status

    record = read_status(settings.producer_status_path)
    if record is None:
        return {"reason": f"no producer status record yet ({settings.producer_status_path})"}
    out = {k: v for k, v in record.items() if not isinstance(v, dict | list)}
    out["last_publish_age_s"] = _age_s(record.get(LAST_PUBLISH_KEY), now)
    out["sources"] = record.get("sources") if isinstance(record.get("sources"), dict) else {}
    out["reason"] = None
    return out


def stream_state(settings: Settings, now: datetime) -> dict:
    from btc_platform.status import read_status

    record = read_status(settings.stream_status_path)
    if record is None:
        return {"queries": [], "reason": f"no stream status record yet ({settings.stream_status_path})"}
    keep = ("state", "batch_id", "timestamp", "input_rows", "input_rows_per_s", "processed_rows_per_s",
            "batch_duration_ms", "watermark", "valid_total", "quarantined_total", "input_rows_total",
            "stored_total", "duplicates_total", "dropped_late_total")
    queries = [{"name": name, **{k: q.get(k) for k in keep}, "age_s": _age_s(q.get("timestamp"), now)}
               for name, q in (record.get("queries") or {}).items()]
    return {"started_at": record.get("started_at"), "updated_at": record.get("updated_at"),
            "updated_age_s": _age_s(record.get("updated_at"), now), "queries": queries, "reason": None}


def process_starts(settings: Settings, name: str, limit: int = 20) -> list[str]:
    """Start times of a supervised process (the ``====`` lines of its log), newest last."""
    path = settings.logs_dir / f"{name}.log"
    if not path.is_file():
        return []
    starts = []
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("==== "):
                match = _START_LINE.match(line)
                if match:
                    starts.append(match.group(1))
    return starts[-limit:]


def processes(settings: Settings) -> list[dict]:
    """Each supervised process: running or not, its starts (log headers), its restarts."""
    from btc_platform.ops import supervisor

    out = []
    for name in PROCESSES:
        state = supervisor.status(name, settings)
        starts = process_starts(settings, name)
        out.append({"name": name, "state": state.action, "detail": state.reason, "pid": state.pid,
                    "starts": starts, "restarts": max(0, len(starts) - 1)})
    return out


def supervisor_events(settings: Settings, limit: int = 20) -> list[dict]:
    """The supervisor's latest starts and restarts with their reasons, newest first."""
    from btc_platform.ops import supervisor

    return supervisor.read_events(settings, limit)[::-1]


#: Seconds a Kafka lag is reused by the answers that show it: asking Kafka for its end offsets
#: opens a client each time (a tenth of a second or more), and the lag moves little in between.
KAFKA_LAG_TTL_S = 5.0
_kafka_lags: dict[tuple, tuple[float, dict]] = {}


def kafka_lag(settings: Settings) -> dict:
    """Messages in Kafka the stream has not read yet (asks Kafka only when the stream reported
    offsets, at most once per :data:`KAFKA_LAG_TTL_S` per topic)."""
    import time

    from btc_platform.ops.supervisor.health import stream_lag, stream_offsets

    key = (settings.kafka_bootstrap_servers, settings.kafka_topic, str(settings.stream_status_path))
    hit = _kafka_lags.get(key)
    if hit is not None and time.monotonic() - hit[0] < KAFKA_LAG_TTL_S:
        return hit[1]
    if stream_offsets(settings) is None:
        return {"messages": None, "reason": "the stream has not reported Kafka offsets yet"}
    try:
        answer = {"messages": stream_lag(settings), "reason": None}
    except Exception as exc:  # noqa: BLE001 - Kafka down is a state to show, not a page error
        log.warning("dashboard: Kafka lag unknown: %s: %s", type(exc).__name__, exc)
        return {"messages": None, "reason": f"Kafka lag unknown: {type(exc).__name__}: {exc}"}
    _kafka_lags[key] = (time.monotonic(), answer)
    return answer


def quarantine(settings: Settings, days: float, now: datetime) -> dict:
    """Quarantined records of the last ``days``: counts per hour and reason code, and a sample."""
    import pandas as pd

    start = _timestamp(now) - timedelta(days=days)
    got = read(datasets.QUARANTINE, settings, required=("reason", "quarantined_at"),
               optional=("value_text", "kafka_topic", "kafka_partition", "kafka_offset"),
               filters=[("quarantined_at", ">=", start)], order_by='"quarantined_at"',
               empty_reason=f"no record was quarantined since {iso(start)}")
    out: dict[str, Any] = {"from": iso(start), "total": 0, "hours": [], "series": {}, "by_reason": {},
                           "sample": [], "reason": got.reason}
    if got.empty:
        return out
    frame = got.frame
    frame["code"] = frame["reason"].astype(str).str.split(":", n=1).str[0]
    frame["hour"] = pd.to_datetime(frame["quarantined_at"], utc=True).dt.floor("h")
    counts = frame.groupby(["hour", "code"]).size().unstack("code", fill_value=0).sort_index()
    out["total"] = len(frame)
    out["hours"] = [iso(h) for h in counts.index]
    out["series"] = {str(code): [int(v) for v in counts[code]] for code in counts.columns}
    out["by_reason"] = {str(k): int(v) for k, v in frame["reason"].value_counts().head(20).items()}
    sample = frame.tail(QUARANTINE_SAMPLE).iloc[::-1]
    for record in sample.to_dict("records"):
        text = record.get("value_text")
        out["sample"].append({
            "quarantined_at": iso(record["quarantined_at"]),
            "reason": record["reason"],
            "value_text": None if text is None else str(text)[:SAMPLE_TEXT_CHARS],
            "kafka": "/".join(str(record[k]) for k in ("kafka_topic", "kafka_partition", "kafka_offset")
                              if record.get(k) is not None) or None,
        })
    return out


def data_quality(settings: Settings, days: float, now: datetime) -> dict:
    """data_quality results of the hours of the last ``days``: per hour the checks run and failed."""
    start = _timestamp(now).floor("h") - timedelta(days=days)
    got = read(datasets.DATA_QUALITY, settings, required=("hour_start", "check", "status"),
               optional=("symbol", "severity", "detail", "checked_at"),
               filters=[("hour_start", ">=", start)], order_by='"hour_start"',
               empty_reason=f"no data-quality result for the hours since {iso(start)}")
    out: dict[str, Any] = {"from": iso(start), "hours": [], "checks": [], "errors": [], "warnings": [],
                           "failures": [], "audit": None, "reason": got.reason}
    if got.empty:
        return out
    frame = got.frame
    out["audit"] = ingest_audit(frame)
    failed = frame["status"] == "fail"
    severity = frame["severity"] if "severity" in frame.columns else None
    grouped = frame.assign(failed=failed,
                           error=failed & (severity == "error") if severity is not None else failed,
                           warning=failed & (severity == "warning") if severity is not None else False)
    per_hour = grouped.groupby("hour_start").agg(checks=("check", "size"), errors=("error", "sum"),
                                                 warnings=("warning", "sum")).sort_index()
    out["hours"] = [iso(h) for h in per_hour.index]
    out["checks"] = [int(v) for v in per_hour["checks"]]
    out["errors"] = [int(v) for v in per_hour["errors"]]
    out["warnings"] = [int(v) for v in per_hour["warnings"]]
    fails = frame[failed].sort_values("hour_start", ascending=False).head(50)
    keep = [c for c in ("symbol", "hour_start", "check", "severity", "detail") if c in fails.columns]
    out["failures"] = [{k: (iso(v) if k == "hour_start" else v) for k, v in r.items()}
                       for r in fails[keep].to_dict("records")]
    return out


def ingest_audit(frame) -> dict | None:
    """The hourly ingest audit (``ingest_complete`` rows): the newest hour it checked, how many
    of the range's (symbol, hour) pairs it failed and the newest failure's detail; None if it never ran."""
    rows = frame[frame["check"] == INGEST_COMPLETE]
    if rows.empty:
        return None
    failed = rows[rows["status"] == "fail"].sort_values("hour_start")
    last = failed.iloc[-1] if len(failed) else None
    return {"last_hour": iso(rows["hour_start"].max()), "checked": int(len(rows)), "failed": int(len(failed)),
            "last_failure": None if last is None else {"hour_start": iso(last["hour_start"]),
                                                       "detail": last.get("detail")}}


#: Commits that change no data (compaction, clean-up, table properties): a table's data was
#: produced by the newest commit of another operation.
MAINTENANCE_OPERATIONS = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES",
                                    "UNSET TBLPROPERTIES", "ADD COLUMNS", "CHANGE COLUMN"})
#: Commits of a table searched (newest first) for the one that produced its data.
HISTORY_COMMITS = 25


def _commit(entry: dict) -> dict:
    from datetime import datetime as dt

    from btc_platform.lakehouse import lineage

    stamp = entry.get("timestamp")
    task = lineage.from_commit(entry)
    out: dict[str, Any] = {
        "version": entry.get("version"),
        "operation": entry.get("operation"),
        "committed_at": iso(dt.fromtimestamp(stamp / 1000, UTC)) if stamp else None,
        "airflow": task,
    }
    if task:  # relative to the dashboard's page (<base>/btc/): the Airflow UI's own routes
        out["task_log"] = "../" + lineage.ui_path(task)
        out["run"] = "../" + lineage.run_path(task)
    return out


def dataset_runs(settings: Settings) -> list[dict]:
    """Per table: its version, its last commit and the commit that produced its data (the newest
    that is not maintenance) with the Airflow task instance that made it (``btc_platform.lakehouse.lineage``:
    recorded in the commit) and links to that DAG run and task log; the DAGs that write it."""
    out = []
    for name, dags in PRODUCERS.items():
        entry: dict[str, Any] = {"table": name, "dags": list(dags), "dag_runs": [f"../dags/{d}/runs" for d in dags]}
        try:
            table = lake.open_table(name, settings)
        except lake.TableNotFoundError:
            entry.update(version=None, last_commit=None, produced_by=None, reason="does not exist yet")
            out.append(entry)
            continue
        commits = [_commit(c) for c in table.history(HISTORY_COMMITS)]
        commits.sort(key=lambda c: -1 if c["version"] is None else c["version"], reverse=True)
        data_commits = [c for c in commits if c["operation"] not in MAINTENANCE_OPERATIONS]
        produced = data_commits[0] if data_commits else None
        entry.update(version=int(table.version()), last_commit=commits[0] if commits else None,
                     produced_by=produced, reason=None)
        if produced is None:
            entry["reason"] = f"none of the last {HISTORY_COMMITS} commits wrote data (maintenance only)"
        elif produced["airflow"] is None:
            entry["reason"] = ("the commit names no Airflow task: written outside Airflow (by hand, a test) "
                               "or by an older version of the platform")
        out.append(entry)
    return out


def _restart_links(events: list[dict]) -> list[dict]:
    from btc_platform.lakehouse import lineage

    for event in events:
        task = lineage.task_of(event.get(lineage.KEY))
        event["airflow"] = task
        event["task_log"] = "../" + lineage.ui_path(task) if task else None
    return events


def alerts(settings: Settings, limit: int = 20) -> dict:
    """The monitor's open incidents and the last resolved ones (``btc_platform.monitoring``), newest first."""
    from btc_platform.monitoring import state as alert_state

    current = alert_state.load(settings)

    def row(incident: dict) -> dict:
        return {"key": incident.get("key"), "summary": incident.get("summary"), "resolution": incident.get("resolution"),
                "opened_at": iso(_utc(incident.get("opened_at"))), "resolved_at": iso(_utc(incident.get("resolved_at")))}

    opened = sorted(current.open.values(), key=lambda i: i.get("opened_at") or 0, reverse=True)
    return {"open": [row(i) for i in opened], "recent": [row(i) for i in current.recent[:limit]],
            "undelivered": len(current.undelivered),
            "reason": None if opened or current.recent else "no alert so far (or the monitor has not run yet)"}


def _utc(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(float(epoch), UTC)


def pipeline(settings: Settings, days: float, now: datetime | None = None) -> dict:
    """Producer and stream state, alerts, restarts, Kafka lag, quarantine, data quality, the tables' DAGs."""
    now = now or utc_now()
    return {
        "days": days,
        "to": iso(now),
        "producer": producer_state(settings, now),
        "stream": stream_state(settings, now),
        "processes": processes(settings),
        "alerts": alerts(settings),
        "restarts": _restart_links(supervisor_events(settings)),
        "kafka_lag": kafka_lag(settings),
        "quarantine": quarantine(settings, days, now),
        "data_quality": data_quality(settings, days, now),
        "datasets": dataset_runs(settings),
    }
