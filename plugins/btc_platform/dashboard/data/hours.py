"""The history view: hourly_metrics of a symbol over days (candles, volume, coverage, source, gaps)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from btc_platform.dashboard.data.tables import Read, column, columns_of, iso, read, utc_now, utc_timestamp
from btc_platform.lakehouse import datasets
from btc_platform.settings import Settings

if TYPE_CHECKING:
    import pandas as pd


HOURLY_COLUMNS = ("open", "high", "low", "close", "volume", "coverage", "source")


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
    return None if got.empty else utc_timestamp(got.frame["hour_start"].iloc[0])


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
    start = utc_timestamp(now).floor("h") - timedelta(days=days)
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
    out["candles"] = {"time": column(frame, "hour_start"), **columns_of(frame, HOURLY_COLUMNS)}
    out["gaps"] = gaps(frame["hour_start"])
    if "source" in frame.columns:
        out["sources"] = {str(k): int(v) for k, v in frame["source"].fillna("unknown").value_counts().items()}
    return out

