"""A local stand-in for the Binance and CoinGecko REST servers (http.server in a thread, 127.0.0.1).

It serves the exchanges' exact response formats from fixtures/*.json, implements the klines
paging semantics (startTime/endTime/limit on open time), sends ``X-MBX-USED-WEIGHT-1M`` on Binance
paths, records every request, and can be scripted per path with error replies (429 + Retry-After,
418, 500, slow replies that trip the read timeout, invalid JSON, other payloads) and transport
faults (``Reply(fault=...)``, see :data:`FAULTS`): a body cut short of its Content-Length, a body
that does not match its Content-Encoding, a redirect loop, a redirect to TLS on this plain-HTTP
port (the client's handshake fails with an SSL error).

Run as a program it stands in for both exchanges while the whole platform runs offline
(``make run`` with ``BTC_BINANCE_BASE_URL`` / ``BTC_COINGECKO_BASE_URL`` pointed at it)::

    btc-exchange-standin --port 18699 [--history-days 45] [--price 67000]

It then serves a moving market (:class:`LiveMarket`): ``--history-days`` of closed hourly klines
up to the current hour (a random walk ending at ``--price``, the first start's backfill and the
gap repair page through them), and from there a price that walks on with the clock, which the book
ticker, the 24 h ticker, the recent 1-minute klines and CoinGecko's simple price all quote; every
hour that closes while it runs becomes an hourly kline of what it quoted.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

FIXTURES = Path(__file__).with_name("fixtures")
HOUR_MS = 3_600_000

log = logging.getLogger(__name__)

BOOK_TICKER = "/api/v3/ticker/bookTicker"
TICKER_24HR = "/api/v3/ticker/24hr"
KLINES = "/api/v3/klines"
SIMPLE_PRICE = "/api/v3/simple/price"
COINS_MARKETS = "/api/v3/coins/markets"
REDIRECT_LOOP = "/__redirect_loop"

#: Transport faults a scripted reply can inject (requests exception the client sees).
FAULTS = {
    "truncated": "ChunkedEncodingError",  # Content-Length larger than the body, then the connection closes
    "bad_encoding": "ContentDecodingError",  # Content-Encoding: gzip on a body that is not gzip
    "redirect_loop": "TooManyRedirects",  # 302 to a path that redirects to itself forever
    "tls": "SSLError",  # 302 to https:// on this plain-HTTP server
}


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


def fixture(name: str):
    return json.loads(fixture_text(name))


@dataclass
class Reply:
    status: int = 200
    body: str | None = None  # None: the path's normal fixture response
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    fault: str | None = None  # one of FAULTS

    def __post_init__(self):
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}, expected one of {sorted(FAULTS)}")


class LiveMarket:
    """A price that walks on with the clock from the last close of ``klines`` (hourly klines up to
    the current hour), with the simulator's volatility; the hours it quotes become klines once closed."""

    def __init__(self, klines: list[list], clock=time.time, seed: int | None = None):
        from btc_platform.ingest.sources.simulate import MINUTE_SIGMA

        self.klines = klines
        self.clock = clock
        self.rnd = random.Random(seed)
        self.second_sigma = MINUTE_SIGMA / math.sqrt(60)
        self.price = float(klines[-1][4])
        self.at = clock()
        self.hours: dict[int, list[float]] = {}  # open ms -> [open, high, low, close, quotes]

    def quote(self) -> float:
        """The price now (the walk advanced by the time since the last quote)."""
        now = self.clock()
        elapsed = max(0.0, now - self.at)
        if elapsed:
            self.price *= math.exp(self.rnd.gauss(0.0, self.second_sigma * math.sqrt(elapsed)))
            self.price = round(self.price, 2)
            self.at = now
        hour = int(now * 1000) // HOUR_MS * HOUR_MS
        candle = self.hours.setdefault(hour, [self.price, self.price, self.price, self.price, 0])
        candle[1], candle[2], candle[3] = max(candle[1], self.price), min(candle[2], self.price), self.price
        candle[4] += 1
        return self.price

    def hourly_klines(self) -> list[list]:
        """``klines`` and every hour quoted here that has closed since, in the klines format."""
        current = int(self.clock() * 1000) // HOUR_MS * HOUR_MS
        last = self.klines[-1][0]
        rows = list(self.klines)
        for open_ms in sorted(h for h in self.hours if last < h < current):
            o, h, lo, c, quotes = self.hours[open_ms]
            volume = 2.5 * quotes  # an invented volume: the stand-in has no trades, only quotes
            rows.append([open_ms, f"{o:.2f}", f"{h:.2f}", f"{lo:.2f}", f"{c:.2f}", f"{volume:.5f}",
                         open_ms + HOUR_MS - 1, f"{volume * (o + c) / 2:.2f}", 20 * quotes,
                         f"{volume / 2:.5f}", f"{volume * (o + c) / 4:.2f}", "0"])  # fmt: skip
        return rows


