"""``btc-lake``: check for, and convert, datasets of the Parquet layout (before Delta Lake).

::

    btc-lake check      # exit 1 and name the datasets if any still has the Parquet layout (no Spark)
    btc-lake convert    # = make convert-data: convert them to Delta tables (stop the platform first)

``convert`` handles every dataset of ``btc_platform.lakehouse.datasets.TABLES`` whose directory has Parquet
files, a ``_spark_metadata`` log or ``key=value`` partitions but no ``_delta_log``
(``btc_platform.lakehouse.lake.legacy_datasets``):

1. reads it with Spark (``spark.read.parquet`` on the directory: through the stream's
   ``_spark_metadata`` log when there is one, so files of failed batches are left out; partition
   values stay strings, ``hour`` becomes an int);
2. writes the rows to a Delta table with the table's layout (partitioning, properties) in a new
   directory next to it and checks the row count;
3. moves the old directory aside to ``<name>.parquet-backup-<UTC time>`` and the new table into
   its place.

When raw_data is converted, the minute_metrics query's checkpoint (``checkpoints/metrics``) is
moved aside too: it records positions in raw_data's file-sink log, which the Delta source does not
have; the query starts over on the converted raw_data. Nothing is deleted: remove the backups once
the platform runs on the new tables. Exit codes: 0 done (or nothing to do), 1 failure (or, for
``check``, datasets to convert), 2 configuration error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.errors import AnalysisException
from pyspark.sql import functions as F

from btc_platform.lakehouse import datasets, lake
from btc_platform.lakehouse.spark_session import hadoop_fs, path_exists
from btc_platform.settings import Settings
from spark_jobs import tables
from spark_jobs._cli import EXIT_FAILED, EXIT_OK, Work, add_common_options, job_main
from spark_jobs.stream_job import QUERY_METRICS, checkpoint_paths

log = logging.getLogger("spark_jobs.convert_job")

APP_NAME = "btc-lake-convert"
#: Spark reads ``key=value`` directories as strings (not dates/ints); :data:`PARTITION_TYPES` fixes types.
_NO_TYPE_INFERENCE = "spark.sql.sources.partitionColumnTypeInference.enabled"
PARTITION_TYPES = {"hour": "int"}


class ConversionError(RuntimeError):
    """A dataset could not be converted (its directory is left as it was)."""


@dataclass(frozen=True)
class Converted:
    name: str
    rows: int
    backup: str  # where the Parquet directory went
    table: str | None  # the Delta table (None: the old directory held no rows, no table created)


def backup_uri(uri: str, stamp: str) -> str:
    return f"{uri}.parquet-backup-{stamp}"


def _rename(spark, src: str, dst: str) -> None:
    jvm, src_path, fs = hadoop_fs(spark, src)
    if not fs.rename(src_path, jvm.org.apache.hadoop.fs.Path(dst)):
        raise ConversionError(f"could not move {src} to {dst}")
    log.info("moved %s -> %s", src, dst)


def _read_parquet(spark, uri: str):
    """The rows of a Parquet dataset directory, None when it holds none (no schema to infer)."""
    previous = spark.conf.get(_NO_TYPE_INFERENCE)
    spark.conf.set(_NO_TYPE_INFERENCE, "false")
    try:
        df = spark.read.parquet(uri)
    except AnalysisException as exc:
        if exc.getCondition() != "UNABLE_TO_INFER_SCHEMA":
            raise
        log.warning("%s holds no Parquet rows (%s)", uri, exc.getCondition())
        return None
    finally:
        spark.conf.set(_NO_TYPE_INFERENCE, previous)
    for column, kind in PARTITION_TYPES.items():
        if column in df.columns:
            df = df.withColumn(column, F.col(column).cast(kind))
    return df


def convert_dataset(spark, settings: Settings, name: str, stamp: str) -> Converted:
    """Convert dataset ``name`` (Parquet layout) to a Delta table in place; see the module doc."""
    uri = settings.path(name)
    backup = backup_uri(uri, stamp)
    df = _read_parquet(spark, uri)
    if df is None:
        _rename(spark, uri, backup)
        log.info("%s: no rows, moved aside to %s; the jobs create the empty table", name, backup)
        return Converted(name, 0, backup, None)
    staging = f"{uri}.delta-converting-{stamp}"
    rows = df.count()
    tables.ensure_table(spark, settings, name, df.schema, location=staging)
    df.write.format("delta").mode("append").save(staging)
    written = spark.read.format("delta").load(staging).count()
    if written != rows:
        raise ConversionError(f"{name}: read {rows} row(s) from {uri} but the Delta table at {staging} "
                              f"has {written}; {uri} is left as it was")  # fmt: skip
    _rename(spark, uri, backup)
    _rename(spark, staging, uri)
    log.info("%s: %d row(s) converted to a Delta table at %s (partitioned by %s); Parquet kept at %s",
             name, rows, uri, ", ".join(datasets.TABLES[name].partition_by) or "nothing", backup)  # fmt: skip
    return Converted(name, rows, backup, uri)


def move_metrics_checkpoint(spark, settings: Settings, stamp: str) -> str | None:
    """Move the minute_metrics query's checkpoint aside; returns where to (None if there was none)."""
    checkpoint = checkpoint_paths(settings)[QUERY_METRICS]
    if not path_exists(spark, checkpoint):
        return None
    target = backup_uri(checkpoint, stamp)
    _rename(spark, checkpoint, target)
    log.warning("moved the minute_metrics query's checkpoint %s aside to %s: it points into raw_data's "
                "Parquet file-sink log, which the Delta table does not have; the query starts over on "
                "the converted raw_data", checkpoint, target)  # fmt: skip
    return target


def convert(spark, settings: Settings, now: datetime | None = None) -> list[Converted]:
    """Convert every dataset of the Parquet layout under the storage root; see the module doc."""
    legacy = list(lake.legacy_datasets(settings))
    if not legacy:
        log.info("nothing to convert: no dataset under %s has the Parquet layout", settings.storage_root)
        return []
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    log.info("converting %d dataset(s) to Delta tables: %s", len(legacy), ", ".join(d.name for d in legacy))
    done = [convert_dataset(spark, settings, d.name, stamp) for d in legacy]
    if any(d.name == datasets.RAW_DATA for d in legacy):
        move_metrics_checkpoint(spark, settings, stamp)
    return done


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="btc-lake",
        description="Find datasets of the Parquet layout (check) and convert them to Delta tables (convert).",
    )
    parser.add_argument("command", choices=("check", "convert"),
                        help="check: list datasets to convert (exit 1 if any); convert: convert them")  # fmt: skip
    return add_common_options(parser)


def prepare(args: argparse.Namespace, settings: Settings) -> Work | int:
    """``convert``: the conversion; ``check``: its exit code at once (no Spark needed)."""
    if args.command == "convert":
        return Work(lambda spark: convert(spark, settings), what="conversion")
    try:
        lake.check_layout(settings)
    except lake.LegacyLayoutError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    log.info("every dataset under %s has the Delta layout (or does not exist yet)", settings.storage_root)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return job_main("btc-lake", build_parser(), argv, prepare, app_name=APP_NAME, log=log, lake_layout=False)


if __name__ == "__main__":
    sys.exit(main())
