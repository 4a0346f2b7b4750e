"""The monitor (``python -m btc_platform.monitoring``): alert rules, alert delivery and the
Prometheus metrics endpoint on ``127.0.0.1:BTC_MONITOR_PORT``. Healthy once ``/metrics`` answers
with the monitor's first observation. It gets the Airflow processes' environment (the alert
e-mails go through Airflow's SMTP notifier, which reads AIRFLOW_HOME's configuration)."""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING

from btc_platform.ops import process
from btc_platform.ops.services import base

if TYPE_CHECKING:
    from btc_platform.settings import Settings

log = logging.getLogger(__name__)

MONITOR_START_TIMEOUT_S = 60.0
#: A metric the monitor exports only after its first observation.
READY_METRIC = "btc_monitor_last_observation_timestamp_seconds"


def monitor_health(settings: Settings) -> str | None:
    """None when the monitor's /metrics answers with its observation."""
    url = f"http://127.0.0.1:{settings.monitor_port}/metrics"
    answer, problem = base.http_ok(url)
    if answer is None:
        return problem
    if READY_METRIC not in answer.text:
        return f"{url} has no observation yet"
    return None


def start_monitor(settings: Settings) -> None:
    from btc_platform.ops.airflow_env import airflow_env

    if base.running_pid(settings, "monitor") is not None:
        record = base.read_pid(settings, "monitor")
        try:  # just started by the supervisor, say: let it finish its first observation
            process.wait_until_healthy(record, lambda: monitor_health(settings), MONITOR_START_TIMEOUT_S,
                                       "metrics endpoint")  # fmt: skip
        except process.ProcessError as exc:
            log.warning("the running monitor is not healthy (%s): starting a new one", exc)
        else:
            log.info("monitor already running on 127.0.0.1:%d", settings.monitor_port)
            return
    base.terminate(settings, "monitor")
    base.check_port_free(settings.monitor_port, "monitor metrics", "BTC_MONITOR_PORT")
    started = time.monotonic()
    env = base.base_env()
    env.update(airflow_env(settings))
    record = base.spawn(settings, "monitor", [sys.executable, "-m", "btc_platform.monitoring"], env, settings.data_dir)
    process.wait_until_healthy(record, lambda: monitor_health(settings), MONITOR_START_TIMEOUT_S, "metrics endpoint")
    log.info("monitor ready in %.1f s: metrics on http://127.0.0.1:%d/metrics", time.monotonic() - started,
                  settings.monitor_port)  # fmt: skip
