"""Reading and writing the platform's Delta tables from Spark (batch jobs and the stream).

The layout of each table (directory, partitioning, keys, properties) is
``btc_platform.lakehouse.datasets.TABLES``; this module is how Spark code applies it:

* :func:`ensure_table` - create the table at its location if it does not exist yet (empty,
  with its schema, partitioning and properties), so readers never meet a missing table;
* :func:`append_rows` - append to a table (created first if needed);
* :func:`read_table` / :func:`read_range` - the current snapshot, or the rows of
  ``[start, end)`` of a timestamp column (Delta skips files through their min/max statistics);
* :func:`merge_rows` - one MERGE on the table's keys: matched rows are updated (optionally only
  when a condition holds, e.g. "the target row is not a stream row"), new rows inserted; a
  commit conflict with another writer is retried with backoff (``lakehouse.conflicts``);
* :func:`table_version` - the current version (what a model records it was trained on);
* :func:`commit_metadata` - a JSON note stored with the next commits of this session (e.g. the
  minute_metrics version a consolidation read), readable from the table's history.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from btc_platform.lakehouse import datasets
from btc_platform.lakehouse.conflicts import retry_on_conflict
from btc_platform.lakehouse.spark_session import hadoop_fs
from btc_platform.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "append_rows",
    "commit_metadata",
    "ensure_table",
    "history_metadata",
    "is_delta_table",
    "merge_rows",
    "read_range",
    "read_table",
    "table_uri",
    "table_version",
]

_USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"


def table_uri(settings: Settings, name: str) -> str:
    """Location of table ``name`` under the storage root."""
    if name not in datasets.TABLES:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(datasets.TABLES)}")
    return settings.path(name)


def is_delta_table(spark: SparkSession, uri: str) -> bool:
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, uri))


def ensure_table(
    spark: SparkSession, settings: Settings, name: str, schema: StructType, *, location: str | None = None
) -> str:
    """Create table ``name`` (empty, with ``schema``) unless it exists; returns its URI.

    An existing table that lacks columns of ``schema`` (a table written before they were added
    to the layout) gets them, nullable, at the end (``ALTER TABLE ... ADD COLUMNS``): its old
    rows read them as null. ``location`` puts it elsewhere than under the storage root (e.g. the
    Parquet-layout conversion builds the table next to the old directory first)."""
    from delta.tables import DeltaTable

    table = datasets.TABLES[name]
    uri = location or table_uri(settings, name)
    if is_delta_table(spark, uri):
        add_missing_columns(spark, uri, schema)
        _update_properties(spark, uri, table)
        return uri
    # Delta compares the location with the one it derives, in Hadoop's qualified form (file:/x)
    _, path, fs = hadoop_fs(spark, uri)
    location = str(fs.makeQualified(path).toString())
    builder = DeltaTable.createIfNotExists(spark).location(location).addColumns(schema)
    if table.partition_by:
        builder = builder.partitionedBy(*table.partition_by)
    for key, value in _properties(table, schema.fieldNames()).items():
        builder = builder.property(key, value)
    builder.execute()
    log.info("created Delta table %s at %s", name, uri)
    return uri


_STATS_COLUMNS = "delta.dataSkippingStatsColumns"


def _properties(table: datasets.Table, columns: list[str]) -> dict[str, str]:
    """The layout's table properties for a table with ``columns``: Delta refuses statistics
    columns the table lacks, so those are left out of ``delta.dataSkippingStatsColumns`` (and
    the property when none is left)."""
    properties = dict(table.properties)
    if _STATS_COLUMNS in properties:
        kept = [c for c in properties[_STATS_COLUMNS].split(",") if c in columns]
        if kept:
            properties[_STATS_COLUMNS] = ",".join(kept)
        else:
            del properties[_STATS_COLUMNS]
    return properties


def _update_properties(spark: SparkSession, uri: str, table: datasets.Table) -> None:
    """Set the layout's table properties that an existing table lacks or holds with another value
    (a table created by an earlier release gets the properties added since)."""
    from delta.tables import DeltaTable

    if not table.properties:
        return
    delta_table = DeltaTable.forPath(spark, uri)
    current = delta_table.detail().select("properties").first()["properties"] or {}
    wanted = _properties(table, delta_table.toDF().columns)
    changed = {k: v for k, v in wanted.items() if current.get(k) != v}
    if not changed:
        return
    assignments = ", ".join(f"'{k}' = '{v}'" for k, v in sorted(changed.items()))
    spark.sql(f"ALTER TABLE delta.`{uri}` SET TBLPROPERTIES ({assignments})")
    log.info("set table properties of %s: %s", uri, changed)


def add_missing_columns(spark: SparkSession, uri: str, schema: StructType) -> list[str]:
    """Add the columns of ``schema`` that the Delta table at ``uri`` lacks; returns their names."""
    from delta.tables import DeltaTable

    present = {f.name for f in DeltaTable.forPath(spark, uri).toDF().schema.fields}
    missing = [f for f in schema.fields if f.name not in present]
    if missing:
        columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
        spark.sql(f"ALTER TABLE delta.`{uri}` ADD COLUMNS ({columns})")
        log.info("%s: added column(s) %s", uri, columns)
    return [f.name for f in missing]


def append_rows(spark: SparkSession, settings: Settings, name: str, rows: DataFrame) -> str:
    """Append ``rows`` to table ``name`` (created with their schema if needed); returns its URI."""
    uri = ensure_table(spark, settings, name, rows.schema)
    rows.write.format("delta").mode("append").save(uri)
    return uri


def read_table(spark: SparkSession, uri: str, version: int | None = None) -> DataFrame | None:
    """The table's current snapshot (or ``version``), None if no Delta table is there yet."""
    if not is_delta_table(spark, uri):
        log.info("%s is not a Delta table yet", uri)
        return None
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(uri)


