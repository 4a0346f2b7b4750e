"""The live source: Binance and CoinGecko polled over REST (see the package docstring)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from btc_platform.ingest import normalize
from btc_platform.ingest.http import (
    ClientError,
    ExchangeError,
    ExchangeUnavailable,
    InvalidResponse,
    IPBanned,
)
from btc_platform.ingest.schema import (
    SchemaError,
    decode,
)
from btc_platform.ingest.sources.base import MINUTE_MS, OFFLINE_HINT, Outgoing, SourceContext, out
from btc_platform.timestamps import epoch_iso

log = logging.getLogger(__name__)

class LiveSource:
    """Binance bookTicker + 24hr for every symbol each poll interval; CoinGecko when due."""

    name = "live"

    def __init__(self, settings, binance, coingecko, *, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.binance = binance
        self.coingecko = coingecko
        self.clock = clock
        self._unreachable: set[str] = set()
        self._kline_open_ms: dict[str, int] = {}  # newest kline published per symbol (dedup by open time)
        self._market_updated: str | None = None  # exchange_time of the last CoinGecko update published
        self._next_poll: float | None = None  # when the next Binance poll is due

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def _retried(self) -> int:
        return self.binance.http.counters.retries + self.coingecko.http.counters.retries

    def _http_errors(self) -> dict[str, dict[str, int]]:
        return {"binance": dict(self.binance.http.counters.errors),
                "coingecko": dict(self.coingecko.http.counters.errors)}

    def _next_attempt(self, upstream: str) -> float | None:
        """When the next call to ``upstream`` is due after a call that gave up (its next poll)."""
        if upstream == "coingecko":
            return self.clock() + self.coingecko.seconds_until_due()
        return self._next_poll

    def report_waits(self, ctx: SourceContext) -> None:
        """Tell the producer what each upstream waits for: a ban or a 429 pause (``until``), or
        failures it backs off from (``exchange_failing``: kind of the last failure, since when,
        how many, and when the next attempt is due), else nothing."""
        for upstream, client in (("binance", self.binance), ("coingecko", self.coingecko)):
            wait = client.http.waiting_until()
            failing = client.http.failing
            if wait is not None:
                ctx.set_waiting(upstream, *wait)
            elif failing is not None:
                retry_at = failing.retry_at if failing.retry_at is not None else self._next_attempt(upstream)
                ctx.set_waiting(
                    upstream, "exchange_failing", None, kind=failing.kind, failures=failing.failures,
                    since=epoch_iso(failing.since), last_failure=epoch_iso(failing.last_at),
                    next_attempt=epoch_iso(retry_at), detail=failing.reason,
                )  # fmt: skip
            else:
                ctx.set_waiting(upstream, None, None)

    def _fetch(self, ctx: SourceContext, upstream: str, call: Callable[[], Any]) -> Any:
        """Run one client call; log and record failures per their kind; None on failure."""
        try:
            payload = self._call(ctx, upstream, call)
        finally:
            ctx.set_http_errors(self._http_errors())
        return payload

    def _call(self, ctx: SourceContext, upstream: str, call: Callable[[], Any]) -> Any:
        try:
            payload = call()
        except IPBanned as exc:
            ctx.poll_failed(upstream, exc)
            log.debug("%s: skipped, %s", upstream, exc)
            return None
        except ExchangeUnavailable as exc:
            ctx.poll_failed(upstream, exc)
            if exc.status is None and upstream not in self._unreachable:
                self._unreachable.add(upstream)
                log.error("%s API is unreachable (%s). The live source needs internet access; %s. "
                          "Not switching to simulated data.", upstream, exc, OFFLINE_HINT)
            else:
                log.error("%s: %s", upstream, exc)
            return None
        except (ClientError, InvalidResponse) as exc:
            ctx.poll_failed(upstream, exc)
            log.error("%s: %s (endpoint %s, status %s)", upstream, exc, exc.endpoint, exc.status)
            return None
        except ExchangeError as exc:  # budget exhausted and future kinds
            ctx.poll_failed(upstream, exc)
            log.warning("%s: %s", upstream, exc)
            return None
        if upstream in self._unreachable:
            self._unreachable.discard(upstream)
            log.info("%s API reachable again", upstream)
        ctx.poll_ok(upstream)
        return payload

    def _normalise(self, ctx: SourceContext, upstream: str, build: Callable[[], dict], payload: Any):
        try:
            return out(build())
        except SchemaError as exc:
            ctx.reject(upstream, str(exc), payload)
            return None

    def poll_binance(self, ctx: SourceContext) -> Iterator[Outgoing]:
        for symbol in self.settings.binance_symbols:
            for call, build in (
                (self.binance.book_ticker, normalize.book_ticker),
                (self.binance.ticker_24hr, normalize.ticker_24hr),
            ):
                if self.clock() < self.binance.http.banned_until:
                    return
                payload = self._fetch(ctx, "binance", lambda c=call, s=symbol: c(s))
                if payload is None:
                    continue
                ingest = self._now()
                item = self._normalise(
                    ctx, "binance", lambda b=build, p=payload, t=ingest: b(p, ingest_time=t), payload
                )
                if item is not None:
                    yield item

    def kline_due(self, symbol: str) -> bool:
        """True once a minute closed after the newest kline published for ``symbol``."""
        last_closed_open_ms = (int(self.clock() * 1000) // MINUTE_MS - 1) * MINUTE_MS
        return self._kline_open_ms.get(symbol, -1) < last_closed_open_ms

    def poll_klines(self, ctx: SourceContext) -> Iterator[Outgoing]:
        """The last *closed* 1-minute kline of each symbol whose kline is due (weight 2 each).

        ``GET /api/v3/klines?interval=1m&limit=2`` returns the newest two klines; the last one is
        the minute in progress and is never used. A kline whose close time is not yet past, or
        whose open time was already published, is skipped (dedup by open time) and asked for
        again at the next poll.
        """
        for symbol in self.settings.binance_symbols:
            if self.clock() < self.binance.http.banned_until:
                return
            if not self.kline_due(symbol):
                continue
            rows = self._fetch(ctx, "binance", lambda s=symbol: self.binance.recent_klines(s, "1m", 2))
            if not rows:
                continue
            now_ms = int(self.clock() * 1000)
            closed = [r for r in rows[:-1] if _int_or_none(r[6]) is not None and int(r[6]) < now_ms]
            if not closed:
                continue
            row = closed[-1]
            open_ms = _int_or_none(row[0])
            if open_ms is None or open_ms <= self._kline_open_ms.get(symbol, -1):
                continue
            ingest = self._now()
            item = self._normalise(
                ctx, "binance", lambda r=row, s=symbol, t=ingest: normalize.kline_1m(r, symbol=s, ingest_time=t), row
            )
            self._kline_open_ms[symbol] = open_ms  # a rejected kline is not asked for again either
            if item is not None:
                yield item

    def poll_coingecko(self, ctx: SourceContext) -> Iterator[Outgoing]:
        if self.clock() < self.coingecko.http.banned_until:
            return
        payload = self._fetch(ctx, "coingecko", self.coingecko.simple_price)
        if payload is None:
            return
        ingest = self._now()
        item = self._normalise(
            ctx, "coingecko",
            lambda: normalize.coingecko_simple_price(
                payload, coin_id=self.settings.coingecko_coin_id, vs_currency=self.settings.coingecko_vs_currency,
                symbol=self.settings.coingecko_symbol, ingest_time=ingest,
            ),
            payload,
        )
        if item is None:
            return
        updated = decode(item[1]).get("exchange_time")
        if updated == self._market_updated:
            log.debug("coingecko: no new update since %s, nothing published", updated)
            return
        self._market_updated = updated
        yield item

    def messages(self, ctx: SourceContext) -> Iterator[Outgoing]:
        interval = self.settings.binance_poll_interval_s
        log.info(
            "live source: binance %s every %.1fs (%s); coingecko %s every >= %.0fs (budget %d calls/month, %d left)",
            ",".join(self.settings.binance_symbols), interval, self.settings.binance_base_url,
            self.settings.coingecko_coin_id, self.coingecko.effective_interval_s(),
            self.coingecko.budget.monthly_budget, self.coingecko.budget.remaining,
        )
        next_poll = self._next_poll = self.clock()
        for client in (self.binance, self.coingecko):  # a failure or ban is in the status before any backoff wait
            client.http.on_change = lambda: self.report_waits(ctx)
        self.report_waits(ctx)
        while not ctx.stopping():
            self.report_waits(ctx)
            wait = next_poll - self.clock()
            if wait > 0:
                if not ctx.idle(wait):
                    return
                continue
            next_poll = self._next_poll = max(next_poll + interval, self.clock())
            yield from self.poll_binance(ctx)
            yield from self.poll_klines(ctx)
            if self.coingecko.seconds_until_due() <= 0:
                yield from self.poll_coingecko(ctx)
            ctx.set_retried(self._retried())


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
