"""The one settings object of the platform.

Every host, port, topic, path and interval that the producer, the Spark jobs, the DAGs and the
models use is read here, from environment variables prefixed ``BTC_`` (see ``.env.example``
for the full list). Defaults run the platform locally without Docker; the compose stack
overrides them through the same variable names.

Usage::

    from btc_platform.settings import get_settings
    s = get_settings()
    s.kafka_bootstrap_servers

Nothing is read at import time: ``get_settings()`` builds (and caches) the object on first
call, and ``get_settings.cache_clear()`` lets tests re-read a changed environment.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from btc_platform.topology import KAFKA_BROKER_PORT_STEP, profile_defaults

ENV_PREFIX = "BTC_"

#: Root of the repository (plugins/btc_platform/settings.py -> repo root).
PROJECT_ROOT = Path(__file__).resolve().parents[2]

_STORAGE_SCHEMES = ("file", "hdfs")


class SettingsError(ValueError):
    """A setting has a value the platform cannot use; the message names the variable."""


class Settings(BaseSettings):
    """Typed, validated platform settings (env prefix ``BTC_``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        frozen=True,
        case_sensitive=False,
    )

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
        default=4,
        description="Task slots (LocalExecutor worker processes) of the local Airflow; small for 2-core machines.",
    )

    # ---- Producer ---------------------------------------------------------------------------
    producer_source: Literal["live", "simulate", "replay"] = Field(
        default="live",
        description="Where the producer gets data: live exchange APIs, the simulator, or a replay file "
        "(`btc-services run --source` sets it).",
    )
    binance_base_url: str = "https://api.binance.com"
    binance_symbols: Annotated[tuple[str, ...], NoDecode] = ("BTCUSDT",)
    binance_poll_interval_s: PositiveFloat = 1.0
    binance_weight_limit_1m: PositiveInt = 6000
    binance_weight_share: float = Field(default=0.5, gt=0, le=1)
    coingecko_base_url: str = "https://api.coingecko.com"
    coingecko_api_key: str = ""
    coingecko_api_plan: Literal["demo", "pro"] = "demo"
    coingecko_coin_id: str = "bitcoin"
    coingecko_vs_currency: str = "usd"
    coingecko_symbol: str = Field(
        default="BTCUSDT",
        description="Symbol (Kafka key) that CoinGecko messages carry, so that minute metrics "
        "of that Binance symbol pick up the CoinGecko fields.",
    )
    coingecko_poll_interval_s: float = Field(default=60.0, ge=1.0)
    coingecko_monthly_call_budget: PositiveInt = 10000
    http_connect_timeout_s: PositiveFloat = 3.05
    http_read_timeout_s: PositiveFloat = 10.0
    http_max_retries: NonNegativeInt = 5
    http_backoff_base_s: PositiveFloat = 0.5
    http_backoff_max_s: PositiveFloat = 30.0
    producer_status_interval_s: PositiveFloat = 5.0
    producer_flush_timeout_s: PositiveFloat = Field(
        default=20.0,
        description="How long the producer waits for outstanding deliveries on shutdown before it spools them "
        "(keep it below BTC_SUPERVISOR_STOP_TIMEOUT_S, so the spool is written before a SIGKILL).",
    )
    producer_message_timeout_s: PositiveFloat = Field(
        default=300.0,
        description="How long librdkafka keeps retrying an accepted message (e.g. Kafka down) before "
        "reporting it failed (message.timeout.ms).",
    )
    producer_queue_max_messages: PositiveInt = Field(
        default=500000, description="Local producer queue bound; when full the source waits (backpressure)."
    )
    producer_linger_ms: NonNegativeInt = Field(default=5, description="Batching delay (linger.ms).")
    producer_journal: bool = Field(
        default=True,
        description="Write-ahead journal of accepted messages (<data_dir>/spool/producer.wal) until Kafka "
        "confirmed them: a producer killed with SIGKILL loses nothing, its next start re-sends them.",
    )
    producer_spool_max_mb: PositiveFloat = Field(
        default=512.0,
        description="Bound of the producer's spool (<data_dir>/spool, undelivered messages on disk, MiB). When it "
        "is reached (a long Kafka outage) the producer stops polling its source and records the gap (start, end, "
        "reason) in its status record instead of filling the disk; it polls again once the spool drained below "
        "half the bound.",
    )
    producer_accepted_log: str = Field(
        default="",
        description="File to append the message_id of every message the producer accepted (one a line; "
        "audit, used by the fault-injection suite `make chaos`). Empty: off.",
    )
    producer_compression: Literal["none", "lz4", "snappy", "gzip", "zstd"] = Field(
        default="lz4", description="Kafka compression.type of the producer."
    )
    producer_replay_file: str = Field(
        default="", description="Default --replay-file of the replay source (JSONL written by --record)."
    )
    producer_simulate_candles: str = Field(
        default="", description="Default --candles CSV of the simulate source; empty means a random walk."
    )
    producer_speed: float = Field(
        default=1.0, ge=0, description="Default --speed of simulate/replay (0 = as fast as possible)."
    )
    simulate_start_price: PositiveFloat = Field(
        default=30000.0,
        description="Price the simulator's random walk starts from (the producer's --start-price default) and "
        "at which the simulated first-run history ends, so the two join.",
    )

    # ---- Streaming job ----------------------------------------------------------------------
    stream_trigger_interval: str = Field(
        default="2 seconds",
        description="Micro-batch interval of the ingest query writing raw_data and quarantine "
        "(ingest -> readable latency).",
    )
    stream_side_trigger_interval: str = Field(
        default="10 seconds",
        description="Micro-batch interval of the minute_metrics query (not latency-critical: a "
        "minute window waits for the watermark anyway; fewer batches leave the cores to ingest).",
    )
    stream_watermark_delay: str = Field(
        default="30 seconds",
        description="How long minute_metrics waits for late rows of a minute before writing it. Rows later "
        "than that stay in raw_data (which has no time window: a message_id is stored once however late), "
        "are counted as dropped_late in the stream's status and windowed by the hourly consolidation.",
    )
    stream_starting_offsets: str = "earliest"
    stream_max_offsets_per_trigger: NonNegativeInt = Field(
        default=0, description="0 means unlimited."
    )
    stream_kafka_max_records_per_partition: NonNegativeInt = Field(
        default=50000,
        description="Kafka maxRecordsPerPartition of the streaming job: a micro-batch holding more "
        "records of one topic partition reads them in several Spark tasks, so that a backlog keeps "
        "every core busy (small batches keep one task per topic partition). 0 means never split.",
    )
    stream_driver_memory: str = Field(
        default="3g",
        description="spark.driver.memory of the streaming job (holds minute_metrics' window state and "
        "each ingest micro-batch, kept once in memory or on disk while raw_data is looked up for its ids).",
    )
    stream_driver_java_options: str = Field(
        default="-XX:+UseParallelGC -XX:MaxNewSize=512m",
        description="Extra JVM options of the streaming job's driver (the throughput collector "
        "measured faster than G1 here; its young generation capped, else it grows to a third of "
        "the heap and stays resident when the stream is idle).",
    )
    stream_fail_on_data_loss: bool = True
    stream_checkpoint_root: str = Field(
        default="",
        description="URI holding the streaming checkpoints raw/ (ingest) and metrics/. "
        "Empty means <storage_root>/checkpoints.",
    )

    # ---- Supervision ------------------------------------------------------------------------
    supervisor_producer_stale_s: PositiveFloat = 60.0
    supervisor_stream_stale_s: PositiveFloat = 120.0
    supervisor_max_lag_messages: PositiveInt = 100000
    supervisor_interval_s: PositiveFloat = Field(
        default=20.0,
        description="How often the btc_stream_supervisor's trigger checks the services, producer and stream "
        "(in Airflow's triggerer; a worker runs only to restart something).",
    )
    supervisor_services: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Local services (kafka, hdfs, monitor) the supervisor checks and restarts, comma-separated; "
        "`btc-services run` sets kafka and monitor (and hdfs when the storage root is hdfs://). Empty: none "
        "(services run elsewhere, e.g. docker compose).",
    )
    supervisor_airflow_scheduler: bool = Field(
        default=False,
        description="The supervisor's trigger (in Airflow's triggerer) starts a replacement `airflow scheduler` "
        "when none of this platform runs (`airflow standalone` never restarts a dead one); `btc-services run` "
        "sets it. Off where something else keeps the scheduler up (docker compose, a service manager).",
    )
    supervisor_run_days: PositiveFloat = Field(
        default=1.0,
        description="Days one btc_stream_supervisor run supervises before it ends and the next run takes over.",
    )
    supervisor_stop_timeout_s: PositiveFloat = Field(
        default=30.0, description="Grace after SIGTERM before a supervised process group gets SIGKILL."
    )

    # ---- Orchestration (Airflow DAGs) -------------------------------------------------------
    schedule_start_date: str = Field(
        default="",
        description="UTC date/time (ISO) from which btc_hourly_consolidation catches up missed hours; "
        "empty means the start of the current UTC day (`make run` pins it to its first start).",
    )
    retrain_schedule: str = Field(default="@daily", description="Cron/preset schedule of btc_retrain.")
    first_run_backfill: bool = Field(
        default=True,
        description="On the first start (the one scheduled run of btc_backfill) with an empty hourly_metrics, "
        "fill it: BTC_FIRST_RUN_SIMULATE_HOURS of simulated history when the producer source is simulate, the "
        "last BTC_FIRST_RUN_BACKFILL_DAYS of Binance klines when it is live (nothing for replay). The "
        "retrain follows on the hourly_metrics asset event. Off: no automatic history.",
    )
    first_run_backfill_days: PositiveInt = Field(
        default=30, description="Days of Binance klines the first start backfills in live mode."
    )
    first_run_simulate_hours: PositiveInt = Field(
        default=1200,
        description="Hours of simulated history the first start backfills in simulate mode (the retrain's "
        "defaults need about 1,000: lookback + horizon + 224 training windows + the 672 h test window).",
    )

    # ---- Models (LSTM forecast) -------------------------------------------------------------
    model_tf_threads: PositiveInt = Field(
        default=2, description="TensorFlow intra/inter-op threads for training and prediction."
    )
    model_promotion_policy: Literal["beat_current_and_persistence", "beat_persistence"] = Field(
        default="beat_current_and_persistence",
        description="What a candidate must beat (overall RMSE on the latest test window) to become "
        "the `current` model; a forced promotion bypasses it and is recorded.",
    )

    # ---- Batch jobs (consolidation, backfill, data quality) --------------------------------
    dq_min_coverage: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="Data-quality warning when an hour's coverage (minutes present / 60) is below this.",
    )
    consolidation_max_wait_s: PositiveFloat = Field(
        default=900.0,
        description="How long after an hour's end its consolidation waits for the stream's minute_metrics "
        "watermark to pass it (minute H:59 is only written then); after that the hour is consolidated "
        "with the minutes that exist, and its coverage shows what is missing.",
    )

    hourly_min_stream_coverage: float = Field(
        default=0.95,
        ge=0,
        le=1,
        description="A stream-consolidated hour replaces a backfilled or repaired candle in hourly_metrics "
        "only when its coverage (minutes present / 60) is at least this (or above the candle's); a "
        "candle replaces a stream hour below it. The gap repair fetches candles for hours below it.",
    )
    gap_repair_lookback_hours: NonNegativeInt = Field(
        default=48,
        description="In live mode the hourly DAG repairs missing or under-covered hours of hourly_metrics "
        "this far back from 1-hour klines (0 = no repair).",
    )
    gap_repair_max_requests: PositiveInt = Field(
        default=8,
        description="At most this many klines requests (each one range of hours, one symbol) per gap-repair "
        "run; the rest waits for the next hour (the requests also share BTC_BINANCE_WEIGHT_SHARE).",
    )

    # ---- Table maintenance (btc_maintenance DAG) ----------------------------------------------
    maintenance_vacuum_retention_hours: NonNegativeInt = Field(
        default=168,
        description="VACUUM keeps files a table stopped referencing less than this many hours ago "
        "(time travel and readers of older versions need them). Below Delta's default of 168 h, "
        "Delta's retention check is switched off for that run, and the job logs it.",
    )
    maintenance_airflow_retention_days: PositiveInt = Field(
        default=7,
        description="The maintenance DAG purges Airflow metadata (DAG runs, task instances, logs "
        "table, XComs...) older than this many days with `airflow db clean`.",
    )

    # ---- Monitoring: metrics exporter and alerts (btc_platform.monitoring, docs/monitoring.md) ----
    monitor_port: PositiveInt = Field(
        default=9464,
        description="Port of the monitor process on 127.0.0.1: Prometheus metrics at /metrics (no login: "
        "loopback only). `make run` starts it; the supervisor keeps it up.",
    )
    monitor_interval_s: PositiveFloat = Field(
        default=10.0,
        description="How often the monitor evaluates the alert rules on the status files, process records, "
        "Kafka lag, disk and spool.",
    )
    monitor_slow_interval_s: PositiveFloat = Field(
        default=60.0,
        description="How often the monitor reads the Delta tables' last commits and Airflow's DAG runs "
        "(REST API) for the table, consolidation, DAG-run, data-quality and forecast rules.",
    )
    alert_email_to: str = Field(
        default="", description="Comma-separated recipients of alert e-mails; empty: no e-mail."
    )
    alert_email_from: str = Field(default="btc-platform@localhost", description="From address of alert e-mails.")
    alert_smtp_host: str = Field(default="127.0.0.1", description="SMTP server of alert e-mails.")
    alert_smtp_port: PositiveInt = Field(default=25, description="Port of the SMTP server.")
    alert_smtp_user: str = Field(default="", description="SMTP login; empty: no authentication.")
    alert_smtp_password: str = Field(default="", description="SMTP password (with BTC_ALERT_SMTP_USER).")
    alert_smtp_security: Literal["starttls", "ssl", "none"] = Field(
        default="starttls",
        description="starttls (upgrade the plain connection), ssl (implicit TLS, usually port 465) or none "
        "(plain text: only for a relay on this machine).",
    )
    alert_webhook_url: str = Field(
        default="",
        description="URL that receives each alert as a POST of Slack-compatible JSON ({\"text\": ...}); "
        "empty: no webhook.",
    )
    alert_send_timeout_s: PositiveFloat = Field(
        default=10.0, description="Connect/read timeout of one alert delivery (SMTP or webhook)."
    )
    alert_retry_max_s: PositiveFloat = Field(
        default=300.0, description="Longest pause between two delivery attempts of an alert (backoff doubles up to it)."
    )
    alert_give_up_s: PositiveFloat = Field(
        default=86400.0,
        description="An alert not delivered after this long is given up on that channel (logged as an error, "
        "shown on the dashboard).",
    )
    alert_max_per_hour: PositiveInt = Field(
        default=20,
        description="Messages per channel and hour; alerts beyond it wait and go out together in one digest.",
    )
    alert_startup_grace_s: PositiveFloat = Field(
        default=300.0,
        description="A producer or stream that has never been started is reported down only this long after the "
        "monitor started (`make run` starts them through Airflow).",
    )
    alert_max_restarts_per_hour: PositiveInt = Field(
        default=3, description="Alert when the producer or the stream was restarted more often in the last hour."
    )
    alert_raw_stale_s: PositiveFloat = Field(
        default=120.0, description="Alert when raw_data got no new row for this long while the producer runs."
    )
    alert_lag_window_s: PositiveFloat = Field(
        default=300.0, description="Kafka lag is 'growing' when it rose over this window and stayed above the minimum."
    )
    alert_lag_min_messages: PositiveInt = Field(
        default=1000, description="Kafka lag below this never alerts (a micro-batch's worth of backlog is normal)."
    )
    alert_consolidation_delay_s: PositiveFloat = Field(
        default=1200.0, description="Alert when an hour is not consolidated this long after its end."
    )
    alert_quarantine_ratio: float = Field(
        default=0.01, gt=0, le=1, description="Alert when more than this share of the records was quarantined ..."
    )
    alert_quarantine_window_s: PositiveFloat = Field(default=600.0, description="... over this window ...")
    alert_quarantine_min_records: PositiveInt = Field(
        default=100, description="... counting only windows with at least this many records."
    )
    alert_forecast_stale_s: PositiveFloat = Field(
        default=7200.0, description="Alert when future_predictions got no new commit for this long."
    )
    alert_disk_free_ratio: float = Field(
        default=0.10, gt=0, lt=1, description="Alert when the data directory's file system has less free space."
    )
    alert_spool_s: PositiveFloat = Field(
        default=300.0, description="Alert when the producer's spool (undelivered messages) is not empty for this long."
    )

    # ---- Validators -------------------------------------------------------------------------
    @field_validator("binance_symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError("at least one symbol is required")
            return tuple(str(v).upper() for v in value)
        return value

    @field_validator("supervisor_services", mode="before")
    @classmethod
    def _split_services(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)):
            unknown = sorted({str(v) for v in value} - {"kafka", "hdfs", "monitor"})
            if unknown:
                raise ValueError(f"supervised services must be kafka, hdfs and/or monitor, got {', '.join(unknown)}")
            return tuple(str(v) for v in value)
        return value

    @field_validator("binance_base_url", "coingecko_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"expected an http(s) URL with a host, got {value!r}")
        return value.rstrip("/")

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
        if parsed.scheme not in _STORAGE_SCHEMES:
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

    @model_validator(mode="after")
    def _profile(self) -> Settings:
        """The cluster profile's defaults for the settings not set explicitly (one place:
        btc_platform.topology.profile_defaults)."""
        if self.profile != "local":
            defaults = profile_defaults(kafka_port=self.kafka_port, spark_master_port=self.spark_master_port,
                                        hdfs_namenode_port=self.hdfs_namenode_port)  # fmt: skip
            for name, value in defaults.items():
                if name not in self.model_fields_set:
                    object.__setattr__(self, name, value)
        if self.kafka_replication_factor > self.kafka_brokers:
            raise ValueError(f"kafka_replication_factor {self.kafka_replication_factor} > kafka_brokers {self.kafka_brokers}")
        if self.kafka_min_insync_replicas > self.kafka_replication_factor:
            raise ValueError(f"kafka_min_insync_replicas {self.kafka_min_insync_replicas} > kafka_replication_factor "
                             f"{self.kafka_replication_factor}")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _storage(self) -> Settings:
        uri = self.storage_root or f"file://{self.data_dir.resolve()}/bitcoin"
        parsed = urlparse(uri)
        if parsed.scheme not in _STORAGE_SCHEMES:
            raise ValueError(
                f"storage_root must be a file:// or hdfs:// URI, got {uri!r}"
            )
        if parsed.scheme == "hdfs" and not parsed.netloc:
            raise ValueError(f"storage_root hdfs URI needs host:port, got {uri!r}")
        if not parsed.path.startswith("/"):
            raise ValueError(f"storage_root needs an absolute path, got {uri!r}")
        object.__setattr__(self, "storage_root", uri.rstrip("/"))
        return self

    # ---- Derived values ---------------------------------------------------------------------
    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def status_dir(self) -> Path:
        return self.data_dir / "status"

    @property
    def producer_status_path(self) -> Path:
        return self.status_dir / "producer.json"

    @property
    def producer_spool_path(self) -> Path:
        """Messages the producer accepted but could not deliver, kept for its next start."""
        return self.data_dir / "spool" / "producer.jsonl"

    @property
    def producer_journal_path(self) -> Path:
        """Write-ahead journal of the producer's accepted, not yet confirmed messages."""
        return self.data_dir / "spool" / "producer.wal"

    @property
    def stream_status_path(self) -> Path:
        return self.status_dir / "stream.json"

    @property
    def jars_dir(self) -> Path:
        return self.cache_dir / "jars"

    @property
    def hdfs_uri(self) -> str:
        """URI of the local single-node HDFS started by infra/ (not necessarily the storage root)."""
        return f"hdfs://127.0.0.1:{self.hdfs_namenode_port}"

    def kafka_broker_ports(self) -> list[tuple[int, int]]:
        """(broker port, controller port) of each local broker."""
        step = KAFKA_BROKER_PORT_STEP
        return [(self.kafka_port + i * step, self.kafka_controller_port + i * step) for i in range(self.kafka_brokers)]

    @property
    def spark_standalone_url(self) -> str:
        """URL of the local Spark standalone master."""
        return f"spark://127.0.0.1:{self.spark_master_port}"

    def path(self, *parts: str) -> str:
        """A URI under the storage root, e.g. ``s.path("raw_data")``."""
        return "/".join([self.storage_root, *[p.strip("/") for p in parts]])

    def spark_jars(self, group: str = "spark") -> list[str]:
        """Jars resolved by infra/ for Spark (the Kafka connector and its dependencies)."""
        folder = self.jars_dir / group
        return sorted(str(p) for p in folder.glob("*.jar")) if folder.is_dir() else []


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read the settings from the environment once (raise ``SettingsError`` if invalid)."""
    return load_settings()


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment plus explicit overrides, with a readable error."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            env = f"{ENV_PREFIX}{field.upper()}" if err["loc"] else "settings"
            problems.append(f"{env}: {err['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from exc
