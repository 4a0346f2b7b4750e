"""Data-quality job: checks hourly_metrics of [start, end) and records the results in data_quality.

Run by the ``btc_hourly_consolidation`` DAG as its own task after the consolidation, by the
``btc_backfill`` DAG after a backfill, or by hand::

    .venv/bin/python spark_jobs/quality_job.py \\
        --start 2024-01-01T00:00:00Z --end 2024-01-01T03:00:00Z
    # the range of the newest backfill (from hourly_metrics' commit metadata)
    .venv/bin/python spark_jobs/quality_job.py --last-backfill

Reads the hourly_metrics Delta table and MERGEs one row per (symbol, hour, check) into the
data_quality Delta table (``datasets.DATA_QUALITY_COLUMNS``): re-checking an hour replaces its
rows, it never adds a second set. Failing warnings (coverage, gaps) are logged; a failing
error-severity check (high < low, non-positive price, negative spread, duplicate (symbol, hour))
makes the job exit 1 with a message naming the check and the hours
(``btc_platform.lakehouse.quality.DataQualityError``), after the results are recorded. Exit 2:
configuration error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime

from btc_platform.lakehouse import datasets
from btc_platform.lakehouse import quality as q
from btc_platform.settings import Settings
from btc_platform.timerange import RangeError, parse_utc, require_hour_aligned
from spark_jobs import audit, tables
from spark_jobs import quality_transforms as qt
from spark_jobs._cli import Work, add_common_options, job_main

log = logging.getLogger("spark_jobs.quality_job")

APP_NAME = "btc-quality"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quality_job.py",
        description="Data-quality checks of hourly_metrics over [start, end): results MERGEd into the "
        "data_quality table, exit 1 if an error-severity check fails.",
    )
    parser.add_argument("--start", default=None, help="Range start, ISO-8601 UTC on a full hour.")
    parser.add_argument("--end", default=None, help="Range end (exclusive), ISO-8601 UTC on a full hour.")
    parser.add_argument(
        "--last-backfill",
        action="store_true",
        help="Check the range of the newest backfill instead of --start/--end (recorded in hourly_metrics' "
        "commit metadata by backfill_job.py).",
    )
    parser.add_argument(
        "--min-coverage",
        type=float,
        default=None,
        help="Coverage warning threshold 0..1 (default BTC_DQ_MIN_COVERAGE).",
    )
    parser.add_argument(
        "--audit-ingest",
        action="store_true",
        help="Run the ingest audit of --start/--end instead (spark_jobs/audit.py: Kafka records against "
        "raw_data and quarantine, check ingest_complete).",
    )
    parser.add_argument(
        "--symbols",
        default=None,
        help="Comma-separated symbols expected every hour (default BTC_BINANCE_SYMBOLS).",
    )
    return add_common_options(parser)


def last_backfill_range(spark, settings: Settings) -> tuple[datetime, datetime]:
    """[start, end) of the newest backfill commit of hourly_metrics (``RangeError`` if none)."""
    uri = tables.table_uri(settings, datasets.HOURLY_METRICS)
    for version, meta in tables.history_metadata(spark, uri):
        if meta.get("job") == "backfill":
            log.info("checking the range of the backfill of hourly_metrics version %d (%s from %s)", version,
                     meta.get("symbol"), meta.get("input"))  # fmt: skip
            return parse_utc(meta["start"]), parse_utc(meta["end"])
    raise RangeError(f"--last-backfill: no backfill among the recent commits of {uri}")


def run(
    spark,
    settings: Settings,
    start: datetime,
    end: datetime,
    *,
    symbols=None,
    min_coverage: float | None = None,
    checked_at: datetime | None = None,
) -> list[q.CheckResult]:
    """Check [start, end), MERGE the results into data_quality, log; raise ``DataQualityError``
    on a failed error check (after the results are recorded)."""
    threshold = settings.dq_min_coverage if min_coverage is None else min_coverage
    hourly = tables.read_range(
        spark, tables.table_uri(settings, datasets.HOURLY_METRICS), "hour_start", start, end
    )
    if hourly is None:
        hourly = spark.createDataFrame([], schema=datasets.struct_type(datasets.HOURLY_METRICS_COLUMNS))
    hourly = hourly.cache()
    try:
        rows_checked = hourly.count()
        # computed once, as a plain RDD plan (read by the summary and twice by the MERGE)
        results = qt.hour_results(
            spark, hourly, start, end, symbols=tuple(symbols or settings.binance_symbols), min_coverage=threshold,
            checked_at=checked_at or datetime.now(UTC),
        ).localCheckpoint(eager=True)  # fmt: skip
    finally:
        hourly.unpersist()
    summary = qt.summarise(results, rows_checked, start, end, threshold)
    uri = tables.ensure_table(
        spark, settings, datasets.DATA_QUALITY, datasets.struct_type(datasets.DATA_QUALITY_COLUMNS)
    )
    counts = tables.merge_rows(spark, uri, results, datasets.TABLES[datasets.DATA_QUALITY].keys)
    log.info("data-quality results of [%s, %s) merged into %s: %d new, %d replaced", start.isoformat(),
             end.isoformat(), uri, counts.get("num_inserted_rows", 0), counts.get("num_updated_rows", 0))  # fmt: skip
    q.log_results(summary)
    q.raise_on_errors(summary)
    return summary


def prepare(args: argparse.Namespace, settings: Settings) -> Work:
    """The checks the options ask for (``RangeError`` when they name no valid range)."""
    start = end = None
    if args.last_backfill:
        if args.start or args.end:
            raise RangeError("--last-backfill takes no --start/--end")
    elif not (args.start and args.end):
        raise RangeError("--start and --end are required (or --last-backfill)")
    else:
        start, end = parse_utc(args.start), parse_utc(args.end)
        require_hour_aligned(start, end)
    if args.min_coverage is not None and not 0 <= args.min_coverage <= 1:
        raise RangeError(f"--min-coverage must be within 0..1, got {args.min_coverage}")
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()] if args.symbols else None

    def check(spark) -> None:
        # --last-backfill: the range comes from hourly_metrics' history (RangeError when there is none)
        first, last = last_backfill_range(spark, settings) if args.last_backfill else (start, end)
        if args.audit_ingest:
            audit.run(spark, settings, first, last)
        else:
            run(spark, settings, first, last, symbols=symbols, min_coverage=args.min_coverage)

    span = "of the last backfill" if args.last_backfill else f"for [{start}, {end})"
    kind = "ingest audit" if args.audit_ingest else "data-quality job"
    return Work(check, what=f"{kind} {span}", expected=(q.DataQualityError,))


def main(argv: list[str] | None = None) -> int:
    return job_main("quality_job", build_parser(), argv, prepare, app_name=APP_NAME, log=log)


if __name__ == "__main__":
    sys.exit(main())
