"""The BTC dashboard inside the Airflow UI: market, history, forecast vs actual, pipeline health.

``data`` reads the tables and status records (pure functions of settings and range), ``app``
builds the FastAPI app (routes, Airflow's access check, caches), ``static/`` holds the page
(hand-written HTML/JS/CSS), ``assets`` installs plotly.js (npm package) into the cache directory,
``browser`` finds or installs the Chromium the browser test drives.

:data:`app` is what the plugin mounts: an ASGI app that builds the FastAPI app on its first
request, so loading the plugin (which every Airflow process does) imports neither FastAPI's
security stack nor pandas.
"""

from __future__ import annotations

import threading
from typing import Any

#: Where the API server mounts the app, and the UI route of its navigation entry.
URL_PREFIX = "/btc"
URL_ROUTE = "btc"
NAME = "BTC dashboard"


class LazyApp:
    """ASGI app that creates the real one (``btc_platform.dashboard.app.create_app``) on first use."""

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from btc_platform.dashboard.app import create_app

                    self._app = create_app()
        return self._app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await self._get()(scope, receive, send)


app = LazyApp()
