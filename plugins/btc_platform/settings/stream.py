"""Settings of the streaming job and of the supervisor that keeps the producer and the stream up
(part of :class:`btc_platform.settings.Settings`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator
from pydantic_settings import NoDecode


class StreamSettings(BaseModel):
    """The streaming job and its supervision."""

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
        default="-XX:+UseParallelGC -XX:MaxNewSize=256m",
        description="Extra JVM options of the streaming job's driver (the throughput collector "
        "measured faster than G1 here; its young generation capped, else it grows to a third of "
        "the heap and stays resident when the stream is idle: docs/performance.md).",
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
