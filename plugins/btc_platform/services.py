"""Local real services of the platform: Kafka (KRaft), HDFS (NameNode + DataNode), Airflow.

CLI::

    btc-services start  kafka|hdfs|airflow|all [...]
    btc-services stop   kafka|hdfs|airflow|all [...]
    btc-services status kafka|hdfs|airflow|all [...]
    btc-services run --source live|simulate|replay

Python API (used by the test fixtures): ``start(name, settings)``, ``stop(name, settings)``,
``status(name, settings)``, ``ensure_topic(settings, topic, partitions)``.

Every process runs detached in its own process group, with its pid file under
``<data_dir>/run`` and its log under ``<data_dir>/logs``. Start is idempotent, waits on a real
health check (bounded, never a fixed sleep) and fails with the log tail if the process dies or
the check times out. Stop sends SIGTERM to the process group, waits (bounded), then SIGKILL.
Kafka and HDFS run from the jars that btc_platform.jars resolved with Maven; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import base64
import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from btc_platform.settings import Settings

log = logging.getLogger(__name__)

SERVICES: tuple[str, ...] = ("kafka", "hdfs", "airflow")
#: Processes of each service, in start order (stopped in reverse).
PROCESSES: dict[str, tuple[str, ...]] = {
    "kafka": ("kafka",),
    "hdfs": ("hdfs-namenode", "hdfs-datanode"),
    "airflow": ("airflow",),
}
KAFKA_START_TIMEOUT_S = 90.0
AIRFLOW_START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0
_POLL_S = 0.25
#: Set in the environment of every process we start (and so inherited by everything they start,
#: e.g. producer and stream job launched by Airflow tasks in their own sessions): the data dir of
#: the platform instance and the service. ``stop`` sweeps by these markers, so nothing survives.
#: (Deliberately not BTC_-prefixed: launchers rebuild the BTC_* part of a child's environment.)
INSTANCE_ENV = "BTCPLATFORM_INSTANCE"
COMPONENT_ENV = "BTCPLATFORM_COMPONENT"


class ServiceError(RuntimeError):
    """A service could not be started, checked or stopped; the message says why."""


class PortInUseError(ServiceError):
    """A port the service needs is taken by a process that is not ours."""


# ---------------------------------------------------------------------------------------------
# process bookkeeping
# ---------------------------------------------------------------------------------------------
def run_dir(settings: Settings) -> Path:
    return settings.data_dir / "run"


def log_path(settings: Settings, process: str) -> Path:
    return settings.logs_dir / f"{process}.log"


def _pid_path(settings: Settings, process: str) -> Path:
    return run_dir(settings) / f"{process}.pid"


def _proc_start_ticks(pid: int) -> str | None:
    """Start time of ``pid`` (clock ticks since boot) or None if it does not exist / is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


#: Popen objects of processes this interpreter started (reaped on poll so they never linger
#: as zombies when the test fixtures stop and restart services).
_CHILDREN: dict[int, subprocess.Popen] = {}


@dataclass(frozen=True)
class PidRecord:
    pid: int
    start_ticks: str
    command: str

    def alive(self) -> bool:
        child = _CHILDREN.get(self.pid)
        if child is not None and child.poll() is not None:
            return False
        return _proc_start_ticks(self.pid) == self.start_ticks


def _read_pid(settings: Settings, process: str) -> PidRecord | None:
    path = _pid_path(settings, process)
    try:
        data = json.loads(path.read_text())
        return PidRecord(int(data["pid"]), str(data["start_ticks"]), str(data.get("command", "")))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError) as exc:
        raise ServiceError(f"corrupt pid file {path} ({exc}); delete it after checking no {process} runs") from exc


def running_pid(settings: Settings, process: str) -> int | None:
    """Pid of our ``process`` if it runs (stale pid files are removed)."""
    record = _read_pid(settings, process)
    if record is None:
        return None
    if record.alive():
        return record.pid
    log.debug("removing stale pid file of %s (pid %s)", process, record.pid)
    _pid_path(settings, process).unlink(missing_ok=True)
    return None


