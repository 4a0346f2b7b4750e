"""Reading the platform's Delta tables outside Spark (models, DAG tasks, the UI) with delta-rs.

``deltalake`` reads a table's current snapshot (or a past version: time travel) straight from its
transaction log and Parquet files, with column selection and filters pushed down to the files,
so a task reads once what it needs instead of walking directories. The table layout is
``btc_platform.datasets.TABLES``; the URIs come from the storage root (``file://`` or
``hdfs://``).

It also guards the upgrade from the Parquet layout: :func:`check_layout` refuses a storage root
whose dataset directories still hold plain Parquet (no ``_delta_log``), naming the command that
converts them (``spark_jobs/convert_job.py``). It only lists directories (``btc_platform.storage``),
so it runs before any Spark session or delta-rs read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from btc_platform import datasets
from btc_platform.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd
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
    from btc_platform.storage import open_storage

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
        "See README, Upgrading from the Parquet layout."
    )


def existing_tables(settings: Settings | None = None) -> list[str]:
    """Names of the tables of :data:`datasets.TABLES` that exist (have a Delta log), in order."""
    from btc_platform.storage import join, open_storage

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


def open_table(name: str, settings: Settings | None = None, version: int | None = None) -> DeltaTable:
    """The Delta table ``name`` (at ``version`` when given); TableNotFoundError if absent."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError as DeltaTableNotFound

    uri = table_uri(name, settings)
    try:
        return DeltaTable(_local(uri), version=version)
    except DeltaTableNotFound as exc:
        raise TableNotFoundError(f"no Delta table at {uri} ({name} has not been written yet)") from exc


def table_version(name: str, settings: Settings | None = None) -> int | None:
    """Current version of table ``name``, None when it does not exist yet."""
    try:
        return int(open_table(name, settings).version())
    except TableNotFoundError:
        return None


def read_table(
    name: str,
    settings: Settings | None = None,
    *,
    columns: Sequence[str] | None = None,
    filters: Filters | None = None,
    version: int | None = None,
) -> pd.DataFrame:
    """Rows of table ``name`` as pandas (selected ``columns``, ``filters`` pushed down)."""
    table = open_table(name, settings, version)
    frame = table.to_pandas(columns=list(columns) if columns else None, filters=list(filters) if filters else None)
    log.info("read %d row(s) of %s version %s", len(frame), name, table.version())
    return frame