@dataclass
class Request:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float = field(default_factory=time.time)  # epoch seconds the request arrived


class ExchangeServer:
    def __init__(self):
        self.port = 0  # 0: any free port (``start``)
        self.scripts: dict[str, deque[Reply]] = {}
        self.requests: list[Request] = []
        self.klines: list[list] = fixture("binance_klines_BTCUSDT_1h.json")
        self.clock = time.time  # "now" of the recent 1m klines (tests put a FakeClock here)
        self.used_weight = 0
        self._weight_minute: int | None = None  # the live market's minute of ``used_weight``
        #: True: the 24 h ticker's openTime/closeTime follow ``clock`` (as the live API's do), so
        #: every poll is a new observation instead of the fixture's fixed one
        self.live_times = False
        self._outage: tuple[Reply, float] | None = None
        #: set (``serve``): the book ticker, 24 h ticker, recent 1m klines and simple price quote it
        self.market: LiveMarket | None = None
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- control ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, path: str, *replies: Reply) -> None:
        """Queue replies for ``path``; once used up the path answers normally again."""
        with self._lock:
            self.scripts.setdefault(path, deque()).extend(replies)

    def fail_for(self, reply: Reply, seconds: float) -> None:
        """Answer every request with ``reply`` (unless a scripted one is queued) for ``seconds``."""
        with self._lock:
            self._outage = (reply, time.time() + seconds)

    def requests_to(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def start(self) -> ExchangeServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                parsed = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
                server._handle(self, parsed.path, query)

            def log_message(self, format, *args):  # noqa: A002 - http.server API
                return

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="exchange-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    # ---- serving ---------------------------------------------------------------------------
    def _market(self, path: str, query: dict[str, str]) -> tuple[int, str] | None:
        """The live market's answer on ``path`` (None: the fixture's)."""
        if path == KLINES and "startTime" in query:
            start, end = int(query["startTime"]), int(query.get("endTime", 2**62))
            rows = [r for r in self.market.hourly_klines() if start <= r[0] <= end]
            return 200, json.dumps(rows[: int(query.get("limit", 500))])
        price = self.market.quote()
        if path == BOOK_TICKER:
            book = fixture("binance_book_ticker_BTCUSDT.json")
            book["bidPrice"], book["askPrice"] = f"{price:.8f}", f"{price + 0.01:.8f}"
            book["bidQty"] = f"{self.market.rnd.uniform(0.01, 3.0):.8f}"
            book["askQty"] = f"{self.market.rnd.uniform(0.01, 3.0):.8f}"
            return 200, json.dumps(book)
        if path == TICKER_24HR:
            ticker = fixture("binance_ticker_24hr_BTCUSDT.json")
            ticker["closeTime"] = int(self.clock() * 1000)
            ticker["openTime"] = ticker["closeTime"] - 86_400_000
            ticker["lastPrice"] = ticker["bidPrice"] = f"{price:.8f}"
            ticker["askPrice"] = f"{price + 0.01:.8f}"
            return 200, json.dumps(ticker)
        if path == KLINES:
            rows = self.recent_1m_klines(int(query.get("limit", 500)))
            for row in rows:
                row[1:5] = [f"{price:.8f}"] * 4
            return 200, json.dumps(rows)
        if path == SIMPLE_PRICE:
            quote = fixture("coingecko_simple_price_bitcoin.json")
            quote["bitcoin"]["usd"] = price
            quote["bitcoin"]["last_updated_at"] = int(self.clock())
            return 200, json.dumps(quote)
        return None

    def _normal(self, path: str, query: dict[str, str]) -> tuple[int, str]:
        if self.market is not None and (answer := self._market(path, query)) is not None:
            return answer
        if path == BOOK_TICKER:
            return 200, fixture_text("binance_book_ticker_BTCUSDT.json")
        if path == TICKER_24HR:
            if not self.live_times:
                return 200, fixture_text("binance_ticker_24hr_BTCUSDT.json")
            ticker = fixture("binance_ticker_24hr_BTCUSDT.json")
            ticker["closeTime"] = int(self.clock() * 1000)
            ticker["openTime"] = ticker["closeTime"] - 86_400_000
            return 200, json.dumps(ticker)
        if path == KLINES and "startTime" not in query and query.get("interval") == "1m":
            return 200, json.dumps(self.recent_1m_klines(int(query.get("limit", 500))))
        if path == KLINES:
            start, end = int(query.get("startTime", 0)), int(query.get("endTime", 2**62))
            limit = int(query.get("limit", 500))
            rows = [r for r in self.klines if start <= r[0] <= end][:limit]
            return 200, json.dumps(rows)
        if path == SIMPLE_PRICE:
            return 200, fixture_text("coingecko_simple_price_bitcoin.json")
        if path == COINS_MARKETS:
            return 200, fixture_text("coingecko_coins_markets_bitcoin.json")
        return 404, json.dumps({"code": -1, "msg": f"no route {path}"})

    def recent_1m_klines(self, limit: int) -> list[list]:
        """The newest ``limit`` 1-minute klines at ``self.clock()``, the last one still open, as
        Binance answers ``/api/v3/klines?interval=1m&limit=N`` (values from the 1m fixture, the
        closed rows from its first row, the open one from its second)."""
        closed, current = fixture("binance_klines_BTCUSDT_1m.json")
        open_now = int(self.clock() * 1000) // 60_000 * 60_000
        rows = []
        for back in range(limit - 1, -1, -1):
            row = list(current if back == 0 else closed)
            row[0] = open_now - back * 60_000
            row[6] = row[0] + 59_999
            rows.append(row)
        return rows

    def _handle(self, handler: BaseHTTPRequestHandler, path: str, query: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(Request(path, query, {k.lower(): v for k, v in handler.headers.items()}))
            queue = self.scripts.get(path)
            outage = self._outage if self._outage is not None and self._outage[1] > time.time() else None
            reply = queue.popleft() if queue else (outage[0] if outage else Reply())
            if self.market is not None and int(self.clock() // 60) != self._weight_minute:
                # Binance counts the weight per minute: the live market runs for hours
                self._weight_minute, self.used_weight = int(self.clock() // 60), 0
            if path.startswith("/api/v3/") and path not in (SIMPLE_PRICE, COINS_MARKETS):
                self.used_weight += 2
            weight = self.used_weight
        if reply.delay_s:
            time.sleep(reply.delay_s)
        status, body = (reply.status, reply.body) if reply.body is not None else self._normal(path, query)
        if reply.body is None and reply.status != 200:
            status, body = reply.status, json.dumps({"code": -1003, "msg": f"HTTP {reply.status} from fixture"})
        headers = dict(reply.headers)
        payload = body.encode()
        length = len(payload)
        host, port = self._httpd.server_address[:2]
        if path == REDIRECT_LOOP or reply.fault == "redirect_loop":
            status, payload, length = 302, b"", 0
            headers["Location"] = f"http://{host}:{port}{REDIRECT_LOOP}"
        elif reply.fault == "tls":
            status, payload, length = 302, b"", 0
            headers["Location"] = f"https://{host}:{port}{path}"
        elif reply.fault == "truncated":
            payload = payload[: len(payload) // 2]  # announced length stays the full one
        elif reply.fault == "bad_encoding":
            headers["Content-Encoding"] = "gzip"
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json;charset=UTF-8")
            handler.send_header("Content-Length", str(length))
            if path not in (SIMPLE_PRICE, COINS_MARKETS):
                handler.send_header("X-MBX-USED-WEIGHT-1M", str(weight))
            for key, value in headers.items():
                handler.send_header(key, value)
            if reply.fault == "truncated":
                handler.send_header("Connection", "close")
                handler.close_connection = True
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (read timeout test)


class FakeClock:
    """Injected clock + sleep: sleeping advances the clock and records the requested wait."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(round(seconds, 6))
        self.now += seconds


def main(argv: list[str] | None = None) -> int:
    """Serve the live market on 127.0.0.1 until SIGTERM / Ctrl-C (see the module docstring)."""
    from datetime import UTC, datetime, timedelta

    from btc_platform.ingest.simulated_history import simulated_klines

    parser = argparse.ArgumentParser(prog="btc-exchange-standin",
                                     description="Local Binance + CoinGecko stand-in with a moving market.")  # fmt: skip
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--history-days", type=int, default=45, help="days of hourly klines before now (45)")
    parser.add_argument("--price", type=float, default=67000.0, help="close of the last closed hour (67000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the history and the walk (1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    server = ExchangeServer()
    server.port = args.port
    server.klines = simulated_klines(now - timedelta(days=args.history_days), now, args.price, seed=args.seed)
    server.market = LiveMarket(server.klines, server.clock, seed=args.seed)
    server.live_times = True
    server.start()
    log.info("serving Binance and CoinGecko formats on %s: %d hourly klines up to %s, then a walk from %.2f",
             server.url, len(server.klines), now.isoformat(), args.price)  # fmt: skip
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        log.info("interrupted")
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