def _instance_id(settings: Settings) -> str:
    return str(settings.data_dir.resolve())


def _spawn(settings: Settings, process: str, cmd: Sequence[str], env: dict[str, str], cwd: Path) -> int:
    env = {**env, INSTANCE_ENV: _instance_id(settings), COMPONENT_ENV: process.split("-")[0]}
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    run_dir(settings).mkdir(parents=True, exist_ok=True)
    log_file = log_path(settings, process)
    with open(log_file, "ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} starting {process}\n".encode())
        out.flush()
        child = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(cwd),
            start_new_session=True,
        )
    _CHILDREN[child.pid] = child
    ticks = _proc_start_ticks(child.pid) or ""
    record = {"pid": child.pid, "start_ticks": ticks, "command": " ".join(cmd[:3])}
    _pid_path(settings, process).write_text(json.dumps(record))
    log.info("started %s (pid %d), log %s", process, child.pid, log_file)
    return child.pid


def _log_tail(settings: Settings, process: str, lines: int = 25) -> str:
    try:
        text = log_path(settings, process).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _wait_until(
    settings: Settings,
    process: str,
    check: Callable[[], str | None],
    timeout: float,
    what: str,
) -> float:
    """Poll ``check`` (returns None when healthy, else a reason) until healthy; fail fast if the
    process exits; raise ``ServiceError`` with the log tail after ``timeout``. Returns seconds."""
    started = time.monotonic()
    deadline = started + timeout
    reason = "not checked yet"
    while True:
        if running_pid(settings, process) is None:
            raise ServiceError(
                f"{process} exited while waiting for {what}; last log lines "
                f"({log_path(settings, process)}):\n{_log_tail(settings, process)}"
            )
        previous, reason = reason, check()
        if reason is None:
            return time.monotonic() - started
        if reason != previous:
            log.info("%s: waiting for %s: %s", process, what, reason)
        if time.monotonic() >= deadline:
            raise ServiceError(
                f"{process}: {what} not reached within {timeout:.0f} s ({reason}); last log lines "
                f"({log_path(settings, process)}):\n{_log_tail(settings, process)}"
            )
        time.sleep(_POLL_S)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(0) also succeeds for zombies: look for a live member.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _terminate(settings: Settings, process: str, timeout: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM the process group of ``process``, wait, then SIGKILL. True if something ran."""
    record = _read_pid(settings, process)
    if record is None:
        return False
    pid = record.pid
    if not record.alive():
        # leader gone, but children of its group may survive (e.g. airflow's sub-commands)
        if _group_alive(pid):
            log.warning("%s leader %d gone but its process group remains: killing it", process, pid)
            _signal_group(pid, signal.SIGKILL)
        _pid_path(settings, process).unlink(missing_ok=True)
        return False
    log.info("stopping %s (pid %d)", process, pid)
    steps: list[tuple[str, Callable[[], None], float]] = []
    if process in _LEADER_INTERRUPT:
        steps.append(("SIGINT to the leader", lambda: _signal_pid(pid, signal.SIGINT), timeout))
        timeout = 10.0
    steps.append(("SIGTERM", lambda: _signal_group(pid, signal.SIGTERM), timeout))
    for what, send, wait_s in steps:
        send()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and (record.alive() or _group_alive(pid)):
            time.sleep(_POLL_S)
        if not (record.alive() or _group_alive(pid)):
            break
        log.warning("%s did not stop within %.0f s after %s", process, wait_s, what)
    if record.alive() or _group_alive(pid):
        log.warning("%s: sending SIGKILL", process)
        _signal_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (record.alive() or _group_alive(pid)):
            time.sleep(_POLL_S)
        if record.alive() or _group_alive(pid):
            raise ServiceError(f"{process} (pid {pid}) survived SIGKILL")
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait(timeout=5)
    _pid_path(settings, process).unlink(missing_ok=True)
    log.info("stopped %s", process)
    return True


#: Processes that stop best when only their leader is interrupted: ``airflow standalone`` turns
#: SIGINT into an orderly stop of its components while it still drains their output pipes
#: (SIGTERM to the whole group kills the reader first and the components stall on shutdown).
_LEADER_INTERRUPT = frozenset({"airflow"})


def _signal_pid(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            break
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])
    return pids


def marked_processes(settings: Settings, component: str | None = None) -> list[int]:
    """Live pids carrying this instance's marker (optionally of one component), except this
    process and its ancestors."""
    wanted = f"{INSTANCE_ENV}={_instance_id(settings)}".encode()
    wanted_component = f"{COMPONENT_ENV}={component}".encode() if component else None
    skip = _ancestors()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        pid = int(environ.parent.name)
        if pid in skip:
            continue
        try:
            entries = environ.read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if wanted in entries and (wanted_component is None or wanted_component in entries):
            if _proc_start_ticks(pid) is not None:
                found.append(pid)
    return sorted(found)


def _sweep(settings: Settings, component: str | None, timeout: float = STOP_TIMEOUT_S) -> list[int]:
    """SIGTERM (then SIGKILL) every remaining process marked with this instance/component, e.g.
    ones that Airflow tasks started in their own sessions. Returns the pids that were found."""
    pids = marked_processes(settings, component)
    if not pids:
        return []
    log.info("stopping %d leftover process(es) of %s: %s", len(pids), component or "the platform", pids)
    own_group = os.getpgrp()

    def send(sig: signal.Signals) -> None:
        for pid in marked_processes(settings, component):
            try:
                pgid = os.getpgid(pid)
                if pgid != own_group:
                    os.killpg(pgid, sig)
                else:
                    os.kill(pid, sig)
            except ProcessLookupError:
                continue

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and marked_processes(settings, component):
        time.sleep(_POLL_S)
    if marked_processes(settings, component):
        log.warning("leftover processes did not stop within %.0f s: sending SIGKILL", timeout)
        send(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and marked_processes(settings, component):
            time.sleep(_POLL_S)
    for pid in pids:
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            child.wait(timeout=5)
    return pids


def _check_port_free(port: int, what: str, setting: str) -> None:
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


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate and candidate.is_file():
        return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise ServiceError("`java` not found: install Java 17 (apt-get install openjdk-17-jre-headless) or set JAVA_HOME")
    return found


def _classpath(settings: Settings, group: str) -> str:
    from btc_platform import jars

    if not jars.is_ready(settings, (group,)):
        jars.ensure_jars(settings, (group,))
    return jars.classpath(group, settings)


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CLASSPATH", None)
    return env


# ---------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------
def kafka_dir(settings: Settings) -> Path:
    return settings.data_dir / "kafka"


def _local_bootstrap(settings: Settings) -> str:
    return f"127.0.0.1:{settings.kafka_port}"


def _kafka_cluster_id(settings: Settings) -> str:
    """The cluster id, generated once and kept in the data dir (the log dirs are formatted with it).

    Never starting with "-" (like Kafka's own Uuid.randomUuid()): kafka-storage would read such an
    id as an option and fail the format, 1 start in 64 with plain URL-safe base64. A stored id
    starting with "-" never formatted anything, so it is replaced.
    """
    path = kafka_dir(settings) / "cluster_id"
    if path.is_file() and not path.read_text().startswith("-"):
        return path.read_text().strip()
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cluster_id + "\n")
    return cluster_id


def _write_kafka_config(settings: Settings) -> tuple[Path, Path]:
    base = kafka_dir(settings)
    conf_dir = base / "config"
    conf_dir.mkdir(parents=True, exist_ok=True)
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{settings.kafka_controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{settings.kafka_port},CONTROLLER://127.0.0.1:{settings.kafka_controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{settings.kafka_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(base / "data"),
        "num.partitions": str(settings.kafka_partitions),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "log.retention.hours": "168",
        "log.segment.bytes": str(256 * 1024 * 1024),
    }
    server_props = conf_dir / "server.properties"
    server_props.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    log4j = conf_dir / "log4j2.properties"
    log4j.write_text(
        "status = warn\n"
        "appender.out.type = Console\n"
        "appender.out.name = STDOUT\n"
        "appender.out.layout.type = PatternLayout\n"
        "appender.out.layout.pattern = [%d{ISO8601}{UTC}] %p %m (%c)%n\n"
        "rootLogger.level = info\n"
        "rootLogger.appenderRef.out.ref = STDOUT\n"
        "logger.statechange.name = state.change.logger\n"
        "logger.statechange.level = warn\n"
        "logger.request.name = kafka.request.logger\n"
        "logger.request.level = warn\n"
    )
    return server_props, log4j


def _kafka_java_cmd(settings: Settings, log4j: Path, main_class: str, heap: str, min_heap: str) -> list[str]:
    return [
        _java(),
        f"-Xms{min_heap}",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        "-Djava.net.preferIPv4Stack=true",
        f"-Dlog4j2.configurationFile={log4j}",
        f"-Dkafka.logs.dir={settings.logs_dir}",
        "-cp",
        _classpath(settings, "kafka"),
        main_class,
    ]


def _format_kafka(settings: Settings, server_props: Path, log4j: Path) -> None:
    data = kafka_dir(settings) / "data"
    if (data / "meta.properties").is_file():
        return
    cluster_id = _kafka_cluster_id(settings)
    log.info("formatting Kafka log dir %s (cluster id %s)", data, cluster_id)
    cmd = _kafka_java_cmd(settings, log4j, "kafka.tools.StorageTool", "256m", "32m")
    cmd += ["format", "--config", str(server_props), "--cluster-id", cluster_id, "--ignore-formatted"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_base_env(), check=False)
    if proc.returncode != 0:
        raise ServiceError(f"formatting Kafka storage failed:\n{(proc.stdout + proc.stderr).strip()[-2000:]}")


def _admin(bootstrap: str):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000, "log_level": 3})


def kafka_health(settings: Settings, timeout: float = 3.0) -> str | None:
    """None if the local broker answers a metadata request, else the reason."""
    from confluent_kafka import KafkaException

    if not _port_open(settings.kafka_port):
        return f"nothing listens on 127.0.0.1:{settings.kafka_port}"
    try:
        metadata = _admin(_local_bootstrap(settings)).list_topics(timeout=timeout)
    except KafkaException as exc:
        return f"metadata request failed: {exc}"
    if not metadata.brokers:
        return "broker reports no brokers yet"
    return None


def ensure_topic(settings: Settings, topic: str | None = None, partitions: int | None = None,
                 timeout: float = 30.0) -> str:  # fmt: skip
    """Create ``topic`` (default settings.kafka_topic) with ``partitions`` if it does not exist; if it
    exists with fewer partitions, add partitions. Waits until its metadata shows every partition."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewPartitions, NewTopic

    topic = topic or settings.kafka_topic
    partitions = partitions or settings.kafka_partitions
    admin = _admin(_local_bootstrap(settings))
    future = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic]
    try:
        future.result(timeout=timeout)
        log.info("created topic %s with %d partitions", topic, partitions)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise ServiceError(f"creating topic {topic!r} failed: {exc}") from exc
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(topic=topic, timeout=timeout).topics.get(topic)
        ready = meta is not None and meta.error is None and meta.partitions
        if ready and all(p.leader >= 0 for p in meta.partitions.values()):
            current = len(meta.partitions)
            if current >= partitions:
                if current > partitions:
                    log.warning("topic %s has %d partitions (> %d configured); Kafka cannot shrink it",
                                topic, current, partitions)  # fmt: skip
                return topic
            log.info("topic %s has %d partitions, increasing to %d", topic, current, partitions)
            admin.create_partitions([NewPartitions(topic, partitions)])[topic].result(timeout=timeout)
        if time.monotonic() >= deadline:
            raise ServiceError(f"topic {topic!r} has no leader for every partition after {timeout:.0f} s")
        time.sleep(_POLL_S)


def start_kafka(settings: Settings) -> None:
    if running_pid(settings, "kafka") is not None:
        if kafka_health(settings) is None:
            log.info("kafka already running on %s", _local_bootstrap(settings))
            ensure_topic(settings)
            return
        _terminate(settings, "kafka")
    _check_port_free(settings.kafka_port, "Kafka broker", "BTC_KAFKA_PORT")
    _check_port_free(settings.kafka_controller_port, "Kafka controller", "BTC_KAFKA_CONTROLLER_PORT")
    started = time.monotonic()
    server_props, log4j = _write_kafka_config(settings)
    _format_kafka(settings, server_props, log4j)
    cmd = _kafka_java_cmd(settings, log4j, "kafka.Kafka", settings.kafka_heap, settings.kafka_heap) + [str(server_props)]
    _spawn(settings, "kafka", cmd, _base_env(), kafka_dir(settings))
    _wait_until(settings, "kafka", lambda: kafka_health(settings), KAFKA_START_TIMEOUT_S, "broker health")
    ensure_topic(settings)
    log.info("kafka ready on %s in %.1f s (topic %s, %d partitions)", _local_bootstrap(settings),
             time.monotonic() - started, settings.kafka_topic, settings.kafka_partitions)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# HDFS
# ---------------------------------------------------------------------------------------------
def hdfs_dir(settings: Settings) -> Path:
    return settings.data_dir / "hdfs"


def _xml(props: dict[str, str]) -> str:
    from xml.sax.saxutils import escape

    body = "".join(
        f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>\n" for k, v in props.items()
    )
    return f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n'


def _write_hdfs_config(settings: Settings) -> Path:
    base = hdfs_dir(settings)
    conf = base / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "core-site.xml").write_text(
        _xml({"fs.defaultFS": settings.hdfs_uri, "hadoop.tmp.dir": str(base / "tmp")})
    )
    (conf / "hdfs-site.xml").write_text(
        _xml(
            {
                "dfs.replication": "1",
                "dfs.permissions.enabled": "false",
                "dfs.webhdfs.enabled": "true",
                "dfs.namenode.name.dir": f"file://{base / 'name'}",
                "dfs.datanode.data.dir": f"file://{base / 'data'}",
                "dfs.namenode.rpc-address": f"127.0.0.1:{settings.hdfs_namenode_port}",
                "dfs.namenode.rpc-bind-host": "127.0.0.1",
                "dfs.namenode.http-address": f"127.0.0.1:{settings.hdfs_namenode_http_port}",
                "dfs.namenode.http-bind-host": "127.0.0.1",
                "dfs.namenode.secondary.http-address": "127.0.0.1:0",
                "dfs.datanode.address": f"127.0.0.1:{settings.hdfs_datanode_port}",
                "dfs.datanode.http.address": f"127.0.0.1:{settings.hdfs_datanode_http_port}",
                "dfs.datanode.ipc.address": f"127.0.0.1:{settings.hdfs_datanode_ipc_port}",
                "dfs.datanode.hostname": "127.0.0.1",
                "dfs.namenode.datanode.registration.ip-hostname-check": "false",
                "dfs.namenode.safemode.extension": "0",
                "dfs.namenode.handler.count": "5",
                "dfs.datanode.handler.count": "3",
                "dfs.heartbeat.interval": "1",
                "dfs.namenode.heartbeat.recheck-interval": "15000",
            }
        )
    )
    (conf / "log4j.properties").write_text(
        "log4j.rootLogger=INFO,console\n"
        "log4j.appender.console=org.apache.log4j.ConsoleAppender\n"
        "log4j.appender.console.target=System.out\n"
        "log4j.appender.console.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n\n"
        "log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR\n"
        "log4j.logger.org.apache.hadoop.hdfs.StateChange=WARN\n"
        "log4j.logger.BlockStateChange=WARN\n"
    )
    return conf


