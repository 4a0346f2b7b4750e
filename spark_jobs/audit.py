"""The ingest audit: Kafka records of [start, end) against raw_data and quarantine -> data_quality.

Run hourly by the ``btc_hourly_consolidation`` DAG (task ``audit_ingest``, after the hour's
consolidation) through the data-quality job, or by hand::

    .venv/bin/python spark_jobs/quality_job.py --audit-ingest --start 2024-01-01T00:00:00Z --end 2024-01-01T01:00:00Z

Reads the topic's records whose Kafka timestamp is in the range (a batch read bounded by
timestamps), parses them as the stream does, looks their ``message_id`` up in raw_data and their
coordinates up in quarantine, and MERGEs one ``ingest_complete`` row per symbol and hour into
data_quality (``audit_transforms``). The job exits 1 when a pair fails (after the rows are
recorded): a message Kafka holds is missing from raw_data or stored twice. Nothing
is audited (exit 0, logged) where the stream never ran: no status record at ``BTC_DATA_DIR/status``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from btc_platform.lakehouse import datasets
from btc_platform.lakehouse.quality import DataQualityError
from btc_platform.settings import Settings

log = logging.getLogger("spark_jobs.audit")


class IngestIncompleteError(DataQualityError):
    """The audit found messages of Kafka missing from raw_data (or stored twice)."""


def kafka_records(spark, settings: Settings, start: datetime, end: datetime):
    """The topic's records with a Kafka timestamp in [start, end) (batch read)."""
    from pyspark.sql import functions as F

    records = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", settings.kafka_topic)
        .option("startingTimestamp", str(int(start.timestamp() * 1000)))
        .option("startingOffsetsByTimestampStrategy", "latest")  # a partition with nothing since: empty
        .option("endingTimestamp", str(int(end.timestamp() * 1000)))
        .load()
    )
    return records.where((F.col("timestamp") >= F.lit(start)) & (F.col("timestamp") < F.lit(end)))


def run(spark, settings: Settings, start: datetime, end: datetime, *, checked_at: datetime | None = None):
    """Audit [start, end), MERGE the rows into data_quality; returns them (collected). Raises
    :class:`IngestIncompleteError` after recording when a pair failed."""
    from btc_platform.status import read_status
    from spark_jobs import audit_transforms as at
    from spark_jobs import stream_transforms as st
    from spark_jobs import tables

    if read_status(settings.stream_status_path) is None:
        log.info("no stream status record at %s: the stream has not run on this installation, nothing to "
                 "audit", settings.stream_status_path)  # fmt: skip
        return []
    messages = at.hour_messages(st.parse_messages(kafka_records(spark, settings, start, end))).localCheckpoint(eager=True)
    spans = st.id_time_spans(messages.where("message_id IS NOT NULL")).collect()
    ranges = st.id_time_ranges((r["lo"], r["hi"]) for r in spans)
    raw = tables.read_table(spark, tables.table_uri(settings, datasets.RAW_DATA))
    quarantine = tables.read_table(spark, tables.table_uri(settings, datasets.QUARANTINE))
    raw_ids = raw.where(st.stored_predicate(ranges)).select("message_id") if raw is not None else (
        spark.createDataFrame([], "message_id string"))  # fmt: skip
    keys = at.quarantine_keys(quarantine) if quarantine is not None else spark.createDataFrame([], "quarantine_key string")
    results = at.audit(messages, raw_ids, keys, start, end, checked_at or datetime.now(UTC)).localCheckpoint(eager=True)
    uri = tables.ensure_table(spark, settings, datasets.DATA_QUALITY, datasets.struct_type(datasets.DATA_QUALITY_COLUMNS))
    tables.merge_rows(spark, uri, results, datasets.TABLES[datasets.DATA_QUALITY].keys)
    rows = results.orderBy("hour_start", "symbol").collect()
    for row in rows:
        log.info("ingest audit %s %s: %s - %s", row["symbol"], f"{row['hour_start']:%Y-%m-%dT%H}", row["status"], row["detail"])
    if not rows:
        log.info("ingest audit [%s, %s): Kafka holds no record of the range", start.isoformat(), end.isoformat())
    failed = [r for r in rows if r["status"] == "fail"]
    if failed:
        raise IngestIncompleteError(
            f"{len(failed)} symbol-hour(s) of [{start.isoformat()}, {end.isoformat()}) incomplete: "
            + "; ".join(f"{r['symbol']} {r['hour_start']:%Y-%m-%dT%H}: {r['detail']}" for r in failed[:5])
        )
    return rows
