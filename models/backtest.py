"""Rolling-origin backtest: what a periodic retrain really does, walked forward over the test span.

The test span ``[test_from, end]`` is cut into blocks of ``retrain_every``; for each block the
forecaster (quantile LSTM + band baselines) is refitted on all data before the block (the honest
split of ``models.features.split_windows`` with the block start as ``test_from``: training rows
end ``lookback + horizon`` hours before it) and forecasts every window whose origin lies in the
block. Metrics (``models.evaluate``) are computed over all origins of all blocks together; the
table lists each refit too.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from models.data import HOUR

log = logging.getLogger(__name__)


def parse_every(text: str | int | None, default_hours: int = 30 * 24) -> int:
    """'30d', '720h', '4w' or a number of hours -> hours."""
    if text is None or text == "":
        return default_hours
    if isinstance(text, int):
        hours = text
    else:
        t = str(text).strip().lower()
        units = {"h": 1, "d": 24, "w": 168}
        try:
            hours = int(t[:-1]) * units[t[-1]] if t[-1] in units else int(t)
        except (ValueError, IndexError) as exc:
            raise ValueError(f"retrain_every must look like 30d, 720h or 4w, got {text!r}") from exc
    if hours < 1:
        raise ValueError(f"retrain_every must be at least 1 hour, got {text!r}")
    return hours


def block_starts(test_from: pd.Timestamp, end: pd.Timestamp, every_hours: int) -> list[pd.Timestamp]:
    """Refit times test_from, test_from + every, ... up to ``end`` (exclusive)."""
    starts = []
    t = test_from
    while t < end:
        starts.append(t)
        t = t + pd.Timedelta(hours=every_hours)
    return starts


#: a later refit of the rolling backtest continues the previous network for at most this many epochs
WARM_EPOCHS = 3


def rolling_backtest(frame: pd.DataFrame, config, test_from: pd.Timestamp, every_hours: int, threads: int = 2,
                     warm_epochs: int | None = WARM_EPOCHS) -> dict:
    """Refit every ``every_hours`` over the test span; returns concatenated forecasts + per-refit info.

    The first refit trains the network from scratch; each later one starts from the previous
    network (same scaler) and trains at most ``warm_epochs`` epochs on the longer history
    (``models.train.train``'s ``warm_start``); ``warm_epochs=None`` trains every refit from scratch.
    Bands and calibration are refitted from scratch at every refit either way."""
    from models.train import backtest, train

    parts, refits = [], []
    started = time.perf_counter()
    previous = None
    for number, start, _split, origins in _blocks(frame, config, test_from, every_hours):
        if warm_epochs is None or previous is None:
            forecaster, _split, info = train(frame, config, start, threads=threads)
        else:
            forecaster, _split, info = train(frame, config, start, threads=threads, warm_start=previous,
                                             warm_epochs=warm_epochs)
        previous = forecaster
        bt = backtest(forecaster, frame, origins)
        parts.append(bt)
        refits.append({"refit": number, "block_start": start.isoformat(), "windows": int(len(origins)),
                       "train_rows_end": info["train_rows_end"], "epochs_run": info["epochs_run"],
                       "train_seconds": info["train_seconds"], "warm_start": info["warm_start"]})
        log.info("refit %d at %s: %d windows, trained %.1f s", number, start, len(origins), info["train_seconds"])
    if not parts:
        raise ValueError(f"no complete test window from {test_from.isoformat()}")
    first = parts[0]
    bands = {name: tuple(np.concatenate([p["bands"][name][j] for p in parts]) for j in (0, 1))
             for name in first["bands"]}
    return {
        "origin_time": np.concatenate([p["origin_time"] for p in parts]),
        "last_close": np.concatenate([p["last_close"] for p in parts]),
        "actual": np.concatenate([p["actual"] for p in parts]),
        "forecasts": {m: np.concatenate([p["forecasts"][m] for p in parts]) for m in first["forecasts"]},
        "low": np.concatenate([p["low"] for p in parts]),
        "high": np.concatenate([p["high"] for p in parts]),
        "bands": bands,
        "refits": refits,
        "seconds": time.perf_counter() - started,
    }


def _blocks(frame: pd.DataFrame, config, test_from: pd.Timestamp, every_hours: int):
    """(refit number, block start, split at the block start, test origins inside the block) per block."""
    from models.features import split_windows

    end = frame["hour_start"].iloc[-1] + HOUR
    for i, start in enumerate(block_starts(test_from, end, every_hours)):
        split = split_windows(frame, config, start)
        times = pd.DatetimeIndex(frame["hour_start"].to_numpy()[split.test])
        origins = split.test[times < start + pd.Timedelta(hours=every_hours)]
        if len(origins) == 0:
            log.info("refit %d at %s: no complete test window in the block, skipped", i + 1, start)
            continue
        yield i + 1, start, split, origins


def band_backtest(frame: pd.DataFrame, config, test_from: pd.Timestamp, every_hours: int) -> dict:
    """The band models alone (``models.bands.fit_baselines``, no network), refitted on the same
    blocks and training windows as ``rolling_backtest``: the same band figures in seconds, for
    work on the bands. Returns actuals, last closes, persistence and the bands of all origins."""
    from models import bands as bd
    from models.evaluate import persistence_forecast
    from models.features import build_features

    feats = build_features(frame)
    close = frame["close"].to_numpy(dtype=np.float64)
    steps = np.arange(1, config.horizon + 1)
    parts = []
    started = time.perf_counter()
    for _i, _start, split, origins in _blocks(frame, config, test_from, every_hours):
        train_origins = np.concatenate([split.fit, split.val])
        models = bd.fit_baselines(feats, close, train_origins, config.horizon, config.interval_level)
        parts.append({"origins": origins,
                      "bands": {n: m.bounds(feats, close, origins, config.horizon) for n, m in models.items()}})
    if not parts:
        raise ValueError(f"no complete test window from {test_from.isoformat()}")
    origins = np.concatenate([p["origins"] for p in parts])
    names = [n for n in parts[0]["bands"] if all(n in p["bands"] for p in parts)]
    return {
        "origin_time": frame["hour_start"].to_numpy()[origins],
        "last_close": close[origins],
        "actual": close[origins[:, None] + steps[None, :]],
        "forecasts": {"persistence": persistence_forecast(close[origins], config.horizon)},
        "bands": {n: tuple(np.concatenate([p["bands"][n][j] for p in parts]) for j in (0, 1)) for n in names},
        "refits": len(parts),
        "seconds": time.perf_counter() - started,
    }


def metrics_frame(metrics: dict) -> pd.DataFrame:
    """The whole metrics table (per horizon + overall row) as a DataFrame for CSV."""
    return pd.DataFrame([*metrics["per_horizon"], metrics["overall"]])
