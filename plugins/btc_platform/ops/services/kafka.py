"""Kafka (KRaft on 127.0.0.1) from the jars btc_platform.ops.jars resolved: config, storage format
(once), start with a metadata health check, topic creation.

One broker (process ``kafka``, data in ``<data_dir>/kafka``) by default; with
``BTC_KAFKA_BROKERS`` > 1 (the cluster profile) that many combined broker+controller nodes
(processes ``kafka-1`` ..., data in ``<data_dir>/kafka-cluster/node-<i>``) forming one KRaft
quorum, broker i on ``BTC_KAFKA_PORT + 100*i``. The topic gets ``BTC_KAFKA_REPLICATION_FACTOR``
replicas and ``min.insync.replicas``; Kafka's internal topics are replicated the same way."""

from __future__ import annotations

import base64
import logging
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from btc_platform.ops import process
from btc_platform.ops.services import base
from btc_platform.ops.services.base import ServiceError

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

    from btc_platform.settings import Settings

log = logging.getLogger(__name__)

KAFKA_START_TIMEOUT_S = 90.0


def kafka_dir(settings: Settings) -> Path:
    """Data of the broker(s): ``kafka/`` for the single broker, ``kafka-cluster/`` for several."""
    return settings.data_dir / ("kafka" if settings.kafka_brokers == 1 else "kafka-cluster")


def broker_names(settings: Settings) -> tuple[str, ...]:
    """Process names of the local brokers: ``kafka``, or ``kafka-1`` ... ``kafka-N``."""
    if settings.kafka_brokers == 1:
        return ("kafka",)
    return tuple(f"kafka-{i + 1}" for i in range(settings.kafka_brokers))


def _node_dir(settings: Settings, index: int) -> Path:
    root = kafka_dir(settings)
    return root if settings.kafka_brokers == 1 else root / f"node-{index + 1}"


def _local_bootstrap(settings: Settings) -> str:
    return ",".join(f"127.0.0.1:{port}" for port, _ in settings.kafka_broker_ports())


def kafka_cluster_id(settings: Settings) -> str:
    """The cluster id, generated once and kept in the data dir (the log dirs are formatted with it).

    Never starting with "-" (like Kafka's own Uuid.randomUuid()): kafka-storage would read such an
    id as an option and fail the format, 1 start in 64 with plain URL-safe base64. A stored id
    starting with "-" never formatted anything, so it is replaced.
    """
    path = kafka_dir(settings) / "cluster_id"
    if path.is_file() and not path.read_text().startswith("-"):
        return path.read_text().strip()
    new_id = "-"
    while new_id.startswith("-"):
        new_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new_id + "\n")
    return new_id


def _write_kafka_config(settings: Settings, index: int = 0) -> tuple[Path, Path]:
    root = _node_dir(settings, index)
    conf_dir = root / "config"
    conf_dir.mkdir(parents=True, exist_ok=True)
    ports = settings.kafka_broker_ports()
    port, controller_port = ports[index]
    replicas = str(settings.kafka_replication_factor)
    min_isr = str(settings.kafka_min_insync_replicas)
    props = {
        "process.roles": "broker,controller",
        "node.id": str(index + 1),
        "controller.quorum.voters": ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports)),
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(root / "data"),
        "num.partitions": str(settings.kafka_partitions),
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
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
        base.java(),
        f"-Xms{min_heap}",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        "-Djava.net.preferIPv4Stack=true",
        f"-Dlog4j2.configurationFile={log4j}",
        f"-Dkafka.logs.dir={settings.logs_dir}",
        "-cp",
        base.classpath(settings, "kafka"),
        main_class,
    ]


def _format_kafka(settings: Settings, server_props: Path, log4j: Path, index: int = 0) -> None:
    data = _node_dir(settings, index) / "data"
    if (data / "meta.properties").is_file():
        return
    cluster_id = kafka_cluster_id(settings)
    log.info("formatting Kafka log dir %s (cluster id %s)", data, cluster_id)
    cmd = _kafka_java_cmd(settings, log4j, "kafka.tools.StorageTool", "256m", "32m")
    cmd += ["format", "--config", str(server_props), "--cluster-id", cluster_id, "--ignore-formatted"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=base.base_env(), check=False)
    if proc.returncode != 0:
        raise ServiceError(f"formatting Kafka storage failed:\n{(proc.stdout + proc.stderr).strip()[-2000:]}")


