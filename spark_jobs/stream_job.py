"""Streaming job: Kafka topic -> raw_data/, minute_metrics/ and quarantine/ (exactly-once).

Two streaming queries, each with its own checkpoint:

* ``ingest``         reads the topic through the spark-sql-kafka connector and parses and
                     validates each record once. Every micro-batch goes to two datasets under
                     the query's batch id (Spark's file-stream sink, called from
                     ``foreachBatch``: a replayed batch id is skipped, so both are exactly-once):
                     ``raw_data/``, every valid message once (dedup by ``message_id`` within the
                     watermark delay of arrival) with per-record metrics, Parquet partitioned by
                     ``date``/``hour`` of ``event_time``; and ``quarantine/``, every record that
                     failed parsing/validation with its raw bytes, Kafka coordinates, reason and
                     time. Checkpoint ``checkpoints/raw``.
* ``minute_metrics`` reads what ingest committed to raw_data (a file stream over raw_data/,
                     through the sink's ``_spark_metadata`` log, so only committed files), not
                     Kafka. One row per symbol per 1-minute event-time window, appended once the
                     ``event_time`` watermark passes the window end; checkpoint
                     ``checkpoints/metrics``.

Every option defaults to the platform settings (``BTC_*`` environment, see
``btc_platform.settings``). Run::

    python spark_jobs/stream_job.py [--available-now] ...
    spark-submit --jars ... spark_jobs/stream_job.py ...

Per-batch progress is logged as one JSON line per batch and written to the status file
(``settings.stream_status_path``). SIGTERM/SIGINT stop the queries cleanly (exit 0); a failing
query stops the job with exit 1; a configuration error exits 2 with a one-line reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from btc_platform import datasets
from btc_platform.settings import Settings, SettingsError, load_settings
from btc_platform.spark import build_session, hadoop_fs, path_exists
from btc_platform.status import write_status
from spark_jobs._cli import setup_logging

log = logging.getLogger("spark_jobs.stream_job")

APP_NAME = "btc-stream"
QUERY_INGEST = "ingest"
QUERY_METRICS = "minute_metrics"
#: Queries reading Kafka (their end offsets are the job's position in the topic).
KAFKA_QUERIES = (QUERY_INGEST,)
#: Files of raw_data the minute-metrics query takes per micro-batch at most (bounds the first
#: batch over a large existing raw_data).
METRICS_MAX_FILES_PER_TRIGGER = 1000
OBSERVATION = "validation"  # name of the observed valid/quarantined counts in each progress
EXIT_OK, EXIT_QUERY_FAILED, EXIT_CONFIG = 0, 1, 2


class ConfigError(RuntimeError):
    """The job cannot start with this configuration (one-line reason, exit code 2)."""


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
        help="event-time watermark / dedup delay, e.g. '30 seconds' (BTC_STREAM_WATERMARK_DELAY)",
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


def check_checkpoint_layout(spark, settings: Settings) -> None:
    """Refuse to start on checkpoints of the earlier layout, where quarantine had its own query.

    That query numbered its batches on its own; the ingest query's batch ids would not line up
    with quarantine/_spark_metadata, and already-recorded ids would be skipped (records lost).
    """
    old = _checkpoint(settings, datasets.CHECKPOINT_QUARANTINE)
    if path_exists(spark, old):
        raise ConfigError(
            f"{old} is a checkpoint of the earlier three-query layout (raw_data and quarantine now "
            "share one ingest query): stop the job, move checkpoints/, raw_data/, quarantine/ and "
            "minute_metrics/ aside, and start again (it re-reads Kafka from startingOffsets); see "
            "README, Troubleshooting"
        )


# ---- progress ---------------------------------------------------------------------------------
def _min_offsets(offsets: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """Per topic/partition minimum over the queries (the slowest query defines the lag)."""
    merged: dict[str, dict[str, int]] = {}
    for item in offsets:
        for topic, parts in item.items():
            for part, offset in parts.items():
                current = merged.setdefault(topic, {}).get(part)
                merged[topic][part] = offset if current is None else min(current, offset)
    return merged


def progress_record(progress: Any) -> dict[str, Any]:
    """The structured per-batch record (query, batch, rows, rate, duration, watermark, counts)."""
    data = json.loads(progress.json)
    observed = (data.get("observedMetrics") or {}).get(OBSERVATION) or {}
    state = data.get("stateOperators") or []
    custom = [op.get("customMetrics") or {} for op in state]
    end_offsets: dict[str, Any] = {}
    for source in data.get("sources") or []:
        if "kafka" not in str(source.get("description", "")).lower():
            continue  # the minute-metrics query's file source has log offsets, not Kafka ones
        end = source.get("endOffset")
        if isinstance(end, str):
            try:
                end = json.loads(end)
            except json.JSONDecodeError:
                end = None
        if isinstance(end, dict):
            end_offsets.update(end)
    return {
        "query": data.get("name"),
        "id": data.get("id"),
        "batch_id": data.get("batchId"),
        "timestamp": data.get("timestamp"),
        "input_rows": data.get("numInputRows"),
        "input_rows_per_s": data.get("inputRowsPerSecond"),
        "processed_rows_per_s": data.get("processedRowsPerSecond"),
        "batch_duration_ms": data.get("batchDuration"),
        "phases_ms": data.get("durationMs") or {},  # addBatch, queryPlanning, walCommit, ...
        "watermark": (data.get("eventTime") or {}).get("watermark"),
        "valid": observed.get("valid"),
        "quarantined": observed.get("quarantined"),
        "state_rows": sum(op.get("numRowsTotal") or 0 for op in state),
        "dropped_duplicates": sum(c.get("numDroppedDuplicateRows") or 0 for c in custom),
        "dropped_late": sum(op.get("numRowsDroppedByWatermark") or 0 for op in state),
        "source_end_offset": end_offsets,
    }


def make_listener(status_path: Path):
    """A StreamingQueryListener that logs each batch as one JSON line and keeps the status file."""
    from pyspark.sql.streaming import StreamingQueryListener

    class ProgressListener(StreamingQueryListener):
        def __init__(self) -> None:
            self._lock = threading.Lock()
            self.started_at = datetime.now(UTC).isoformat()
            self.queries: dict[str, dict[str, Any]] = {}

        def _write(self) -> None:
            offsets = [(self.queries.get(name) or {}).get("source_end_offset") for name in KAFKA_QUERIES]
            record = {
                "job": APP_NAME,
                "started_at": self.started_at,
                "updated_at": datetime.now(UTC).isoformat(),
                "end_offset": _min_offsets(offsets) if all(offsets) else None,
                "queries": self.queries,
            }
            write_status(status_path, record)

        def onQueryStarted(self, event) -> None:
            log.info("query %s started (id %s, run %s)", event.name, event.id, event.runId)
            with self._lock:
                self.queries.setdefault(
                    event.name or str(event.id), {"state": "started", "id": str(event.id)}
                )
                self._write()

        def onQueryProgress(self, event) -> None:
            record = progress_record(event.progress)
            log.info("stream progress %s", json.dumps(record, sort_keys=True, default=str))
            with self._lock:
                name = record["query"] or str(event.progress.id)
                previous = self.queries.get(name, {})
                for key in ("valid", "quarantined", "input_rows"):  # totals since the job started
                    record[f"{key}_total"] = (previous.get(f"{key}_total") or 0) + (record[key] or 0)
                self.queries[name] = {**record, "state": "running"}
                self._write()

        def onQueryIdle(self, event) -> None:
            pass  # idle triggers carry no batch; the last progress stays in the status file

        def onQueryTerminated(self, event) -> None:
            if event.exception:
                log.error("query %s failed: %s", event.id, event.exception.splitlines()[0])
            else:
                log.info("query %s stopped", event.id)
            with self._lock:
                for record in self.queries.values():
                    if record.get("id") == str(event.id):
                        record["state"] = "failed" if event.exception else "stopped"
                self._write()

    return ProgressListener()


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


def _observe_validation(parsed):
    from pyspark.sql import functions as F

    return parsed.observe(
        OBSERVATION,
        F.count_if(F.col("reason").isNull()).alias("valid"),
        F.count_if(F.col("reason").isNotNull()).alias("quarantined"),
    )


def _sink(df, name: str, path: str, partition_by: tuple[str, ...], checkpoint: str, trigger: dict):
    query = (
        df.writeStream.queryName(name)
        .format("parquet")
        .outputMode("append")
        .option("path", path)
        .option("checkpointLocation", checkpoint)
        .partitionBy(*partition_by)
        .trigger(**trigger)
        .start()
    )
    log.info("started query %s -> %s (checkpoint %s)", name, path, checkpoint)
    return query


def _trigger(settings: Settings, available_now: bool, *, side: bool = False) -> dict:
    if available_now:
        return {"availableNow": True}
    return {"processingTime": settings.stream_side_trigger_interval if side else settings.stream_trigger_interval}


def _ingest_records(source, settings: Settings):
    """Parsed (observed), deduplicated records of ``source`` that feed raw_data and quarantine."""
    from spark_jobs import stream_transforms as st

    records = st.ingest_records(_observe_validation(st.parse_messages(source)))
    # dedup window measured on arrival (Kafka timestamp), so a record that is late in event time
    # is still stored; only repeated message_ids within the delay are dropped.
    return st.deduplicate(records, "kafka_timestamp", settings.stream_watermark_delay, st.INGEST_DEDUP_KEYS)


def _raw_rows(records):
    from spark_jobs import stream_transforms as st

    return st.raw_data_output(st.with_record_metrics(st.valid_records(records)))


def _quarantine_rows(records):
    from pyspark.sql import functions as F

    from spark_jobs import stream_transforms as st

    return st.quarantine_output(records, F.col("quarantined_at"))


def file_stream_sink(spark, path: str, partition_by: tuple[str, ...]):
    """Spark's own Parquet file-stream sink on ``path`` (JVM object), for use in ``foreachBatch``.

    ``addBatch(batch_id, df)`` writes through the manifest committer and records the files in
    ``path/_spark_metadata`` under ``batch_id``; a batch id already recorded there is skipped. A
    query that replays a batch after a crash therefore writes it once, exactly like
    ``writeStream.format("parquet")``, and readers (Spark, the metrics file stream) see only
    committed files.
    """
    jvm = spark.sparkContext._jvm
    return jvm.org.apache.spark.sql.execution.streaming.sinks.FileStreamSink(
        spark._jsparkSession,
        path,
        jvm.org.apache.spark.sql.execution.datasources.parquet.ParquetFileFormat(),
        jvm.PythonUtils.toSeq(list(partition_by)),
        jvm.PythonUtils.toScalaMap({}),
    )


def start_ingest_query(spark, source, settings: Settings, *, available_now: bool = False):
    """Start the ingest query: ``source`` (Kafka-shaped) -> raw_data/ and quarantine/.

    Each record is read and parsed once; every micro-batch is written to both datasets with
    :func:`file_stream_sink` under the query's batch id (exactly-once for both).
    """
    check_checkpoint_layout(spark, settings)
    raw_sink = file_stream_sink(spark, settings.path(datasets.RAW_DATA), datasets.PARTITION_COLUMNS)
    quarantine_sink = file_stream_sink(spark, settings.path(datasets.QUARANTINE), ("date",))

    def write_batch(records, batch_id: int) -> None:
        records.persist()
        try:
            raw_sink.addBatch(batch_id, _raw_rows(records)._jdf)
            quarantine_sink.addBatch(batch_id, _quarantine_rows(records)._jdf)
        finally:
            records.unpersist()

    checkpoint = checkpoint_paths(settings)[QUERY_INGEST]
    query = (
        _ingest_records(source, settings)
        .writeStream.queryName(QUERY_INGEST)
        .foreachBatch(write_batch)
        .option("checkpointLocation", checkpoint)
        .trigger(**_trigger(settings, available_now))
        .start()
    )
    log.info("started query %s -> %s, %s (checkpoint %s)", QUERY_INGEST,
             settings.path(datasets.RAW_DATA), settings.path(datasets.QUARANTINE), checkpoint)  # fmt: skip
    return query


def start_metrics_query(spark, source, settings: Settings, *, available_now: bool = False):
    """Start the minute_metrics query: a file stream over what the ingest query committed to raw_data.

    ``source`` only provides raw_data's schema (the Kafka-shaped stream the ingest query reads).
    """
    from spark_jobs import stream_transforms as st

    raw_path = settings.path(datasets.RAW_DATA)
    _, path, fs = hadoop_fs(spark, raw_path)
    fs.mkdirs(path)  # a file stream needs it
    raw_schema = _raw_rows(_ingest_records(source, settings)).schema
    records = (
        spark.readStream.schema(raw_schema)
        .option("maxFilesPerTrigger", str(METRICS_MAX_FILES_PER_TRIGGER))
        .parquet(raw_path)
    )
    metrics = st.minute_metrics(st.deduplicate(records, "event_time", settings.stream_watermark_delay))
    return _sink(metrics, QUERY_METRICS, settings.path(datasets.MINUTE_METRICS), datasets.PARTITION_COLUMNS,
                 checkpoint_paths(settings)[QUERY_METRICS], _trigger(settings, available_now, side=True))  # fmt: skip


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
    settings = settings_from_args(args)
    if settings.storage_root.startswith("hdfs://"):
        from btc_platform.hdfs import HdfsNotReadyError, wait_for_hdfs_ready

        namenode = urlparse(settings.storage_root).hostname
        try:
            wait_for_hdfs_ready(
                f"http://{namenode}:{settings.hdfs_namenode_http_port}",
                timeout=settings.hdfs_safemode_timeout_s,
            )
        except HdfsNotReadyError as exc:
            raise ConfigError(str(exc)) from exc
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
        spark.streams.addListener(make_listener(settings.stream_status_path))
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
        # now has been committed there
        code = await_queries(spark, [start_ingest_query(spark, source, settings, available_now=True)],
                             stop_requested)  # fmt: skip
        if code != EXIT_OK or stop_requested.is_set():
            return code
        return await_queries(spark, [start_metrics_query(spark, source, settings, available_now=True)],
                             stop_requested)  # fmt: skip
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return run(args)
    except (SettingsError, ConfigError) as exc:
        log.error("stream job cannot start: %s", exc)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
