"""Small generated hourly series for the models tests (no files from ../shared)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from btc_platform.lakehouse.datasets import HOURLY_METRICS_COLUMNS, column_names

START = pd.Timestamp("2024-01-01T00:00:00Z")


def candles_from_close(close: np.ndarray, start: pd.Timestamp = START, wick: float = 0.001) -> pd.DataFrame:
    """OHLC rows whose open is the previous close (first open = first close)."""
    close = np.asarray(close, dtype=np.float64)
    open_ = np.concatenate([[close[0]], close[:-1]])
    return pd.DataFrame(
        {
            "hour_start": pd.date_range(start, periods=len(close), freq="h", tz="UTC"),
            "open": open_,
            "high": np.maximum(open_, close) * (1 + wick),
            "low": np.minimum(open_, close) * (1 - wick),
            "close": close,
            "volume": 10.0,
            "source": "backfill",
        }
    )


def periodic_close(hours: int, amplitude: float = 0.02, noise: float = 0.0005, seed: int = 0) -> np.ndarray:
    """A learnable series: log price follows a daily (24 h) sine plus small noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(hours)
    return 30000.0 * np.exp(amplitude * np.sin(2 * np.pi * t / 24.0) + noise * rng.standard_normal(hours))


def random_walk_close(hours: int, vol: float = 0.01, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 30000.0 * np.exp(np.cumsum(vol * rng.standard_normal(hours)))


def drop_hours(frame: pd.DataFrame, positions) -> pd.DataFrame:
    return frame.drop(index=list(positions)).reset_index(drop=True)


def to_hourly_metrics(frame: pd.DataFrame, symbol: str = "BTCUSDT", stream_from: int | None = None) -> pd.DataFrame:
    """hourly_metrics rows (full column contract); rows from ``stream_from`` on look like stream
    hours (volume null, spread present), earlier ones like backfill (spread null, volume present)."""
    n = len(frame)
    out = pd.DataFrame({name: pd.Series([None] * n, dtype="object") for name in column_names(HOURLY_METRICS_COLUMNS)})
    out["symbol"] = symbol
    out["hour_start"] = frame["hour_start"].to_numpy()
    for col in ("open", "high", "low", "close"):
        out[col] = frame[col].to_numpy()
    is_stream = np.zeros(n, dtype=bool)
    if stream_from is not None:
        is_stream[stream_from:] = True
    out["source"] = np.where(is_stream, "stream", "backfill")
    out["volume"] = np.where(is_stream, np.nan, 12.5)
    out["spread_mean"] = np.where(is_stream, 0.01, np.nan)
    out["coverage"] = 1.0
    out["produced_at"] = pd.Timestamp("2025-01-01T00:00:00Z")
    out["date"] = frame["hour_start"].dt.strftime("%Y-%m-%d").to_numpy()
    out["hour"] = frame["hour_start"].dt.hour.astype("int32").to_numpy()
    for name, kind in HOURLY_METRICS_COLUMNS:
        if kind == "double":
            out[name] = out[name].astype("float64")
        elif kind == "long":
            out[name] = pd.to_numeric(out[name]).astype("Int64")
        elif kind == "int" and name != "hour":
            out[name] = pd.to_numeric(out[name]).astype("Int32")
    return out


def write_hourly_metrics(rows: pd.DataFrame, location) -> int:
    """Append rows to the hourly_metrics Delta table at ``location`` (a directory or URI, created
    on the first write with the contract's column types); returns the new table version."""
    from btc_platform.lakehouse import lake

    schema = lake.arrow_schema(HOURLY_METRICS_COLUMNS)
    return lake.write_at(str(location), rows[schema.names], schema=schema)
