"""Hourly consolidation job: minute_metrics of [start, end) -> hourly_metrics (one partition per hour).

Run by the ``btc_hourly_consolidation`` DAG (SparkSubmitOperator, args ``--start/--end`` = the
data interval) or by hand::

    .venv/bin/python spark_jobs/consolidate_job.py \\
        --start 2024-01-01T00:00:00Z --end 2024-01-01T03:00:00Z

Only the date=/hour= partitions of hours that have minute data are overwritten (dynamic
partition overwrite), so re-running an hour gives the same rows, and re-running it after late
minutes arrived updates it. Rows of other sources in those partitions (backfill rows of
symbols the stream did not see that hour) are kept; a stream row replaces a backfill row of the
same symbol and hour. Exit codes: 0 ok, 1 job failure, 2 configuration error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime

from btc_platform import datasets
from btc_platform.settings import Settings, SettingsError
from spark_jobs._cli import add_common_options, settings_from_args, setup_logging

log = logging.getLogger("spark_jobs.consolidate_job")

APP_NAME = "btc-consolidate"
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="consolidate_job.py",
        description="Consolidate minute_metrics of [start, end) into hourly_metrics "
        "(one row per symbol per hour, idempotent per-hour partition overwrite).",
    )
    parser.add_argument(
        "--start",
        required=True,
        help="Range start, ISO-8601 UTC on a full hour "
        "(e.g. 2024-01-01T00:00:00Z; Airflow passes data_interval_start).",
    )
    parser.add_argument("--end", required=True, help="Range end (exclusive), ISO-8601 UTC on a full hour.")
    return add_common_options(parser)


def run(
    spark, settings: Settings, start: datetime, end: datetime, produced_at: datetime | None = None
) -> int:
    """Consolidate [start, end); returns the number of hourly rows written."""
    from spark_jobs import consolidate_transforms as ct
    from spark_jobs import hourly_store

    produced_at = produced_at or datetime.now(UTC)
    minutes_root = settings.path(datasets.MINUTE_METRICS)
    hourly_root = settings.path(datasets.HOURLY_METRICS)
    minutes = hourly_store.read_range(spark, minutes_root, datasets.MINUTE_METRICS_COLUMNS, start, end)
    if minutes is None:
        log.warning(
            "no minute_metrics for [%s, %s): nothing to consolidate (reported as gaps by the "
            "data-quality check)",
            start.isoformat(),
            end.isoformat(),
        )
        return 0
    minutes = ct.select_range(minutes, start, end).cache()
    try:
        duplicates = ct.duplicate_minutes(minutes).first()["duplicates"]
        if duplicates:
            log.warning(
                "%d duplicate minute row(s) (same symbol and window_start): kept the one with "
                "the most ticks each",
                duplicates,
            )
        hourly = ct.consolidate(minutes, start, end, produced_at).cache()
        written = hourly.count()
        if written == 0:
            log.warning(
                "minute_metrics of [%s, %s) hold no priced minute: nothing written",
                start.isoformat(),
                end.isoformat(),
            )
            return 0
        existing = hourly_store.read_range(spark, hourly_root, datasets.HOURLY_METRICS_COLUMNS, start, end)
        if existing is not None:
            existing = existing.localCheckpoint(eager=True)  # its files are about to be replaced
        merged = hourly_store.merge_into_partitions(
            existing, hourly, drop_existing_sources=(datasets.HOURLY_SOURCE_STREAM,)
        )
        hourly_store.write_hourly(merged, hourly_root)
        hours = sorted(
            {(r["symbol"], r["hour_start"]) for r in hourly.select("symbol", "hour_start").collect()}
        )
        log.info(
            "wrote %d hourly row(s) for [%s, %s) to %s: %s",
            written,
            start.isoformat(),
            end.isoformat(),
            hourly_root,
            ", ".join(f"{s}@{h:%Y-%m-%dT%H}" for s, h in hours[:24]),
        )
        return written
    finally:
        minutes.unpersist()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    from spark_jobs.hourly_store import RangeError, parse_utc, require_hour_aligned

    try:
        settings = settings_from_args(args)
        start, end = parse_utc(args.start), parse_utc(args.end)
        require_hour_aligned(start, end)
    except (SettingsError, RangeError) as exc:
        log.error("consolidate_job cannot start: %s", exc)
        return EXIT_CONFIG
    from btc_platform.spark import build_session

    spark = build_session(APP_NAME, settings, master=args.master, with_kafka=False)
    try:
        run(spark, settings, start, end)
    except Exception:
        log.exception("consolidation of [%s, %s) failed", start.isoformat(), end.isoformat())
        return EXIT_FAILED
    finally:
        spark.stop()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
