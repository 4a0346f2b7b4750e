"""The simulate source: a synthetic market, a random walk or driven by a 1-minute candle CSV (see the
package docstring)."""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from btc_platform.ingest.sources.base import MINUTE_MS, ConfigError, Outgoing, SourceContext
from btc_platform.ingest.sources.wire import (
    SIMULATED,
    TimeFormatter,
    cents,
    encode_book_ticker,
    encode_prevalidated,
)

log = logging.getLogger(__name__)

TICKER_EVERY_MS = 10_000
MARKET_EVERY_MS = 60_000
DAY_MINUTES = 1440
#: Order of magnitude of the bitcoin supply, for the simulated CoinGecko market cap.
SIMULATED_SUPPLY = 19_500_000
#: Simulated trades per unit of base volume in a minute (candle files carry no trade count).
SIMULATED_TRADES_PER_UNIT = 20
#: Per-minute log-return volatility of the random walk (about 8 bps, BTC's order of magnitude).
MINUTE_SIGMA = 0.0008
CANDLE_COLUMNS = ("open_time_utc", "open", "high", "low", "close", "volume")

_TABLE_BITS = 12
_TABLE = 1 << _TABLE_BITS


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
        self._fmt_window = TimeFormatter()
        self._fmt_exchange = TimeFormatter()

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
        fmt_event = TimeFormatter()
        fmt_ingest = TimeFormatter()
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
            "last_price": cents(last_c),
            "open_price_24h": cents(open_c),
            "high_24h": cents(max(round(high * f * 100), last_c)),
            "low_24h": cents(min(round(low * f * 100), last_c)),
            "price_change_24h": cents(change_c),
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
            "kline_open": cents(round(o * f * 100)),
            "kline_high": cents(round(h * f * 100)),
            "kline_low": cents(round(lo * f * 100)),
            "kline_close": cents(round(c * f * 100)),
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
            "last_price": cents(last_c),
            "market_cap": cents(last_c * SIMULATED_SUPPLY),
            "quote_volume_24h": f"{vol_so_far * mid + window.quote:.2f}",
            "price_change_pct_24h": f"{(mid - open_24) / open_24 * 100:.6f}",
        }
        return (self.coingecko_symbol.encode("utf-8"),
                encode_prevalidated("market", self.coingecko_symbol, values), SIMULATED)
