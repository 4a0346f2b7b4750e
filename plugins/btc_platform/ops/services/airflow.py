"""Airflow (``airflow standalone``) with this repository's DAGs and plugins, started until its
API health endpoint reports a healthy metadatabase and scheduler.

``airflow standalone`` starts its scheduler, dag-processor, triggerer and API server once and
never restarts one that dies (each is a ``subprocess.Popen`` read by a thread that simply ends,
``airflow/cli/commands/standalone_command.py``). The scheduler is the one the platform cannot
do without (no task is scheduled, so the supervisor's resumed task never runs), so
:func:`ensure_scheduler` starts a replacement ``airflow scheduler`` (detached, marked with this
instance, so ``make stop`` stops it) when no scheduler process of this instance is alive; the
supervisor's trigger calls it from the triggerer, the one component that keeps running.

``requests`` is imported inside the functions that call the API server: DAG files reach this
module at parse time (through the supervisor's trigger).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path

import psutil

from btc_platform.ops import process
from btc_platform.ops.airflow_env import airflow_env, airflow_home, api_url, password_file
from btc_platform.ops.orchestration import ensure_table_writers_pool
from btc_platform.ops.services import base
from btc_platform.ops.services.airflow_standalone import SKIP_SERVE_LOGS
from btc_platform.ops.services.base import ServiceError
from btc_platform.settings import Settings

log = logging.getLogger(__name__)

AIRFLOW_START_TIMEOUT_S = 300.0


def _airflow_bin() -> str:
    candidate = Path(sys.executable).parent / "airflow"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("airflow")
    if found is None:
        raise ServiceError("`airflow` not found next to this Python: run `make venv`")
    return found


def airflow_health(settings: Settings) -> str | None:
    """None if the API server's health endpoint answers 200 with a healthy metadatabase."""

    url = f"{api_url(settings)}/api/v2/monitor/health"
    response, problem = base.http_ok(url)
    if response is None:
        return problem
    try:
        body = response.json()
    except ValueError:
        return f"{url} returned no JSON"
    unhealthy = [name for name, part in body.items() if isinstance(part, dict) and part.get("status") == "unhealthy"]
    if body.get("metadatabase", {}).get("status") != "healthy":
        return f"metadatabase not healthy: {body.get('metadatabase')}"
    if "scheduler" in unhealthy:
        return "scheduler not healthy yet"
    return None


def scheduler_pids(settings: Settings) -> list[int]:
    """Live ``airflow scheduler`` processes of this platform instance (standalone's own or a
    replacement), by their instance marker and command line."""
    found = []
    for pid in base.marked_processes(settings, "airflow"):
        try:
            cmd = psutil.Process(pid).cmdline()
        except psutil.Error:
            continue
        # `<python> .../airflow scheduler` (standalone's Popen), or a process title set to it; the
        # LocalExecutor's forked workers retitle themselves (`airflow executor -- ...`)
        if " ".join(cmd).endswith(("airflow scheduler", f"airflow scheduler {SKIP_SERVE_LOGS}")):
            found.append(pid)
    return found


def ensure_scheduler(settings: Settings) -> int | None:
    """Start a replacement ``airflow scheduler`` when none of this instance is alive (a hung but
    living one is left alone: two schedulers on the SQLite metadatabase are not supported).
    Returns the new pid, or None when a scheduler runs."""
    if scheduler_pids(settings):
        return None
    env = base.base_env()
    env.update(airflow_env(settings))
    record = base.spawn(settings, "airflow-scheduler", [_airflow_bin(), "scheduler", SKIP_SERVE_LOGS], env,
                        airflow_home(settings))  # fmt: skip
    log.warning("no Airflow scheduler of this platform was running: started one (pid %d, log %s)",
                record.pid, record.log)  # fmt: skip
    return record.pid


def _ensure_pools(settings: Settings) -> None:
    """The pools the DAGs use (a task of a pool that does not exist is never scheduled)."""
    try:
        password = json.loads(password_file(settings).read_text())["admin"]
        ensure_table_writers_pool(api_url(settings), password)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ServiceError(f"creating the Airflow pools failed: {exc}") from exc


def start_airflow(settings: Settings) -> None:
    if base.running_pid(settings, "airflow") is not None and airflow_health(settings) is None:
        log.info("airflow already running at %s", api_url(settings))
    else:
        base.terminate(settings, "airflow")
        base.check_port_free(settings.airflow_port, "Airflow API server", "BTC_AIRFLOW_PORT")
        started = time.monotonic()
        env = base.base_env()
        env.update(airflow_env(settings))
        airflow_home(settings).mkdir(parents=True, exist_ok=True)
        # `airflow standalone` whose scheduler and triggerer start no log server (it would listen
        # on every interface; airflow_standalone says why it is not needed)
        record = base.spawn(settings, "airflow", [sys.executable, "-m", "btc_platform.ops.services.airflow_standalone"],
                            env, airflow_home(settings))  # fmt: skip
        process.wait_until_healthy(record, lambda: airflow_health(settings), AIRFLOW_START_TIMEOUT_S, "API health")
        log.info("airflow ready in %.1f s", time.monotonic() - started)
    _ensure_pools(settings)
    log.info("Airflow UI: %s (user admin, password in %s)", api_url(settings), password_file(settings))

