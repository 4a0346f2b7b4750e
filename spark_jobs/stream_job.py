"""Streaming job: Kafka topic -> the raw_data, minute_metrics and quarantine Delta tables (exactly-once).

Two streaming queries, each with its own checkpoint:

* ``ingest``         reads the topic through the spark-sql-kafka connector and parses and
                     validates each record once. Every micro-batch is appended to two tables as
                     Delta transaction (query id, batch id) from ``foreachBatch``: Delta skips a
                     replayed batch, so both are exactly-once. ``raw_data``: every valid message
                     once with
                     per-record metrics, partitioned by ``date`` of ``event_time``;
                     ``quarantine``: every record that failed parsing/validation with its raw
                     bytes, Kafka coordinates, reason and time (a batch without bad records
                     commits nothing there). Checkpoint ``checkpoints/raw``. raw_data never
                     holds a ``message_id`` twice, however late a copy comes: each batch is
                     deduplicated and the ids raw_data holds already are left out (a lookup in
                     the files of the batch's times when they reach back to what raw_data
                     holds, ``stream_sinks``); no dedup state, no window, nothing dropped for
                     being late.
* ``minute_metrics`` reads raw_data as a Delta streaming source (committed rows only), not
                     Kafka. One row per symbol per 1-minute window of ``window_time`` (the
                     receipt time ``event_time``; a kline's own minute), appended once the
                     ``window_time`` watermark passes the window end to a Delta sink; checkpoint
                     ``checkpoints/metrics``.

Every option defaults to the platform settings (``BTC_*`` environment, see
``btc_platform.settings``). Run::

    python spark_jobs/stream_job.py [--available-now] ...
    spark-submit --jars ... spark_jobs/stream_job.py ...

Per-batch progress is logged as one JSON line per batch and written to the status file
(``settings.stream_status_path``). SIGTERM/SIGINT stop the queries cleanly (exit 0); a failing
query stops the job with exit 1; a configuration error exits 2 with a one-line reason.

This module is the wiring (options, session, queries, waiting, exit codes). The transforms are
in ``stream_transforms``, the ingest query's per-batch writing in ``stream_sinks`` and the
progress listener and status record in ``stream_status``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from urllib.parse import urlparse

from btc_platform.lakehouse import datasets
from btc_platform.lakehouse.spark_session import build_session
from btc_platform.settings import Settings, SettingsError, load_settings
from spark_jobs._cli import ConfigError, setup_logging
from spark_jobs.stream_sinks import BatchCounts, BatchOutput, foreach_batch_writer
from spark_jobs.stream_status import make_listener

log = logging.getLogger("spark_jobs.stream_job")

APP_NAME = "btc-stream"
QUERY_INGEST = "ingest"
QUERY_METRICS = "minute_metrics"
#: Queries reading Kafka (their end offsets are the job's position in the topic).
KAFKA_QUERIES = (QUERY_INGEST,)
#: Files of raw_data the minute-metrics query takes per micro-batch at most (bounds the first
#: batch over a large existing raw_data).
METRICS_MAX_FILES_PER_TRIGGER = 1000
EXIT_OK, EXIT_QUERY_FAILED, EXIT_CONFIG = 0, 1, 2


# ---- command line ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream_job.py",
        description="Kafka -> Spark Structured Streaming -> raw_data, minute_metrics, quarantine. "
        "Every option overrides the matching BTC_* setting.",
    )
    parser.add_argument(
        "--master", help="Spark master, e.g. local[2] or spark://host:7077 (BTC_SPARK_MASTER)"
    )
    parser.add_argument(
        "--storage-root", help="dataset root URI, file:///... or hdfs://host:port/path (BTC_STORAGE_ROOT)"
    )
    parser.add_argument(
        "--checkpoint-root",
        help="where the raw/, metrics/ and quarantine/ checkpoints live "
        "(BTC_STREAM_CHECKPOINT_ROOT; default <storage root>/checkpoints)",
    )
    parser.add_argument(
        "--bootstrap-servers", help="Kafka bootstrap servers host:port[,...] (BTC_KAFKA_BOOTSTRAP_SERVERS)"
    )
    parser.add_argument("--topic", help="Kafka topic to read (BTC_KAFKA_TOPIC)")
    parser.add_argument(
        "--trigger",
        help="ingest (raw_data, quarantine) micro-batch interval, e.g. '2 seconds' (BTC_STREAM_TRIGGER_INTERVAL)",
    )
    parser.add_argument(
        "--side-trigger",
        help="minute_metrics micro-batch interval, e.g. '10 seconds' "
        "(BTC_STREAM_SIDE_TRIGGER_INTERVAL)",
    )
    parser.add_argument(
        "--starting-offsets",
        help="Kafka startingOffsets on the first start: earliest, latest or JSON (BTC_STREAM_STARTING_OFFSETS); "
        "ignored once a checkpoint exists",
    )
    parser.add_argument(
        "--max-offsets-per-trigger",
        type=int,
        help="cap on records per micro-batch, 0 = unlimited (BTC_STREAM_MAX_OFFSETS_PER_TRIGGER)",
    )
    parser.add_argument(
        "--watermark",
        help="minute_metrics' event-time watermark delay, e.g. '30 seconds' (BTC_STREAM_WATERMARK_DELAY)",
    )
    parser.add_argument(
        "--available-now",
        action="store_true",
        help="process what is in Kafka now, then stop (tests, benchmarks, catch-up runs)",
    )
    parser.add_argument("--log-level", default="INFO", help="Python log level (default INFO)")
    return parser


_OVERRIDES = {
    "master": "spark_master",
    "storage_root": "storage_root",
    "checkpoint_root": "stream_checkpoint_root",
    "bootstrap_servers": "kafka_bootstrap_servers",
    "topic": "kafka_topic",
    "trigger": "stream_trigger_interval",
    "side_trigger": "stream_side_trigger_interval",
    "starting_offsets": "stream_starting_offsets",
    "max_offsets_per_trigger": "stream_max_offsets_per_trigger",
    "watermark": "stream_watermark_delay",
}


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {
        field: getattr(args, opt) for opt, field in _OVERRIDES.items() if getattr(args, opt) is not None
    }
    return load_settings(**overrides)


def _checkpoint(settings: Settings, rel: str) -> str:
    root = settings.stream_checkpoint_root.rstrip("/")
    return f"{root}/{rel.rsplit('/', 1)[-1]}" if root else settings.path(rel)


def checkpoint_paths(settings: Settings) -> dict[str, str]:
    """Checkpoint URI of each query (``<root>/raw`` for ingest, ``<root>/metrics``)."""
    return {
        QUERY_INGEST: _checkpoint(settings, datasets.CHECKPOINT_RAW),
        QUERY_METRICS: _checkpoint(settings, datasets.CHECKPOINT_METRICS),
    }


# ---- the pipeline -----------------------------------------------------------------------------
def kafka_source(spark, settings: Settings):
    """The Kafka stream (``failOnDataLoss`` from settings, true by default).

    ``maxRecordsPerPartition`` splits a large batch of a topic partition into several Spark tasks:
    with one task per topic partition, a 3-partition topic on 2 cores leaves a core idle for a
    third of every catch-up batch. Small (steady-state) batches keep one task per partition.
    """
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", settings.kafka_topic)
        .option("startingOffsets", settings.stream_starting_offsets)
        .option("failOnDataLoss", str(settings.stream_fail_on_data_loss).lower())
    )
    if settings.stream_kafka_max_records_per_partition:
        reader = reader.option("maxRecordsPerPartition", str(settings.stream_kafka_max_records_per_partition))
    if settings.stream_max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(settings.stream_max_offsets_per_trigger))
    try:
        return reader.load()
    except Exception as exc:
        if "DATA_SOURCE_NOT_FOUND" in str(exc) or "Failed to find data source" in str(exc):
            raise ConfigError(
                f"the Kafka connector is not on the classpath (no jars under {settings.jars_dir / 'spark'}?): "
                "run `make jars` or pass --jars to spark-submit"
            ) from exc
        raise


def _trigger(settings: Settings, available_now: bool, *, side: bool = False) -> dict:
    if available_now:
        return {"availableNow": True}
    return {"processingTime": settings.stream_side_trigger_interval if side else settings.stream_trigger_interval}


def _ingest_records(source):
    """Parsed records of ``source`` that feed raw_data and quarantine. No stateful dedup (no
    watermark, so no record is ever dropped for being late): repeated ``message_id`` are kept out
    of raw_data by its writer (``BatchOutput.unique_key``)."""
    from spark_jobs import stream_transforms as st

    return st.ingest_records(st.parse_messages(source))


def _raw_rows(records):
    from spark_jobs import stream_transforms as st

    return st.raw_data_output(st.with_record_metrics(st.valid_records(records)))


def _quarantine_rows(records):
    from pyspark.sql import functions as F

    from spark_jobs import stream_transforms as st

    return st.quarantine_output(records, F.col("quarantined_at"))


#: Where the ingest writer leaves the counts of each batch for the status record (one per job).
BATCH_COUNTS = BatchCounts()


def start_ingest_query(spark, source, settings: Settings, *, available_now: bool = False):
    """Start the ingest query: ``source`` (Kafka-shaped) -> the raw_data and quarantine tables.

    The query hands each Kafka micro-batch to the writer, which parses it once
    (:func:`_ingest_records`), keeps raw_data's rows in memory and leaves out the ``message_id``
    that the batch repeats or raw_data holds (looked up only when the batch's times reach back to
    what raw_data holds, ``stream_sinks``); every micro-batch is appended to both tables by
    :func:`stream_sinks.foreach_batch_writer` as Delta transaction (query id, batch id), so a
    replayed batch is skipped by Delta (exactly-once for both).
    """
    from spark_jobs import stream_transforms as st
    from spark_jobs import tables

    checkpoint = checkpoint_paths(settings)[QUERY_INGEST]
    records = _ingest_records(source)  # the frame the outputs' rows come from (for their schema here)
    raw_uri = tables.table_uri(settings, datasets.RAW_DATA)
    quarantine_uri = tables.table_uri(settings, datasets.QUARANTINE)
    write_batch = foreach_batch_writer(spark, checkpoint, [
        BatchOutput(raw_uri, _raw_rows, unique_key="message_id", id_groups=st.ID_GROUP_COLUMNS),
        BatchOutput(quarantine_uri, _quarantine_rows, only_if="reason IS NOT NULL", count_as="quarantined"),
    ], BATCH_COUNTS, prepare=_ingest_records)  # fmt: skip
    tables.ensure_table(spark, settings, datasets.RAW_DATA, _raw_rows(records).schema)
    tables.ensure_table(spark, settings, datasets.QUARANTINE, _quarantine_rows(records).schema)
    write_batch.prime(spark)  # raw_data's id_time bound, read before the first batch waits for it
    query = (
        source.writeStream.queryName(QUERY_INGEST)
        .foreachBatch(write_batch)
        .option("checkpointLocation", checkpoint)
        .trigger(**_trigger(settings, available_now))
        .start()
    )
    write_batch.bind(query)
    log.info("started query %s -> %s, %s (checkpoint %s)", QUERY_INGEST,
             settings.path(datasets.RAW_DATA), settings.path(datasets.QUARANTINE), checkpoint)  # fmt: skip
    return query


def prepare_metrics_query(spark, source, settings: Settings, *, available_now: bool = False):
    """The minute_metrics query, ready to start: raw_data as a Delta streaming source (only
    committed rows; OPTIMIZE's rewrites carry no new data and are not read again) ->
    minute_metrics, a Delta streaming sink (exactly-once through its own transaction ids).
    Returns the function that starts it and returns the query.

    ``source`` only provides raw_data's schema (the Kafka-shaped stream the ingest query reads).
    Tables and plan are made here; the source takes its position in raw_data when the query
    starts (for available-now: what raw_data holds then).
    """
    from spark_jobs import stream_transforms as st
    from spark_jobs import tables

    raw_uri = tables.ensure_table(spark, settings, datasets.RAW_DATA, _raw_rows(_ingest_records(source)).schema)
    records = spark.readStream.format("delta").option("maxFilesPerTrigger", str(METRICS_MAX_FILES_PER_TRIGGER)).load(raw_uri)
    windowed = st.with_window_time(records)
    # raw_data holds each message once: a watermark, no dedup state
    metrics = st.minute_metrics(windowed.withWatermark(st.WINDOW_TIME, settings.stream_watermark_delay))
    minutes_uri = tables.ensure_table(spark, settings, datasets.MINUTE_METRICS, metrics.schema)
    checkpoint = checkpoint_paths(settings)[QUERY_METRICS]
    writer = (
        metrics.writeStream.queryName(QUERY_METRICS)
        .format("delta")
        .outputMode("append")
        .option("checkpointLocation", checkpoint)
        .trigger(**_trigger(settings, available_now, side=True))
    )

    def start():
        query = writer.start(minutes_uri)
        log.info("started query %s -> %s (checkpoint %s)", QUERY_METRICS, minutes_uri, checkpoint)
        return query

    return start


def start_metrics_query(spark, source, settings: Settings, *, available_now: bool = False):
    """Start the minute_metrics query (see :func:`prepare_metrics_query`)."""
    return prepare_metrics_query(spark, source, settings, available_now=available_now)()


def start_queries(spark, source, settings: Settings) -> list:
    """Start both queries (processing-time trigger): ingest (raw_data, quarantine), minute_metrics."""
    return [start_ingest_query(spark, source, settings), start_metrics_query(spark, source, settings)]


def await_queries(spark, queries: list, stop_requested: threading.Event, poll_s: float = 1.0) -> int:
    """Block until every query ends (available-now), one fails, or a stop is requested.

    Returns the exit code: 0 when all ended or were stopped cleanly, 1 when a query failed.
    """
    from pyspark.errors import StreamingQueryException

    failed: str | None = None
    try:
        while not stop_requested.is_set():
            if not any(q.isActive for q in queries):
                break
            if spark.streams.awaitAnyTermination(poll_s):
                spark.streams.resetTerminated()  # an available-now query finished; wait for the rest
    except StreamingQueryException as exc:
        failed = str(exc).splitlines()[0]
    finally:
        for query in queries:
            if query.isActive:
                log.info("stopping query %s", query.name)
                query.stop()
    for query in queries:
        exc = query.exception()
        if exc is not None:
            failed = failed or f"{query.name}: {str(exc).splitlines()[0]}"
    if failed:
        log.error("streaming query failed, stopping the job: %s", failed)
        return EXIT_QUERY_FAILED
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    from btc_platform.lakehouse.lake import check_layout

    settings = settings_from_args(args)
    if settings.storage_root.startswith("hdfs://"):
        from btc_platform.lakehouse.namenode import HdfsNotReadyError, wait_for_hdfs_ready

        namenode = urlparse(settings.storage_root).hostname
        try:
            wait_for_hdfs_ready(
                f"http://{namenode}:{settings.hdfs_namenode_http_port}",
                timeout=settings.hdfs_safemode_timeout_s,
            )
        except HdfsNotReadyError as exc:
            raise ConfigError(str(exc)) from exc
    check_layout(settings)  # raw_data etc. of the Parquet layout: refused, with the command
    stop_requested = threading.Event()

    def on_signal(signum, _frame) -> None:
        log.info("received %s: stopping the queries", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    spark = build_session(APP_NAME, settings, master=settings.spark_master,
                          driver_memory=settings.stream_driver_memory,
                          driver_java_options=settings.stream_driver_java_options)  # fmt: skip
    try:
        spark.streams.addListener(make_listener(settings.stream_status_path, APP_NAME, KAFKA_QUERIES,
                                                batch_counts={QUERY_INGEST: BATCH_COUNTS}))
        source = kafka_source(spark, settings)
        log.info(
            "reading %s from %s (startingOffsets=%s, failOnDataLoss=%s, maxOffsetsPerTrigger=%s, "
            "maxRecordsPerPartition=%s, trigger=%s, side trigger=%s, watermark=%s) into %s",
            settings.kafka_topic,
            settings.kafka_bootstrap_servers,
            settings.stream_starting_offsets,
            settings.stream_fail_on_data_loss,
            settings.stream_max_offsets_per_trigger or "unlimited",
            settings.stream_kafka_max_records_per_partition or "unlimited",
            "availableNow" if args.available_now else settings.stream_trigger_interval,
            "availableNow" if args.available_now else settings.stream_side_trigger_interval,
            settings.stream_watermark_delay,
            settings.storage_root,
        )
        if not args.available_now:
            return await_queries(spark, start_queries(spark, source, settings), stop_requested)
        # available-now: the metrics query reads raw_data, so it starts once everything in Kafka
        # now has been committed there (its tables and plan are made before, while ingest runs)
        start_metrics = prepare_metrics_query(spark, source, settings, available_now=True)
        code = await_queries(spark, [start_ingest_query(spark, source, settings, available_now=True)], stop_requested)
        if code != EXIT_OK or stop_requested.is_set():
            return code
        return await_queries(spark, [start_metrics()], stop_requested)
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> int:
    from btc_platform.lakehouse.lake import LegacyLayoutError

    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return run(args)
    except (SettingsError, ConfigError, LegacyLayoutError) as exc:
        log.error("stream job cannot start: %s", exc)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
