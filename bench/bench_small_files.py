"""Benchmark: today's raw_data partition under a day's worth of small stream commits.

The stream commits raw_data once per micro-batch (``BTC_STREAM_TRIGGER_INTERVAL``, 2 s): a day is
up to 43,200 commits of a few rows each, one file (or one per Kafka partition) each. One day of
simulated messages (``--rate`` per second) goes through the stream's own transforms
(``parse_messages`` -> raw_data rows) and is cut into consecutive batches, then:

1. **Spark, the platform's write path**: ``--commits`` batches committed one after the other in one
   Spark session into a fresh raw_data table created with the platform's layout
   (``spark_jobs.tables.ensure_table``: partitioning and table properties of
   ``btc_platform.lakehouse.datasets.TABLES``, so auto compaction when the layout enables it),
   each as the stream does (``--mode append``: an append under (app id, batch id), Delta's
   idempotent write; ``--mode merge``: a MERGE on ``message_id`` inserting the new rows, the
   exactly-once write path). Prints the data files in the day's partition (the most seen after
   any commit, and at the end), the commits per operation (auto compaction's are ``OPTIMIZE``)
   and the write time per commit (a commit that triggers compaction pays for it).
2. **A whole day's log, quickly** (``--day-commits``, default 43,200 = a 2 s trigger; 0 skips):
   Spark needs ~0.3-1 s per commit here, so the day's commits are appended with delta-rs instead
   (a few ms each) into a table of the same layout, with Delta Spark's log rhythm: a checkpoint
   every 10 versions, and, unless ``--no-auto-compact``, auto compaction's rule (once
   ``minNumFiles`` = 50 files of the partition are below half the 128 MiB target, they are
   compacted into one commit). Prints the day's files, commits and ``_delta_log`` files, then a
   delta-rs read of the day's last hour (``btc_platform.lakehouse.lake.read_at`` with the range
   pushed down, as the dashboard and DAG tasks read): best and median of 5.

``--no-auto-compact`` creates both tables without ``delta.autoOptimize.autoCompact`` (the layout
before it) to compare.

    .venv/bin/python bench/bench_small_files.py [--commits 300] [--mode append|merge]
        [--day-commits 43200] [--no-auto-compact]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

log = logging.getLogger("bench.small_files")

#: Delta Spark's defaults that shape the log: a checkpoint every 10 versions
#: (``delta.checkpointInterval``); auto compaction once ``spark.databricks.delta.autoCompact.minNumFiles``
#: files of a partition are below ``autoCompact.minFileSize`` (half of ``maxFileSize``, 128 MiB).
CHECKPOINT_INTERVAL = 10
MIN_NUM_FILES = 50
MAX_FILE_SIZE = 128 * 2**20


def day_files(table, day: str) -> int:
    """Data files of the ``date = day`` partition of a delta-rs table at its loaded version."""
    return sum(1 for uri in table.file_uris() if f"/date={day}/" in uri)


def partition_files(uri: str, day: str) -> int:
    """Data files of raw_data's ``date = day`` partition at the table's current version (delta-rs)."""
    from deltalake import DeltaTable

    return day_files(DeltaTable(uri.removeprefix("file://")), day)


def commit_operations(uri: str) -> dict[str, int]:
    """Commits of the table per operation (``WRITE``, ``MERGE``, ``OPTIMIZE`` ...), from its log."""
    from collections import Counter

    from deltalake import DeltaTable

    return dict(Counter(entry.get("operation", "?") for entry in DeltaTable(uri.removeprefix("file://")).history()))


def log_files(uri: str) -> int:
    return sum(1 for _ in Path(uri.removeprefix("file://"), "_delta_log").iterdir())


def read_last_hour(uri: str, start: datetime, end: datetime, repeat: int = 5) -> tuple[float, float, int]:
    """(best, median) seconds of a fresh delta-rs read of ``[start, end)`` of raw_data, and its rows."""
    from btc_platform.lakehouse import lake

    times, rows = [], 0
    day = start.date().isoformat()
    for _ in range(repeat):
        started = time.perf_counter()
        frame = lake.read_at(uri, columns=["event_time", "symbol", "mid_price"],
                             filters=[("date", "=", day), ("event_time", ">=", start), ("event_time", "<", end)])  # fmt: skip
        times.append(time.perf_counter() - started)
        rows = len(frame)
    return min(times), statistics.median(times), rows


def quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    return (f"{ordered[len(ordered) // 2]:.3f} / {ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]:.3f} / "
            f"{ordered[-1]:.3f}")


def spark_commits(spark, settings, staged, commits: int, mode: str, day: str) -> tuple[str, list[float], int]:
    """Phase 1: ``commits`` batches of ``staged`` written through the platform's path; returns the
    table URI, the write time of each commit and the most files seen in the day's partition."""
    from pyspark.sql import functions as F

    from btc_platform.lakehouse import datasets
    from spark_jobs import tables

    uri = tables.ensure_table(spark, settings, datasets.RAW_DATA, staged.drop("_batch").schema)
    keys = datasets.TABLES[datasets.RAW_DATA].keys
    write_s, most = [], 0
    for i in range(commits):
        part = staged.where(F.col("_batch") == i).drop("_batch")
        started = time.perf_counter()
        if mode == "append":
            part.write.format("delta").mode("append").option("txnAppId", "bench").option("txnVersion", i).save(uri)
        else:
            tables.merge_rows(spark, uri, part, keys)
        write_s.append(time.perf_counter() - started)
        if i % 10 == 9 or i == commits - 1:
            most = max(most, partition_files(uri, day))
        if i % 100 == 99:
            log.info("spark: %d commits, %d files in date=%s", i + 1, partition_files(uri, day), day)
    return uri, write_s, most


