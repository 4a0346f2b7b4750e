"""Hourly consolidation job: minute_metrics of [start, end) -> MERGE into hourly_metrics.

Run by the ``btc_hourly_consolidation`` DAG (SparkSubmitOperator, args ``--start/--end`` = the
data interval) or by hand::

    .venv/bin/python spark_jobs/consolidate_job.py \\
        --start 2024-01-01T00:00:00Z --end 2024-01-01T03:00:00Z

One MERGE on (symbol, hour_start): a stream row replaces a backfilled or repaired candle of the
same symbol and hour only when its coverage reaches ``BTC_HOURLY_MIN_STREAM_COVERAGE`` (or the
candle's; a partial stream hour leaves the more complete candle in place), rows of symbols the stream did not see that hour are kept, and a matched row is only
rewritten when one of its values changed (running the same hour twice leaves the table as it
was). Each run records the minute_metrics version it read in the commit's metadata; the next
run reads minute_metrics' change data feed since that version and also re-merges the earlier
hours that received late minutes meanwhile. Rows that came too late for the stream's minute
windows (behind its watermark; still in raw_data) are windowed from raw_data here: a minute
whose row holds fewer messages than raw_data is recomputed, used for the hour and MERGEd into
minute_metrics. The DAG starts a run only once the stream's
minute_metrics watermark has passed the hour's end (see ``btc_platform.ops.orchestration``).
Exit codes: 0 ok, 1 job failure, 2 configuration error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime, timedelta

from pyspark.errors import PySparkException
from pyspark.sql import functions as F

from btc_platform.lakehouse import datasets
from btc_platform.settings import Settings
from btc_platform.timerange import parse_utc, require_hour_aligned
from spark_jobs import consolidate_transforms as ct
from spark_jobs import tables
from spark_jobs._cli import Work, add_common_options, job_main

log = logging.getLogger("spark_jobs.consolidate_job")

APP_NAME = "btc-consolidate"
#: Commit-metadata key: the minute_metrics version a consolidation read.
VERSION_KEY = "minute_metrics_version"
KEYS = datasets.TABLES[datasets.HOURLY_METRICS].keys
#: A matched row is rewritten only when a value other than ``produced_at`` changed, so running
#: the same hour on the same minutes twice leaves the table as it was.
CHANGED = datasets.changed_condition(datasets.column_names(datasets.HOURLY_METRICS_COLUMNS), KEYS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="consolidate_job.py",
        description="Consolidate minute_metrics of [start, end) into hourly_metrics "
        "(one row per symbol per hour, one idempotent MERGE).",
    )
    parser.add_argument(
        "--start",
        required=True,
        help="Range start, ISO-8601 UTC on a full hour "
        "(e.g. 2024-01-01T00:00:00Z; Airflow passes data_interval_start).",
    )
    parser.add_argument("--end", required=True, help="Range end (exclusive), ISO-8601 UTC on a full hour.")
    return add_common_options(parser)


def _late_hours(spark, minutes_uri: str, hourly_uri: str, minutes_version: int, before: datetime) -> list[datetime]:
    """Hours before ``before`` that received minutes since the minute_metrics version the last
    consolidation read (recorded in hourly_metrics' commit metadata), from the change data feed.
    Empty on the first consolidation (nothing was consolidated before it)."""
    last = next((meta[VERSION_KEY] for _, meta in tables.history_metadata(spark, hourly_uri) if VERSION_KEY in meta), None)
    if last is None or last >= minutes_version:
        return []
    try:
        changes = (
            spark.read.format("delta")
            .option("readChangeFeed", "true")
            .option("startingVersion", int(last) + 1)
            .option("endingVersion", minutes_version)
            .load(minutes_uri)
        )
        hours = (
            changes.where(F.col("_change_type").isin("insert", "update_postimage"))
            .where(F.col("window_start") < F.lit(before))
            .select(F.date_trunc("hour", "window_start").alias("hour_start"))
            .distinct()
            .collect()
        )
    except PySparkException as exc:
        # e.g. the change files of those versions were vacuumed: late minutes of earlier hours
        # are then only picked up by re-running those hours (the log line says so)
        log.warning("cannot read minute_metrics changes %s..%s (%s): late minutes of earlier hours "
                    "are not re-merged by this run", int(last) + 1, minutes_version, exc)  # fmt: skip
        return []
    return sorted(row["hour_start"].replace(tzinfo=UTC) for row in hours)


def rewindow_late_rows(spark, settings: Settings, minutes, first: datetime, end: datetime, in_scope):
    """Minute rows computed from raw_data for the minutes whose raw_data rows the stream's minute
    row lacks (rows that came after its watermark had passed the minute, counted as
    ``dropped_late`` in the stream's status); MERGEd into minute_metrics too. None when there is none."""
    from pyspark.sql import functions as F

    from spark_jobs import consolidate_transforms as ct
    from spark_jobs import stream_transforms as st
    from spark_jobs import tables

    margin = timedelta(seconds=ct.LATE_LOOKBACK_MARGIN_S)
    raw = tables.read_range(spark, tables.table_uri(settings, datasets.RAW_DATA), "event_time", first, end + margin)
    if raw is None:
        return None
    windowed = st.with_window_time(raw).where(in_scope(st.WINDOW_TIME))
    late = ct.late_minutes(minutes, ct.raw_minute_counts(windowed)).localCheckpoint(eager=True)
    found = late.collect()
    if not found:
        return None
    log.warning("%d minute(s) lack %d raw_data row(s) that came too late for the stream's windows: windowing them "
                "from raw_data (%s)", len(found), sum(r["raw_count"] - (r["held"] or 0) for r in found),
                ", ".join(f"{r['symbol']}@{r['window_start']:%Y-%m-%dT%H:%M}" for r in found[:10]))  # fmt: skip
    keys = late.select(F.col("symbol").alias("_symbol"), F.col("window_start").alias("_minute"))
    same = (F.col("symbol") == F.col("_symbol")) & (F.date_trunc("minute", st.WINDOW_TIME) == F.col("_minute"))
    rows = windowed.join(keys, same, "left_semi")
    rewindowed = st.minute_metrics(rows).localCheckpoint(eager=True)
    minutes_uri = tables.table_uri(settings, datasets.MINUTE_METRICS)
    tables.merge_rows(spark, minutes_uri, rewindowed, datasets.TABLES[datasets.MINUTE_METRICS].keys)
    return rewindowed


def run(
    spark, settings: Settings, start: datetime, end: datetime, produced_at: datetime | None = None
) -> int:
    """Consolidate [start, end), plus earlier hours whose minutes arrived since the last run, into
    hourly_metrics with one MERGE; returns the number of hourly rows inserted or changed."""
    produced_at = produced_at or datetime.now(UTC)
    minutes_uri = tables.table_uri(settings, datasets.MINUTE_METRICS)
    minutes_version = tables.table_version(spark, minutes_uri)
    if minutes_version is None:
        log.warning("no minute_metrics table at %s: nothing to consolidate", minutes_uri)
        return 0
    hourly_uri = tables.ensure_table(
        spark, settings, datasets.HOURLY_METRICS, datasets.struct_type(datasets.HOURLY_METRICS_COLUMNS)
    )
    late = _late_hours(spark, minutes_uri, hourly_uri, minutes_version, before=start)
    if late:
        log.info("re-merging %d earlier hour(s) that received late minutes: %s", len(late),
                 ", ".join(f"{h:%Y-%m-%dT%H}" for h in late[:24]))  # fmt: skip
    first = min([start, *late])

    def in_scope(column: str):
        """``column`` in [start, end) or in one of the late hours."""
        t = F.col(column)
        wanted = F.date_trunc("hour", t).isin([F.lit(h) for h in late]) if late else F.lit(False)
        return (t >= F.lit(first)) & (t < F.lit(end)) & (((t >= F.lit(start)) & (t < F.lit(end))) | wanted)

    # one consistent snapshot: the version whose changes were just looked at
    minutes = tables.read_table(spark, minutes_uri, version=minutes_version).where(in_scope("window_start")).cache()
    rewindowed = rewindow_late_rows(spark, settings, minutes, first, end, in_scope)
    if rewindowed is not None:
        minutes.unpersist()
        minutes = ct.with_late_minutes(minutes, rewindowed).cache()
    try:
        duplicates = ct.duplicate_minutes(minutes).first()["duplicates"]
        if duplicates:
            log.warning("%d duplicate minute row(s) (same symbol and window_start): kept the one with "
                        "the most ticks each", duplicates)  # fmt: skip
        # computed once, as a plain RDD plan (MERGE reads its source twice and refuses a source
        # whose cache state changes under it)
        hourly = ct.consolidate(minutes, first, end, produced_at).localCheckpoint(eager=True)
        produced = hourly.count()
        metadata = {VERSION_KEY: minutes_version, "job": "consolidate", "start": start.isoformat(), "end": end.isoformat()}
        with tables.commit_metadata(spark, metadata):
            if produced == 0:
                log.warning("minute_metrics of [%s, %s) hold no priced minute: nothing to merge",
                            start.isoformat(), end.isoformat())  # fmt: skip
                # still commit the version read, so these minutes are not taken for late ones
                tables.merge_rows(spark, hourly_uri, hourly, KEYS)
                return 0
            replaces = datasets.stream_hour_replaces(settings.hourly_min_stream_coverage)
            counts = tables.merge_rows(spark, hourly_uri, hourly, KEYS, update_when=f"{replaces} AND ({CHANGED})")
        written = counts.get("num_inserted_rows", 0) + counts.get("num_updated_rows", 0)
        hours = sorted({(r["symbol"], r["hour_start"]) for r in hourly.select("symbol", "hour_start").collect()})
        log.info("consolidated %d hourly row(s) of [%s, %s) into %s (%d new, %d changed, minute_metrics "
                 "version %d): %s", produced, first.isoformat(), end.isoformat(), hourly_uri,
                 counts.get("num_inserted_rows", 0), counts.get("num_updated_rows", 0), minutes_version,
                 ", ".join(f"{s}@{h:%Y-%m-%dT%H}" for s, h in hours[:24]))  # fmt: skip
        return written
    finally:
        minutes.unpersist()


def prepare(args: argparse.Namespace, settings: Settings) -> Work:
    """The consolidation of the ``--start``/``--end`` range (``RangeError`` when it is not one)."""
    start, end = parse_utc(args.start), parse_utc(args.end)
    require_hour_aligned(start, end)
    return Work(lambda spark: run(spark, settings, start, end),
                what=f"consolidation of [{start.isoformat()}, {end.isoformat()})")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return job_main("consolidate_job", build_parser(), argv, prepare, app_name=APP_NAME, log=log)


if __name__ == "__main__":
    sys.exit(main())
