"""Session-scoped fixtures that start REAL local services for the tests (pytest plugin, registered
in tests/conftest.py).

* ``kafka_service`` - a single-node KRaft broker from the Maven-resolved jars;
* ``hdfs_service``  - one NameNode + one DataNode.

Each uses its own temporary data dir and free ports on 127.0.0.1, so parallel test sessions and a
running ``make run`` never collide, and stops its processes at the end of the session, pass or fail.
If btc-jars has not resolved the jars yet, the fixtures resolve them first (needs Maven
Central the first time).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

from btc_platform.settings import Settings, load_settings
from btc_platform.testing.polling import free_ports

log = logging.getLogger(__name__)

_START_ATTEMPTS = 3


def listening_sockets(pids) -> list[tuple[str, int, str]]:
    """(address, port, command) of every TCP socket in the LISTEN state held by one of ``pids``;
    an IPv4-mapped IPv6 address (``::ffff:127.0.0.1``, a JVM's dual-stack socket) as its IPv4."""
    import ipaddress

    import psutil

    wanted = set(pids)
    found = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN or conn.pid not in wanted:
            continue
        address = ipaddress.ip_address(conn.laddr.ip)
        mapped = getattr(address, "ipv4_mapped", None)
        try:
            command = " ".join(psutil.Process(conn.pid).cmdline())[:160]
        except psutil.Error:
            command = f"pid {conn.pid} (exited)"
        found.append((str(mapped or address), conn.laddr.port, command))
    return sorted(found)


@dataclass
class KafkaService:
    """A running local broker: ``bootstrap_servers``, ``settings``, ``create_topic``, ``stop``/``start``."""

    settings: Settings

    @property
    def bootstrap_servers(self) -> str:
        return self.settings.kafka_bootstrap_servers

    def start(self) -> None:
        """Start (or restart) the broker on the same ports and data dir: the log survives."""
        from btc_platform.ops import services

        services.start_kafka(self.settings)

    def stop(self) -> None:
        from btc_platform.ops import services

        services.stop("kafka", self.settings)

    def create_topic(self, name: str, partitions: int = 1) -> str:
        """Create ``name`` with ``partitions`` (idempotent) and wait until every partition has a leader."""
        from btc_platform.ops import services

        return services.ensure_topic(self.settings, name, partitions)


@dataclass
class HdfsService:
    """A running local HDFS: ``uri`` (hdfs://127.0.0.1:<port>), ``http_url`` (NameNode web/JMX), ``settings``."""

    settings: Settings

    @property
    def uri(self) -> str:
        return self.settings.hdfs_uri

    @property
    def http_url(self) -> str:
        from btc_platform.lakehouse.namenode import namenode_http_url

        return namenode_http_url(self.settings)

    def start(self) -> None:
        from btc_platform.ops import services

        services.start_hdfs(self.settings)

    def stop(self) -> None:
        from btc_platform.ops import services

        services.stop("hdfs", self.settings)


def _start_with_free_ports(make_settings, start, stop):
    """Start a service on fresh free ports; retry if another process grabbed one meanwhile."""
    from btc_platform.ops.services import PortInUseError

    for attempt in range(1, _START_ATTEMPTS + 1):
        settings = make_settings()
        try:
            start(settings)
            return settings
        except PortInUseError as exc:
            stop(settings)
            if attempt == _START_ATTEMPTS:
                raise
            log.warning("port race (%s), retrying with other ports", exc)
        except BaseException:
            stop(settings)
            raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def kafka_service(tmp_path_factory):
    """A real single-node Kafka (KRaft) on free ports with its own data dir, for the whole session."""
    from btc_platform.ops import services

    data_dir = tmp_path_factory.mktemp("kafka-service")

    def make_settings() -> Settings:
        port, controller_port = free_ports(2)
        return load_settings(
            data_dir=data_dir,
            kafka_port=port,
            kafka_controller_port=controller_port,
            kafka_bootstrap_servers=f"127.0.0.1:{port}",
        )

    settings = _start_with_free_ports(
        make_settings, services.start_kafka, lambda s: services.stop("kafka", s)
    )
    service = KafkaService(settings)
    try:
        yield service
    finally:
        services.stop("kafka", settings)


@pytest.fixture(scope="session")
def hdfs_service(tmp_path_factory):
    """A real HDFS (NameNode + DataNode) on free ports with its own data dir, for the whole session."""
    from btc_platform.ops import services

    data_dir = tmp_path_factory.mktemp("hdfs-service")

    def make_settings() -> Settings:
        rpc, http, dn, dn_http, dn_ipc = free_ports(5)
        return load_settings(
            data_dir=data_dir,
            hdfs_namenode_port=rpc,
            hdfs_namenode_http_port=http,
            hdfs_datanode_port=dn,
            hdfs_datanode_http_port=dn_http,
            hdfs_datanode_ipc_port=dn_ipc,
        )

    settings = _start_with_free_ports(
        make_settings, services.start_hdfs, lambda s: services.stop("hdfs", s)
    )
    service = HdfsService(settings)
    try:
        yield service
    finally:
        services.stop("hdfs", settings)
