"""Data-quality job: checks hourly_metrics of [start, end) and writes a report next to the data.

Run by the ``btc_hourly_consolidation`` DAG as its own task after the consolidation, or by hand::

    .venv/bin/python spark_jobs/quality_job.py \\
        --start 2024-01-01T00:00:00Z --end 2024-01-01T03:00:00Z

One report record per check goes to ``<storage_root>/data_quality/range=<start>_<end>/``
(re-running a range replaces its report). Failing warnings (coverage, gaps) are logged; a
failing error-severity check (high < low, non-positive price, negative spread, duplicate
(symbol, hour)) makes the job exit 1 with a message naming the check and the hours
(``btc_platform.quality.DataQualityError``). Exit 2: configuration error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime

from btc_platform import datasets
from btc_platform import quality as q
from btc_platform.lake import LegacyLayoutError, check_layout
from btc_platform.settings import Settings, SettingsError
from spark_jobs._cli import add_common_options, settings_from_args, setup_logging

log = logging.getLogger("spark_jobs.quality_job")

APP_NAME = "btc-quality"
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quality_job.py",
        description="Data-quality checks of hourly_metrics over [start, end): report under data_quality/, "
        "exit 1 if an error-severity check fails.",
    )
    parser.add_argument("--start", required=True, help="Range start, ISO-8601 UTC on a full hour.")
    parser.add_argument("--end", required=True, help="Range end (exclusive), ISO-8601 UTC on a full hour.")
    parser.add_argument(
        "--min-coverage",
        type=float,
        default=None,
        help="Coverage warning threshold 0..1 (default BTC_DQ_MIN_COVERAGE).",
    )
    parser.add_argument(
        "--symbols",
        default=None,
        help="Comma-separated symbols expected every hour (default BTC_BINANCE_SYMBOLS).",
    )
    return add_common_options(parser)


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
    """Check [start, end), write the report, log; raise ``DataQualityError`` on a failed error check."""
    from spark_jobs import hourly_store
    from spark_jobs import quality_transforms as qt

    threshold = settings.dq_min_coverage if min_coverage is None else min_coverage
    hourly = hourly_store.read_range(
        spark, settings.path(datasets.HOURLY_METRICS), datasets.HOURLY_METRICS_COLUMNS, start, end
    )
    if hourly is None:
        hourly = spark.createDataFrame([], schema=datasets.struct_type(datasets.HOURLY_METRICS_COLUMNS))
    results = qt.run_checks(
        hourly, start, end, symbols=tuple(symbols or settings.binance_symbols), min_coverage=threshold
    )
    report_root = settings.path(datasets.DATA_QUALITY)
    qt.write_report(qt.report_frame(spark, results, checked_at or datetime.now(UTC)), report_root)
    log.info(
        "data-quality report of [%s, %s) written to %s/range=%s",
        start.isoformat(),
        end.isoformat(),
        report_root,
        qt.range_id(start, end),
    )
    q.log_results(results)
    q.raise_on_errors(results)
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    from spark_jobs.hourly_store import RangeError, parse_utc, require_hour_aligned

    try:
        settings = settings_from_args(args)
        start, end = parse_utc(args.start), parse_utc(args.end)
        require_hour_aligned(start, end)
        if args.min_coverage is not None and not 0 <= args.min_coverage <= 1:
            raise RangeError(f"--min-coverage must be within 0..1, got {args.min_coverage}")
        symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()] if args.symbols else None
        check_layout(settings)
    except (SettingsError, RangeError, LegacyLayoutError) as exc:
        log.error("quality_job cannot start: %s", exc)
        return EXIT_CONFIG
    from btc_platform.spark import build_session

    spark = build_session(APP_NAME, settings, master=args.master)
    try:
        run(spark, settings, start, end, symbols=symbols, min_coverage=args.min_coverage)
    except q.DataQualityError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except Exception:
        log.exception("data-quality job for [%s, %s) failed", start.isoformat(), end.isoformat())
        return EXIT_FAILED
    finally:
        spark.stop()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
