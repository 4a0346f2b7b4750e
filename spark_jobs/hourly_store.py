"""Reading and writing the date=/hour= partitioned datasets of the batch jobs.

Shared by the consolidation, backfill and data-quality jobs:

* :func:`parse_utc` / :func:`require_hour_aligned` - the ``--start``/``--end`` arguments;
* :func:`read_range` - the partitions of ``[start, end)`` of a dataset, listing only those
  partition directories (a dataset with 60k hour partitions is not listed in full every hour).
  A directory written by a streaming file sink (``_spark_metadata``) is read through its log,
  so uncommitted files of failed micro-batches are never read;
* :func:`merge_into_partitions` - because a partition holds every symbol of its hour, writing
  rows of some (symbol, hour) pairs must carry along the other rows already in those partitions;
* :func:`write_hourly` - dynamic partition overwrite: only the partitions present in the
  DataFrame are replaced, one Parquet file each.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from btc_platform import datasets
from btc_platform.spark import hadoop_fs, path_exists

log = logging.getLogger(__name__)

#: Above this many days a range's partitions are found with one ``date=*`` glob instead of a
#: ``date={d1,d2,...}`` glob.
_MAX_DATES_IN_GLOB = 62


class RangeError(ValueError):
    """A --start/--end value that cannot be used (one-line reason)."""


def parse_utc(value: str) -> datetime:
    """ISO-8601 date or date-time to an aware UTC datetime (a value without offset is UTC)."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise RangeError(f"not an ISO-8601 date or date-time: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def require_hour_aligned(start: datetime, end: datetime) -> None:
    for name, value in (("start", start), ("end", end)):
        if value != value.replace(minute=0, second=0, microsecond=0):
            raise RangeError(f"--{name} must be on a full hour (UTC), got {value.isoformat()}")
    if start >= end:
        raise RangeError(f"--start {start.isoformat()} must be before --end {end.isoformat()}")


def partition_of(moment: datetime) -> tuple[str, int]:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d"), moment.hour


def partition_filter(start: datetime, end: datetime) -> Column:
    """Predicate on the partition columns only (so Spark prunes): hour partitions of [start, end)."""
    d0, h0 = partition_of(start)
    d1, h1 = partition_of(end)
    date, hour = F.col("date"), F.col("hour")
    after_start = (date > F.lit(d0)) | ((date == F.lit(d0)) & (hour >= F.lit(h0)))
    before_end = (date < F.lit(d1)) | ((date == F.lit(d1)) & (hour < F.lit(h1)))
    return after_start & before_end


def partition_dirs(spark: SparkSession, root: str, start: datetime, end: datetime) -> list[str]:
    """URIs of the existing ``date=/hour=`` directories of ``[start, end)`` under ``root``.

    One Hadoop glob (a handful of JVM calls whatever the number of partitions).
    """
    first, last = start.date(), (end - timedelta(microseconds=1)).date()
    days = (last - first).days + 1
    if days <= _MAX_DATES_IN_GLOB:
        dates = ",".join((first + timedelta(days=i)).isoformat() for i in range(days))
        pattern = f"{root}/date={{{dates}}}/hour=*"
    else:
        pattern = f"{root}/date=*/hour=*"
    jvm, glob, fs = hadoop_fs(spark, pattern)
    statuses = fs.globStatus(glob)
    if statuses is None or len(statuses) == 0:
        return []
    paths = jvm.org.apache.hadoop.fs.FileUtil.stat2Paths(statuses)
    # py4j cannot pass a Path[] as Object[]: copy into an Object[] to stringify it in one call
    objects = spark.sparkContext._gateway.new_array(jvm.java.lang.Object, len(paths))
    jvm.java.lang.System.arraycopy(paths, 0, objects, 0, len(paths))
    listing = str(jvm.java.util.Arrays.toString(objects))
    lo, hi = partition_of(start), partition_of(end)
    found = []
    for uri in listing.strip("[]").split(", "):
        date_part, _, hour_part = uri.rpartition("/date=")[2].partition("/hour=")
        try:
            key = (date_part, int(hour_part))
        except ValueError:
            log.warning("ignoring unexpected directory %s", uri)
            continue
        if lo <= key < hi:
            found.append(uri)
    return sorted(found)


def read_range(spark: SparkSession, root: str, columns, start: datetime, end: datetime) -> DataFrame | None:
    """Rows of the partitions of ``[start, end)`` of the dataset at ``root`` (None if none exist).

    ``columns`` is a ``datasets.*_COLUMNS`` list; its schema is imposed (``date`` stays a string).
    """
    schema = datasets.struct_type(columns)
    if not path_exists(spark, root):
        log.info("%s does not exist yet", root)
        return None
    reader = spark.read.schema(schema)
    if path_exists(spark, f"{root}/_spark_metadata"):
        # written by a streaming file sink: read through its log (committed files only)
        return reader.parquet(root).where(partition_filter(start, end))
    dirs = partition_dirs(spark, root, start, end)
    if not dirs:
        log.info("no partitions of [%s, %s) under %s", start.isoformat(), end.isoformat(), root)
        return None
    log.info("reading %d partition(s) of %s", len(dirs), root)
    return reader.option("basePath", root).parquet(*dirs).where(partition_filter(start, end))


def merge_into_partitions(
    existing: DataFrame | None, incoming: DataFrame, *, drop_existing_sources: tuple[str, ...] = ()
) -> DataFrame:
    """``incoming`` plus the rows of ``existing`` that must survive the overwrite of its partitions.

    Kept: rows in a partition that ``incoming`` writes, for a (symbol, hour_start) that
    ``incoming`` does not carry, whose ``source`` is not in ``drop_existing_sources``.
    """
    names = datasets.column_names(datasets.HOURLY_METRICS_COLUMNS)
    incoming = incoming.select(*names)
    if existing is None:
        return incoming
    kept = existing.join(incoming.select("date", "hour").distinct(), ["date", "hour"], "left_semi").join(
        incoming.select("symbol", "hour_start").distinct(), ["symbol", "hour_start"], "left_anti"
    )
    if drop_existing_sources:
        kept = kept.where(~F.col("source").isin(*drop_existing_sources))
    return incoming.unionByName(kept.select(*names))


def write_hourly(df: DataFrame, root: str) -> None:
    """Overwrite exactly the date=/hour= partitions present in ``df`` (one file per partition).

    An hour file holds one row per symbol: Parquet dictionaries cost more to set up per file
    than they save on so few rows (a 60k-hour backfill writes 60k files), so they are off.
    """
    (
        df.repartition("date", "hour")
        .sortWithinPartitions("date", "hour", "symbol")
        .write.mode("overwrite")
        .option("partitionOverwriteMode", "dynamic")
        .option("parquet.enable.dictionary", "false")
        .partitionBy(*datasets.PARTITION_COLUMNS)
        .parquet(root)
    )
