"""Reading and writing the platform's Delta tables outside Spark (models, DAG tasks, the UI) with delta-rs.

``deltalake`` reads a table's current snapshot (or a past version: time travel) straight from its
transaction log and Parquet files, with column selection and filters pushed down to the files,
so a task reads once what it needs instead of walking directories. Reads run as one SQL query on
delta-rs' own engine (DataFusion, ``deltalake.QueryBuilder``) rather than through
``DeltaTable.to_pandas`` (a pyarrow dataset): the same rows, and on a table of many small files
(one per hourly MERGE until OPTIMIZE compacts them) several times faster (docs/benchmarks.md). The table layout is
``btc_platform.lakehouse.datasets.TABLES``; the URIs come from the storage root (``file://`` or
``hdfs://``). Functions taking a table ``name`` resolve it under the storage root; the ``*_at``
variants take a location (a table written outside the root, e.g. a test's or a benchmark's).

Writes (:func:`write_table` / :func:`write_at`) append a pandas frame, creating the table with its
layout on the first write; with ``replace_on`` the rows whose key values occur in the frame are
replaced in the same commit (``write_deltalake(mode="overwrite", predicate=...)``), so repeating a
write for the same key (e.g. one ``model_version``) never duplicates. Spark reads what is written
here (``spark.read.format("delta")``): timestamps are UTC instants (Delta ``timestamp``) and every
column must have a type (an all-null column without one is refused, not written as ``void``).

``hdfs://``: delta-rs 1.6 (the ``deltalake`` wheel) ships the hdfs-native object store and reads
and writes ``hdfs://<namenode>:<rpc port>/...`` directly, with no storage options and no JVM:
it speaks the NameNode RPC protocol itself (not WebHDFS) and reads blocks from the DataNodes at
the addresses they registered, so those must be reachable from the reader. Checked against the
local NameNode + DataNode of ``btc-services`` (tests/test_models_delta.py, ``integration``: Spark
writes a Delta table on HDFS, :func:`read_at` reads it; delta-rs writes, Spark reads). A cluster
with an HA nameservice or Kerberos needs its Hadoop configuration (hdfs-native reads
``HADOOP_CONF_DIR``); that is not covered here.

It also guards the upgrade from the Parquet layout: :func:`check_layout` refuses a storage root
whose dataset directories still hold plain Parquet (no ``_delta_log``), naming the command that
converts them (``spark_jobs/convert_job.py``). It only lists directories (``btc_platform.lakehouse.storage``),
so it runs before any Spark session or delta-rs read.

pandas, pyarrow, numpy and deltalake are imported by the functions that read or write tables: the
job mains and ``btc-services`` import this module for :func:`check_layout` alone, which needs none of them.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from btc_platform.lakehouse import datasets, lineage
from btc_platform.lakehouse.conflicts import retry_on_conflict
from btc_platform.lakehouse.storage import join, open_storage
from btc_platform.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from deltalake import DeltaTable

log = logging.getLogger(__name__)

#: A pushed-down filter in delta-rs' form: ``[("symbol", "=", "BTCUSDT"), ("hour_start", ">=", ts)]``.
Filters = Sequence[tuple[str, str, Any]]


#: Directory of a Delta table's transaction log.
DELTA_LOG = "_delta_log"
#: What converts datasets of the Parquet layout (``btc-lake convert`` = ``spark_jobs/convert_job.py``).
CONVERT_COMMAND = "make convert-data"


class TableNotFoundError(LookupError):
    """No Delta table at the location (nothing written there yet)."""


class VersionNotFoundError(LookupError):
    """The table exists but not at the requested version (time travel past its history)."""


class VersionGoneError(VersionNotFoundError):
    """The version is in the table's history but its files or log entries were cleaned up (VACUUM,
    log retention); the message names the version and the retention settings."""


class LegacyLayoutError(RuntimeError):
    """The storage root holds datasets of the Parquet layout; the message names the command that
    converts them."""


@dataclass(frozen=True)
class LegacyDataset:
    """A dataset directory of the Parquet layout: Parquet files, a ``_spark_metadata`` log of the
    stream's file sink or ``key=value`` partition directories, and no Delta log."""

    name: str
    uri: str
    evidence: tuple[str, ...]  # the entries that show it (a few)