def read_range(
    spark: SparkSession, uri: str, time_col: str, start: datetime, end: datetime
) -> DataFrame | None:
    """Rows with ``start <= time_col < end`` (None if the table does not exist)."""
    df = read_table(spark, uri)
    if df is None:
        return None
    return df.where((F.col(time_col) >= F.lit(start)) & (F.col(time_col) < F.lit(end)))


def merge_rows(
    spark: SparkSession,
    uri: str,
    rows: DataFrame,
    keys: Sequence[str],
    *,
    update_when: str | None = None,
) -> dict[str, int]:
    """MERGE ``rows`` into the table at ``uri`` on ``keys``: update matched rows (only where
    ``update_when`` holds, a SQL condition over ``t.`` target and ``s.`` source columns), insert
    the others. Returns Delta's row counts (inserted, updated, ...).

    With ``update_when``, source rows whose target row it leaves as is are dropped before the
    MERGE: Delta rewrites every file holding a matched row when the MERGE also inserts, whether
    or not the update condition holds, so without this a re-run that changes nothing would still
    copy those files. A row where the condition is null is kept (the MERGE then skips it)."""
    from delta.tables import DeltaTable

    on = " AND ".join(f"t.`{key}` = s.`{key}`" for key in keys)
    target = DeltaTable.forPath(spark, uri)
    if update_when is not None:
        unchanged = F.expr(f"({on}) AND NOT ({update_when})")
        # computed once, cut from the target's plan (the MERGE cannot resolve a source that
        # joins its own target)
        rows = (
            rows.alias("s").join(target.toDF().alias("t"), unchanged, "left_anti").localCheckpoint(eager=True)
        )
    def merge():
        merge = DeltaTable.forPath(spark, uri).alias("t").merge(rows.alias("s"), on)
        return merge.whenMatchedUpdateAll(condition=update_when).whenNotMatchedInsertAll().execute()

    result = retry_on_conflict(merge, f"MERGE into {uri}")
    counts = result.first().asDict() if result is not None else {}
    log.info("MERGE into %s: %s", uri, counts)
    return {key: int(value) for key, value in counts.items() if value is not None}


def table_version(spark: SparkSession, uri: str) -> int | None:
    """Current version of the table at ``uri`` (None if there is none)."""
    from delta.tables import DeltaTable

    if not is_delta_table(spark, uri):
        return None
    return int(DeltaTable.forPath(spark, uri).history(1).select("version").first()[0])


def history_metadata(spark: SparkSession, uri: str, limit: int = 50) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(version, metadata)`` of the newest commits (newest first) that carry JSON user metadata."""
    from delta.tables import DeltaTable

    if not is_delta_table(spark, uri):
        return
    rows = DeltaTable.forPath(spark, uri).history(limit).select("version", "userMetadata").collect()
    for row in rows:
        if not row["userMetadata"]:
            continue
        try:
            yield int(row["version"]), json.loads(row["userMetadata"])
        except ValueError:
            log.warning("%s version %s: user metadata is not JSON: %r", uri, row["version"], row["userMetadata"])


@contextmanager
def commit_metadata(spark: SparkSession, metadata: dict[str, Any]) -> Iterator[None]:
    """Store ``metadata`` (JSON) with the Delta commits made inside the block, with the Airflow
    task instance running the job (``btc_platform.lakehouse.lineage``); afterwards the session's own
    metadata (that task instance only, see ``btc_platform.lakehouse.spark_session``) applies again."""
    from btc_platform.lakehouse import lineage

    spark.conf.set(_USER_METADATA, json.dumps(lineage.with_task(metadata), sort_keys=True, default=str))
    try:
        yield
    finally:
        default = lineage.user_metadata()
        if default:
            spark.conf.set(_USER_METADATA, default)
        else:
            spark.conf.unset(_USER_METADATA)
