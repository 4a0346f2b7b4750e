"""Where the producer's messages come from: ``live``, ``replay`` and ``simulate``.

A source is an object with ``messages(ctx)`` returning an iterator of ``(key, value, source)``
tuples: the Kafka key (symbol bytes), the encoded message (``schema.encode`` bytes) and the
message's ``source`` field (for per-source health). ``ctx`` is the producer's
:class:`SourceContext`: ``ctx.idle(seconds)`` waits while the producer keeps serving delivery
reports and status (returns False once a stop was requested), ``ctx.reject(...)`` counts and
logs a payload that could not become a message, ``ctx.poll_ok``/``ctx.poll_failed`` record the
health of each upstream.

* :class:`LiveSource` polls Binance (bookTicker + 24hr per symbol, every
  ``binance_poll_interval_s``; the last closed 1-minute kline per symbol once a minute, see
  :meth:`LiveSource.poll_klines`) and CoinGecko (own cadence and budget). A CoinGecko update
  already published (same ``last_updated_at``) is not published again. When an API cannot be
  reached it says so and names the offline option; it never switches to simulated data.
* :class:`ReplaySource` re-publishes a JSONL file of captured messages (``--record`` output),
  paced by event time / ``speed`` (0 = as fast as possible).
* :class:`SimulateSource` makes a synthetic market (random walk, or driven by a candle CSV
  ``open_time_utc,open,high,low,close,volume``) with ``source = "simulated"``: book tickers
  every tick, a 24 h ticker every ``TICKER_EVERY_MS``, a CoinGecko-like market message every
  ``MARKET_EVERY_MS`` of simulated time (its ``exchange_time`` lagging by ``market_lag_s``, as
  CoinGecko's does) and a ``kline_1m`` per symbol when a minute closes (simulated trade count:
  ``SIMULATED_TRADES_PER_UNIT`` x volume). Event times come from the simulated clock (historical
  for candle files). Book tickers are encoded with a string template (the message id computed
  exactly as ``schema.compute_message_id`` does) so the source can feed >= 50k msg/s.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from hashlib import sha256
from pathlib import Path
from typing import Any, Protocol

from btc_platform.ingest import normalize
from btc_platform.ingest.http import (
    ClientError,
    ExchangeError,
    ExchangeUnavailable,
    InvalidResponse,
    IPBanned,
)
from btc_platform.ingest.schema import (
    DECIMAL,
    FIELD_NAMES,
    FIELDS,
    FIELDS_BY_NAME,
    INT,
    SCHEMA_VERSION,
    SchemaError,
    decode,
    encode,
    format_ts,
    id_fields,
    parse_ts,
)

log = logging.getLogger(__name__)

Outgoing = tuple[bytes, bytes, str]
OFFLINE_HINT = "for offline use run `make run SOURCE=simulate` (or `python -m btc_platform.ingest.producer --source simulate`)"


class SourceContext(Protocol):
    def idle(self, seconds: float) -> bool: ...
    def stopping(self) -> bool: ...
    def reject(self, source: str, reason: str, payload: Any) -> None: ...
    def poll_ok(self, source: str) -> None: ...
    def poll_failed(self, source: str, error: BaseException) -> None: ...
    def set_retried(self, count: int) -> None: ...
    def set_http_errors(self, errors: dict[str, dict[str, int]]) -> None: ...
    def set_waiting(self, upstream: str, reason: str | None, until: float | None, **details: Any) -> None: ...


class ConfigError(ValueError):
    """A source cannot start with the given options (the producer exits non-zero)."""


def _out(message: dict[str, Any]) -> Outgoing:
    return message["symbol"].encode("utf-8"), encode(message), message["source"]


# ---- live -----------------------------------------------------------------------------------
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
                    since=_iso_s(failing.since), last_failure=_iso_s(failing.last_at),
                    next_attempt=_iso_s(retry_at), detail=failing.reason,
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
            return _out(build())
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


def _iso_s(epoch: float | None) -> str | None:
    """The status record's time format (``schema.format_ts``, as ``until``) of epoch seconds."""
    return None if epoch is None else format_ts(datetime.fromtimestamp(epoch, tz=UTC))


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# ---- replay ---------------------------------------------------------------------------------
class ReplaySource:
    """Re-publish a JSONL file of messages (one wire message per line), paced by event time."""

    name = "replay"

    def __init__(self, path: str | Path, *, speed: float = 1.0, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"replay file not found: {self.path}")
        if speed < 0:
            raise ConfigError(f"--speed must be >= 0, got {speed}")
        self.speed = speed
        self.clock = clock

    def messages(self, ctx: SourceContext) -> Iterator[Outgoing]:
        first_event: float | None = None
        real_start = self.clock()
        with self.path.open("rb") as handle:
            for lineno, raw in enumerate(handle, 1):
                line = raw.strip()
                if not line:
                    continue
                try:
                    message = decode(line)
                except SchemaError as exc:
                    ctx.reject("replay", f"{self.path.name} line {lineno}: {exc}", line[:500])
                    continue
                if self.speed > 0:
                    event = parse_ts(message["event_time"]).timestamp()
                    if first_event is None:
                        first_event = event
                    wait = real_start + (event - first_event) / self.speed - self.clock()
                    if wait > 0 and not ctx.idle(wait):
                        return
                ctx.poll_ok(message["source"])
                yield message["symbol"].encode("utf-8"), encode(message), message["source"]
        log.info("replay of %s complete", self.path)