def _legacy_entry(name: str) -> bool:
    return (
        name in ("_spark_metadata", "_SUCCESS")
        or name.endswith(".parquet")
        or ("=" in name and not name.startswith((".", "_")))
    )


def legacy_datasets(settings: Settings | None = None) -> Iterator[LegacyDataset]:
    """Dataset directories of :data:`datasets.TABLES` that still have the Parquet layout."""
    s = settings or get_settings()
    storage = open_storage(s.storage_root, s)
    for name in datasets.TABLES:
        uri = s.path(name)
        if not storage.isdir(uri):
            continue
        entries = storage.listdir(uri)
        if DELTA_LOG in entries:
            continue
        evidence = tuple(entry for entry in entries if _legacy_entry(entry))
        if evidence:
            yield LegacyDataset(name, uri, evidence[:3])


def check_layout(settings: Settings | None = None) -> None:
    """Raise :class:`LegacyLayoutError` if a dataset under the storage root has the Parquet layout.

    Every job that reads or writes the tables calls this before it starts: a Delta job meeting a
    plain Parquet directory would either fail deep inside Spark or write a Delta table over it
    that hides the old rows.
    """
    s = settings or get_settings()
    found = list(legacy_datasets(s))
    if not found:
        return
    listed = "; ".join(f"{d.name} ({', '.join(d.evidence)})" for d in found)
    raise LegacyLayoutError(
        f"{s.storage_root} holds datasets of the earlier Parquet layout, without a Delta log: {listed}. "
        f"Stop the platform (make stop) and convert them with `{CONVERT_COMMAND}` (or `btc-lake convert`): "
        "each becomes a Delta table, the old directory is kept as <name>.parquet-backup-<UTC time>. "
        "See docs/upgrading.md."
    )


def existing_tables(settings: Settings | None = None) -> list[str]:
    """Names of the tables of :data:`datasets.TABLES` that exist (have a Delta log), in order."""
    s = settings or get_settings()
    storage = open_storage(s.storage_root, s)
    return [name for name in datasets.TABLES if storage.isdir(join(s.path(name), DELTA_LOG))]


def table_uri(name: str, settings: Settings | None = None) -> str:
    if name not in datasets.TABLES:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(datasets.TABLES)}")
    return (settings or get_settings()).path(name)


def _local(uri: str) -> str:
    """delta-rs takes plain paths for local tables."""
    return uri.removeprefix("file://") if uri.startswith("file://") else uri


def arrow_schema(columns: Sequence[tuple[str, str]]) -> pa.Schema:
    """Arrow schema for one of the column lists of ``btc_platform.lakehouse.datasets`` (timestamps in UTC)."""
    import pyarrow as pa

    mapping = {
        datasets.STRING: pa.string(),
        datasets.LONG: pa.int64(),
        datasets.DOUBLE: pa.float64(),
        datasets.TIMESTAMP: pa.timestamp("us", tz="UTC"),
        datasets.INT: pa.int32(),
    }
    return pa.schema([pa.field(name, mapping[kind]) for name, kind in columns])


