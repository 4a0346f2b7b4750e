"""Airflow plugin registration for the BTC market-data platform.

The only top-level module under plugins/: Airflow's plugin loader imports it, while the
``btc_platform`` library package next to it is excluded from that scan by
``plugins/.airflowignore`` (plugins/ itself is on sys.path, so DAG tasks import
``btc_platform`` normally). Registering a named plugin makes the platform visible under
Admin -> Plugins and in ``airflow plugins``.

The plugin also brings the BTC dashboard (``btc_platform.dashboard``): a FastAPI app the API
server mounts under ``/btc`` (every route behind Airflow's login, see
``btc_platform/dashboard/app.py``) and a top-level navigation entry that frames it in the UI.
The entry's ``href`` is relative with a trailing slash (``btc/``): the UI resolves it against its
base URL, so it works under any base path; an absolute ``/btc`` would miss a base path and
without the slash the server answers with a redirect.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from btc_platform import dashboard


class BtcPlatformPlugin(AirflowPlugin):
    """The platform's plugin: the BTC dashboard app and its navigation entry."""

    name = "btc_platform"
    fastapi_apps = [{"app": dashboard.app, "url_prefix": dashboard.URL_PREFIX, "name": dashboard.NAME}]
    external_views = [
        {
            "name": dashboard.NAME,
            "href": dashboard.URL_ROUTE + "/",
            "url_route": dashboard.URL_ROUTE,
            "destination": "nav",
            "nav_top_level": True,
        }
    ]
