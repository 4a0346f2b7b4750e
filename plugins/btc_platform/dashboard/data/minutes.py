"""The market view: the last hours of minute_metrics of a symbol and its latest book tick."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from btc_platform.dashboard.data.tables import column, columns_of, iso, number, read, utc_now, utc_timestamp
from btc_platform.lakehouse import datasets
from btc_platform.settings import Settings

MINUTE_COLUMNS = (
    "mid_close", "spread_mean", "spread_pct_mean",
    "liquidity_base_mean", "liquidity_quote_mean", "volatility", "tick_count",
)  # fmt: skip


def market(settings: Settings, symbol: str, hours: float, now: datetime | None = None) -> dict:
    """The last ``hours`` of minute_metrics of ``symbol`` and its latest book tick with its age."""
    now = now or utc_now()
    start = utc_timestamp(now) - timedelta(hours=hours)
    got = read(
        datasets.MINUTE_METRICS, settings, required=("window_start",), optional=MINUTE_COLUMNS,
        filters=[("symbol", "=", symbol), ("window_start", ">=", start)], order_by='"window_start"',
        empty_reason=f"no minute metrics of {symbol} since {iso(start)}",
    )
    minutes: dict[str, list] = {}
    if not got.empty:
        minutes = {"time": column(got.frame, "window_start"), **columns_of(got.frame, MINUTE_COLUMNS)}
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
    for since in (utc_timestamp(now) - LATEST_TICK_WINDOW, None):
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
    event = utc_timestamp(row["event_time"])
    out: dict[str, Any] = {"event_time": iso(event), "age_s": round((utc_timestamp(now) - event).total_seconds(), 1)}
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

