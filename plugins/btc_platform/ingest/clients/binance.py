"""Binance spot REST client: bookTicker, 24 h ticker and a paginated klines iterator.

Transport only: methods return the raw JSON payloads exactly as Binance sends them (numbers
are strings there; the JSON layer keeps any bare number as ``Decimal``/``int``). All calls go
through :class:`btc_platform.ingest.http.HttpClient` (timeouts, backoff, 429/418 handling) and a
request-weight throttle: Binance reports the weight used in the current minute in the
``X-MBX-USED-WEIGHT-1M`` header; before each request the client checks that the request keeps
the minute's weight under ``binance_weight_share`` x ``binance_weight_limit_1m`` and otherwise
waits for the next minute.

Usage::

    client = BinanceClient.from_settings(get_settings())
    client.book_ticker("BTCUSDT")       # {"symbol": ..., "bidPrice": ..., ...}
    for row in client.iter_klines("BTCUSDT", "1h", start_ms, end_ms):
        kline = parse_kline(row)  # btc_platform.ingest.normalize
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import requests

from btc_platform.ingest.clients.base import RestClient
from btc_platform.ingest.http import HttpClient, InvalidResponse
from btc_platform.ingest.normalize import KLINE_FIELDS
from btc_platform.settings import Settings

log = logging.getLogger(__name__)

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"

#: Request weights documented by Binance for the endpoints used here (single symbol).
WEIGHT_BOOK_TICKER = 2
WEIGHT_TICKER_24HR = 2
WEIGHT_KLINES = 2

MAX_KLINES_LIMIT = 1000

_INTERVAL_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def interval_ms(interval: str) -> int:
    """Length of a kline interval such as ``1m``, ``1h``, ``1d`` in milliseconds (not ``1M``)."""
    unit = interval[-1:]
    if unit not in _INTERVAL_UNITS_MS or not interval[:-1].isdigit():
        raise ValueError(f"unsupported kline interval {interval!r}")
    return int(interval[:-1]) * _INTERVAL_UNITS_MS[unit]


def _klines(rows: Any) -> list:
    """A klines page: a list of 12-value arrays (else :class:`InvalidResponse`)."""
    if not isinstance(rows, list) or any(not isinstance(r, list) or len(r) < KLINE_FIELDS for r in rows):
        raise InvalidResponse(f"binance /api/v3/klines: expected a list of {KLINE_FIELDS}-value arrays",
                              endpoint="/api/v3/klines")
    return rows


class BinanceClient(RestClient):
    """Binance spot REST endpoints with the request-weight budget enforced."""

    name = "binance"
    base_url_setting = "binance_base_url"

    def __init__(
        self,
        http: HttpClient,
        *,
        weight_limit_1m: int,
        weight_share: float,
    ):
        super().__init__(http)
        self.weight_budget = max(1, int(weight_limit_1m * weight_share))
        self.used_weight = 0
        self._weight_minute: int | None = None

    @classmethod
    def from_http(cls, http: HttpClient, settings: Settings) -> BinanceClient:
        return cls(http, weight_limit_1m=settings.binance_weight_limit_1m, weight_share=settings.binance_weight_share)

    # ---- weight budget -------------------------------------------------------------------
    def _minute(self) -> int:
        return math.floor(self.http.clock() / 60)

    def _reserve(self, weight: int) -> None:
        minute = self._minute()
        if minute != self._weight_minute:
            self._weight_minute, self.used_weight = minute, 0
        if self.used_weight + weight > self.weight_budget:
            wait = (minute + 1) * 60 - self.http.clock()
            log.warning(
                "binance: used weight %d + %d would exceed %d (share of the 1-minute limit); "
                "waiting %.1fs for the next minute",
                self.used_weight, weight, self.weight_budget, wait,
            )
            if wait > 0:
                self.http.sleep(wait)
            self._weight_minute, self.used_weight = self._minute(), 0
        self.used_weight += weight

    def _observe(self, response: requests.Response) -> None:
        value = response.headers.get(WEIGHT_HEADER)
        if value is None:
            return
        try:
            used = int(value)
        except ValueError:
            log.warning("binance: unparseable %s header %r", WEIGHT_HEADER, value)
            return
        self._weight_minute, self.used_weight = self._minute(), used

    def _get(self, path: str, params: dict[str, Any], weight: int) -> Any:
        return self.http.get_json(
            path, params, before_attempt=lambda: self._reserve(weight), on_response=self._observe
        )

    # ---- endpoints -----------------------------------------------------------------------
    def book_ticker(self, symbol: str) -> dict[str, Any]:
        """``GET /api/v3/ticker/bookTicker?symbol=``: best bid/ask price and quantity."""
        return self._expect(self._get("/api/v3/ticker/bookTicker", {"symbol": symbol}, WEIGHT_BOOK_TICKER),
                            dict, "bookTicker", endpoint="bookTicker")

    def ticker_24hr(self, symbol: str) -> dict[str, Any]:
        """``GET /api/v3/ticker/24hr?symbol=``: rolling 24 h statistics."""
        return self._expect(self._get("/api/v3/ticker/24hr", {"symbol": symbol}, WEIGHT_TICKER_24HR),
                            dict, "ticker/24hr", endpoint="ticker/24hr")

    def klines(self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int = MAX_KLINES_LIMIT) -> list:
        """One page of ``GET /api/v3/klines`` (raw arrays)."""
        params = {"symbol": symbol, "interval": interval, "startTime": int(start_ms), "endTime": int(end_ms),
                  "limit": int(limit)}
        return _klines(self._get("/api/v3/klines", params, WEIGHT_KLINES))

    def recent_klines(self, symbol: str, interval: str = "1m", limit: int = 2) -> list:
        """``GET /api/v3/klines?symbol=&interval=&limit=`` without a time range: the newest
        ``limit`` klines, oldest first; the last one is usually still open (weight 2)."""
        return _klines(self._get("/api/v3/klines", {"symbol": symbol, "interval": interval, "limit": int(limit)},
                                 WEIGHT_KLINES))  # fmt: skip

    def iter_klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int = MAX_KLINES_LIMIT
    ) -> Iterator[list]:
        """Yield every kline whose open time is in ``[start_ms, end_ms]``, oldest first.

        Rows are the raw 12-value arrays exactly as the API returns them. Pages of ``limit``
        rows are requested with startTime/endTime/limit; the next page starts right after the
        last open time received. Each page obeys the same politeness rules as every call.
        """
        if not 1 <= limit <= MAX_KLINES_LIMIT:
            raise ValueError(f"limit must be within 1..{MAX_KLINES_LIMIT}, got {limit}")
        cursor = int(start_ms)
        end_ms = int(end_ms)
        pages = 0
        while cursor <= end_ms:
            rows = self.klines(symbol, interval, cursor, end_ms, limit)
            pages += 1
            if not rows:
                break
            last_open = int(rows[-1][0])
            if last_open < cursor:
                raise InvalidResponse(
                    f"binance /api/v3/klines: page ends at {last_open} before startTime {cursor}",
                    endpoint="/api/v3/klines",
                )
            for row in rows:
                if cursor <= int(row[0]) <= end_ms:
                    yield row
            if len(rows) < limit:
                break
            cursor = last_open + 1
        log.debug("binance klines %s %s: %d page(s)", symbol, interval, pages)
