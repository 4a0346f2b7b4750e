"""Load the hourly series the model learns from, and describe its gaps.

Two inputs give the same frame (one row per hour, sorted, columns ``hour_start`` (UTC),
``open, high, low, close``, ``volume`` (may be null) and ``source``):

* the ``hourly_metrics`` Delta table (file:// or hdfs://), written by the consolidation and
  backfill jobs, read with delta-rs (``btc_platform.lakehouse.lake``): only the columns used here and only
  one symbol's rows (filters pushed down to the files), at the current version or at a past one
  (time travel, ``version=``: what a model was trained on, see :class:`HourlyData`).
* a candle CSV with header ``open_time_utc,open,high,low,close,volume,...`` (Binance export).

Hours are never invented: a missing hour stays missing and splits the series into contiguous
segments (``segment_ids``); windows crossing a gap are skipped and counted in ``models.features``.
Rows whose OHLC is missing or not positive cannot be used: they are removed, counted and logged
(and thereby become gaps), never filled. ``hour_start`` is always ``datetime64[ns, UTC]``
(:data:`HOUR_DTYPE`), whatever resolution the CSV parser or delta-rs (microseconds, UTC) gives.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

HOUR = pd.Timedelta(hours=1)
OHLC = ("open", "high", "low", "close")
HOUR_DTYPE = "datetime64[ns, UTC]"
#: hourly_metrics columns the models read (``volume``/``source`` optional)
HOURLY_COLUMNS = ("hour_start", *OHLC, "volume", "source")


class InsufficientHistoryError(ValueError):
    """Not enough hourly history to train and evaluate honestly (message: needed vs found)."""

    def __init__(self, needed: int, found: int, what: str = "hours", detail: str = ""):
        self.needed = needed
        self.found = found
        msg = (
            f"insufficient history: need at least {needed} {what}, found {found}"
            f"{' (' + detail + ')' if detail else ''}. Load more history first, e.g. run the "
            "`btc_backfill` DAG (or spark_jobs/backfill_job.py) for earlier dates."
        )
        super().__init__(msg)


class DataError(ValueError):
    """The input data cannot be used (unreadable, wrong columns, duplicate hours...)."""


class HistoryNotFoundError(DataError):
    """Nothing to read: the candle file or the Delta table does not exist (yet)."""


class VersionGoneDataError(DataError):
    """The table version asked for was cleaned up (``lake.VersionGoneError``; the message says which
    version and which retention setting)."""


@dataclass(frozen=True)
class HourlyData:
    """A loaded series and where it came from: ``table_version`` is the Delta version of
    hourly_metrics that was read (None for a candle CSV), what a model records it trained on."""

    frame: pd.DataFrame
    origin: str
    table_version: int | None = None


@dataclass(frozen=True)
class Gap:
    after: pd.Timestamp  # last hour before the gap
    before: pd.Timestamp  # first hour after the gap
    missing_hours: int

    def to_dict(self) -> dict:
        return {"after": self.after.isoformat(), "before": self.before.isoformat(), "missing_hours": self.missing_hours}


def is_csv(data: str) -> bool:
    scheme = urlparse(data).scheme
    return scheme in ("", "file") and data.lower().endswith((".csv", ".csv.gz"))


def load_candles_csv(path: str) -> pd.DataFrame:
    """Read a candle CSV (``open_time_utc,open,high,low,close,volume,...``)."""
    local = urlparse(path).path if path.startswith("file://") else path
    try:
        raw = pd.read_csv(local)
    except FileNotFoundError as exc:
        raise HistoryNotFoundError(f"candle file {path} does not exist") from exc
    missing = [c for c in ("open_time_utc", *OHLC) if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; expected header open_time_utc,open,high,low,close,volume,...")
    frame = pd.DataFrame(
        {
            "hour_start": pd.to_datetime(raw["open_time_utc"], utc=True),
            **{c: pd.to_numeric(raw[c], errors="coerce").astype("float64") for c in OHLC},
            "volume": pd.to_numeric(raw["volume"], errors="coerce") if "volume" in raw else np.nan,
            "source": "backfill",
        }
    )
    return _clean(frame, path)


def read_hourly_metrics(
    uri: str, symbol: str, *, version: int | None = None, until: pd.Timestamp | None = None
) -> HourlyData:
    """Read one symbol's hours (up to ``until`` if given) of the hourly_metrics Delta table at
    ``uri``, at ``version`` (time travel) or the current one; one read, filters pushed down."""
    from btc_platform.lakehouse import lake

    try:
        table = lake.open_at(uri, version)
    except lake.TableNotFoundError as exc:
        raise HistoryNotFoundError(f"hourly_metrics {uri} does not exist: {exc}") from exc
    except lake.VersionGoneError as exc:
        raise VersionGoneDataError(str(exc)) from exc
    except lake.VersionNotFoundError as exc:
        raise DataError(str(exc)) from exc
    present = set(lake.column_names(table))
    missing = [c for c in ("symbol", "hour_start", *OHLC) if c not in present]
    if missing:
        raise DataError(f"{uri}: missing columns {missing} (expected the hourly_metrics contract)")
    filters: list = [("symbol", "=", symbol)]
    if until is not None:
        filters.append(("hour_start", "<=", until))
    try:
        raw = lake.to_frame(table, columns=[c for c in HOURLY_COLUMNS if c in present], filters=filters)
    except lake.VersionGoneError as exc:
        raise VersionGoneDataError(str(exc)) from exc
    origin = f"{uri}@v{table.version()}"
    frame = pd.DataFrame(
        {
            "hour_start": pd.to_datetime(raw["hour_start"], utc=True),
            **{c: raw[c].astype("float64") for c in OHLC},
            "volume": raw["volume"].astype("float64") if "volume" in raw else np.nan,
            "source": raw["source"] if "source" in raw else "unknown",
        }
    )
    return HourlyData(_clean(frame, origin), origin, int(table.version()))


def load_hourly_metrics(
    uri: str, symbol: str, *, version: int | None = None, until: pd.Timestamp | None = None
) -> pd.DataFrame:
    """The frame of :func:`read_hourly_metrics`."""
    return read_hourly_metrics(uri, symbol, version=version, until=until).frame


def load_series(
    data: str, symbol: str, *, version: int | None = None, until: pd.Timestamp | None = None
) -> HourlyData:
    """Candle CSV path or hourly_metrics Delta table URI -> clean hourly frame (+ its origin)."""
    if not is_csv(data):
        return read_hourly_metrics(data, symbol, version=version, until=until)
    if version is not None:
        raise ValueError(f"a table version (time travel) needs a Delta table, {data} is a CSV file")
    frame = load_candles_csv(data)
    if until is not None:
        frame = frame[frame["hour_start"] <= until].reset_index(drop=True)
    return HourlyData(frame, data)


def _clean(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    frame = frame.dropna(subset=["hour_start"]).astype({"hour_start": HOUR_DTYPE})
    frame = frame.sort_values("hour_start", kind="stable")
    off_grid = frame["hour_start"] != frame["hour_start"].dt.floor("h")
    if off_grid.any():
        raise DataError(f"{origin}: {int(off_grid.sum())} rows have an hour_start that is not on the hour")
    dup = frame["hour_start"].duplicated(keep=False)
    if dup.any():
        raise DataError(
            f"{origin}: {int(dup.sum())} rows share an hour_start (first {frame.loc[dup, 'hour_start'].iloc[0]}); "
            "hourly_metrics must hold one row per symbol and hour"
        )
    values = frame[list(OHLC)]
    bad = values.isna().any(axis=1) | (values <= 0).any(axis=1)
    if bad.any():
        log.warning(
            "%s: %d hours have missing or non-positive OHLC and are left out (they count as gaps), first %s",
            origin,
            int(bad.sum()),
            frame.loc[bad, "hour_start"].iloc[0],
        )
        frame = frame[~bad]
    return frame.reset_index(drop=True)


def segment_ids(hour_start: pd.Series) -> np.ndarray:
    """Integer id of the contiguous run of hours each row belongs to (increments at each gap)."""
    if len(hour_start) == 0:
        return np.zeros(0, dtype=np.int64)
    step = hour_start.diff().to_numpy()
    new_segment = np.ones(len(hour_start), dtype=bool)
    new_segment[1:] = step[1:] != np.timedelta64(1, "h")
    return np.cumsum(new_segment) - 1


def find_gaps(hour_start: pd.Series) -> list[Gap]:
    """Every place where consecutive rows are more than one hour apart."""
    times = hour_start.reset_index(drop=True)
    step = times.diff()
    gaps = []
    for idx in np.flatnonzero((step > HOUR).to_numpy()):
        gaps.append(Gap(times[idx - 1], times[idx], int(step[idx] / HOUR) - 1))
    return gaps


def describe(frame: pd.DataFrame) -> dict:
    """Range, row count and gaps of a loaded series (JSON-serialisable)."""
    if frame.empty:
        return {"hours": 0, "start": None, "end": None, "gaps": 0, "missing_hours": 0}
    gaps = find_gaps(frame["hour_start"])
    return {
        "hours": int(len(frame)),
        "start": frame["hour_start"].iloc[0].isoformat(),
        "end": frame["hour_start"].iloc[-1].isoformat(),
        "gaps": len(gaps),
        "missing_hours": int(sum(g.missing_hours for g in gaps)),
        "sources": {str(k): int(v) for k, v in frame["source"].value_counts().items()},
    }