# ---- reads ------------------------------------------------------------------------------------
def open_at(uri: str, version: int | None = None) -> DeltaTable:
    """The Delta table at ``uri`` (at ``version`` when given).

    TableNotFoundError if there is none, VersionNotFoundError if ``version`` is not in its history.
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError as DeltaTableNotFound

    try:
        table = DeltaTable(_local(uri))
    except DeltaTableNotFound as exc:
        raise TableNotFoundError(f"no Delta table at {uri} (nothing written there yet)") from exc
    if version is not None and version != table.version():
        latest = int(table.version())
        if not 0 <= version <= latest:
            raise VersionNotFoundError(f"{uri} has versions 0..{latest}; version {version} does not exist: use one "
                                       "of those (DESCRIBE HISTORY in make sql lists them), or none for the current")
        try:
            table.load_as_version(version)
        except Exception as exc:  # delta-rs: the log entries of the version were cleaned up
            raise VersionGoneError(gone_message(uri, version, exc)) from exc
    return table


def gone_message(uri: str, version: int, exc: BaseException) -> str:
    """Why version ``version`` of ``uri`` cannot be read any more, and the settings that decide it."""
    return (f"{uri} version {version} is no longer readable: its files or log entries were removed "
            "(VACUUM deletes files a version stopped referencing BTC_MAINTENANCE_VACUUM_RETENTION_HOURS "
            "after; the log keeps entries for the table's delta.logRetentionDuration). A registered model "
            f"keeps its own training snapshot (training_data.parquet). Cause: {type(exc).__name__}: {exc}")


def open_table(name: str, settings: Settings | None = None, version: int | None = None) -> DeltaTable:
    """The Delta table ``name`` (at ``version`` when given); TableNotFoundError if absent."""
    return open_at(table_uri(name, settings), version)


def table_version(name: str, settings: Settings | None = None) -> int | None:
    """Current version of table ``name``, None when it does not exist yet."""
    try:
        return int(open_table(name, settings).version())
    except TableNotFoundError:
        return None


def column_names(table: DeltaTable) -> list[str]:
    return [f.name for f in table.schema().fields]


_OPERATORS = {"=": "=", "==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">=", "in": "IN", "not in": "NOT IN"}


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _condition(column: str, op: str, value: Any) -> str:
    """One ``(column, op, value)`` filter as SQL (``in``/``not in`` take a list of values)."""
    sql_op = _OPERATORS.get(op.lower())
    if sql_op is None:
        raise ValueError(f"unsupported filter operator {op!r}; use one of {', '.join(_OPERATORS)}")
    if sql_op in ("IN", "NOT IN"):
        if isinstance(value, str) or not isinstance(value, Sequence | set | frozenset):
            raise ValueError(f"filter {column} {op} needs a list of values, got {value!r}")
        return f"{_identifier(column)} {sql_op} ({', '.join(_literal(v) for v in value)})"
    return f"{_identifier(column)} {sql_op} {_literal(value)}"


def is_missing_file(exc: BaseException) -> bool:
    """A read that failed on a data file the log names but storage no longer holds (vacuumed)."""
    text = str(exc).lower()
    return isinstance(exc, FileNotFoundError) or "not found" in text or "no such file" in text


def select_sql(columns: Sequence[str] | None = None, filters: Filters | None = None, table: str = "t") -> str:
    """``SELECT columns FROM table WHERE filters`` (all filters AND-ed)."""
    select = ", ".join(_identifier(c) for c in columns) if columns else "*"
    where = " AND ".join(_condition(*f) for f in filters or ())
    return f"SELECT {select} FROM {table}" + (f" WHERE {where}" if where else "")


def to_frame(table: DeltaTable, *, columns: Sequence[str] | None = None, filters: Filters | None = None) -> pd.DataFrame:
    """Rows of an opened table (at its loaded version) as pandas: only ``columns``, only the rows
    matching ``filters`` (files skipped by their statistics), read by delta-rs' DataFusion engine."""
    import pyarrow as pa
    from deltalake import QueryBuilder

    sql = select_sql(columns, filters)
    try:
        frame = pa.table(QueryBuilder().register("t", table).execute(sql).read_all()).to_pandas()
    except Exception as exc:
        if not is_missing_file(exc):
            raise
        raise VersionGoneError(gone_message(table.table_uri, int(table.version()), exc)) from exc
    log.info("read %d row(s) of %s version %s: %s", len(frame), table.table_uri, table.version(), sql)
    return frame


def read_at(
    uri: str, *, columns: Sequence[str] | None = None, filters: Filters | None = None, version: int | None = None
) -> pd.DataFrame:
    """Rows of the table at ``uri`` as pandas (selected ``columns``, ``filters`` pushed down)."""
    return to_frame(open_at(uri, version), columns=columns, filters=filters)


def read_table(
    name: str,
    settings: Settings | None = None,
    *,
    columns: Sequence[str] | None = None,
    filters: Filters | None = None,
    version: int | None = None,
) -> pd.DataFrame:
    """Rows of table ``name`` as pandas (selected ``columns``, ``filters`` pushed down)."""
    return read_at(table_uri(name, settings), columns=columns, filters=filters, version=version)