def _hdfs_java_cmd(settings: Settings, conf: Path, main_class: str) -> list[str]:
    return [
        _java(),
        "-Xms64m",
        f"-Xmx{settings.hdfs_heap}",
        "-XX:+UseG1GC",
        "-Djava.net.preferIPv4Stack=true",
        f"-Dhadoop.log.dir={settings.logs_dir}",
        f"-Dlog4j.configuration=file:{conf / 'log4j.properties'}",
        "--add-opens=java.base/java.lang=ALL-UNNAMED",
        "--add-opens=java.base/java.util=ALL-UNNAMED",
        "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
        "--add-opens=java.base/java.nio=ALL-UNNAMED",
        "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
        "-cp",
        f"{conf}{os.pathsep}{_classpath(settings, 'hadoop')}",
        main_class,
    ]


def _hdfs_env() -> dict[str, str]:
    env = _base_env()
    for key in ("HADOOP_CONF_DIR", "HADOOP_HOME", "HADOOP_OPTS"):
        env.pop(key, None)
    return env


def _format_hdfs(settings: Settings, conf: Path) -> None:
    name_dir = hdfs_dir(settings) / "name"
    if (name_dir / "current" / "VERSION").is_file():
        return
    log.info("formatting HDFS name dir %s", name_dir)
    cmd = _hdfs_java_cmd(settings, conf, "org.apache.hadoop.hdfs.server.namenode.NameNode")
    cmd += ["-format", "-nonInteractive", "-force", "-clusterid", "btc-platform"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=_hdfs_env(), check=False)
    if proc.returncode != 0 or not (name_dir / "current" / "VERSION").is_file():
        raise ServiceError(f"formatting HDFS failed:\n{(proc.stdout + proc.stderr).strip()[-2000:]}")


