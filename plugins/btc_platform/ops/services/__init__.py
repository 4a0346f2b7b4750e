"""Local real services of the platform: PostgreSQL (cluster profile), Kafka (KRaft, one broker
or several), HDFS (NameNode + DataNode), Spark standalone (cluster profile), Airflow, the
monitor (alerts and Prometheus metrics, ``btc_platform.monitoring``).

Python API (used by ``btc-services``, the test fixtures and the benchmarks): ``start(name,
settings)``, ``stop(name, settings)``, ``status(name, settings)``, ``stop_all(settings)``,
``run(settings, source)``, ``ensure_topic(settings, topic, partitions)`` and the per-service
``start_kafka`` / ``start_hdfs`` / ``start_airflow``.

Modules: ``base`` (errors, pid records, markers, ports, java), ``postgres``, ``kafka``, ``hdfs``,
``spark``, ``airflow``, ``monitor`` (one per service), ``cli`` (``btc-services start|stop|status|run``).
Which processes a service has depends on the profile (``base.processes``; btc_platform.topology).

Every process runs detached in its own process group (``btc_platform.ops.process``), with its pid
record under ``<data_dir>/run`` and its log under ``<data_dir>/logs``. Start is idempotent,
waits on a real health check (bounded, never a fixed sleep) and fails with the log tail if the
process dies or the check times out. Stop sends SIGTERM to the process group (SIGINT to the
leader for Airflow), waits (bounded), then SIGKILL; then every process still carrying the
instance's environment marker is stopped too. Kafka and HDFS run from the jars that
btc_platform.ops.jars resolved with Maven; nothing is downloaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from btc_platform.ops.services.airflow import airflow_health, start_airflow
from btc_platform.ops.services.base import (
    COMPONENT_ENV,
    INSTANCE_ENV,
    SERVICES,
    STOP_TIMEOUT_S,
    PortInUseError,
    ServiceError,
    log_path,
    marked_processes,
    processes,
    recorded_processes,
    run_dir,
    running_pid,
    sweep,
    terminate,
)
from btc_platform.ops.services.hdfs import hdfs_dir, hdfs_health, start_hdfs
from btc_platform.ops.services.kafka import ensure_topic, kafka_dir, kafka_health, start_kafka
from btc_platform.ops.services.monitor import monitor_health, start_monitor
from btc_platform.ops.services.postgres import postgres_health, start_postgres
from btc_platform.ops.services.spark import spark_health, start_spark
from btc_platform.settings import Settings

__all__ = [
    "COMPONENT_ENV",
    "INSTANCE_ENV",
    "SERVICES",
    "PortInUseError",
    "ServiceError",
    "ServiceStatus",
    "airflow_health",
    "ensure_topic",
    "expand",
    "hdfs_dir",
    "hdfs_health",
    "kafka_dir",
    "kafka_health",
    "log_path",
    "marked_processes",
    "processes",
    "run_dir",
    "running_pid",
    "start",
    "start_airflow",
    "start_hdfs",
    "start_kafka",
    "start_monitor",
    "status",
    "stop",
]

log = logging.getLogger(__name__)

_STARTERS: dict[str, Callable[[Settings], None]] = {
    "postgres": start_postgres,
    "kafka": start_kafka,
    "hdfs": start_hdfs,
    "spark": start_spark,
    "airflow": start_airflow,
    "monitor": start_monitor,
}
_HEALTH: dict[str, Callable[[Settings], str | None]] = {
    "postgres": postgres_health,
    "kafka": kafka_health,
    "hdfs": hdfs_health,
    "spark": spark_health,
    "airflow": airflow_health,
    "monitor": monitor_health,
}


def expand(names: Sequence[str]) -> list[str]:
    """Service names in start order, ``all`` expanded; ``ServiceError`` for an unknown name."""
    result: list[str] = []
    for name in names:
        if name == "all":
            result += [s for s in SERVICES if s not in result]
        elif name in SERVICES:
            if name not in result:
                result.append(name)
        else:
            raise ServiceError(f"unknown service {name!r}; choose from {', '.join(SERVICES)} or all")
    return result


def start(name: str, settings: Settings) -> None:
    """Start one service (idempotent) and wait until it is healthy."""
    _STARTERS[expand([name])[0]](settings)


def stop(name: str, settings: Settings, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop one service (SIGTERM, bounded wait, SIGKILL); True if something was running."""
    service = expand([name])[0]
    stopped = False
    names = recorded_processes(settings, service)
    if service == "kafka" and len(names) > 1:
        # a KRaft quorum stops together: the last broker stopped alone waits for a quorum that is gone
        # (it needed the 30 s SIGKILL grace when stopped one after the other)

        with ThreadPoolExecutor(len(names)) as pool:
            stopped = any(list(pool.map(lambda p: terminate(settings, p, timeout), names)))
        return bool(sweep(settings, service, timeout)) or stopped
    # workers before the master: the reverse of the start order
    for process in reversed(names):
        stopped = terminate(settings, process, timeout) or stopped
    return bool(sweep(settings, service, timeout)) or stopped


@dataclass
class ServiceStatus:
    name: str
    pids: dict[str, int | None] = field(default_factory=dict)
    problem: str | None = None

    @property
    def running(self) -> bool:
        return bool(self.pids) and all(self.pids.values())

    @property
    def healthy(self) -> bool:
        return self.running and self.problem is None


def status(name: str, settings: Settings) -> ServiceStatus:
    """Pid liveness and health of one service."""
    name = expand([name])[0]
    result = ServiceStatus(name, {p: running_pid(settings, p) for p in processes(settings, name)})
    if not result.pids:
        result.problem = f"not used by the {settings.profile} profile"
    elif result.running:
        result.problem = _HEALTH[name](settings)
    else:
        result.problem = "not running"
    return result