# ---- simulate -------------------------------------------------------------------------------
SIMULATED = "simulated"
TICKER_EVERY_MS = 10_000
MARKET_EVERY_MS = 60_000
MINUTE_MS = 60_000
DAY_MINUTES = 1440
#: Order of magnitude of the bitcoin supply, for the simulated CoinGecko market cap.
SIMULATED_SUPPLY = 19_500_000
#: Simulated trades per unit of base volume in a minute (candle files carry no trade count).
SIMULATED_TRADES_PER_UNIT = 20
#: Per-minute log-return volatility of the random walk (about 8 bps, BTC's order of magnitude).
MINUTE_SIGMA = 0.0008
CANDLE_COLUMNS = ("open_time_utc", "open", "high", "low", "close", "volume")

_SCHEMA_VERSION = str(SCHEMA_VERSION)
_TABLE_BITS = 12
_TABLE = 1 << _TABLE_BITS




class _TimeFormatter:
    """format_ts for epoch milliseconds, with the minute prefix cached."""

    def __init__(self):
        self._minute = -1
        self._prefix = ""

    def __call__(self, ms: int) -> str:
        minute, rest = divmod(ms, MINUTE_MS)
        if minute != self._minute:
            self._minute = minute
            self._prefix = datetime.fromtimestamp(minute * 60, tz=UTC).strftime("%Y-%m-%dT%H:%M:")
        sec, milli = divmod(rest, 1000)
        return f"{self._prefix}{sec:02d}.{milli:03d}Z"


def encode_book_ticker(symbol_json: str, event_time: str, ingest_time: str, bid_c: int, bid_q: int, ask_c: int,
                       ask_q: int) -> bytes:
    """Wire bytes of a simulated book_ticker (prices in cents, quantities in 1e-5 units).

    ``symbol_json`` is the JSON-quoted symbol. Identical to ``schema.encode(schema.make_message(...))``
    for the same values (id included), without the per-message validation cost: the values are
    valid by construction (tests check the equivalence).
    """
    bp = f"{bid_c // 100}.{bid_c % 100:02d}"
    ap = f"{ask_c // 100}.{ask_c % 100:02d}"
    bq = f"{bid_q // 100000}.{bid_q % 100000:05d}"
    aq = f"{ask_q // 100000}.{ask_q % 100000:05d}"
    mid = sha256(
        f'{{"ask_price":"{ap}","ask_qty":"{aq}","bid_price":"{bp}","bid_qty":"{bq}","event_time":"{event_time}",'
        f'"message_type":"book_ticker","schema_version":{_SCHEMA_VERSION},"source":"simulated",'
        f'"symbol":{symbol_json}}}'.encode()
    ).hexdigest()
    return (
        f'{{"schema_version":{_SCHEMA_VERSION},"message_id":"{mid}","message_type":"book_ticker",'
        f'"source":"simulated","symbol":{symbol_json},"event_time":"{event_time}","ingest_time":"{ingest_time}",'
        f'"bid_price":{bp},"bid_qty":{bq},"ask_price":{ap},"ask_qty":{aq}}}'
    ).encode()


