"""What every local service shares: errors, paths, pid records, start/stop through
``btc_platform.ops.process``, the environment-marker sweep, ports, java and the jar classpath."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import socket
from collections.abc import Sequence
from pathlib import Path

from btc_platform.ops import jars, process
from btc_platform.ops.process import FirstSignal, ProcessError, ProcessRecord
from btc_platform.settings import Settings

log = logging.getLogger(__name__)

#: Services in start order (stopped in reverse). postgres and spark only run in profiles that
#: use them (BTC_AIRFLOW_DATABASE=postgres, BTC_SPARK_WORKERS > 0); the monitor (alerts and
#: metrics) starts last.
SERVICES: tuple[str, ...] = ("postgres", "kafka", "hdfs", "spark", "airflow", "monitor")


def processes(settings: Settings, service: str) -> tuple[str, ...]:
    """Processes of ``service`` under these settings, in start order (empty: not used)."""
    if service == "postgres":
        return ("postgres",) if settings.airflow_database == "postgres" else ()
    if service == "kafka":
        if settings.kafka_brokers == 1:
            return ("kafka",)
        return tuple(f"kafka-{i + 1}" for i in range(settings.kafka_brokers))
    if service == "hdfs":
        return ("hdfs-namenode", "hdfs-datanode")
    if service == "spark":
        if not settings.spark_workers:
            return ()
        return ("spark-master", *(f"spark-worker-{i + 1}" for i in range(settings.spark_workers)))
    if service in ("airflow", "monitor"):
        return (service,)
    raise ServiceError(f"unknown service {service!r}")


def recorded_processes(settings: Settings, service: str) -> list[str]:
    """Processes of ``service`` with a pid record, whatever profile started them (``make stop``
    stops a cluster profile's processes without being told the profile)."""
    found = set(processes(settings, service))
    folder = run_dir(settings)
    if folder.is_dir():
        for path in folder.glob("*.pid"):
            if path.stem == service or path.stem.startswith(f"{service}-"):
                found.add(path.stem)
    return sorted(found)
STOP_TIMEOUT_S = 30.0
#: After the leader's SIGINT timed out, how long the group gets after SIGTERM.
GROUP_TERM_AFTER_INTERRUPT_S = 10.0
POLL_S = 0.25
#: Set in the environment of every process we start (and so inherited by everything they start,
#: e.g. producer and stream job launched by Airflow tasks in their own sessions): the data dir of
#: the platform instance and the service. ``stop`` sweeps by these markers, so nothing survives.
#: (Deliberately not BTC_-prefixed: launchers rebuild the BTC_* part of a child's environment.)
INSTANCE_ENV = "BTCPLATFORM_INSTANCE"
COMPONENT_ENV = "BTCPLATFORM_COMPONENT"

#: Processes that stop best when only their leader is interrupted: ``airflow standalone`` turns
#: SIGINT into an orderly stop of its components while it still drains their output pipes
#: (SIGTERM to the whole group kills the reader first and the components stall on shutdown).
_LEADER_INTERRUPT = frozenset({"airflow"})


class ServiceError(ProcessError):
    """A service could not be started, checked or stopped; the message says why."""


class PortInUseError(ServiceError):
    """A port the service needs is taken by a process that is not ours."""


# ---------------------------------------------------------------------------------------------
# process bookkeeping
# ---------------------------------------------------------------------------------------------
def run_dir(settings: Settings) -> Path:
    return settings.data_dir / "run"


def log_path(settings: Settings, name: str) -> Path:
    return settings.logs_dir / f"{name}.log"


def pid_path(settings: Settings, name: str) -> Path:
    return run_dir(settings) / f"{name}.pid"


def instance_id(settings: Settings) -> str:
    return str(settings.data_dir.resolve())


def read_pid(settings: Settings, name: str) -> ProcessRecord | None:
    return process.read_record(pid_path(settings, name))


def running_pid(settings: Settings, name: str) -> int | None:
    """Pid of our process ``name`` if it runs (a stale or unverifiable pid file is removed)."""
    path = pid_path(settings, name)
    record = process.read_record(path)
    if record is not None and process.is_alive(record):
        return record.pid
    if path.exists():
        log.debug("removing stale pid file of %s (%s)", name, path)
        path.unlink(missing_ok=True)
    return None


def spawn(settings: Settings, name: str, cmd: Sequence[str], env: dict[str, str], cwd: Path) -> ProcessRecord:
    """Start process ``name`` of a service detached, marked with this instance and component."""
    env = {**env, INSTANCE_ENV: instance_id(settings), COMPONENT_ENV: name.split("-")[0]}
    record = process.start(
        name, cmd, log_file=log_path(settings, name), record_file=pid_path(settings, name), env=env, cwd=cwd
    )
    log.info("started %s (pid %d), log %s", name, record.pid, record.log)
    return record


def terminate(settings: Settings, name: str, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop the process group of ``name`` (SIGINT to the leader first for Airflow, else SIGTERM
    to the group), bounded wait, then SIGKILL. True if the process was running."""
    path = pid_path(settings, name)
    record = process.read_record(path)
    if record is None:
        path.unlink(missing_ok=True)
        return False
    running = process.is_alive(record)
    if running:
        log.info("stopping %s (pid %d)", name, record.pid)
    elif record.machine == process.machine_id() and process.group_members(record.pgid):
        # leader gone, but children of its group may survive (e.g. airflow's sub-commands)
        log.warning("%s leader %d gone but its process group remains: killing it", name, record.pid)
    first = FirstSignal(signal.SIGINT) if name in _LEADER_INTERRUPT else None
    outcome = process.stop(record, timeout if running else 0.0, first, GROUP_TERM_AFTER_INTERRUPT_S)
    path.unlink(missing_ok=True)
    if running:
        log.info("stopped %s: %s", name, outcome)
    return running


def markers(settings: Settings, component: str | None = None) -> dict[str, str]:
    found = {INSTANCE_ENV: instance_id(settings)}
    if component:
        found[COMPONENT_ENV] = component
    return found


def marked_processes(settings: Settings, component: str | None = None) -> list[int]:
    """Live pids carrying this instance's marker (optionally of one component), except this
    process and its ancestors."""
    return process.marked_processes(markers(settings, component))


def sweep(settings: Settings, component: str | None, timeout: float = STOP_TIMEOUT_S) -> list[int]:
    """SIGTERM (then SIGKILL) every remaining process marked with this instance/component, e.g.
    ones that Airflow tasks started in their own sessions. Returns the pids that were found."""
    wanted = markers(settings, component)
    pids = process.marked_processes(wanted)
    if pids:
        log.info("stopping %d leftover process(es) of %s: %s", len(pids), component or "the platform", pids)
        process.stop_marked(wanted, timeout)
    return pids


# ---------------------------------------------------------------------------------------------
# ports, java, jars
# ---------------------------------------------------------------------------------------------
def check_port_free(port: int, what: str, setting: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"port {port} ({what}) is already in use by another process: stop it or set {setting}"
                ) from exc
            raise


def http_ok(url: str, timeout: tuple[float, float] = (2.0, 5.0)):
    """``(response, None)`` when ``url`` answers HTTP 200, else ``(None, why not)`` (health checks)."""
    import requests

    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        return None, f"{url} not answering: {exc.__class__.__name__}"
    if response.status_code != 200:
        return None, f"{url} returned HTTP {response.status_code}"
    return response, None


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate and candidate.is_file():
        return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise ServiceError("`java` not found: install Java 17 (apt-get install openjdk-17-jre-headless) or set JAVA_HOME")
    return found


def classpath(settings: Settings, group: str) -> str:
    if not jars.is_ready(settings, (group,)):
        jars.ensure_jars(settings, (group,))
    return jars.classpath(group, settings)


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CLASSPATH", None)
    return env
