"""Settings of the platform's layout and the services it runs: profile, local directories and storage
root, Kafka, HDFS, Spark and Airflow (part of :class:`btc_platform.settings.Settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator

#: Root of the repository (plugins/btc_platform/settings/services.py -> repo root).
PROJECT_ROOT = Path(__file__).resolve().parents[3]

STORAGE_SCHEMES = ("file", "hdfs")


class ServiceSettings(BaseModel):
    """Profile, local layout, Kafka, HDFS, Spark and Airflow."""

    # ---- profile ----------------------------------------------------------------------------
    profile: Literal["local", "cluster"] = Field(
        default="local",
        description="`local`: one Kafka broker, Spark local[2], file:// storage, Airflow on SQLite. "
        "`cluster` (`make run PROFILE=cluster`): Spark standalone master + workers, three Kafka brokers "
        "(replication 3, min.insync.replicas 2), HDFS storage, Airflow on PostgreSQL with LocalExecutor; "
        "it changes the defaults of the settings it concerns (btc_platform.topology), "
        "an explicitly set variable still wins.",
    )

    # ---- local layout -------------------------------------------------------------------
    data_dir: Path = Field(
        default=PROJECT_ROOT / ".data",
        description="Local working directory: service data, logs, status files.",
    )
    cache_dir: Path = Field(
        default=PROJECT_ROOT / ".cache",
        description="Where resolved JVM artifacts are kept (jars, Maven repository).",
    )
    storage_root: str = Field(
        default="",
        description="URI under which all datasets live (file:///... or hdfs://host:port/path). "
        "Empty means file://<data_dir>/bitcoin.",
    )

    # ---- Kafka ----------------------------------------------------------------------------
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic: str = "cryptoTopic"
    kafka_partitions: PositiveInt = 3
    kafka_port: PositiveInt = 9092
    kafka_controller_port: PositiveInt = 9093
    kafka_heap: str = "512m"
    kafka_brokers: PositiveInt = Field(
        default=1,
        description="Number of local Kafka brokers btc-services starts (KRaft, each broker and controller; "
        "broker i on BTC_KAFKA_PORT + 100*i).",
    )
    kafka_replication_factor: PositiveInt = Field(
        default=1, description="Replication factor of the topic (at most BTC_KAFKA_BROKERS)."
    )
    kafka_min_insync_replicas: PositiveInt = Field(
        default=1,
        description="min.insync.replicas of the topic: with the producer's acks=all, a write needs this "
        "many replicas in sync.",
    )

    # ---- HDFS (local single-node services) ------------------------------------------------
    hdfs_namenode_port: PositiveInt = 8020
    hdfs_namenode_http_port: PositiveInt = 9870
    hdfs_datanode_port: PositiveInt = 9866
    hdfs_datanode_http_port: PositiveInt = 9864
    hdfs_datanode_ipc_port: PositiveInt = 9867
    hdfs_heap: str = "512m"
    hdfs_safemode_timeout_s: PositiveFloat = 120.0
    webhdfs_url: str = Field(
        default="",
        description="WebHDFS base URL used by btc_platform.lakehouse.storage for hdfs:// URIs. Empty means "
        "http://<host of storage_root>:<hdfs_namenode_http_port>.",
    )
    webhdfs_user: str = Field(
        default="", description="user.name sent to WebHDFS; empty means the OS user running the code."
    )

    # ---- Spark ------------------------------------------------------------------------------
    spark_master: str = "local[2]"
    spark_batch_master: str = Field(
        default="",
        description="Spark master of the batch jobs Airflow submits (backfill, consolidation, data quality, "
        "repairs; Airflow's spark_default connection); empty means BTC_SPARK_MASTER. local[2] runs them inside "
        "the submitting task (no executor JVM to start) while the stream stays on BTC_SPARK_MASTER: the "
        "compose CI stack does that.",
    )
    spark_shuffle_partitions: PositiveInt = 2
    spark_driver_memory: str = "1g"
    spark_master_port: PositiveInt = Field(default=7077, description="Port of the local Spark standalone master.")
    spark_master_ui_port: PositiveInt = Field(default=8081, description="Web UI port of the local Spark master.")
    spark_workers: NonNegativeInt = Field(
        default=0, description="Number of local Spark standalone workers btc-services starts (0: no standalone cluster)."
    )
    spark_worker_ui_port: PositiveInt = Field(
        default=8082, description="Web UI port of the first local Spark worker (worker i uses port + i)."
    )
    spark_worker_cores: PositiveInt = Field(default=1, description="Cores each local Spark worker offers.")
    spark_worker_memory: str = Field(default="1g", description="Memory each local Spark worker offers to executors.")
    spark_daemon_memory: str = Field(
        default="256m", description="JVM heap of the local Spark master and worker daemons themselves."
    )
    spark_executor_memory: str = Field(
        default="", description="spark.executor.memory on a spark:// master; empty: Spark's default (1g)."
    )
    spark_executor_cores: NonNegativeInt = Field(
        default=0, description="spark.executor.cores on a spark:// master (0: unset, one executor takes a worker's cores)."
    )
    spark_cores_max: NonNegativeInt = Field(
        default=0,
        description="spark.cores.max of a batch job on a spark:// master (0: unset, the job takes every free core).",
    )
    stream_cores_max: NonNegativeInt = Field(
        default=0,
        description="spark.cores.max of the streaming job on a spark:// master (0: unset); leave cores to the "
        "batch jobs, which otherwise wait for the never-ending stream.",
    )
    spark_driver_host: str = Field(
        default="",
        description="spark.driver.host (the address executors connect back to); empty: Spark's default.",
    )

    # ---- Airflow ----------------------------------------------------------------------------
    airflow_port: PositiveInt = 8080
    airflow_database: Literal["sqlite", "postgres"] = Field(
        default="sqlite",
        description="Airflow metadata DB: SQLite file in AIRFLOW_HOME, or the local PostgreSQL server that "
        "btc-services starts (Debian package postgresql; LocalExecutor either way).",
    )
    postgres_port: PositiveInt = Field(default=5432, description="Port of the local PostgreSQL server on 127.0.0.1.")
    airflow_parallelism: PositiveInt = Field(
        default=3,
        description="Task slots (LocalExecutor worker processes, each forked at the scheduler's start and "
        "resident all day) of the local Airflow; small for 2-core machines. Deferred and rescheduled tasks "
        "hold none; the table writers share one pool slot anyway.",
    )


    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    @field_validator("storage_root")
    @classmethod
    def _storage_uri(cls, value: str) -> str:
        """Check an explicit storage root here, so the error names BTC_STORAGE_ROOT."""
        if not value:
            return value
        parsed = urlparse(value)
        if parsed.scheme not in STORAGE_SCHEMES:
            raise ValueError(f"expected a file:// or hdfs:// URI, got {value!r}")
        if parsed.scheme == "hdfs":
            try:
                port = parsed.port
            except ValueError:
                port = None
            if not parsed.hostname or port is None:
                raise ValueError(f"expected hdfs://host:port/path, got {value!r}")
        if not parsed.path.startswith("/"):
            raise ValueError(f"expected an absolute path in the URI, got {value!r}")
        return value