def hdfs_health(settings: Settings) -> str | None:
    """None if the NameNode is out of safe mode with a live DataNode, else the reason."""
    import requests

    from btc_platform.hdfs import HdfsNotReadyError, namenode_http_url, namenode_state

    try:
        state = namenode_state(namenode_http_url(settings))
    except (requests.RequestException, ValueError, HdfsNotReadyError) as exc:
        return f"NameNode not answering: {exc.__class__.__name__}"
    if state.safemode:
        return f"in safe mode: {state.safemode}"
    if state.live_datanodes == 0:
        return "no live datanode"
    return None


def start_hdfs(settings: Settings) -> None:
    from btc_platform.hdfs import HdfsNotReadyError, wait_for_hdfs_ready

    if running_pid(settings, "hdfs-namenode") and running_pid(settings, "hdfs-datanode"):
        if hdfs_health(settings) is None:
            log.info("hdfs already running at %s", settings.hdfs_uri)
            return
    started = time.monotonic()
    for process in reversed(PROCESSES["hdfs"]):
        _terminate(settings, process)
    for port, what, setting in (
        (settings.hdfs_namenode_port, "NameNode RPC", "BTC_HDFS_NAMENODE_PORT"),
        (settings.hdfs_namenode_http_port, "NameNode HTTP", "BTC_HDFS_NAMENODE_HTTP_PORT"),
        (settings.hdfs_datanode_port, "DataNode", "BTC_HDFS_DATANODE_PORT"),
        (settings.hdfs_datanode_http_port, "DataNode HTTP", "BTC_HDFS_DATANODE_HTTP_PORT"),
        (settings.hdfs_datanode_ipc_port, "DataNode IPC", "BTC_HDFS_DATANODE_IPC_PORT"),
    ):
        _check_port_free(port, what, setting)
    conf = _write_hdfs_config(settings)
    _format_hdfs(settings, conf)
    env = _hdfs_env()
    _spawn(settings, "hdfs-namenode",
           _hdfs_java_cmd(settings, conf, "org.apache.hadoop.hdfs.server.namenode.NameNode"), env, hdfs_dir(settings))  # fmt: skip
    _wait_until(settings, "hdfs-namenode", lambda: None if _port_open(settings.hdfs_namenode_http_port) else "HTTP port closed",
                settings.hdfs_safemode_timeout_s, "NameNode HTTP")  # fmt: skip
    _spawn(settings, "hdfs-datanode",
           _hdfs_java_cmd(settings, conf, "org.apache.hadoop.hdfs.server.datanode.DataNode"), env, hdfs_dir(settings))  # fmt: skip
    log.info("waiting (up to %.0f s) for HDFS to leave safe mode with a live datanode", settings.hdfs_safemode_timeout_s)

    def check() -> str | None:
        if running_pid(settings, "hdfs-datanode") is None:
            raise ServiceError(f"hdfs-datanode exited; last log lines:\n{_log_tail(settings, 'hdfs-datanode')}")
        return hdfs_health(settings)

    try:
        _wait_until(settings, "hdfs-namenode", check, settings.hdfs_safemode_timeout_s, "safe mode off + live datanode")
        wait_for_hdfs_ready(settings, timeout=5)
    except (ServiceError, HdfsNotReadyError) as exc:
        raise ServiceError(f"HDFS did not become ready: {exc}") from exc
    log.info("hdfs ready at %s (web UI http://127.0.0.1:%d) in %.1f s", settings.hdfs_uri,
             settings.hdfs_namenode_http_port, time.monotonic() - started)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Airflow
