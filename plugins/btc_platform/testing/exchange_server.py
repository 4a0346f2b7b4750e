"""A local stand-in for the Binance and CoinGecko REST servers (http.server in a thread, 127.0.0.1).

It serves the exchanges' exact response formats from fixtures/*.json, implements the klines
paging semantics (startTime/endTime/limit on open time), sends ``X-MBX-USED-WEIGHT-1M`` on Binance
paths, records every request, and can be scripted per path with error replies (429 + Retry-After,
418, 500, slow replies that trip the read timeout, invalid JSON, other payloads) and transport
faults (``Reply(fault=...)``, see :data:`FAULTS`): a body cut short of its Content-Length, a body
that does not match its Content-Encoding, a redirect loop, a redirect to TLS on this plain-HTTP
port (the client's handshake fails with an SSL error).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

FIXTURES = Path(__file__).with_name("fixtures")

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


@dataclass
class Request:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float = field(default_factory=time.time)  # epoch seconds the request arrived


class ExchangeServer:
    def __init__(self):
        self.scripts: dict[str, deque[Reply]] = {}
        self.requests: list[Request] = []
        self.klines: list[list] = fixture("binance_klines_BTCUSDT_1h.json")
        self.clock = time.time  # "now" of the recent 1m klines (tests put a FakeClock here)
        self.used_weight = 0
        #: True: the 24 h ticker's openTime/closeTime follow ``clock`` (as the live API's do), so
        #: every poll is a new observation instead of the fixture's fixed one
        self.live_times = False
        self._outage: tuple[Reply, float] | None = None
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

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="exchange-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    # ---- serving ---------------------------------------------------------------------------
    def _normal(self, path: str, query: dict[str, str]) -> tuple[int, str]:
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
