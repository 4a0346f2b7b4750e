"""Reading the platform's Delta tables outside Spark (models, DAG tasks, the UI) with delta-rs.

``deltalake`` reads a table's current snapshot (or a past version: time travel) straight from its
transaction log and Parquet files, with column selection and filters pushed down to the files,
so a task reads once what it needs instead of walking directories. The table layout is
``btc_platform.datasets.TABLES``; the URIs come from the storage root (``file://`` or
``hdfs://``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from btc_platform import datasets
from btc_platform.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd
    from deltalake import DeltaTable

log = logging.getLogger(__name__)

#: A pushed-down filter in delta-rs' form: ``[("symbol", "=", "BTCUSDT"), ("hour_start", ">=", ts)]``.
Filters = Sequence[tuple[str, str, Any]]


class TableNotFoundError(LookupError):
    """No Delta table at the location (nothing written there yet)."""


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
