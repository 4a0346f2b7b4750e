"""The whole local platform: start it (``btc-services run``, ``make run``) and stop it
(``make stop``).

This layer sits above the services (:mod:`btc_platform.ops.services`: Kafka, HDFS, Spark,
PostgreSQL, Airflow) and the supervisor (:mod:`btc_platform.ops.supervisor`: producer, stream),
which both only look down: the supervisor restarts services, and this module starts the services,
and the producer and the stream once Kafka is up, while Airflow is still starting (Airflow's
supervisor then finds them running with its own configuration and keeps them).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from btc_platform.lakehouse.lake import check_layout
from btc_platform.ops import supervisor
from btc_platform.ops.airflow_env import api_url, password_file, schedule_start_date
from btc_platform.ops.services import (
    SERVICES,
    ServiceError,
    start_airflow,
    start_hdfs,
    start_kafka,
    start_monitor,
    start_postgres,
    start_spark,
    stop,
)
from btc_platform.ops.services.base import (
    instance_id,
    marked_processes,
    recorded_processes,
    running_pid,
    sweep,
)
from btc_platform.ops.supervisor import wait_until_supervised
from btc_platform.settings import Settings, load_settings

log = logging.getLogger(__name__)


def stop_all(settings: Settings) -> None:
    """Stop every service in reverse start order and verify nothing of ours is left."""
    # Airflow first: its supervisor would restart a producer or stream stopped while Airflow
    # takes its time to exit (seen on the cluster profile); then producer and stream,
    # gracefully (SIGTERM to the driver, bounded wait), while Kafka and the storage still run
    stop("airflow", settings)
    # then the monitor (Airflow's supervisor would have restarted it), before anything it
    # watches: a platform being stopped is no incident
    stop("monitor", settings)
    for process in supervisor.NAMES:
        supervisor.stop(process, settings)
    for name in reversed(SERVICES):
        if name not in ("airflow", "monitor"):
            stop(name, settings)
    sweep(settings, None)
    left = [p for name in SERVICES for p in recorded_processes(settings, name) if running_pid(settings, p)]
    left += [str(pid) for pid in marked_processes(settings)]
    if left:
        raise ServiceError(f"still running after stop: {left}")
    log.info("no process of this platform instance (%s) is left", instance_id(settings))


def supervised_services(settings: Settings) -> tuple[str, ...]:
    """The local services ``run`` starts, which its supervisor then keeps up (unless
    ``supervisor_services`` is set explicitly): Kafka, HDFS when it holds the storage, the monitor."""
    return ("kafka", "hdfs", "monitor") if settings.storage_root.startswith("hdfs://") else ("kafka", "monitor")


def run(settings: Settings, source: str) -> None:
    """Start the platform: PostgreSQL (when Airflow's DB is postgres), HDFS when the storage root
    is hdfs://; then Airflow and, while it starts, Kafka, the Spark standalone cluster (when
    BTC_SPARK_WORKERS > 0), the producer and the stream. Airflow's supervisor keeps them all up
    (Kafka and HDFS: ``supervisor_services``).

    The producer and the stream are started here with the settings Airflow's tasks get
    (``schedule_start_date`` pinned first), so the supervisor DAG's first check finds them
    running with its own configuration instead of starting them a minute later, after Airflow.
    Refuses (``LegacyLayoutError``) a storage root with datasets of the Parquet layout, before
    anything writes to them."""
    overrides = {name: getattr(settings, name) for name in settings.model_fields_set}
    overrides.setdefault("supervisor_services", supervised_services(settings))
    overrides.setdefault("supervisor_airflow_scheduler", True)  # standalone never restarts a dead scheduler
    # what airflow_env gives Airflow's tasks: the same value here, or the configurations differ
    overrides.setdefault("schedule_start_date", schedule_start_date(settings))
    settings = load_settings(**{**overrides, "producer_source": source})
    log.info("profile %s", settings.profile)
    if settings.airflow_database == "postgres":
        start_postgres(settings)
    if settings.storage_root.startswith("hdfs://"):
        start_hdfs(settings)
    # before anything starts the stream and the jobs on datasets of the Parquet layout
    check_layout(settings)
    with ThreadPoolExecutor(1, thread_name_prefix="airflow-start") as pool:
        airflow = pool.submit(start_airflow, settings)  # a minute of its own: the rest starts meanwhile
        # held while the broker starts: a supervisor check of Airflow's waits instead of restarting it
        with supervisor.service_lock(settings, "kafka"):
            start_kafka(settings)
        if settings.spark_workers:
            start_spark(settings)
        supervisor.ensure_producer(settings)  # each logs what it did
        supervisor.ensure_stream(settings)
        airflow.result()
    start_monitor(settings)

    log.info("waiting for the btc_stream_supervisor DAG to start the producer and the stream ...")
    for line in wait_until_supervised(settings):
        log.info("  %s", line)
    log.info("platform up (producer source %s)", source)
    log.info("  Airflow UI : %s  (user admin, password in %s)", api_url(settings), password_file(settings))
    log.info("  Kafka      : %s topic %s (replication factor %d, min.insync.replicas %d)",
             settings.kafka_bootstrap_servers, settings.kafka_topic, settings.kafka_replication_factor,
             settings.kafka_min_insync_replicas)  # fmt: skip
    log.info("  Spark      : %s", settings.spark_master)
    if settings.airflow_database == "postgres":
        log.info("  Airflow DB : PostgreSQL on 127.0.0.1:%d", settings.postgres_port)
    log.info("  storage    : %s", settings.storage_root)
    log.info("  logs       : %s", settings.logs_dir)
    log.info("  metrics    : http://127.0.0.1:%d/metrics (alerts: docs/monitoring.md)", settings.monitor_port)
    log.info("  stop with  : make stop")
