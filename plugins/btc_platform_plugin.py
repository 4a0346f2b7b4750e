"""Airflow plugin registration for the BTC market-data platform.

The only top-level module under plugins/: Airflow's plugin loader imports it, while the
``btc_platform`` library package next to it is excluded from that scan by
``plugins/.airflowignore`` (plugins/ itself is on sys.path, so DAG tasks import
``btc_platform`` normally). Registering a named plugin makes the platform visible under
Admin -> Plugins and in ``airflow plugins``.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class BtcPlatformPlugin(AirflowPlugin):
    """Marker plugin: the platform's logic lives in the btc_platform package."""

    name = "btc_platform"
