"""Holes in the hourly history and the klines requests that repair them (Spark-free).

An hour of ``hourly_metrics`` needs repair when a symbol has no row for it (the platform was
down, the stream lost its minutes) or only a stream-consolidated row whose coverage is below
``BTC_HOURLY_MIN_STREAM_COVERAGE``. :func:`repair_ranges` turns such hours into as few
``(symbol, start, end)`` ranges as possible (consecutive hours together, one klines request each
while a range holds at most one page), newest first and at most ``max_ranges`` of them (the API
weight budget; older holes wait for the next run). :func:`find_gaps` applies it to the table over
the look-back (read with delta-rs, filters pushed down), and :func:`format_ranges` /
:func:`parse_ranges` carry the ranges from the DAG to ``backfill_job.py --repair``.

The repair itself is a backfill of each range from the exchange's closed 1-hour klines: its MERGE
replaces a missing or under-covered hour and leaves a complete stream hour alone
(``datasets.candle_replaces``); stream minutes that arrive later replace the candle only when
they make a complete hour (``datasets.stream_hour_replaces``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from btc_platform.lakehouse import datasets
from btc_platform.settings import Settings
from btc_platform.timerange import parse_utc

log = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
#: Hours of one klines page (Binance's largest ``limit``): a longer range costs several requests.
MAX_RANGE_HOURS = 1000


class GapRangeError(ValueError):
    """A ``--repair`` argument that is not ``SYMBOL/START/END[,...]``."""


def _hours(start: datetime, end: datetime) -> list[datetime]:
    out, hour = [], start
    while hour < end:
        out.append(hour)
        hour += HOUR
    return out


def repair_ranges(
    rows: Iterable[tuple[str, datetime, float | None, str | None]],
    symbols: Sequence[str],
    start: datetime,
    end: datetime,
    min_coverage: float,
    max_ranges: int,
) -> list[tuple[str, datetime, datetime]]:
    """Ranges ``(symbol, start, end)`` of the hours of ``[start, end)`` that need repair.

    ``rows``: ``(symbol, hour_start, coverage, source)`` of hourly_metrics in the range (UTC-aware
    hour starts). An hour needs repair when the symbol (one of ``symbols``) has no row for it or a
    stream row with a coverage below ``min_coverage`` (a candle is complete by construction).
    """
    good: set[tuple[str, datetime]] = set()
    for symbol, hour, coverage, source in rows:
        thin = source == datasets.HOURLY_SOURCE_STREAM and (coverage is None or coverage < min_coverage)
        if not thin:
            good.add((symbol, hour))
    ranges: list[tuple[str, datetime, datetime]] = []
    for symbol in sorted(set(symbols)):
        run_start: datetime | None = None
        for hour in [*_hours(start, end), None]:
            bad = hour is not None and (symbol, hour) not in good
            if bad and run_start is None:
                run_start = hour
            full = run_start is not None and hour is not None and hour - run_start >= MAX_RANGE_HOURS * HOUR
            if run_start is not None and (not bad or full):
                ranges.append((symbol, run_start, hour if hour is not None else end))
                run_start = hour if bad else None
    ranges.sort(key=lambda r: (-r[2].timestamp(), r[0]))  # newest first
    if len(ranges) > max_ranges:
        log.info("%d range(s) of hours to repair, %d this run (the API weight budget); the oldest wait",
                 len(ranges), max_ranges)  # fmt: skip
    return ranges[:max_ranges]


def find_gaps(settings: Settings, now: datetime | None = None) -> list[tuple[str, datetime, datetime]]:
    """The ranges to repair over the ``gap_repair_lookback_hours`` before the current hour."""
    from btc_platform.lakehouse import lake

    now = now or datetime.now(UTC)
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - settings.gap_repair_lookback_hours * HOUR
    if start >= end:
        return []
    try:
        frame = lake.read_table(datasets.HOURLY_METRICS, settings, columns=["symbol", "hour_start", "coverage", "source"],
                                filters=[("hour_start", ">=", start), ("hour_start", "<", end)])  # fmt: skip
        rows = [(r.symbol, _utc(r.hour_start), r.coverage, r.source) for r in frame.itertuples(index=False)]
    except lake.TableNotFoundError:
        rows = []
    return repair_ranges(rows, settings.binance_symbols, start, end, settings.hourly_min_stream_coverage,
                         settings.gap_repair_max_requests)  # fmt: skip


def _utc(value) -> datetime:
    moment = value.to_pydatetime() if hasattr(value, "to_pydatetime") else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_ranges(ranges: Iterable[tuple[str, datetime, datetime]]) -> str:
    """``SYMBOL/START/END,...`` (ISO-8601 UTC), the ``--repair`` argument of backfill_job.py."""
    return ",".join(f"{s}/{a.isoformat()}/{b.isoformat()}" for s, a, b in ranges)


def parse_ranges(text: str) -> list[tuple[str, datetime, datetime]]:
    """The ranges of :func:`format_ranges` (``GapRangeError`` naming a malformed one)."""
    ranges = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        parts = item.split("/")
        if len(parts) != 3 or not parts[0]:
            raise GapRangeError(f"--repair: {item!r} is not SYMBOL/START/END")
        start, end = parse_utc(parts[1]), parse_utc(parts[2])
        if not start < end:
            raise GapRangeError(f"--repair: {item!r} ends before it starts")
        ranges.append((parts[0].upper(), start, end))
    return ranges
