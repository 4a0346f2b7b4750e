"""Spark standalone cluster on 127.0.0.1: one master and ``BTC_SPARK_WORKERS`` workers, started
with the installed pyspark's ``spark-class`` (the pip package has no sbin/ scripts), each worker
offering ``BTC_SPARK_WORKER_CORES`` cores and ``BTC_SPARK_WORKER_MEMORY`` to executors, until the
master's JSON status shows it ALIVE with every worker registered.

pyspark and ``requests`` are imported inside the functions that need them: DAG files reach this
module at parse time (through the supervisor's trigger).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from btc_platform.lakehouse.spark_session import environment_script
from btc_platform.ops import process
from btc_platform.ops.services import base
from btc_platform.ops.services.base import ServiceError
from btc_platform.settings import Settings

log = logging.getLogger(__name__)

SPARK_START_TIMEOUT_S = 90.0
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


def spark_dir(settings: Settings) -> Path:
    """Work directories of the workers (executor logs, shipped files)."""
    return settings.data_dir / "spark"


def master_ui_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.spark_master_ui_port}"


def _spark_class() -> str:
    try:
        return environment_script("spark-class")
    except FileNotFoundError as exc:
        raise ServiceError(f"{exc}: pyspark's spark-class is needed (run `make venv`)") from exc


def spark_home() -> str:
    """The installed pyspark package, which is the Spark home (jars/, bin/) of a pip install.
    Explicit, because spark-class's find-spark-home asks whichever ``python3`` is on PATH."""
    import pyspark

    return str(Path(pyspark.__file__).resolve().parent)


def _env(settings: Settings) -> dict[str, str]:
    env = base.base_env()
    env.update(
        {
            "SPARK_HOME": spark_home(),
            "PYSPARK_PYTHON": env.get("PYSPARK_PYTHON", sys.executable),
            "SPARK_DAEMON_MEMORY": settings.spark_daemon_memory,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_NO_DAEMONIZE": "1",
        }
    )
    return env


def master_state(settings: Settings) -> dict:
    """The master's /json/ status (``status``, ``aliveworkers``, ``activeapps`` ...)."""
    import requests

    response = requests.get(f"{master_ui_url(settings)}/json/", timeout=(2.0, 5.0))
    response.raise_for_status()
    return response.json()


def spark_health(settings: Settings) -> str | None:
    """None if the master is ALIVE with every configured worker registered, else the reason."""
    import requests

    try:
        state = master_state(settings)
    except (requests.RequestException, ValueError) as exc:
        return f"master {master_ui_url(settings)} not answering: {exc.__class__.__name__}"
    if state.get("status") != "ALIVE":
        return f"master status {state.get('status')}"
    alive = int(state.get("aliveworkers", 0))
    if alive < settings.spark_workers:
        return f"{alive} of {settings.spark_workers} workers alive"
    return None


def start_worker(settings: Settings, index: int) -> process.ProcessRecord:
    """Start worker ``index`` (0-based) without waiting."""
    name = f"spark-worker-{index + 1}"
    ui_port = settings.spark_worker_ui_port + index
    base.check_port_free(ui_port, f"Spark worker {index + 1} UI", "BTC_SPARK_WORKER_UI_PORT")
    work = spark_dir(settings) / name
    work.mkdir(parents=True, exist_ok=True)
    cmd = [
        _spark_class(), WORKER_CLASS,
        "--host", "127.0.0.1",
        "--cores", str(settings.spark_worker_cores),
        "--memory", settings.spark_worker_memory,
        "--webui-port", str(ui_port),
        "--work-dir", str(work),
        settings.spark_standalone_url,
    ]  # fmt: skip
    return base.spawn(settings, name, cmd, _env(settings), work)


def start_spark(settings: Settings) -> None:
    """Start master and workers (idempotent) and wait until every worker is registered."""
    names = base.processes(settings, "spark")
    if not names:
        raise ServiceError("BTC_SPARK_WORKERS is 0: no standalone cluster to start (the cluster profile sets it)")
    if all(base.running_pid(settings, n) for n in names) and spark_health(settings) is None:
        log.info("spark standalone already running at %s", settings.spark_standalone_url)
        return
    started = time.monotonic()
    for name in reversed(names):
        base.terminate(settings, name)
    base.check_port_free(settings.spark_master_port, "Spark master", "BTC_SPARK_MASTER_PORT")
    base.check_port_free(settings.spark_master_ui_port, "Spark master UI", "BTC_SPARK_MASTER_UI_PORT")
    spark_dir(settings).mkdir(parents=True, exist_ok=True)
    cmd = [
        _spark_class(), MASTER_CLASS,
        "--host", "127.0.0.1",
        "--port", str(settings.spark_master_port),
        "--webui-port", str(settings.spark_master_ui_port),
    ]  # fmt: skip
    master = base.spawn(settings, "spark-master", cmd, _env(settings), spark_dir(settings))
    process.wait_until_healthy(
        master,
        lambda: None if base.port_open(settings.spark_master_port) else "master port closed",
        SPARK_START_TIMEOUT_S,
        "Spark master RPC",
    )
    workers = [start_worker(settings, i) for i in range(settings.spark_workers)]

    def check() -> str | None:
        for record in workers:
            if not process.is_alive(record):
                raise ServiceError(
                    f"{record.name} exited; last log lines:\n{process.log_tail(Path(record.log)) or '(no log)'}"
                )
        return spark_health(settings)

    process.wait_until_healthy(master, check, SPARK_START_TIMEOUT_S, "master ALIVE with every worker")
    log.info("spark standalone ready at %s with %d workers x %d cores / %s (UI %s) in %.1f s",
             settings.spark_standalone_url, settings.spark_workers, settings.spark_worker_cores,
             settings.spark_worker_memory, master_ui_url(settings), time.monotonic() - started)  # fmt: skip
