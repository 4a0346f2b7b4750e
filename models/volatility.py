"""Hourly variance from OHLC ranges, its intraday/weekly seasonality and a HAR forecast of it.

Pure numpy, no I/O. Inputs are per-hour log ratios to the open: ``u = ln(H/O)``, ``d = ln(L/O)``,
``c = ln(C/O)`` (``d <= 0 <= u``). Estimators of the hour's return variance:

* Parkinson (1980): ``(u - d)^2 / (4 ln 2)``;
* Garman–Klass (1980): ``0.5 (u - d)^2 - (2 ln 2 - 1) c^2``;
* Rogers–Satchell (1991): ``u (u - c) + d (d - c)`` (unbiased under a drift).

Seasonality: the median of the variance in each hour-of-week cell (168 = weekday x hour, UTC)
over the training rows given, relative to the overall level (``SeasonalProfile``; the median
because a few jump hours would dominate a cell's mean). Forecasts divide the hourly variance by its cell's factor, forecast that
deseasonalised level, and multiply back by the factors of the hours ahead.

HAR (Corsi 2009) on log variance: at origin t the regressors are the logs of the mean
deseasonalised variance over the last ``HAR_LAGS`` hours (1 h, 1 day, 1 week, 1 month); for each
step k the target is the log of its mean over hours t+1..t+k; one least-squares fit per step on
the training windows only (``HarModel.fit``). The k-step return variance forecast is
``exp(prediction_k) * sum_{j<=k} season_{t+j}``: in units of the estimator, a constant factor
per step that the quantiles of the standardised returns (``models.bands``) calibrate away.

Rolling means run over rows (hours present), so a gap shortens nothing and invents nothing: the
mean over "the last 24 h" of rows just after a gap reaches across it to the hours before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_LN2 = np.log(2.0)
ESTIMATORS = ("parkinson", "garman_klass", "rogers_satchell")
#: hours of the HAR components: last hour, day, week, month
HAR_LAGS = (1, 24, 168, 720)
HOURS_PER_WEEK = 168


def range_variance(u: np.ndarray, d: np.ndarray, c: np.ndarray, estimator: str = "garman_klass") -> np.ndarray:
    """Per-hour variance estimate from the log high, low and close relative to the open."""
    u, d, c = (np.asarray(x, dtype=np.float64) for x in (u, d, c))
    if estimator == "parkinson":
        return (u - d) ** 2 / (4.0 * _LN2)
    if estimator == "garman_klass":
        return 0.5 * (u - d) ** 2 - (2.0 * _LN2 - 1.0) * c**2
    if estimator == "rogers_satchell":
        return u * (u - c) + d * (d - c)
    raise ValueError(f"unknown range estimator {estimator!r}: use one of {', '.join(ESTIMATORS)}")


def trailing_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of x[t-window+1 .. t] (fewer at the start), NaNs skipped; NaN where none is finite."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    s = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
    n = np.concatenate([[0], np.cumsum(ok)])
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    count = n[idx] - n[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (s[idx] - s[lo]) / count, np.nan)


def leading_means(x: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """(n, horizon): mean of x[t+1 .. t+k] for each origin t and k = 1..horizon."""
    steps = np.arange(1, horizon + 1)
    ahead = np.asarray(x, dtype=np.float64)[np.asarray(origins)[:, None] + steps[None, :]]
    return np.cumsum(ahead, axis=1) / steps[None, :]


@dataclass
class SeasonalProfile:
    """Multiplicative variance factor per hour of the week (index ``weekday * 24 + hour``)."""

    factor: np.ndarray  # (168,), mean 1 over the training rows

    @classmethod
    def fit(cls, variance: np.ndarray, hour_of_week: np.ndarray, statistic: str = "median",
            shrink: float = 0.0) -> SeasonalProfile:
        """Factor of each cell = its ``statistic`` (median: robust to the jumps of a few hours,
        or mean) of the variance, scaled so that the factors average 1 over the rows given; a
        cell without rows gets the overall level.

        ``shrink`` in [0, 1] pulls each cell's log factor towards the product of its hour-of-day
        and weekday factors (the same statistic over 7 and 24 times as many rows):
        ``(1 - shrink) log cell + shrink log(hour x weekday)``; a one-year cell holds only 52
        hours, so its own median is noisy."""
        if not 0.0 <= shrink <= 1.0:
            raise ValueError(f"shrink must lie in [0, 1], got {shrink}")
        v = np.asarray(variance, dtype=np.float64)
        how = np.asarray(hour_of_week, dtype=np.int64)
        ok = np.isfinite(v)
        v, how = v[ok], how[ok]
        if len(v) == 0:
            raise ValueError("no finite variance to fit a seasonal profile on")
        if statistic not in ("median", "mean"):
            raise ValueError(f"unknown seasonal statistic {statistic!r}: use median or mean")
        agg = np.median if statistic == "median" else np.mean
        level = agg(v)
        if not level > 0:
            raise ValueError(f"the {statistic} variance is zero: no seasonal profile to fit")
        week = np.arange(HOURS_PER_WEEK)
        factor = _cell_factors(v, how, week, HOURS_PER_WEEK, agg, level)
        if shrink > 0.0:
            hour = _cell_factors(v, how % 24, week % 24, 24, agg, level)
            day = _cell_factors(v, how // 24, week // 24, 7, agg, level)
            factor = np.exp((1.0 - shrink) * np.log(factor) + shrink * np.log(hour * day))
        return cls(factor / np.mean(factor[how]))

    @classmethod
    def flat(cls) -> SeasonalProfile:
        return cls(np.ones(HOURS_PER_WEEK))

    def at(self, hour_of_week: np.ndarray) -> np.ndarray:
        return self.factor[np.asarray(hour_of_week, dtype=np.int64) % HOURS_PER_WEEK]

    def ahead(self, origin_how: np.ndarray, horizon: int) -> np.ndarray:
        """(n, horizon): sum of the factors of hours t+1..t+k (consecutive hours after the origin)."""
        steps = np.arange(1, horizon + 1)
        return np.cumsum(self.at(np.asarray(origin_how)[:, None] + steps[None, :]), axis=1)


def _cell_factors(v: np.ndarray, key: np.ndarray, cell_of_week: np.ndarray, cells: int, agg, level: float) -> np.ndarray:
    """(168,) ``agg`` of ``v`` in each of ``cells`` cells (``key`` per row) relative to ``level``,
    read at the cell ``cell_of_week`` of each hour of the week; an empty or non-positive cell
    gets the overall level."""
    per_cell = np.full(cells, 1.0)
    for cell in range(cells):
        rows = v[key == cell]
        if len(rows) and agg(rows) > 0:
            per_cell[cell] = agg(rows) / level
    return per_cell[cell_of_week]


def har_regressors(deseasonalised: np.ndarray, lags: tuple[int, ...] = HAR_LAGS, floor: float = 0.0) -> np.ndarray:
    """(n_rows, 1 + len(lags)): a constant and the log trailing means over each lag, per row."""
    cols = [np.ones(len(deseasonalised))]
    for lag in lags:
        cols.append(np.log(np.maximum(trailing_mean(deseasonalised, lag), floor)))
    return np.column_stack(cols)


@dataclass
class HarModel:
    """Per-step least squares of log future mean variance on the HAR regressors."""

    coef: np.ndarray  # (1 + len(lags), horizon)
    lags: tuple[int, ...]
    floor: float  # variances below this are raised to it before any log

    @classmethod
    def fit(cls, deseasonalised: np.ndarray, origins: np.ndarray, horizon: int,
            lags: tuple[int, ...] = HAR_LAGS, floor: float | None = None) -> HarModel:
        """Fit on the windows ending at ``origins`` (their targets t+1..t+horizon must be training rows)."""
        v = np.asarray(deseasonalised, dtype=np.float64)
        origins = np.asarray(origins, dtype=np.int64)
        if floor is None:  # from the training rows only (up to the last target)
            seen = v[: origins[-1] + horizon + 1] if len(origins) else v[:0]
            positive = seen[np.isfinite(seen) & (seen > 0)]
            if len(positive) == 0:
                raise ValueError("no positive variance to fit a HAR model on")
            floor = 0.01 * float(np.median(positive))  # a flat candle is not zero variance
        x = har_regressors(v, lags, floor)[origins]
        y = np.log(np.maximum(leading_means(v, origins, horizon), floor))
        ok = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
        if ok.sum() <= x.shape[1]:
            raise ValueError(f"HAR needs more than {x.shape[1]} complete training windows, got {int(ok.sum())}")
        coef, *_ = np.linalg.lstsq(x[ok], y[ok], rcond=None)
        return cls(coef, tuple(lags), float(floor))

    def predict_log(self, deseasonalised: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """(n, horizon) forecast of log mean deseasonalised variance over t+1..t+k."""
        x = har_regressors(deseasonalised, self.lags, self.floor)[np.asarray(origins, dtype=np.int64)]
        return x @ self.coef

    def to_dict(self) -> dict:
        return {"coef": self.coef.tolist(), "lags": list(self.lags), "floor": self.floor}

    @classmethod
    def from_dict(cls, data: dict) -> HarModel:
        return cls(np.asarray(data["coef"], dtype=np.float64), tuple(int(x) for x in data["lags"]), float(data["floor"]))
