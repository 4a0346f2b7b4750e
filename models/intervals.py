"""80 % prediction intervals from calibrated residuals (validation slice only, never the test window).

Residuals of the log-return forecast are divided by the window's own volatility estimate (the
Parkinson estimator over the ``lookback`` input hours: sqrt(mean(log(high/low)^2) / (4 ln 2))),
so the interval widens in turbulent hours and narrows in calm ones. For each step k the
(1-level)/2 and 1-(1-level)/2 quantiles of these normalised residuals on the validation slice
are the calibration; an interval is ``close_t * exp(pred_k + sigma_window * q_k)``.
Empirical coverage on the test window is reported by ``models.evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_PARKINSON = 1.0 / (4.0 * np.log(2.0))
_RANGE_COLUMN = 1  # index of ``log_range`` in models.features.FEATURES


def window_volatility(raw_inputs: np.ndarray) -> np.ndarray:
    """Parkinson volatility per window from unscaled inputs (n, lookback, n_features) -> (n,)."""
    rng = raw_inputs[:, :, _RANGE_COLUMN]
    sigma = np.sqrt(_PARKINSON * np.mean(rng**2, axis=1))
    return np.maximum(sigma, 1e-6)


@dataclass
class IntervalCalibration:
    level: float
    q_low: np.ndarray  # (horizon,) normalised residual quantiles
    q_high: np.ndarray

    @classmethod
    def fit(cls, y_true: np.ndarray, y_pred: np.ndarray, sigma: np.ndarray, level: float) -> IntervalCalibration:
        z = (y_true - y_pred) / sigma[:, None]
        alpha = (1.0 - level) / 2.0
        return cls(level, np.quantile(z, alpha, axis=0), np.quantile(z, 1.0 - alpha, axis=0))

    def bounds(self, last_close: np.ndarray, y_pred: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Price bounds (n, horizon) for forecasts ``y_pred`` (log returns from ``last_close``)."""
        base = np.asarray(last_close, dtype=np.float64)[:, None]
        low = base * np.exp(y_pred + sigma[:, None] * self.q_low[None, :])
        high = base * np.exp(y_pred + sigma[:, None] * self.q_high[None, :])
        return low, high

    def to_dict(self) -> dict:
        return {"level": self.level, "q_low": self.q_low.tolist(), "q_high": self.q_high.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> IntervalCalibration:
        return cls(float(data["level"]), np.asarray(data["q_low"]), np.asarray(data["q_high"]))


def coverage(actual: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Share of actual prices inside [low, high] per step (horizon,)."""
    inside = (actual >= low) & (actual <= high)
    return inside.mean(axis=0)


@dataclass
class ConformalCalibration:
    """Conformalised quantile regression (CQR) of the network's outer quantiles, per step.

    On the validation slice (never the test window) the conformity score of a window is
    ``max(q_low - y, y - q_high)`` (log returns); ``offset[k]`` is its ``level`` quantile, and the
    band is ``close_t * exp([q_low - offset, q_high + offset])`` (an offset may be negative: the
    raw quantiles were too wide).
    """

    level: float
    offset: np.ndarray  # (horizon,)

    @classmethod
    def fit(cls, y_true: np.ndarray, q_low: np.ndarray, q_high: np.ndarray, level: float) -> ConformalCalibration:
        score = np.maximum(q_low - y_true, y_true - q_high)
        n = len(y_true)
        rank = min(1.0, np.ceil((n + 1) * level) / n)  # finite-sample CQR quantile
        return cls(level, np.quantile(score, rank, axis=0))

    def bounds(self, last_close: np.ndarray, q_low: np.ndarray, q_high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        base = np.asarray(last_close, dtype=np.float64)[:, None]
        return base * np.exp(q_low - self.offset[None, :]), base * np.exp(q_high + self.offset[None, :])

    def to_dict(self) -> dict:
        return {"kind": "conformal", "level": self.level, "offset": self.offset.tolist()}


def calibration_from_dict(data: dict):
    """IntervalCalibration (point models saved before the quantile network) or ConformalCalibration."""
    if data.get("kind") == "conformal":
        return ConformalCalibration(float(data["level"]), np.asarray(data["offset"]))
    return IntervalCalibration.from_dict(data)
