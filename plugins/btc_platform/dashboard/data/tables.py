"""Reading the platform's tables for the dashboard: :func:`read` (one SQL query per table through
delta-rs, the range as its WHERE clause; a missing table or column gives a reason instead of rows)
and the conversions of its values to JSON (ISO UTC times, numbers, null for missing)."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from btc_platform.lakehouse import datasets, lake
from btc_platform.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


#: DAGs that write each table (the pipeline view links their runs).
PRODUCERS: dict[str, tuple[str, ...]] = {
    datasets.RAW_DATA: ("btc_stream_supervisor",),
    datasets.QUARANTINE: ("btc_stream_supervisor",),
    datasets.MINUTE_METRICS: ("btc_stream_supervisor",),
    datasets.HOURLY_METRICS: ("btc_hourly_consolidation", "btc_backfill"),
    datasets.DATA_QUALITY: ("btc_hourly_consolidation", "btc_backfill"),
    datasets.PREDICTIONS: ("btc_retrain",),
    datasets.PREDICTION_METRICS: ("btc_retrain",),
    datasets.FUTURE_PREDICTIONS: ("btc_retrain",),
    datasets.FORECAST_ACTUALS: ("btc_retrain",),
}


# ---- helpers ------------------------------------------------------------------------------------
def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(value: Any) -> str | None:
    """A timestamp as ISO UTC with ``Z`` (None for null)."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    ts = pd.Timestamp(value)
    ts = ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S") + ("" if ts.microsecond == 0 else f".{ts.microsecond // 1000:03d}") + "Z"


def number(value: Any) -> float | int | None:
    """A JSON number (None for null or NaN; Decimal and numpy values converted)."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) or math.isinf(out) else out


def iso_list(series: pd.Series) -> list[str | None]:
    """A timestamp column as ISO UTC strings (``Z``; milliseconds only when a value has them)."""
    import numpy as np
    import pandas as pd

    times = pd.to_datetime(series, utc=True)
    values = times.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    unit = "s" if (times.dropna().dt.microsecond == 0).all() else "ms"
    text = np.datetime_as_string(values, unit=unit)
    return [None if t == "NaT" else t + "Z" for t in text.tolist()]


def column(frame: pd.DataFrame, name: str) -> list:
    """One column as a JSON list: times as ISO strings, numbers as numbers, null for missing."""
    import numpy as np
    import pandas as pd

    series = frame[name]
    if pd.api.types.is_datetime64_any_dtype(series):
        return iso_list(series)
    if pd.api.types.is_bool_dtype(series):
        return [None if pd.isna(v) else bool(v) for v in series.tolist()]
    if pd.api.types.is_integer_dtype(series):
        return [None if pd.isna(v) else int(v) for v in series.astype("object").tolist()]
    if pd.api.types.is_float_dtype(series):
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        out = values.tolist()
        for i in np.flatnonzero(~np.isfinite(values)).tolist():
            out[i] = None
        return out
    if pd.api.types.is_object_dtype(series) and len(series) and not isinstance(series.dropna().iloc[0] if
                                                                                  series.notna().any() else "", str):
        return [number(v) for v in series]
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in series.tolist()]


def utc_timestamp(value: datetime) -> pd.Timestamp:
    import pandas as pd

    ts = pd.Timestamp(value)
    return ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)


class OpenTables:
    """The Delta tables the dashboard has opened, kept between requests.

    Opening a table replays its log from the last checkpoint: for raw_data, written every few
    seconds and compacted every few dozen commits, that checkpoint holds the day's removed files
    too, and reading it was most of a request's time. A kept table is brought up to date with the
    commits made since (``update_incremental``: a few small JSON files). One lock per table: a
    request updates and reads it alone. A table that cannot be updated, or whose files are gone
    when it is read (its directory replaced by another table), is opened again, and that is logged."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[threading.Lock, list]] = {}
        self._lock = threading.Lock()

    @contextmanager
    def latest(self, name: str, settings: Settings, *, reopen: bool = False) -> Iterator[Any]:
        """Table ``name`` at its newest version, for the block (``reopen``: opened anew);
        TableNotFoundError if absent."""
        uri = lake.table_uri(name, settings)
        with self._lock:
            lock, slot = self._entries.setdefault(uri, (threading.Lock(), [None]))
        with lock:
            table = None if reopen else slot[0]
            if table is not None:
                try:
                    table.update_incremental()
                except Exception as exc:  # delta-rs raises its own errors; the table is simply opened again
                    log.warning("dashboard: table %s could not be brought up to date (%s: %s): opening it again",
                                name, type(exc).__name__, exc)  # fmt: skip
                    table = slot[0] = None
            if table is None:
                table = lake.open_table(name, settings)
                slot[0] = table
            yield table

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


#: The tables of this process (Airflow's API server, or a benchmark's app).
TABLES = OpenTables()


class Read:
    """Rows of one table read for the dashboard, or why there are none."""

    def __init__(self, frame: pd.DataFrame | None, reason: str | None, missing: Sequence[str] = ()):
        self.frame = frame
        self.reason = reason
        self.missing = tuple(missing)

    @property
    def empty(self) -> bool:
        return self.frame is None or self.frame.empty


def read(
    name: str,
    settings: Settings,
    *,
    required: Sequence[str],
    optional: Sequence[str] = (),
    filters: lake.Filters = (),
    order_by: str | None = None,
    limit: int | None = None,
    empty_reason: str = "no rows in the selected range",
) -> Read:
    """``required`` and ``optional`` columns of table ``name`` matching ``filters``.

    No table: a reason naming what writes it. A required column the table does not have: a
    reason naming it (the table is of another version of the platform). Optional columns the
    table lacks are left out and listed in ``missing``.
    """
    args = (name, required, optional, filters, order_by, limit, empty_reason)
    try:
        with TABLES.latest(name, settings) as table:
            try:
                return _read(table, *args)
            except Exception as exc:
                if not lake.is_missing_file(exc):
                    raise
                # a kept table whose files are gone: its directory was replaced by another table
                log.warning("dashboard: %s names files that are gone (%s): reading it opened anew", name, exc)
        with TABLES.latest(name, settings, reopen=True) as table:
            return _read(table, *args)
    except lake.TableNotFoundError:
        writers = ", ".join(PRODUCERS.get(name, ()))
        return Read(None, f"table {name} does not exist yet (written by {writers or 'the platform'})")


def _read(table, name: str, required: Sequence[str], optional: Sequence[str], filters: lake.Filters,
          order_by: str | None, limit: int | None, empty_reason: str) -> Read:
    from deltalake import QueryBuilder

    present = set(lake.column_names(table))
    absent = [c for c in required if c not in present]
    if absent:
        return Read(None, f"table {name} has no column {', '.join(absent)} (written by another version?)")
    unfiltered = [f[0] for f in filters if f[0] not in present]
    if unfiltered:  # reading without that filter would show rows outside the range
        return Read(None, f"table {name} has no column {', '.join(unfiltered)} to select the rows by")
    missing = [c for c in optional if c not in present]
    columns = [*required, *(c for c in optional if c in present)]
    sql = lake.select_sql(columns, filters)
    if order_by:
        sql += f" ORDER BY {order_by}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    import pyarrow as pa

    frame = pa.table(QueryBuilder().register("t", table).execute(sql).read_all()).to_pandas()
    log.debug("dashboard read %d row(s) of %s: %s", len(frame), name, sql)
    return Read(frame, empty_reason if frame.empty else None, missing)


def columns_of(frame: pd.DataFrame, names: Sequence[str]) -> dict[str, list]:
    return {n: column(frame, n) for n in names if n in frame.columns}



def age_s(value: Any, now: datetime) -> float | None:
    if value in (None, ""):
        return None
    try:
        return round((utc_timestamp(now) - utc_timestamp(value)).total_seconds(), 1)
    except (TypeError, ValueError):
        return None