def _admin(bootstrap: str) -> AdminClient:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000, "log_level": 3})


def kafka_health(settings: Settings, timeout: float = 3.0) -> str | None:
    """None if every local broker listens and the metadata lists all of them, else the reason."""
    from confluent_kafka import KafkaException

    for port, _ in settings.kafka_broker_ports():
        if not base.port_open(port):
            return f"nothing listens on 127.0.0.1:{port}"
    try:
        metadata = _admin(_local_bootstrap(settings)).list_topics(timeout=timeout)
    except KafkaException as exc:
        return f"metadata request failed: {exc}"
    if len(metadata.brokers) < settings.kafka_brokers:
        return f"{len(metadata.brokers)} of {settings.kafka_brokers} brokers registered"
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
    new = NewTopic(topic, num_partitions=partitions, replication_factor=settings.kafka_replication_factor,
                   config={"min.insync.replicas": str(settings.kafka_min_insync_replicas)})  # fmt: skip
    future = admin.create_topics([new])[topic]
    try:
        future.result(timeout=timeout)
        log.info("created topic %s with %d partitions, replication factor %d, min.insync.replicas %d", topic,
                 partitions, settings.kafka_replication_factor, settings.kafka_min_insync_replicas)  # fmt: skip
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise ServiceError(f"creating topic {topic!r} failed: {exc}") from exc
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(topic=topic, timeout=timeout).topics.get(topic)
        ready = meta is not None and meta.error is None and meta.partitions
        if ready and all(p.leader >= 0 for p in meta.partitions.values()):
            replicas = min(len(p.replicas) for p in meta.partitions.values())
            if replicas < settings.kafka_replication_factor:
                raise ServiceError(f"topic {topic!r} exists with {replicas} replica(s) per partition, "
                                   f"BTC_KAFKA_REPLICATION_FACTOR is {settings.kafka_replication_factor}: "
                                   "reassign its partitions or delete it")  # fmt: skip
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
        time.sleep(base.POLL_S)


def start_broker(settings: Settings, index: int) -> process.ProcessRecord:
    """Start local broker ``index`` (0-based) without waiting: config, format once, spawn."""
    name = broker_names(settings)[index]
    port, controller_port = settings.kafka_broker_ports()[index]
    base.check_port_free(port, f"Kafka broker {name}", "BTC_KAFKA_PORT")
    base.check_port_free(controller_port, f"Kafka controller {name}", "BTC_KAFKA_CONTROLLER_PORT")
    server_props, log4j = _write_kafka_config(settings, index)
    _format_kafka(settings, server_props, log4j, index)
    cmd = _kafka_java_cmd(settings, log4j, "kafka.Kafka", settings.kafka_heap, settings.kafka_heap) + [str(server_props)]
    return base.spawn(settings, name, cmd, base.base_env(), _node_dir(settings, index))


def start_kafka(settings: Settings) -> None:
    names = broker_names(settings)
    if all(base.running_pid(settings, name) is not None for name in names):
        if kafka_health(settings) is None:
            log.info("kafka already running on %s", _local_bootstrap(settings))
            ensure_topic(settings)
            return
    started = time.monotonic()
    records = []
    for index, name in enumerate(names):
        if base.running_pid(settings, name) is not None:
            base.terminate(settings, name)
        records.append(start_broker(settings, index))

    def check() -> str | None:
        for record in records:
            if not process.is_alive(record):
                raise ServiceError(
                    f"{record.name} exited; last log lines:\n{process.log_tail(Path(record.log)) or '(no log)'}"
                )
        return kafka_health(settings)

    process.wait_until_healthy(records[0], check, KAFKA_START_TIMEOUT_S, "broker health")
    ensure_topic(settings)
    log.info("kafka ready on %s in %.1f s (topic %s, %d partitions, replication factor %d)", _local_bootstrap(settings),
             time.monotonic() - started, settings.kafka_topic, settings.kafka_partitions,
             settings.kafka_replication_factor)  # fmt: skip

