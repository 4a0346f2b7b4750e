"""Faults injected into a running platform by the fault-injection suite and the supervision
measurement (bench/chaos.py, bench/measure_supervision.py): kill -9 of the Airflow scheduler and
waiting for the supervisor's trigger to bring one back."""

from __future__ import annotations

import logging
import os
import signal
import time

from btc_platform.ops.services.airflow import airflow_health, scheduler_pids

log = logging.getLogger(__name__)


def kill_schedulers(settings) -> tuple[list[int], float]:
    """SIGKILL every Airflow scheduler process of this platform; (their pids, when)."""
    old = scheduler_pids(settings)
    if not old:
        raise SystemExit("no Airflow scheduler of this platform is running")
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    log.info("SIGKILL airflow scheduler pid(s) %s", old)
    return old, time.time()


def wait_scheduler_back(settings, old: list[int], killed: float,
                        timeout_s: float = 300.0) -> tuple[float | None, float | None]:  # fmt: skip
    """Seconds from ``killed`` until a scheduler process other than ``old`` runs (started by the
    supervisor's trigger in the triggerer) and until the API's health endpoint reports the
    scheduler healthy again; None for what did not happen within ``timeout_s``."""
    running = None
    while time.time() - killed < timeout_s:
        new = [pid for pid in scheduler_pids(settings) if pid not in old]
        if running is None and new:
            running = time.time() - killed
            log.info("new scheduler pid %s running after %.1f s", new, running)
        if running is not None and airflow_health(settings) is None:
            healthy = time.time() - killed
            log.info("scheduler healthy again after %.1f s", healthy)
            return running, healthy
        time.sleep(1.0)
    return running, None
