"""Training and backtesting of the forecaster on a loaded hourly frame.

``train(frame, config, test_from)`` does the honest split (``models.features.split_windows``),
fits the scaler on the fit part, trains the quantile LSTM (pinball loss) with EarlyStopping on
the validation slice, conformalises its band on that same validation slice, fits the band
baselines (constant, EWMA, GARCH: ``models.bands``) on the training windows and returns a
:class:`Forecaster`. ``backtest`` runs a forecaster, the point baselines and every band on
given windows (the test window is used only here, once, after training).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models import bands as bd
from models import features as fx
from models import network
from models.evaluate import drift_forecast, persistence_forecast
from models.intervals import ConformalCalibration, IntervalCalibration, window_volatility

log = logging.getLogger(__name__)


@dataclass
class Forecaster:
    """A trained model with everything needed to use it (saved together by the registry)."""

    config: object  # ModelConfig
    model: object  # keras.Model
    scaler: fx.Scaler
    calibration: IntervalCalibration | ConformalCalibration
    #: band baselines fitted on the training windows (constant, ewma, garch); empty for old models
    bands: dict = dataclasses.field(default_factory=dict)

    def predict_quantiles(self, raw_inputs: np.ndarray) -> np.ndarray:
        """(n, n_quantiles, horizon) log-return quantiles (sorted: no crossing); n_quantiles is 1
        for a point network saved before the quantile network."""
        H = self.config.horizon
        scaled = network.predict(self.model, self.scaler.transform(raw_inputs))
        out = self.scaler.unscale_targets(scaled.reshape(len(scaled), -1, H))
        return np.sort(out, axis=1)

    def predict_log_returns(self, raw_inputs: np.ndarray) -> np.ndarray:
        """Point forecast: the median (the single output of a point network)."""
        q = self.predict_quantiles(raw_inputs)
        return q[:, q.shape[1] // 2, :]

    def forecast(self, features: np.ndarray, close: np.ndarray, origins: np.ndarray) -> dict:
        """Price forecasts, the LSTM band and every baseline band for windows ending at ``origins``."""
        H = self.config.horizon
        raw = fx.make_inputs(fx.select(features, self.config.features), origins, self.config.lookback)
        q = self.predict_quantiles(raw)
        log_ret = q[:, q.shape[1] // 2, :]
        last = close[origins]
        if isinstance(self.calibration, ConformalCalibration):
            low, high = self.calibration.bounds(last, q[:, 0, :], q[:, -1, :])
        else:
            low, high = self.calibration.bounds(last, log_ret, window_volatility(raw))
        bands = {"lstm": (low, high)}
        for name, band in self.bands.items():
            bands[name] = band.bounds(features, close, origins, H)
        return {
            "last_close": last,
            "log_returns": log_ret,
            "prices": last[:, None] * np.exp(log_ret),
            "low": low,
            "high": high,
            "bands": bands,
        }


def train(frame: pd.DataFrame, config, test_from: pd.Timestamp, threads: int = 2,
          warm_start: Forecaster | None = None, warm_epochs: int = 3) -> tuple[Forecaster, fx.Split, dict]:
    """Split, scale, fit, calibrate. Returns the forecaster, the split and training info.

    ``warm_start`` (a forecaster trained on an earlier, shorter history with the same config):
    its scaler is kept and its network's weights are the start, trained at most ``warm_epochs``
    more epochs (patience 1) on the new fit windows, and kept as they are when no epoch improves
    the validation loss: what a rolling backtest's later refits do instead of training from scratch. The calibration and the bands are fitted anew either way."""
    split = fx.split_windows(frame, config, test_from)
    feats = fx.build_features(frame)
    inputs = fx.select(feats, config.features)
    close = frame["close"].to_numpy(dtype=np.float64)
    L, H = config.lookback, config.horizon

    x_fit_raw = fx.make_inputs(inputs, split.fit, L)
    x_val_raw = fx.make_inputs(inputs, split.val, L)
    y_fit = fx.make_targets(close, split.fit, H)
    y_val = fx.make_targets(close, split.val, H)
    if not (np.isfinite(x_fit_raw).all() and np.isfinite(x_val_raw).all()):
        raise ValueError("non-finite feature values inside complete windows (bug: check the window builder)")

    network.configure_runtime(threads, config.seed)
    if warm_start is None:
        scaler = fx.Scaler.fit(fx.scaler_rows(inputs, split, L), y_fit)
        y_fit_scaled = scaler.scale_targets(y_fit)
        model = network.build_model(config, np.quantile(y_fit_scaled, config.quantiles, axis=0))
        fit_config = config
    else:
        scaler = warm_start.scaler
        y_fit_scaled = scaler.scale_targets(y_fit)
        model = network.copy_model(warm_start.model, config)
        fit_config = config.replace(epochs=min(warm_epochs, config.epochs), patience=1)
    started = time.perf_counter()
    history = network.fit_model(
        model,
        fit_config,
        scaler.transform(x_fit_raw),
        y_fit_scaled,
        scaler.transform(x_val_raw),
        scaler.scale_targets(y_val),
        keep_start=warm_start is not None,
    )
    train_seconds = time.perf_counter() - started

    provisional = Forecaster(config, model, scaler, ConformalCalibration(config.interval_level, np.zeros(H)))
    val_q = provisional.predict_quantiles(x_val_raw)
    calibration = ConformalCalibration.fit(y_val, val_q[:, 0, :], val_q[:, -1, :], config.interval_level)
    train_origins = np.concatenate([split.fit, split.val])
    baselines = bd.fit_baselines(feats, close, train_origins, H, config.interval_level)
    forecaster = Forecaster(config, model, scaler, calibration, baselines)
    info = {
        **history,
        "train_seconds": round(train_seconds, 2),
        "split": split.summary(frame),
        "data_start": frame["hour_start"].iloc[0].isoformat(),
        "train_rows_end": frame["hour_start"].iloc[split.val[-1] + H].isoformat(),
        "warm_start": warm_start is not None,
    }
    log.info(
        "trained in %.1f s: %d epochs (best %d, val_loss %.4f; persistence on validation %.4f)",
        train_seconds, history["epochs_run"], history["best_epoch"], history["best_val_loss"],
        history["persistence_val_loss"],
    )
    return forecaster, split, info


def backtest(forecaster: Forecaster, frame: pd.DataFrame, origins: np.ndarray) -> dict:
    """Model and baseline forecasts with actuals on the windows ending at ``origins``."""
    cfg = forecaster.config
    L, H = cfg.lookback, cfg.horizon
    feats = fx.build_features(frame)
    close = frame["close"].to_numpy(dtype=np.float64)
    started = time.perf_counter()
    out = forecaster.forecast(feats, close, origins)
    predict_seconds = time.perf_counter() - started
    last = out["last_close"]
    steps = np.arange(1, H + 1)
    return {
        "origin_time": frame["hour_start"].to_numpy()[origins],
        "last_close": last,
        "actual": close[origins[:, None] + steps[None, :]],
        "forecasts": {
            "model": out["prices"],
            "persistence": persistence_forecast(last, H),
            "drift": drift_forecast(close[origins - L], last, L, H),
        },
        "low": out["low"],
        "high": out["high"],
        "bands": out["bands"],
        "predict_seconds": predict_seconds,
    }