def load_candles(path: str | Path) -> list[tuple[int, float, float, float, float, float]]:
    """Read a 1-minute candle CSV (``open_time_utc,open,high,low,close,volume``), oldest first."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"candle file not found: {path}")
    rows = []
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        missing = [c for c in CANDLE_COLUMNS if c not in header]
        if missing:
            raise ConfigError(f"candle file {path} lacks column(s) {', '.join(missing)}")
        idx = [header.index(c) for c in CANDLE_COLUMNS]
        for lineno, row in enumerate(reader, 2):
            try:
                moment = datetime.fromisoformat(row[idx[0]])
                if moment.tzinfo is None:
                    raise ValueError(f"timestamp without time zone {row[idx[0]]!r}")
                o, h, lo, c, v = (float(row[i]) for i in idx[1:])
            except (ValueError, IndexError) as exc:
                raise ConfigError(f"candle file {path} line {lineno}: {exc}") from exc
            if not (0 < lo <= min(o, c) and max(o, c) <= h) or v < 0:
                raise ConfigError(f"candle file {path} line {lineno}: inconsistent OHLCV {row}")
            rows.append((int(moment.timestamp() * 1000), o, h, lo, c, v))
    if not rows:
        raise ConfigError(f"candle file {path} has no rows")
    rows.sort(key=lambda r: r[0])
    return rows


class RollingDay:
    """Rolling 24 h aggregates over completed 1-minute bars, updated incrementally."""

    def __init__(self):
        self.bars: deque[tuple[int, float, float, float, float, float, float]] = deque()
        self.volume = 0.0
        self.quote = 0.0
        self.high = -math.inf
        self.low = math.inf

    def add(self, open_ms: int, o: float, h: float, lo: float, c: float, v: float) -> None:
        bar = (open_ms, o, h, lo, c, v, v * (o + c) / 2)
        self.bars.append(bar)
        self.volume += bar[5]
        self.quote += bar[6]
        self.high = max(self.high, h)
        self.low = min(self.low, lo)
        horizon = open_ms - (DAY_MINUTES - 1) * MINUTE_MS
        recompute = False
        while self.bars and self.bars[0][0] < horizon:
            old = self.bars.popleft()
            self.volume -= old[5]
            self.quote -= old[6]
            recompute = recompute or old[2] >= self.high or old[3] <= self.low
        if recompute:
            self.high = max(b[2] for b in self.bars)
            self.low = min(b[3] for b in self.bars)

    def __bool__(self) -> bool:
        return bool(self.bars)


class SimulateSource:
    """Synthetic market: book tickers around a price path, plus 24 h tickers and market messages."""

    name = "simulate"

    def __init__(
        self,
        symbols: tuple[str, ...] | list[str],
        *,
        coingecko_symbol: str,
        candles: str | Path | None = None,
        speed: float = 1.0,
        tick_ms: int = 1000,
        start_price: float = 30000.0,
        seed: int | None = None,
        start_time_ms: int | None = None,
        clock: Callable[[], float] = time.time,
        market_lag_s: float = 0.0,
    ):
        if market_lag_s < 0:
            raise ConfigError(f"--market-lag must be >= 0, got {market_lag_s}")
        if speed < 0:
            raise ConfigError(f"--speed must be >= 0 (0 = as fast as possible), got {speed}")
        if not 1 <= tick_ms <= MINUTE_MS or MINUTE_MS % tick_ms:
            raise ConfigError(f"--tick-ms must divide 60000, got {tick_ms}")
        if start_price <= 0:
            raise ConfigError(f"--start-price must be > 0, got {start_price}")
        self.symbols = list(symbols)
        bad = [s for s in [*self.symbols, coingecko_symbol] if not s.isalnum()]
        if bad:
            raise ConfigError(f"simulated symbols must be alphanumeric, got {bad}")
        if candles is not None:
            self.candles = load_candles(candles)
            self.symbols = self.symbols[:1]  # one candle file drives one symbol
        else:
            self.candles = None
        self.coingecko_symbol = coingecko_symbol
        self.speed = speed
        self.tick_ms = tick_ms
        self.start_price = start_price
        self.rng = random.Random(seed)
        self.clock = clock
        self.start_time_ms = start_time_ms
        self.market_lag_ms = int(round(market_lag_s * 1000))
        self._fmt_window = _TimeFormatter()
        self._fmt_exchange = _TimeFormatter()

    # ---- price path ------------------------------------------------------------------------
    def _random_candles(self, start_ms: int) -> Iterator[tuple[int, float, float, float, float, float]]:
        rnd = self.rng
        sigma = MINUTE_SIGMA
        price = self.start_price
        open_ms = start_ms - start_ms % MINUTE_MS
        while True:
            close = price * math.exp(rnd.gauss(0.0, sigma))
            high = max(price, close) * (1 + abs(rnd.gauss(0.0, sigma / 2)))
            low = min(price, close) * (1 - abs(rnd.gauss(0.0, sigma / 2)))
            volume = rnd.lognormvariate(math.log(150.0), 0.6)
            yield open_ms, price, high, low, close, volume
            price = close
            open_ms += MINUTE_MS

    def _candle_stream(self) -> Iterator[tuple[int, float, float, float, float, float]]:
        if self.candles is not None:
            return iter(self.candles)
        start = self.start_time_ms if self.start_time_ms is not None else int(self.clock() * 1000)
        return self._random_candles(start)

    # ---- messages --------------------------------------------------------------------------
    def messages(self, ctx: SourceContext) -> Iterator[Outgoing]:
        rnd = self.rng
        ticks = MINUTE_MS // self.tick_ms
        fmt_event = _TimeFormatter()
        fmt_ingest = _TimeFormatter()
        keys = {s: s.encode("utf-8") for s in self.symbols}
        quoted = {s: json.dumps(s) for s in self.symbols}
        # per symbol: offset factor so several symbols do not move in lockstep
        factors = {s: (1.0 if i == 0 else 1.0 / (1 + i)) for i, s in enumerate(self.symbols)}
        window = RollingDay()
        speed = self.speed
        clock = self.clock
        sim_start_ms: int | None = None
        real_start = clock()
        next_ticker_ms = next_market_ms = None
        random_, bits = rnd.random, rnd.getrandbits
        # pre-drawn standard normal deviates and lognormal multipliers (drawn per message by index)
        normals = [rnd.gauss(0.0, 1.0) for _ in range(_TABLE)]
        lognormals = [math.exp(rnd.gauss(0.0, 1.0)) for _ in range(_TABLE)]
        last_ingest_ms, ingest_time = -1, ""
        log.info(
            "simulate source: %s, %s, tick %d ms, speed %s",
            ",".join(self.symbols), "candle file" if self.candles is not None else "random walk",
            self.tick_ms, "as fast as possible" if speed == 0 else f"x{speed}",
        )
        for open_ms, o, h, lo, c, v in self._candle_stream():
            if sim_start_ms is None:
                sim_start_ms = open_ms
                next_ticker_ms = next_market_ms = open_ms
            ctx.poll_ok(SIMULATED)
            # anchors O -> L -> H -> C (up candle) or O -> H -> L -> C (down candle)
            anchors = (o, lo, h, c) if c >= o else (o, h, lo, c)
            range_bps = (h - lo) / o * 1e4
            spread_bps = min(1.0, max(0.01, 0.01 * range_bps))
            noise = (h - lo) * 0.05
            qty_scale = max(v, 0.01) / 600.0 * 100000  # typical top-of-book size ~ volume / 600, in 1e-5
            seg = ticks / 3.0
            hi_seen, lo_seen = o, o
            for k in range(ticks):
                t_ms = open_ms + k * self.tick_ms
                if speed > 0:
                    wait = real_start + (t_ms - sim_start_ms) / 1000.0 / speed - clock()
                    if wait > 0.0005 and not ctx.idle(wait):
                        return
                pos = k / seg
                i = int(pos)
                frac = pos - i
                a = anchors[i]
                mid = a + (anchors[i + 1] - a) * frac + normals[bits(_TABLE_BITS)] * noise
                mid = lo if mid < lo else h if mid > h else mid
                hi_seen = mid if mid > hi_seen else hi_seen
                lo_seen = mid if mid < lo_seen else lo_seen
                event_time = fmt_event(t_ms)
                now_ms = int(clock() * 1000)
                if now_ms != last_ingest_ms:
                    last_ingest_ms, ingest_time = now_ms, fmt_ingest(now_ms)
                for symbol in self.symbols:
                    f = factors[symbol]
                    price = mid * f
                    spread_c = max(1, int(price * spread_bps * (0.5 + random_()) / 100.0))
                    bid_c = int(price * 100.0 - spread_c / 2)
                    bid_q = int(qty_scale * lognormals[bits(_TABLE_BITS)] / f) or 1
                    ask_q = int(qty_scale * lognormals[bits(_TABLE_BITS)] / f) or 1
                    yield keys[symbol], encode_book_ticker(quoted[symbol], event_time, ingest_time, bid_c, bid_q,
                                                           bid_c + spread_c, ask_q), SIMULATED
                if t_ms >= next_ticker_ms:
                    next_ticker_ms += TICKER_EVERY_MS
                    done = k / ticks
                    for symbol in self.symbols:
                        yield self._ticker(symbol, factors[symbol], window, t_ms, event_time, ingest_time, mid,
                                           (hi_seen, lo_seen, v * done, o))
                if t_ms >= next_market_ms:
                    next_market_ms += MARKET_EVERY_MS
                    yield self._market(window, event_time, ingest_time, mid, v * k / ticks,
                                       t_ms - t_ms % 1000 - self.market_lag_ms)
            window.add(open_ms, o, h, lo, c, v)
            # the minute closed: its kline, received at the close (simulated clock)
            close_time = fmt_event(open_ms + MINUTE_MS)
            for symbol in self.symbols:
                yield self._kline(symbol, factors[symbol], open_ms, (o, h, lo, c, v), close_time, ingest_time)

    def _ticker(self, symbol, f, window, t_ms, event_time, ingest_time, mid, partial) -> Outgoing:
        hi_seen, lo_seen, vol_so_far, minute_open = partial
        if window:
            open_24, window_open = window.bars[0][1], window.bars[0][0]
            high, low = max(hi_seen, window.high), min(lo_seen, window.low)
            volume, quote = vol_so_far + window.volume, vol_so_far * mid + window.quote
        else:
            open_24, high, low, volume, quote = minute_open, hi_seen, lo_seen, vol_so_far, vol_so_far * mid
            window_open = t_ms - t_ms % MINUTE_MS
        last_c, open_c = round(mid * f * 100), round(open_24 * f * 100)
        change_c = last_c - open_c
        values = {
            "event_time": event_time,
            "ingest_time": ingest_time,
            "last_price": _cents(last_c),
            "open_price_24h": _cents(open_c),
            "high_24h": _cents(max(round(high * f * 100), last_c)),
            "low_24h": _cents(min(round(low * f * 100), last_c)),
            "price_change_24h": _cents(change_c),
            "price_change_pct_24h": f"{change_c / open_c * 100:.3f}",
            "volume_24h": f"{volume / f:.5f}",
            "quote_volume_24h": f"{quote:.8f}",
            "window_open_time": self._fmt_window(window_open),
        }
        return symbol.encode("utf-8"), encode_prevalidated("ticker_24hr", symbol, values), SIMULATED

    def _kline(self, symbol, f, open_ms, candle, event_time, ingest_time) -> Outgoing:
        o, h, lo, c, v = candle
        volume = v / f
        values = {
            "event_time": event_time,
            "ingest_time": ingest_time,
            "exchange_time": self._fmt_exchange(open_ms + MINUTE_MS - 1),
            "kline_open_time": self._fmt_exchange(open_ms),
            "kline_open": _cents(round(o * f * 100)),
            "kline_high": _cents(round(h * f * 100)),
            "kline_low": _cents(round(lo * f * 100)),
            "kline_close": _cents(round(c * f * 100)),
            "kline_volume": f"{volume:.5f}",
            "kline_quote_volume": f"{v * (o + c) / 2:.2f}",
            "kline_trade_count": str(int(volume * SIMULATED_TRADES_PER_UNIT)),
        }
        return symbol.encode("utf-8"), encode_prevalidated("kline_1m", symbol, values), SIMULATED

    def _market(self, window, event_time, ingest_time, mid, vol_so_far, updated_ms) -> Outgoing:
        open_24 = window.bars[0][1] if window else mid
        last_c = round(mid * 100)
        values = {
            "event_time": event_time,
            "ingest_time": ingest_time,
            "exchange_time": self._fmt_exchange(updated_ms),
            "last_price": _cents(last_c),
            "market_cap": _cents(last_c * SIMULATED_SUPPLY),
            "quote_volume_24h": f"{vol_so_far * mid + window.quote:.2f}",
            "price_change_pct_24h": f"{(mid - open_24) / open_24 * 100:.6f}",
        }
        return (self.coingecko_symbol.encode("utf-8"),
                encode_prevalidated("market", self.coingecko_symbol, values), SIMULATED)


def _cents(value: int) -> str:
    sign, value = ("-", -value) if value < 0 else ("", value)
    return f"{sign}{value // 100}.{value % 100:02d}"


_WIRE_ORDER = {name: i for i, name in enumerate(FIELD_NAMES)}
#: Fields written as bare JSON integers (schema version and INT fields): ids and wire alike.
_BARE = frozenset(f.name for f in FIELDS if f.kind == INT)
_LAYOUTS: dict[tuple[str, ...], tuple[tuple[tuple[str, bool], ...], tuple[tuple[str, bool], ...]]] = {}


def _layout(names: tuple[str, ...]):
    """(id order, wire order) of a set of field names, each with 'is decimal'; cached."""
    layout = _LAYOUTS.get(names)
    if layout is None:
        covered = id_fields(names)
        id_order = tuple((n, FIELDS_BY_NAME[n].kind == DECIMAL) for n in sorted(names) if n in covered)
        wire_order = tuple((n, FIELDS_BY_NAME[n].kind == DECIMAL) for n in sorted(names, key=_WIRE_ORDER.__getitem__))
        layout = _LAYOUTS[names] = (id_order, wire_order)
    return layout


def encode_prevalidated(message_type: str, symbol: str, values: dict[str, str]) -> bytes:
    """Wire bytes of a simulated message whose values are already canonical strings.

    ``values`` holds every other field as text: decimals as plain (non-exponent) decimal strings,
    timestamps in the wire format; ``symbol`` and every text must need no JSON escaping (the
    simulator's symbols are checked to be alphanumeric). The message id is computed exactly as
    ``schema.compute_message_id`` does, so the result equals ``schema.encode(schema.make_message(...))``
    (tests check it) at a fraction of the cost.
    """
    fields = dict(values)
    fields["message_type"] = message_type
    fields["source"] = SIMULATED
    fields["symbol"] = symbol
    fields["schema_version"] = _SCHEMA_VERSION
    id_order, wire_order = _layout(tuple(fields) + ("message_id",))
    canonical = ",".join(
        f'"{n}":"{Decimal(fields[n])}"' if dec else (f'"{n}":{fields[n]}' if n in _BARE
                                                      else f'"{n}":"{fields[n]}"')
        for n, dec in id_order
    )
    fields["message_id"] = sha256(("{" + canonical + "}").encode()).hexdigest()
    wire = ",".join(
        f'"{n}":{fields[n]}' if dec or n in _BARE else f'"{n}":"{fields[n]}"' for n, dec in wire_order
    )
    return ("{" + wire + "}").encode()
