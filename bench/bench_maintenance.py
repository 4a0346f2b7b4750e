"""Benchmark: raw_data files of one closed day before and after the maintenance job (OPTIMIZE + VACUUM).

The stream appends raw_data once per micro-batch (every 2 s when messages flow): one small file per
batch and day partition, ~43,000 a day. This writes one closed day (yesterday, UTC) of simulated
messages through the stream's own transforms (``parse_messages`` -> raw_data rows) into a fresh
raw_data Delta table as ``--files`` small files (default 2,000; the count OPTIMIZE starts from, not
the stream's commits, is what matters for it), plus a few files of today's open partition, then runs
``spark_jobs.maintenance_job.run`` as the daily DAG does and prints the day's data files and bytes
before and after, today's (untouched), and the job's time.

    .venv/bin/python bench/bench_maintenance.py [--messages 86400] [--files 2000]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench_models import log_figures  # siblings: the script directory is importable
from bench_stream import payloads

log = logging.getLogger("bench.maintenance")


def kafka_shaped(spark, values: list[bytes], at: datetime):
    """A DataFrame shaped like the Kafka source holding ``values``."""
    from pyspark.sql.types import (
        BinaryType,
        IntegerType,
        LongType,
        StringType,
        StructField,
        StructType,
        TimestampType,
    )

    schema = StructType([
        StructField("key", BinaryType()), StructField("value", BinaryType()), StructField("topic", StringType()),
        StructField("partition", IntegerType()), StructField("offset", LongType()),
        StructField("timestamp", TimestampType()),
    ])  # fmt: skip
    return spark.createDataFrame([(b"BTCUSDT", v, "cryptoTopic", 0, i, at) for i, v in enumerate(values)], schema)


def day_files(spark, uri: str, day: str) -> tuple[int, int]:
    """Data files and bytes of raw_data's ``date = day`` partition at the current version."""
    from delta.tables import DeltaTable

    detail = DeltaTable.forPath(spark, uri).toDF().where(f"date = '{day}'").inputFiles()
    sizes = [Path(f.removeprefix("file:")).stat().st_size for f in detail]
    return len(sizes), sum(sizes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=86_400, help="messages of the closed day (default 86,400: 1/s)")
    parser.add_argument("--files", type=int, default=2000, help="small files the day is written as (default 2,000)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from btc_platform.lakehouse import datasets
    from btc_platform.lakehouse.spark_session import build_session
    from btc_platform.settings import load_settings
    from spark_jobs import maintenance_job, tables
    from spark_jobs import stream_transforms as st

    now = datetime.now(UTC)
    today = now.date()
    yesterday = datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(days=1)
    with tempfile.TemporaryDirectory(prefix="bench-maint-") as tmp:
        settings = load_settings(data_dir=Path(tmp) / "data", storage_root=f"file://{tmp}/store")
        spark = build_session("bench-maintenance", settings, master=settings.spark_master)
        try:
            step_ms = max(1, 86_400_000 // args.messages)
            closed = [value for _key, value in payloads(args.messages, yesterday, step_ms)]
            open_day = [value for _key, value in payloads(1000, now - timedelta(minutes=20), 1000, seed=1)]
            rows = st.raw_data_output(st.with_record_metrics(st.valid_records(st.parse_messages(
                kafka_shaped(spark, closed + open_day, now)))))  # fmt: skip
            uri = tables.ensure_table(spark, settings, datasets.RAW_DATA, rows.schema)
            started = time.perf_counter()
            rows.where(f"date < '{today}'").repartition(args.files).write.format("delta").mode("append").save(uri)
            for part in range(4):  # today's open partition: a few stream batches
                rows.where(f"date = '{today}'").where(f"kafka_offset % 4 = {part}").coalesce(1).write.format(
                    "delta").mode("append").save(uri)  # fmt: skip
            write_s = time.perf_counter() - started
            day = yesterday.date().isoformat()
            before, before_bytes = day_files(spark, uri, day)
            today_before, _ = day_files(spark, uri, today.isoformat())
            started = time.perf_counter()
            reports = maintenance_job.run(spark, settings, today=today, retention_hours=0)
            maint_s = time.perf_counter() - started
            after, after_bytes = day_files(spark, uri, day)
            today_after, _ = day_files(spark, uri, today.isoformat())
            on_disk = sum(1 for _ in Path(tmp, "store", "raw_data", f"date={day}").glob("*.parquet"))
            raw = next(r for r in reports if r.name == datasets.RAW_DATA)
        finally:
            spark.stop()
    figures = [
        ("closed day: messages / files written", f"{args.messages:,} / {before:,} ({write_s:.1f} s)"),
        ("closed day: data files before -> after maintenance", f"{before:,} -> {after:,}"),
        ("closed day: bytes before -> after", f"{before_bytes:,} -> {after_bytes:,}"),
        ("closed day: parquet files on disk after VACUUM (retain 0 h)", f"{on_disk:,}"),
        ("today (open): data files before -> after", f"{today_before} -> {today_after}"),
        ("raw_data vacuumed files", f"{raw.vacuumed_files}"),
        ("maintenance job, every table (s)", f"{maint_s:.1f}"),
    ]
    log_figures(log, "bench_maintenance", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