# ---- writes -----------------------------------------------------------------------------------
def _literal(value: Any) -> str:
    """A value as a SQL literal of a delta-rs predicate (timestamps as UTC ISO strings). Python's
    own types only (a pandas Timestamp is a datetime, numpy's bool is told by its type's name): a reader
    without pandas (the monitor) builds its SQL without loading it."""
    if isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")):
        return "true" if value else "false"
    if isinstance(value, datetime):
        ts = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return f"'{ts.isoformat()}'"
    if isinstance(value, numbers.Real):  # Python and numpy numbers
        return repr(value.item() if hasattr(value, "item") else value)
    return "'" + str(value).replace("'", "''") + "'"


def replace_predicate(frame: pd.DataFrame, keys: Sequence[str]) -> str:
    """SQL predicate matching every row whose ``keys`` equal those of some row of ``frame``."""
    if not keys:
        raise ValueError("replace_on needs at least one key column")
    missing = [k for k in keys if k not in frame.columns]
    if missing:
        raise ValueError(f"replace_on columns {missing} are not in the frame")
    if frame[list(keys)].isna().any().any():
        raise ValueError(f"replace_on columns {list(keys)} must not hold nulls")
    combos = frame[list(keys)].drop_duplicates().itertuples(index=False, name=None)
    terms = [" AND ".join(f"`{k}` = {_literal(v)}" for k, v in zip(keys, combo, strict=True)) for combo in combos]
    return " OR ".join(f"({t})" for t in terms)


def write_at(
    uri: str,
    frame: pd.DataFrame,
    *,
    replace_on: Sequence[str] | None = None,
    schema: pa.Schema | None = None,
    partition_by: Sequence[str] = (),
    properties: Mapping[str, str] | None = None,
    add_columns: bool = False,
) -> int:
    """Append ``frame`` to the Delta table at ``uri`` (created on the first write with
    ``partition_by``/``properties``); with ``replace_on``, rows of the table whose values of those
    columns occur in ``frame`` are replaced in the same commit. ``add_columns``: columns of
    ``frame`` the table lacks are added to it (older rows read them as null) instead of failing.
    Returns the new table version."""
    import pyarrow as pa
    from deltalake import CommitProperties, write_deltalake

    # the Airflow task instance writing (when there is one), in the commit's info
    info = lineage.commit_info()
    commit = CommitProperties(custom_metadata=info) if info else None
    data = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    untyped = [f.name for f in data.schema if pa.types.is_null(f.type)]
    if untyped:
        raise ValueError(f"columns {untyped} have no type (all null): give them a dtype or pass a schema")
    predicate = replace_predicate(frame, replace_on) if replace_on and len(frame) else None

    def write() -> DeltaTable:
        try:
            table = open_at(uri)
        except TableNotFoundError:
            log.info("creating Delta table at %s", uri)
            write_deltalake(
                _local(uri), data, mode="append", partition_by=list(partition_by) or None,
                configuration=dict(properties) if properties else None, commit_properties=commit,
            )
            return open_at(uri)
        write_deltalake(table, data, mode="overwrite" if predicate else "append", predicate=predicate,
                        schema_mode="merge" if add_columns else None, commit_properties=commit)
        if predicate:
            log.info("replaced the rows of %s where %s", uri, predicate)
        return table

    table = retry_on_conflict(write, f"write to {uri}")
    version = int(table.version())
    log.info("wrote %d row(s) to %s version %d", len(frame), uri, version)
    return version


def write_table(
    name: str,
    frame: pd.DataFrame,
    settings: Settings | None = None,
    *,
    replace_on: Sequence[str] | None = None,
    schema: pa.Schema | None = None,
    add_columns: bool = False,
) -> int:
    """:func:`write_at` for table ``name`` under the storage root, created with its TABLES layout."""
    uri = table_uri(name, settings)
    layout = datasets.TABLES[name]
    return write_at(
        uri, frame, replace_on=replace_on, schema=schema, partition_by=layout.partition_by, properties=layout.properties,
        add_columns=add_columns
    )
