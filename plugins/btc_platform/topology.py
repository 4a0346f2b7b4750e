"""The shape of the distributed deployment, defined once: what the cluster profile
(``make run PROFILE=cluster``, ``BTC_PROFILE=cluster``) starts on this machine and what
``docker-compose.yml`` must describe (tests/test_compose.py checks the file against this module).

* :data:`CLUSTER_SHAPE` - the sizes and replication both share (brokers, topic replication,
  min.insync.replicas, Spark workers and their cores/memory, executor sizes, heaps);
* :func:`profile_defaults` - every setting the cluster profile changes, derived from the shape
  plus this machine's addresses (127.0.0.1 and the configured ports); Settings applies it to the
  settings not set explicitly;
* :data:`COMPOSE_SERVICES` - the compose services that carry each role.

No I/O and no imports of the platform: settings imports this module, so it stays below it.
"""

from __future__ import annotations

from typing import Any

#: Port step between the local brokers of the cluster profile: broker i (0-based) listens on
#: kafka_port + i * step and its controller on kafka_controller_port + i * step.
KAFKA_BROKER_PORT_STEP = 100

#: Sizes shared by the cluster profile and docker-compose.yml (their BTC_* names).
CLUSTER_SHAPE: dict[str, Any] = {
    "kafka_brokers": 3,
    "kafka_replication_factor": 3,
    "kafka_min_insync_replicas": 2,
    "kafka_heap": "256m",
    "spark_workers": 2,
    # two task slots per worker: the stream takes one executor (1 core) on each worker and a batch
    # job the other slot, so an hourly job does not wait for the never-ending stream
    "spark_worker_cores": 2,
    "spark_worker_memory": "1g",
    "spark_executor_cores": 1,
    "spark_executor_memory": "512m",
    "stream_cores_max": 2,
    "spark_cores_max": 2,
    "stream_driver_memory": "1g",  # the dedup state lives in the executors here
    "airflow_database": "postgres",
}

#: Shape entries that size the services themselves (in compose: KAFKA_HEAP_OPTS, the number of
#: spark-worker-N services, SPARK_WORKER_CORES/MEMORY) rather than BTC_* settings of the platform.
SERVICE_SIZES = frozenset({"kafka_heap", "spark_workers", "spark_worker_cores", "spark_worker_memory"})

#: Compose services per role (the compose test checks names, counts and their settings).
COMPOSE_SERVICES: dict[str, tuple[str, ...]] = {
    "kafka": ("kafka-1", "kafka-2", "kafka-3"),
    "spark_worker": ("spark-worker-1", "spark-worker-2"),
    "spark_master": ("spark-master",),
    "postgres": ("postgres",),
}


def profile_defaults(*, kafka_port: int, spark_master_port: int, hdfs_namenode_port: int) -> dict[str, Any]:
    """Settings of the cluster profile on this machine (before explicit values are applied),
    from the configured ports of the first broker, the Spark master and the NameNode."""
    defaults = dict(CLUSTER_SHAPE)
    brokers = defaults["kafka_brokers"]
    defaults["kafka_bootstrap_servers"] = ",".join(
        f"127.0.0.1:{kafka_port + i * KAFKA_BROKER_PORT_STEP}" for i in range(brokers)
    )
    defaults["spark_master"] = f"spark://127.0.0.1:{spark_master_port}"
    defaults["spark_driver_host"] = "127.0.0.1"
    defaults["storage_root"] = f"hdfs://127.0.0.1:{hdfs_namenode_port}/bitcoin"
    return defaults