# ---------------------------------------------------------------------------------------------
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
    import requests

    from btc_platform.airflow_env import api_url

    url = f"{api_url(settings)}/api/v2/monitor/health"
    try:
        response = requests.get(url, timeout=(2.0, 5.0))
    except requests.RequestException as exc:
        return f"{url} not answering: {exc.__class__.__name__}"
    if response.status_code != 200:
        return f"{url} returned HTTP {response.status_code}"
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


def start_airflow(settings: Settings) -> None:
    from btc_platform.airflow_env import airflow_env, airflow_home, api_url, password_file

    if running_pid(settings, "airflow") is not None and airflow_health(settings) is None:
        log.info("airflow already running at %s", api_url(settings))
    else:
        _terminate(settings, "airflow")
        _check_port_free(settings.airflow_port, "Airflow API server", "BTC_AIRFLOW_PORT")
        started = time.monotonic()
        env = _base_env()
        env.update(airflow_env(settings))
        airflow_home(settings).mkdir(parents=True, exist_ok=True)
        _spawn(settings, "airflow", [_airflow_bin(), "standalone"], env, airflow_home(settings))
        _wait_until(settings, "airflow", lambda: airflow_health(settings), AIRFLOW_START_TIMEOUT_S, "API health")
        log.info("airflow ready in %.1f s", time.monotonic() - started)
    log.info("Airflow UI: %s (user admin, password in %s)", api_url(settings), password_file(settings))


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
_STARTERS: dict[str, Callable[[Settings], None]] = {
    "kafka": start_kafka,
    "hdfs": start_hdfs,
    "airflow": start_airflow,
}
_HEALTH: dict[str, Callable[[Settings], str | None]] = {
    "kafka": kafka_health,
    "hdfs": hdfs_health,
    "airflow": airflow_health,
}


