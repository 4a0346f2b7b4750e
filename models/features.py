"""Features, windows, the chronological split and the scaler.

The eight features (one row per hour, computed only from that hour and the previous close):

1. ``log_return``   log(close_t / close_{t-1})           - the series we forecast
2. ``log_range``    log(high_t / low_t)                  - intrahour volatility (Parkinson-like)
3. ``log_body``     log(close_t / open_t)                - direction and strength inside the hour
4. ``upper_wick``   log(high_t / max(open_t, close_t))   - rejected highs
5. ``lower_wick``   log(min(open_t, close_t) / low_t)    - rejected lows
6. ``hour_sin``     sin(2*pi*hour/24)                    - time of day (liquidity cycles
7. ``hour_cos``     cos(2*pi*hour/24)                      of US/EU/Asia sessions)
8. ``is_weekend``   1 on Saturday/Sunday UTC else 0      - thinner weekend markets

Why these: they exist for *every* hour whatever its origin. Stream hours (from minute_metrics)
have spread/liquidity/tick_count, and traded volume only since the stream receives 1-minute klines
(message schema 2; earlier stream hours have none); backfilled hours (from exchange candles) have
volume but no spread/liquidity. Using volume or spread would leave part of the history without
a value, and filling it (fillna(0)) would invent data. OHLC-derived, scale-free log ratios plus
calendar terms are defined identically for both sources (and scale-free, so 2017 prices and
2024 prices look alike to the network).

Targets: ``y[k] = log(close_{t+k} / close_t)`` for k = 1..horizon, t = last hour of the window
(direct multi-output). A window needs ``lookback + 1 + horizon`` consecutive hours (the extra
leading hour gives the first return); windows that cross a gap are skipped and counted.

Honest split (``split_windows``): forecast origins at or after ``test_from`` are the test window;
training rows end ``lookback + horizon`` hours before ``test_from`` (so no training input or
target overlaps any test input or target); the last ``val_fraction`` of training windows is the
validation slice (EarlyStopping, interval calibration), purged of overlap with the fit windows;
the scaler is fitted on the feature rows of the fit part only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.data import InsufficientHistoryError, segment_ids

log = logging.getLogger(__name__)

FEATURES = (
    "log_return",
    "log_range",
    "log_body",
    "upper_wick",
    "lower_wick",
    "hour_sin",
    "hour_cos",
    "is_weekend",
)


#: columns after ``FEATURES`` in the matrix of ``build_features``: not network inputs by default,
#: read by the band models (``models.bands``) that need the weekday of the hours ahead
EXTRA_COLUMNS = ("day_of_week", "log_var_day", "log_var_week", "log_var_month", "log_volume_ratio")
#: optional network inputs: the longer volatility components of the ``har`` band and relative volume
VOLATILITY_FEATURES = ("log_var_day", "log_var_week", "log_var_month", "log_volume_ratio")
COLUMNS = (*FEATURES, *EXTRA_COLUMNS)


def build_features(frame: pd.DataFrame) -> np.ndarray:
    """(n_rows, len(COLUMNS)) float64 matrix; row 0 of each contiguous segment has a NaN return.

    A network reads the columns named in its config (``select``); ``FEATURES`` by default."""
    o, h, lo, c = (frame[k].to_numpy(dtype=np.float64) for k in ("open", "high", "low", "close"))
    seg = segment_ids(frame["hour_start"])
    ret = np.full(len(c), np.nan)
    if len(c) > 1:
        same = seg[1:] == seg[:-1]
        ret[1:] = np.where(same, np.log(c[1:] / c[:-1]), np.nan)
    hours = frame["hour_start"].dt.hour.to_numpy()
    weekday = frame["hour_start"].dt.day_of_week.to_numpy()
    feats = np.column_stack(
        [
            ret,
            np.log(h / lo),
            np.log(c / o),
            np.log(h / np.maximum(o, c)),
            np.log(np.minimum(o, c) / lo),
            np.sin(2 * np.pi * hours / 24.0),
            np.cos(2 * np.pi * hours / 24.0),
            (weekday >= 5).astype(np.float64),
            weekday.astype(np.float64),
            *_volatility_columns(o, h, lo, c, ret, frame["volume"].to_numpy(dtype=np.float64)),
        ]
    )
    return feats


def _volatility_columns(o, h, lo, c, ret, volume) -> list[np.ndarray]:
    """log of the trailing means (24, 168, 720 rows) of the hourly variance proxy (mean of
    Garman-Klass and the squared return) and log(1 + volume) relative to its 720-row mean
    (NaN where the volume is unknown: such windows cannot feed a network that reads it)."""
    from models.volatility import range_variance, trailing_mean

    gk = range_variance(np.log(h / o), np.log(lo / o), np.log(c / o), "garman_klass")
    proxy = np.where(np.isfinite(ret), 0.5 * (gk + ret**2), gk)
    tiny = 1e-12  # a flat stretch has zero range: its log stays finite
    cols = [np.log(trailing_mean(proxy, n) + tiny) for n in (24, 168, 720)]
    lv = np.log1p(volume)
    cols.append(lv - np.log1p(trailing_mean(volume, 720)) if len(lv) else lv)
    return cols


def select(features: np.ndarray, names) -> np.ndarray:
    """The columns ``names`` (of ``COLUMNS``) of a ``build_features`` matrix, in that order."""
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise ValueError(f"unknown feature column(s) {unknown}: known are {', '.join(COLUMNS)}")
    return features[:, [COLUMNS.index(n) for n in names]]


def ohlc_log_ratios(features: np.ndarray) -> dict[str, np.ndarray]:
    """Per hour, from a ``build_features`` matrix: ``u = ln(H/O)``, ``d = ln(L/O)``, ``c = ln(C/O)``,
    the close-to-close log return ``r`` (NaN after a gap) and the UTC ``hour_of_week``
    (weekday * 24 + hour), what the range-based band (``models.bands``) needs."""
    col = {name: features[:, i] for i, name in enumerate(COLUMNS)}
    c = col["log_body"]
    hour = np.rint(np.arctan2(col["hour_sin"], col["hour_cos"]) * 24.0 / (2.0 * np.pi)).astype(np.int64) % 24
    return {
        "u": col["upper_wick"] + np.maximum(c, 0.0),
        "d": np.minimum(c, 0.0) - col["lower_wick"],
        "c": c,
        "r": col["log_return"],
        "hour_of_week": col["day_of_week"].astype(np.int64) * 24 + hour,
    }


@dataclass
class Windows:
    """All complete windows of a series (indices into the frame)."""

    origins: np.ndarray  # row index t of the last input hour of each window
    skipped_gap: int  # windows that would cross a gap in the hour sequence
    total_positions: int  # windows there would be without gaps

    def __len__(self) -> int:
        return len(self.origins)


def window_origins(frame: pd.DataFrame, lookback: int, horizon: int) -> Windows:
    """Origins t such that rows t-lookback .. t+horizon are consecutive hours (no gap).

    Equivalent to ``keras.utils.timeseries_dataset_from_array`` with ``sequence_length =
    lookback`` and stride 1, except that a window whose span crosses a gap is skipped (and
    counted) instead of silently joining hours that are not adjacent.
    """
    n = len(frame)
    span = lookback + 1 + horizon
    if n < span:
        return Windows(np.zeros(0, dtype=np.int64), 0, 0)
    seg = segment_ids(frame["hour_start"])
    candidates = np.arange(lookback, n - horizon)
    ok = seg[candidates - lookback] == seg[candidates + horizon]
    return Windows(candidates[ok], int((~ok).sum()), len(candidates))


def make_inputs(features: np.ndarray, origins: np.ndarray, lookback: int) -> np.ndarray:
    """(n_windows, lookback, n_features) input tensor for the given origins."""
    offsets = np.arange(-lookback + 1, 1)
    return features[origins[:, None] + offsets[None, :]]


def make_targets(close: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """(n_windows, horizon) log returns of close_{t+k} relative to close_t."""
    steps = np.arange(1, horizon + 1)
    return np.log(close[origins[:, None] + steps[None, :]] / close[origins][:, None])


@dataclass
class Scaler:
    """Standardises features (mean/std of the fit rows) and scales targets by their std only
    (no centring, so a zero network output means "no change" = persistence)."""

    mean: np.ndarray
    std: np.ndarray
    target_std: np.ndarray

    @classmethod
    def fit(cls, feature_rows: np.ndarray, targets: np.ndarray) -> Scaler:
        mean = feature_rows.mean(axis=0)
        std = feature_rows.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)  # constant column (e.g. no weekend in a tiny set)
        t_std = np.sqrt((targets**2).mean(axis=0))
        t_std = np.where(t_std > 1e-12, t_std, 1.0)
        return cls(mean, std, t_std)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def scale_targets(self, y: np.ndarray) -> np.ndarray:
        return (y / self.target_std).astype(np.float32)

    def unscale_targets(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=np.float64) * self.target_std

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "target_std": self.target_std.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> Scaler:
        return cls(*(np.asarray(data[k], dtype=np.float64) for k in ("mean", "std", "target_std")))


@dataclass
class Split:
    """Result of the honest chronological split (row indices into the frame)."""

    fit: np.ndarray  # origins used to fit the network
    val: np.ndarray  # origins of the validation slice (EarlyStopping, interval calibration)
    test: np.ndarray  # origins of the test window
    train_end: pd.Timestamp  # first hour NOT usable by training (test_from - lookback - horizon)
    test_from: pd.Timestamp
    fit_rows_end: int  # last row index whose features the scaler saw
    skipped_gap: int  # windows skipped because they cross a gap (whole series)
    skipped_boundary: int  # windows dropped because they would overlap the split boundaries

    def summary(self, frame: pd.DataFrame) -> dict:
        times = frame["hour_start"]

        def rng(idx):
            return [times.iloc[idx[0]].isoformat(), times.iloc[idx[-1]].isoformat()] if len(idx) else None

        return {
            "fit_windows": int(len(self.fit)),
            "val_windows": int(len(self.val)),
            "test_windows": int(len(self.test)),
            "fit_origins": rng(self.fit),
            "val_origins": rng(self.val),
            "test_origins": rng(self.test),
            "train_end_exclusive": self.train_end.isoformat(),
            "test_from": self.test_from.isoformat(),
            "windows_skipped_gap": self.skipped_gap,
            "windows_skipped_boundary": self.skipped_boundary,
        }


def hours_needed(config, test_hours: int) -> int:
    """Minimum hours of (gap-free) history for a split with ``test_hours`` of test window."""
    span = config.lookback + config.horizon
    return (
        config.min_train_windows + config.min_val_windows + 2 * span  # fit + val, purged, first window span
        + span  # separation between training and test
        + test_hours
    )


def split_windows(frame: pd.DataFrame, config, test_from: pd.Timestamp) -> Split:
    """Chronological split of all complete windows around ``test_from`` (see module docstring)."""
    L, H = config.lookback, config.horizon
    test_from = pd.Timestamp(test_from)
    test_from = test_from.tz_localize("UTC") if test_from.tzinfo is None else test_from.tz_convert("UTC")
    windows = window_origins(frame, L, H)
    times = frame["hour_start"].to_numpy()
    origin_times = pd.DatetimeIndex(times[windows.origins]) if len(windows) else pd.DatetimeIndex([], tz="UTC")
    train_end = test_from - pd.Timedelta(hours=L + H)

    test = windows.origins[origin_times >= test_from]
    # a training window's last target hour (origin + H) must be before train_end
    train_mask = origin_times + pd.Timedelta(hours=H) < train_end
    train = windows.origins[train_mask]
    boundary = len(windows) - len(test) - len(train)

    n_val = int(round(len(train) * config.val_fraction))
    n_val = max(n_val, config.min_val_windows)
    val = train[len(train) - n_val :] if n_val < len(train) else train[:0]
    fit = train[: len(train) - n_val] if n_val < len(train) else train
    if len(val):
        # purge: fit windows whose span (targets) reaches into the first val window's inputs
        first_val_input = times[val[0] - L]
        fit_target_end = times[fit + H] if len(fit) else np.array([], dtype=times.dtype)
        keep = fit_target_end < first_val_input
        boundary += int((~keep).sum())
        fit = fit[keep]
    split = Split(
        fit=fit,
        val=val,
        test=test,
        train_end=train_end,
        test_from=test_from,
        fit_rows_end=int(fit[-1]) if len(fit) else -1,
        skipped_gap=windows.skipped_gap,
        skipped_boundary=int(boundary),
    )
    if len(fit) < config.min_train_windows or len(val) < config.min_val_windows:
        raise InsufficientHistoryError(
            config.min_train_windows + config.min_val_windows,
            int(len(fit) + len(val)),
            what="complete training windows",
            detail=f"{windows.skipped_gap} windows skipped across gaps; training data must end before "
            f"{train_end.isoformat()}",
        )
    if len(test) == 0:
        raise InsufficientHistoryError(1, 0, what="test windows", detail=f"no complete window from {test_from.isoformat()}")
    log.info(
        "split: %d fit / %d val / %d test windows, %d skipped across gaps, %d dropped at boundaries",
        len(fit), len(val), len(test), windows.skipped_gap, boundary,
    )
    return split


def scaler_rows(features: np.ndarray, split: Split, lookback: int) -> np.ndarray:
    """Feature rows the scaler is fitted on: the fit windows' inputs (training part only)."""
    rows = np.unique((split.fit[:, None] + np.arange(-lookback + 1, 1)[None, :]).ravel())
    return features[rows]