def delta_rs_day(uri: str, rows, commits: int, auto_compact: bool, day: str) -> tuple[int, float]:
    """Phase 2: ``rows`` (Arrow, in event-time order) appended as ``commits`` consecutive slices with
    delta-rs, checkpointed and compacted at Delta Spark's rhythm; returns the most files seen in
    the day's partition and the seconds it took."""
    from deltalake import DeltaTable, PostCommitHookProperties, write_deltalake

    from btc_platform.lakehouse import datasets

    layout = datasets.TABLES[datasets.RAW_DATA]
    hooks = PostCommitHookProperties(create_checkpoint=False, cleanup_expired_logs=False)
    path = uri.removeprefix("file://")
    properties = {k: v for k, v in layout.properties.items() if auto_compact or k != datasets.AUTO_COMPACT}
    write_deltalake(path, rows.slice(0, 0), partition_by=list(layout.partition_by), mode="append",
                    configuration=properties, post_commithook_properties=hooks)  # fmt: skip
    table = DeltaTable(path)
    started, most, small = time.perf_counter(), 0, 0
    step = len(rows) / commits
    for i in range(commits):
        first = round(i * step)
        write_deltalake(table, rows.slice(first, round((i + 1) * step) - first), mode="append",
                        partition_by=list(layout.partition_by), post_commithook_properties=hooks)  # fmt: skip
        small += 1
        if table.version() % CHECKPOINT_INTERVAL == 0:
            table.create_checkpoint()
        if auto_compact and small >= MIN_NUM_FILES:
            most = max(most, day_files(table, day))
            table.optimize.compact(partition_filters=[("date", "=", day)], target_size=MAX_FILE_SIZE,
                                   post_commithook_properties=hooks)  # fmt: skip
            small = 1  # the compacted file is itself still small: the next round takes it in
            if table.version() % CHECKPOINT_INTERVAL == 0:
                table.create_checkpoint()
        if i % 2000 == 1999:
            log.info("delta-rs: %d of %d commits (%.0f s)", i + 1, commits, time.perf_counter() - started)
    files = day_files(table, day)
    return max(most, files), time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=300, help="phase 1: Spark commits (default 300)")
    parser.add_argument("--day-commits", type=int, default=43_200,
                        help="phase 2: commits of the day's log written with delta-rs (default 43,200; 0 skips)")
    parser.add_argument("--rate", type=float, default=1.0, help="messages per second over the day (default 1)")
    parser.add_argument("--mode", choices=("append", "merge"), default="append", help="how phase 1 writes a batch")
    parser.add_argument("--no-auto-compact", action="store_true", help="create raw_data without auto compaction")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from bench_stream import payloads  # bench/ is on sys.path (script dir)
    from pyspark.sql import functions as F

    from bench.bench_maintenance import kafka_shaped
    from bench.bench_models import log_figures
    from btc_platform.lakehouse import datasets
    from btc_platform.lakehouse.spark_session import build_session
    from btc_platform.settings import load_settings
    from spark_jobs import stream_transforms as st

    now = datetime.now(UTC)
    day_start = datetime(now.year, now.month, now.day, tzinfo=UTC)
    day = day_start.date().isoformat()
    messages = int(86_400 * args.rate)
    layout = datasets.TABLES[datasets.RAW_DATA]
    if args.no_auto_compact:
        properties = {k: v for k, v in layout.properties.items() if k != datasets.AUTO_COMPACT}
        datasets.TABLES[datasets.RAW_DATA] = datasets.Table(**{**layout.__dict__, "properties": properties})
    figures = [("phase 1 write, auto compaction", f"{args.mode}, {'off' if args.no_auto_compact else 'layout'}"),
               ("messages of the day", f"{messages:,}")]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-small-files-") as tmp:
        settings = load_settings(data_dir=Path(tmp) / "data", storage_root=f"file://{tmp}/store")
        spark = build_session("bench-small-files", settings, master=settings.spark_master)
        try:
            values = [value for _key, value in payloads(messages, day_start, max(1, round(1000 / args.rate)))]
            rows = st.raw_data_output(st.with_record_metrics(st.valid_records(st.parse_messages(
                kafka_shaped(spark, values, now)))))  # fmt: skip
            staged = rows.withColumn("_batch", F.floor(F.col("kafka_offset") * args.commits / messages).cast("int"))
            staged = staged.cache()
            log.info("staged %d messages of %s", staged.count(), day)
            day_rows = rows.orderBy("event_time").toArrow() if args.day_commits else None
            if args.commits:
                uri, write_s, most = spark_commits(spark, settings, staged, args.commits, args.mode, day)
                figures += [
                    ("phase 1 (Spark): commits", f"{args.commits:,}"),
                    ("phase 1: files in the day's partition, most seen / at the end",
                     f"{most:,} / {partition_files(uri, day):,}"),
                    ("phase 1: commits by operation",
                     ", ".join(f"{k} {v:,}" for k, v in sorted(commit_operations(uri).items()))),
                    ("phase 1: write per commit p50 / p95 / max (s)", quantiles(write_s)),
                ]  # fmt: skip
            staged.unpersist()
        finally:
            spark.stop()
        if day_rows is not None:
            uri = f"file://{tmp}/day/raw_data"
            most, took = delta_rs_day(uri, day_rows, args.day_commits, not args.no_auto_compact, day)
            operations = commit_operations(uri)
            best, median, hour_rows = read_last_hour(uri, day_start + timedelta(hours=23), day_start + timedelta(days=1))
            figures += [
                ("phase 2 (delta-rs day): commits", f"{args.day_commits:,} appends in {took:.0f} s"),
                ("phase 2: files in the day's partition, most seen / at the end",
                 f"{most:,} / {partition_files(uri, day):,}"),
                ("phase 2: commits by operation", ", ".join(f"{k} {v:,}" for k, v in sorted(operations.items()))),
                ("phase 2: files in _delta_log", f"{log_files(uri):,}"),
                ("phase 2: delta-rs read of the last hour, best / median (ms)",
                 f"{best * 1000:.0f} / {median * 1000:.0f} ({hour_rows:,} rows)"),
            ]  # fmt: skip
    log_figures(log, "bench_small_files", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