def _expand(names: Sequence[str]) -> list[str]:
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
    _STARTERS[_expand([name])[0]](settings)


def stop(name: str, settings: Settings, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop one service (SIGTERM, bounded wait, SIGKILL); True if something was running."""
    service = _expand([name])[0]
    stopped = False
    for process in reversed(PROCESSES[service]):
        stopped = _terminate(settings, process, timeout) or stopped
    return bool(_sweep(settings, service, timeout)) or stopped


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
    name = _expand([name])[0]
    result = ServiceStatus(name, {p: running_pid(settings, p) for p in PROCESSES[name]})
    if result.running:
        result.problem = _HEALTH[name](settings)
    else:
        result.problem = "not running"
    return result


def stop_all(settings: Settings) -> None:
    """Stop every service in reverse start order and verify nothing of ours is left."""
    from btc_platform import supervisor

    # producer and stream first, gracefully (SIGTERM to the driver, bounded wait); one that the
    # supervisor DAG restarts meanwhile is swept with Airflow's processes below
    for process in supervisor.NAMES:
        supervisor.stop(process, settings)
    for name in reversed(SERVICES):
        stop(name, settings)
    _sweep(settings, None)
    left = [p for procs in PROCESSES.values() for p in procs if running_pid(settings, p)]
    left += [str(pid) for pid in marked_processes(settings)]
    if left:
        raise ServiceError(f"still running after stop: {left}")
    log.info("no process of this platform instance (%s) is left", _instance_id(settings))


def run(settings: Settings, source: str) -> None:
    """Start the platform: Kafka, HDFS when the storage root is hdfs://, then Airflow."""
    from btc_platform.airflow_env import api_url, password_file
    from btc_platform.settings import load_settings

    overrides = {name: getattr(settings, name) for name in settings.model_fields_set}
    settings = load_settings(**{**overrides, "producer_source": source})
    start_kafka(settings)
    if settings.storage_root.startswith("hdfs://"):
        start_hdfs(settings)
    start_airflow(settings)
    from btc_platform.supervisor import wait_until_supervised

    log.info("waiting for the btc_stream_supervisor DAG to start the producer and the stream ...")
    for line in wait_until_supervised(settings):
        log.info("  %s", line)
    log.info("platform up (producer source %s)", source)
    log.info("  Airflow UI : %s  (user admin, password in %s)", api_url(settings), password_file(settings))
    log.info("  Kafka      : %s topic %s", settings.kafka_bootstrap_servers, settings.kafka_topic)
    log.info("  storage    : %s", settings.storage_root)
    log.info("  logs       : %s", settings.logs_dir)
    log.info("  stop with  : make stop")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Start, stop and check the local Kafka (KRaft), HDFS and Airflow of the platform. "
        "Configuration comes from BTC_* environment variables (see .env.example); data and logs go "
        "under BTC_DATA_DIR."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command, text in (
        ("start", "start services and wait until they are healthy (idempotent)"),
        ("stop", "stop services: SIGTERM to the process group, bounded wait, then SIGKILL"),
        ("status", "show pid and health of services; exit 1 if one is not healthy (with `all`, a stopped "
                   "HDFS only counts when BTC_STORAGE_ROOT is hdfs://)"),
    ):
        p = sub.add_parser(command, help=text, description=text)
        p.add_argument("services", nargs="+", choices=(*SERVICES, "all"), metavar="SERVICE",
                       help=f"one or more of {', '.join(SERVICES)}, or all")  # fmt: skip
    p = sub.add_parser("run", help="start the platform (Kafka, HDFS if the storage root is hdfs://, Airflow)",
                       description="start the platform (Kafka, HDFS if the storage root is hdfs://, Airflow)")  # fmt: skip
    p.add_argument("--source", choices=("live", "simulate", "replay"), default=None,
                   help="producer data source, passed on as BTC_PRODUCER_SOURCE (default: the setting, 'live')")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip

    from btc_platform.jars import JarsError
    from btc_platform.settings import SettingsError, get_settings

    try:
        settings = get_settings()
        if args.command == "run":
            run(settings, args.source or settings.producer_source)
        elif args.command == "start":
            for name in _expand(args.services):
                start(name, settings)
        elif args.command == "stop":
            names = _expand(args.services)
            if names == list(SERVICES):
                stop_all(settings)
            else:
                for name in reversed(names):
                    stop(name, settings)
        else:
            healthy = True
            for name in _expand(args.services):
                st = status(name, settings)
                optional = (
                    "all" in args.services and name == "hdfs" and not settings.storage_root.startswith("hdfs://")
                )
                pids = ", ".join(f"{p}={pid or '-'}" for p, pid in st.pids.items())
                log.info("%-8s %-9s %s%s", name, "healthy" if st.healthy else ("unhealthy" if st.running else "stopped"),
                         pids, "" if st.healthy else f"  ({st.problem})")  # fmt: skip
                # with `status all`, a stopped HDFS is fine when the storage root is not on HDFS
                healthy = healthy and (st.healthy or (optional and not st.running))
            return 0 if healthy else 1
    except (ServiceError, JarsError, SettingsError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
