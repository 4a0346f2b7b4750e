"""Table maintenance job: OPTIMIZE (compaction) and VACUUM of every Delta table of the platform.

Run daily by the ``btc_maintenance`` DAG (SparkSubmitOperator) or by hand::

    .venv/bin/python spark_jobs/maintenance_job.py [--vacuum-retention-hours 168]

For each table of ``btc_platform.lakehouse.datasets.TABLES`` that exists, in that order:

* OPTIMIZE rewrites its small files into few large ones (a data-change-free commit: readers and
  the stream's appends are not disturbed). A table with ``compact_by`` (raw_data, by ``date``) is
  only compacted in its closed partitions (``date < today``, UTC): today's partition is still
  being appended to; the others are compacted whole.
* VACUUM deletes the files no version of the last ``BTC_MAINTENANCE_VACUUM_RETENTION_HOURS``
  references (the ones OPTIMIZE replaced, older change-data files). Below Delta's default of
  168 h, Delta's retention check is switched off for the run, with a warning: a reader of an older
  version (time travel, a stopped stream catching up) then finds its files gone.

The log has, per table, the data files and bytes before and after OPTIMIZE and the files VACUUM
removed. A failing table does not stop the others; the job then exits 1 naming them.
Exit codes: 0 ok, 1 failure, 2 configuration error (or datasets of the Parquet layout).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime

from delta.tables import DeltaTable

from btc_platform.lakehouse import datasets
from btc_platform.settings import Settings
from spark_jobs import tables
from spark_jobs._cli import ConfigError, Work, add_common_options, job_main

log = logging.getLogger("spark_jobs.maintenance_job")

APP_NAME = "btc-maintenance"
#: Delta's default ``delta.deletedFileRetentionDuration`` (1 week); VACUUM refuses less unless
#: :data:`RETENTION_CHECK` is off.
DELTA_DEFAULT_RETENTION_HOURS = 168
RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"


class MaintenanceError(RuntimeError):
    """One or more tables could not be maintained (the message names them)."""


@dataclass(frozen=True)
class TableReport:
    name: str
    scope: str  # what OPTIMIZE compacted: "whole table" or the partition filter
    files_before: int
    bytes_before: int
    files_after: int
    bytes_after: int
    vacuumed_files: int | None  # None: Delta recorded no VACUUM metrics


def compaction_filter(table: datasets.Table, today: date) -> str | None:
    """OPTIMIZE's partition predicate: the closed partitions of ``compact_by``, None = whole table."""
    return f"`{table.compact_by}` < '{today.isoformat()}'" if table.compact_by else None


def file_stats(delta_table) -> tuple[int, int]:
    """Data files and bytes of the table's current version (from the Delta log)."""
    row = delta_table.detail().select("numFiles", "sizeInBytes").first()
    return int(row["numFiles"]), int(row["sizeInBytes"])


def _version(delta_table) -> int:
    return int(delta_table.history(1).select("version").first()[0])


def _vacuumed_files(delta_table, after_version: int) -> int | None:
    """Files deleted by the VACUUM committed after ``after_version`` (its VACUUM END metrics)."""
    for row in delta_table.history(5).select("version", "operation", "operationMetrics").collect():
        if row["version"] > after_version and row["operation"] == "VACUUM END":
            return int((row["operationMetrics"] or {}).get("numDeletedFiles", 0))
    return None


def maintain_table(spark, uri: str, table: datasets.Table, today: date, retention_hours: float) -> TableReport:
    """OPTIMIZE then VACUUM one table; returns its figures."""
    delta_table = DeltaTable.forPath(spark, uri)
    files_before, bytes_before = file_stats(delta_table)
    where = compaction_filter(table, today)
    optimize = delta_table.optimize()
    if where:
        optimize = optimize.where(where)
    optimize.executeCompaction()
    files_after, bytes_after = file_stats(delta_table)
    before_vacuum = _version(delta_table)
    delta_table.vacuum(retention_hours)
    report = TableReport(table.name, where or "whole table", files_before, bytes_before, files_after,
                         bytes_after, _vacuumed_files(delta_table, before_vacuum))  # fmt: skip
    log.info("%s: OPTIMIZE (%s) %d files / %d bytes -> %d files / %d bytes; VACUUM (retain %s h) removed %s files",
             table.name, report.scope, files_before, bytes_before, files_after, bytes_after, retention_hours,
             "an unknown number of" if report.vacuumed_files is None else report.vacuumed_files)  # fmt: skip
    return report


def run(
    spark, settings: Settings, *, today: date | None = None, retention_hours: float | None = None
) -> list[TableReport]:
    """Maintain every existing table; raise :class:`MaintenanceError` naming the ones that failed."""
    today = today or datetime.now(UTC).date()
    retention = settings.maintenance_vacuum_retention_hours if retention_hours is None else retention_hours
    previous_check = spark.conf.get(RETENTION_CHECK, "true")
    if retention < DELTA_DEFAULT_RETENTION_HOURS:
        log.warning("VACUUM retention %s h is below Delta's default of %d h: %s=false for this run; readers "
                    "of versions older than %s h (time travel, a stream catching up) will miss files",
                    retention, DELTA_DEFAULT_RETENTION_HOURS, RETENTION_CHECK, retention)  # fmt: skip
        spark.conf.set(RETENTION_CHECK, "false")
    reports, failed = [], []
    try:
        for name, table in datasets.TABLES.items():
            uri = tables.table_uri(settings, name)
            if not tables.is_delta_table(spark, uri):
                log.info("%s: no Delta table at %s, nothing to maintain", name, uri)
                continue
            try:
                reports.append(maintain_table(spark, uri, table, today, retention))
            except Exception:
                log.exception("%s: maintenance failed", name)
                failed.append(name)
    finally:
        spark.conf.set(RETENTION_CHECK, previous_check)
    if failed:
        raise MaintenanceError(f"maintenance failed for {', '.join(failed)} (see the errors above)")
    return reports


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maintenance_job.py",
        description="OPTIMIZE (closed partitions of partitioned tables) and VACUUM every Delta table.",
    )
    parser.add_argument("--vacuum-retention-hours", type=float, default=None,
                        help="Override BTC_MAINTENANCE_VACUUM_RETENTION_HOURS.")  # fmt: skip
    return add_common_options(parser)


def prepare(args: argparse.Namespace, settings: Settings) -> Work:
    """OPTIMIZE and VACUUM of every table (``ConfigError`` on a negative retention)."""
    if args.vacuum_retention_hours is not None and args.vacuum_retention_hours < 0:
        raise ConfigError(f"--vacuum-retention-hours must be >= 0, got {args.vacuum_retention_hours}")
    return Work(lambda spark: run(spark, settings, retention_hours=args.vacuum_retention_hours),
                what="maintenance", expected=(MaintenanceError,))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return job_main("maintenance_job", build_parser(), argv, prepare, app_name=APP_NAME, log=log)


if __name__ == "__main__":
    sys.exit(main())
