"""The dashboard's FastAPI app, mounted by Airflow's API server under ``/btc`` (the plugin's
``fastapi_apps``) and framed in the UI by the plugin's ``external_views`` entry.

A plugin app gets no authentication from Airflow by itself: every route here, the page, the
scripts and the JSON alike, depends on ``requires_access_view(AccessView.WEBSITE)`` (Airflow's
own check: the session cookie or a bearer token, then the auth manager), so without a session
each answers 401 (no token) or 403 (invalid token / not allowed). The docs and OpenAPI routes are
off. plotly.js is the finance bundle of the npm package ``plotly.js-finance-dist-min``, installed
into the cache directory by ``make js`` (``btc_platform.dashboard.assets``); nothing is loaded from
elsewhere.

Routes (relative to the mount point): ``/`` the page, ``/static/<file>`` its script and style,
``/static/plotly.js``, and the JSON endpoints ``/api/market``, ``/api/history``,
``/api/forecast``, ``/api/pipeline`` (docs/dashboard.md). Each endpoint's answer is kept for
:data:`CACHE_TTL_S` seconds per set of arguments.

Airflow's access check is imported only when the app is secured: the benchmarks build the app without
Airflow's API server.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec
from fastapi import (
    Depends,
    FastAPI,
    HTTPException,
    Query,
    Request,  # at module level: FastAPI resolves the handlers' annotations here
)
from fastapi.responses import FileResponse, HTMLResponse, Response

from btc_platform.dashboard import data
from btc_platform.dashboard.assets import AssetsMissingError, bundle_path
from btc_platform.settings import get_settings

log = logging.getLogger(__name__)

#: Seconds an endpoint's answer is reused for the same arguments (the page refreshes every 30 s).
CACHE_TTL_S = 10.0
#: Seconds between the page's refreshes.
REFRESH_S = 30
STATIC_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
#: gzip level of the answers and of plotly.js, compressed once per cached answer (Airflow's API
#: server gzips every response at a higher level otherwise, on every request: docs/benchmarks.md).
GZIP_LEVEL = 1
GZIP_MIN_BYTES = 1024


class Encoded:
    """A response body as it is sent: the bytes and, when worth it, their gzip compression."""

    def __init__(self, raw: bytes):
        self.raw = raw
        self.gz = gzip.compress(raw, compresslevel=GZIP_LEVEL, mtime=0) if len(raw) >= GZIP_MIN_BYTES else None

    def response(self, accept_encoding: str, media_type: str, headers: dict[str, str]):
        """The body gzip-compressed when the client accepts it (Airflow's GZip middleware passes a
        response that is already encoded through untouched), else as is."""
        if self.gz is not None and "gzip" in accept_encoding:
            headers = {**headers, "Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
            return Response(self.gz, media_type=media_type, headers=headers)
        return Response(self.raw, media_type=media_type, headers=headers)


def encode_json(answer: dict) -> bytes:
    """An endpoint's answer as JSON (msgspec: much faster than ``json.dumps`` on a week of
    minutes). The answers hold no NaN: ``data`` turns missing values into None."""
    return msgspec.json.encode(answer)


class TTLCache:
    """A small thread-safe cache of computed answers, each kept ``ttl_s`` seconds."""

    def __init__(self, ttl_s: float, max_entries: int = 64, clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[tuple, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple, compute: Callable[[], Any]) -> Any:
        now = self.clock()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and now - hit[0] < self.ttl_s:
                return hit[1]
        value = compute()
        with self._lock:
            if len(self._entries) >= self.max_entries:
                oldest = min(self._entries, key=lambda k: self._entries[k][0])
                del self._entries[oldest]
            self._entries[key] = (self.clock(), value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def plotly_js_path(settings: Any) -> Path:
    """The installed plotly.js finance bundle (``make js``; see ``btc_platform.dashboard.assets``)."""
    path = bundle_path(settings)
    if not path.is_file():
        raise AssetsMissingError(f"{path} is missing: run `make js` (installs the npm package with npm)")
    return path


def static_dir() -> Path:
    return Path(__file__).resolve().parent / "static"


def create_app(settings_factory: Callable[[], Any] | None = None, *, secured: bool = True):
    """The dashboard app. ``settings_factory`` gives the platform settings per request (default
    ``get_settings``); ``secured=False`` leaves Airflow's access check out (benchmarks only)."""
    dependencies = []
    if secured:
        from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
        from airflow.api_fastapi.core_api.security import requires_access_view

        dependencies = [Depends(requires_access_view(AccessView.WEBSITE))]
    settings_of = settings_factory or get_settings
    cache = TTLCache(CACHE_TTL_S)
    app = FastAPI(
        title="BTC dashboard", docs_url=None, redoc_url=None, openapi_url=None, dependencies=dependencies
    )
    app.state.cache = cache

    def answer(request: Request, name: str, compute: Callable[[Any], dict], *args: Any) -> Response:
        settings = settings_of()
        key = (name, settings.storage_root, str(settings.data_dir), *args)
        started = time.perf_counter()
        body = cache.get(key, lambda: Encoded(encode_json(compute(settings))))
        log.debug("dashboard %s%s in %.0f ms", name, args, 1000 * (time.perf_counter() - started))
        return body.response(request.headers.get("accept-encoding", ""), "application/json",
                             {"Cache-Control": "no-store"})

    def symbol_of(symbol: str | None) -> str:
        settings = settings_of()
        chosen = (symbol or settings.binance_symbols[0]).upper()
        if not chosen.isalnum():
            raise HTTPException(status_code=422, detail=f"symbol must be letters and digits, got {symbol!r}")
        return chosen

    def page_config() -> dict:
        settings = settings_of()
        return {
            "symbols": list(settings.binance_symbols),
            "market_hours": data.MARKET_HOURS,
            "history_days": data.HISTORY_DAYS,
            "forecast_days": data.FORECAST_DAYS,
            "pipeline_days": data.PIPELINE_DAYS,
            "defaults": {view: value for view, (_, value) in data.DEFAULT_RANGES.items()},
            "refresh_s": REFRESH_S,
        }

    def first_requests() -> str:
        """``<link rel=preload>`` of the data the page asks for first (each view at its default
        range, the URL exactly as dashboard.js builds it): the browser fetches it while it still
        loads the scripts, instead of after dashboard.js has run."""
        symbol = settings_of().binance_symbols[0]
        links = []
        for view, (key, value) in data.DEFAULT_RANGES.items():
            query = urlencode({key: value, **({} if view == "pipeline" else {"symbol": symbol})})
            links.append(f'<link rel="preload" as="fetch" crossorigin href="{escape(f"api/{view}?{query}")}">')
        return "\n".join(links)

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        # the page's configuration goes in with it (one round trip less before the data requests)
        html = (static_dir() / "index.html").read_text(encoding="utf-8")
        html = html.replace("__BTC_CONFIG__", json.dumps(page_config()).replace("<", "\\u003c"))
        html = html.replace("<!-- __BTC_PRELOAD__ -->", first_requests())
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    bundles: dict[tuple, Encoded] = {}

    @app.get("/static/plotly.js")
    def plotly_js(request: Request) -> Response:
        try:
            path = plotly_js_path(settings_of())
        except AssetsMissingError as exc:
            log.error("dashboard: %s", exc)
            raise HTTPException(status_code=503, detail=str(exc)) from exc
        stat = path.stat()
        etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
        headers = {"Cache-Control": "private, max-age=86400", "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in bundles:  # compressed once, not by the middleware per request
            bundles.clear()
            bundles[key] = Encoded(path.read_bytes())
        return bundles[key].response(request.headers.get("accept-encoding", ""), "text/javascript", headers)

    @app.get("/static/{name}")
    def static(name: str) -> FileResponse:
        if name not in STATIC_FILES:
            raise HTTPException(status_code=404, detail=f"no static file {name}")
        return FileResponse(static_dir() / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})

    @app.get("/api/config")
    def config() -> dict:
        return page_config()

    @app.get("/api/market")
    def market(request: Request, hours: float = Query(6, gt=0, le=data.MAX_MARKET_HOURS),
               symbol: str | None = None) -> Response:
        sym = symbol_of(symbol)
        return answer(request, "market", lambda s: data.market(s, sym, hours), sym, hours)

    @app.get("/api/history")
    def history(request: Request, days: float = Query(30, gt=0, le=data.MAX_DAYS),
                symbol: str | None = None) -> Response:
        sym = symbol_of(symbol)
        return answer(request, "history", lambda s: data.history(s, sym, days), sym, days)

    @app.get("/api/forecast")
    def forecast(request: Request, days: float = Query(3, gt=0, le=data.MAX_DAYS),
                 symbol: str | None = None) -> Response:
        sym = symbol_of(symbol)
        return answer(request, "forecast", lambda s: data.forecast(s, sym, days), sym, days)

    @app.get("/api/pipeline")
    def pipeline(request: Request, days: float = Query(1, gt=0, le=data.MAX_DAYS)) -> Response:
        return answer(request, "pipeline", lambda s: data.pipeline(s, days), days)

    return app
