"""Simulated hourly history: closed 1 h candles of a random walk, for an offline first run.

``simulated_klines(start, end, last_close, seed)`` returns the hours ``[start, end)`` as rows of
the Binance klines REST format (12 values, numbers as strings), so the backfill job reads, checks
and normalises them exactly as klines fetched from the exchange. The walk is built backwards
from ``last_close``: the last hour closes at that price, so history generated with the
simulator's start price (``BTC_SIMULATE_START_PRICE``) joins the simulated stream that starts
from it. Every hour of the range is there (no gap is invented), each opens at the previous close,
and the same ``seed`` gives the same candles. Its volatility is the simulator's per-minute one
scaled to an hour. Rows written from it carry ``source = simulated`` in hourly_metrics.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

from btc_platform.ingest.sources.simulate import MINUTE_SIGMA, SIMULATED_TRADES_PER_UNIT

HOUR_MS = 3_600_000
#: Hourly log-return volatility of the simulated history (the simulator's per-minute one, over 60 minutes).
HOUR_SIGMA = MINUTE_SIGMA * math.sqrt(60)
#: Median simulated base volume of an hour (the simulator's median minute volume is 150).
HOUR_VOLUME = 150.0 * 60


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: give UTC times")
    return int(moment.astimezone(UTC).timestamp() * 1000)


def _text(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def simulated_klines(start: datetime, end: datetime, last_close: float, seed: int | None = None) -> list[list]:
    """Hourly klines of ``[start, end)`` (both on a full hour) whose last close is ``last_close``."""
    start_ms, end_ms = _ms(start), _ms(end)
    if start_ms % HOUR_MS or end_ms % HOUR_MS:
        raise ValueError(f"start and end must be on a full hour, got {start.isoformat()} / {end.isoformat()}")
    if end_ms <= start_ms:
        raise ValueError(f"end {end.isoformat()} must be after start {start.isoformat()}")
    if not last_close > 0:
        raise ValueError(f"last_close must be > 0, got {last_close}")
    rnd = random.Random(seed)
    hours = (end_ms - start_ms) // HOUR_MS
    # closes from the last hour backwards; each hour opens at the previous hour's close
    closes = [float(last_close)]
    for _ in range(hours):
        closes.append(closes[-1] * math.exp(-rnd.gauss(0.0, HOUR_SIGMA)))
    closes.reverse()  # closes[0] is the open of the first hour, closes[i + 1] the close of hour i
    rows = []
    for i in range(hours):
        o, c = closes[i], closes[i + 1]
        high = max(o, c) * (1 + abs(rnd.gauss(0.0, HOUR_SIGMA / 2)))
        low = min(o, c) * (1 - abs(rnd.gauss(0.0, HOUR_SIGMA / 2)))
        volume = rnd.lognormvariate(math.log(HOUR_VOLUME), 0.4)
        quote = volume * (o + c) / 2
        taker = rnd.uniform(0.4, 0.6)
        open_ms = start_ms + i * HOUR_MS
        rows.append([
            open_ms, _text(o, 2), _text(high, 2), _text(low, 2), _text(c, 2), _text(volume, 5),
            open_ms + HOUR_MS - 1, _text(quote, 2), int(volume * SIMULATED_TRADES_PER_UNIT),
            _text(volume * taker, 5), _text(quote * taker, 2), "0",
        ])  # fmt: skip
    # prices are rounded to cents: keep every candle consistent after rounding
    for row in rows:
        o, h, lo, c = (float(v) for v in row[1:5])
        row[2], row[3] = _text(max(h, o, c), 2), _text(min(lo, o, c), 2)
    return rows
