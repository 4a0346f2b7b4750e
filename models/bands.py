"""Prediction bands (80 % by default) of the next ``horizon`` closes: baselines and their scores.

Pure numpy (+ ``arch`` for fitting the GARCH): no TensorFlow, no I/O.

Every band model gives, for a forecast origin t (last close c_t) and step k = 1..horizon, the
quantiles of the k-step log return y_k = log(c_{t+k} / c_t); the price band is
``c_t * exp(q)``. Each is a volatility forecast ``s_k(t)`` (from data up to hour t only) times
per-step quantiles of the standardised training returns ``z = y_k / s_k(t)`` (fitted on training
windows only, so fat tails are calibrated without a Gaussian assumption):

* ``constant``: s = 1: the empirical quantiles of the training k-step returns (constant width
  in log space, i.e. a band around the persistence forecast of constant relative width);
* ``ewma``: RiskMetrics, sigma^2_{t+1} = lambda sigma^2_t + (1 - lambda) r_t^2 (lambda 0.94),
  s_k = sigma_{t+1} sqrt(k);
* ``garch``: GARCH(1,1) fitted with ``arch`` on the training hourly returns (zero mean), s_k^2 =
  sum_{j=1..k} E[sigma^2_{t+j}] with the usual mean-reverting recursion;
* ``har``: range-based HAR (``models.volatility``): the hourly variance proxy is the mean of the
  Garman–Klass estimate and the squared close-to-close return (Garman–Klass alone after a gap),
  divided by its hour-of-week factor fitted on the last ``HAR_SEASON_ROWS`` training hours; a
  least-squares HAR on log variance (last hour, day, week, month) per step, times the seasonal
  factors of the hours ahead. The first ``HAR_SHORT_STEPS`` steps (the next hour) use a second
  HAR fitted the same way on a smoother profile: each hour-of-week cell shrunk half-way (in
  logs) towards its hour-of-day x weekday product (``HAR_SHORT_SHRINK``); a single hour ahead
  depends on one noisy cell, a day ahead sums 24 of them.

The ``har`` band needs the whole ``models.features.build_features`` matrix (high, low, open and
the weekday); the others read its returns column, or take a 1-D array of returns.

A return across a gap in the hours is unknown (NaN): the variance recursions carry the previous
value over it (r^2 replaced by its expectation), nothing is invented.

Scores (``band_scores``): coverage, mean width, the interval (Winkler) score
``(u - l) + 2/alpha (l - y)+ + 2/alpha (y - u)+`` and the pinball loss of the two bounds as the
alpha/2 and 1 - alpha/2 quantiles, all in USD per step and overall; skill of a band vs another
= 1 - IS_band / IS_other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from models.volatility import HarModel, SeasonalProfile

log = logging.getLogger(__name__)

RISKMETRICS_LAMBDA = 0.94
BASELINES = ("constant", "ewma", "garch", "har")
#: hours (the latest of the training period) the hour-of-week profile of the ``har`` band is fitted on
HAR_SEASON_ROWS = 365 * 24
#: steps of the ``har`` band forecast with the shrunk seasonal profile, and its shrink weight
HAR_SHORT_STEPS = 1
HAR_SHORT_SHRINK = 0.5


def _returns(series: np.ndarray) -> np.ndarray:
    """Hourly log returns from a 1-D returns array or a ``build_features`` matrix."""
    series = np.asarray(series, dtype=np.float64)
    return series if series.ndim == 1 else series[:, 0]


def har_variance_proxy(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hourly variance proxy of the ``har`` band and the hour of week, from a features matrix."""
    from models.features import ohlc_log_ratios
    from models.volatility import range_variance

    if np.ndim(features) != 2:
        raise ValueError("the har band needs the build_features matrix (OHLC and weekday), not returns only")
    x = ohlc_log_ratios(np.asarray(features, dtype=np.float64))
    gk = range_variance(x["u"], x["d"], x["c"], "garman_klass")
    r2 = x["r"] ** 2
    return np.where(np.isfinite(r2), 0.5 * (gk + r2), gk), x["hour_of_week"]


def ewma_variance(returns: np.ndarray, lam: float = RISKMETRICS_LAMBDA, init: float | None = None) -> np.ndarray:
    """sigma^2 forecast for hour t+1 made at the end of hour t (uses r_0..r_t), shape (n,)."""
    r = np.asarray(returns, dtype=np.float64)
    finite = r[np.isfinite(r)]
    if init is None:
        init = float(np.mean(finite[:500] ** 2)) if len(finite) else 0.0
    out = np.empty(len(r))
    s2 = init
    for t, value in enumerate(r):
        if np.isfinite(value):
            s2 = lam * s2 + (1.0 - lam) * value * value
        out[t] = s2
    return out


@dataclass(frozen=True)
class GarchParams:
    omega: float  # in (log return)^2, not percent^2
    alpha: float
    beta: float

    @property
    def persistence(self) -> float:
        return self.alpha + self.beta

    @property
    def long_run_variance(self) -> float:
        return self.omega / (1.0 - self.persistence) if self.persistence < 1 else float("nan")


def fit_garch(returns: np.ndarray) -> GarchParams:
    """GARCH(1,1), zero mean, normal QMLE, on the finite hourly log returns given (training only).

    Returns are scaled by 100 for the optimiser (``arch``'s advice) and omega scaled back.
    """
    from arch import arch_model

    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    if len(r) < 100:
        raise ValueError(f"GARCH(1,1) needs at least 100 training returns, got {len(r)}")
    res = arch_model(100.0 * r, mean="Zero", vol="GARCH", p=1, q=1, dist="normal", rescale=False).fit(
        disp="off", show_warning=False
    )
    if res.convergence_flag != 0:
        raise RuntimeError(f"GARCH(1,1) fit did not converge (flag {res.convergence_flag}): {res.optimization_result}")
    p = res.params
    params = GarchParams(float(p["omega"]) / 1e4, float(p["alpha[1]"]), float(p["beta[1]"]))
    log.info("GARCH(1,1) on %d returns: omega %.3g, alpha %.4f, beta %.4f", len(r), params.omega, params.alpha,
             params.beta)
    return params


def garch_variance(returns: np.ndarray, params: GarchParams, init: float | None = None) -> np.ndarray:
    """sigma^2_{t+1} forecast at the end of hour t: omega + alpha r_t^2 + beta sigma^2_t, shape (n,)."""
    r = np.asarray(returns, dtype=np.float64)
    finite = r[np.isfinite(r)]
    s2 = float(init if init is not None else (np.mean(finite[:500] ** 2) if len(finite) else params.omega))
    out = np.empty(len(r))
    for t, value in enumerate(r):
        shock = value * value if np.isfinite(value) else s2
        s2 = params.omega + params.alpha * shock + params.beta * s2
        out[t] = s2
    return out


def garch_horizon_variance(next_var: np.ndarray, params: GarchParams, horizon: int) -> np.ndarray:
    """Variance of the k-step log return (n, horizon) from sigma^2_{t+1}: sum_j E[sigma^2_{t+j}]."""
    phi = params.persistence
    j = np.arange(horizon)  # j = 0 .. H-1 for sigma^2_{t+1+j}
    if phi < 1:
        vbar = params.long_run_variance
        per_step = vbar + (phi**j)[None, :] * (next_var[:, None] - vbar)
    else:  # integrated: E[sigma^2_{t+1+j}] = sigma^2_{t+1} + j omega
        per_step = next_var[:, None] + j[None, :] * params.omega
    return np.cumsum(per_step, axis=1)


@dataclass
class BandModel:
    """One band model: its name, per-step standardised quantiles and what its scale needs."""

    name: str
    level: float
    q_low: np.ndarray  # (horizon,)
    q_high: np.ndarray
    garch: GarchParams | None = None
    lam: float = RISKMETRICS_LAMBDA
    extra: dict = field(default_factory=dict)
    har: HarModel | None = None
    season: SeasonalProfile | None = None
    har_short: HarModel | None = None  # the first steps of ``har``, on ``season_short``
    season_short: SeasonalProfile | None = None

    def scale(self, series: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        """(n, horizon) volatility of the k-step return at each origin (data up to the origin only);
        ``series``: a ``build_features`` matrix, or the hourly returns (not for ``har``)."""
        origins = np.asarray(origins, dtype=np.int64)
        if self.name == "har":
            proxy, how = har_variance_proxy(series)
            scale = _har_scale(self.har, self.season, proxy, how, origins, horizon)
            if self.har_short is not None:
                short = min(horizon, self.har_short.coef.shape[1])
                scale[:, :short] = _har_scale(self.har_short, self.season_short, proxy, how, origins, short)
            return scale
        returns = _returns(series)
        k = np.arange(1, horizon + 1)
        if self.name == "constant":
            return np.ones((len(origins), horizon))
        if self.name == "ewma":
            var = ewma_variance(returns, self.lam)
            return np.sqrt(var[origins])[:, None] * np.sqrt(k)[None, :]
        if self.name == "garch":
            var = garch_variance(returns, self.garch)
            return np.sqrt(garch_horizon_variance(var[origins], self.garch, horizon))
        raise ValueError(f"unknown band model {self.name!r}")

    def quantiles(self, returns: np.ndarray, origins: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.scale(returns, origins, horizon)
        return s * self.q_low[None, :horizon], s * self.q_high[None, :horizon]

    def bounds(
        self, returns: np.ndarray, close: np.ndarray, origins: np.ndarray, horizon: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Price bounds (n, horizon) around the last close of each origin."""
        lo, hi = self.quantiles(returns, origins, horizon)
        last = np.asarray(close, dtype=np.float64)[origins][:, None]
        return last * np.exp(lo), last * np.exp(hi)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "level": self.level,
            "q_low": self.q_low.tolist(),
            "q_high": self.q_high.tolist(),
            "lam": self.lam,
            "garch": None if self.garch is None else vars(self.garch),
            "har": None if self.har is None else self.har.to_dict(),
            "season": None if self.season is None else self.season.factor.tolist(),
            "har_short": None if self.har_short is None else self.har_short.to_dict(),
            "season_short": None if self.season_short is None else self.season_short.factor.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> BandModel:
        garch = GarchParams(**data["garch"]) if data.get("garch") else None
        har = HarModel.from_dict(data["har"]) if data.get("har") else None
        season, season_short = (SeasonalProfile(np.asarray(data[k], dtype=np.float64)) if data.get(k) else None
                                for k in ("season", "season_short"))
        har_short = HarModel.from_dict(data["har_short"]) if data.get("har_short") else None
        return cls(data["name"], float(data["level"]), np.asarray(data["q_low"]), np.asarray(data["q_high"]),
                   garch=garch, lam=float(data.get("lam", RISKMETRICS_LAMBDA)), har=har, season=season,
                   har_short=har_short, season_short=season_short)


def _har_scale(har: HarModel, season: SeasonalProfile, proxy: np.ndarray, how: np.ndarray, origins: np.ndarray,
               horizon: int) -> np.ndarray:
    """(n, horizon) k-step volatility of a HAR on the proxy deseasonalised by ``season``."""
    log_var = har.predict_log(proxy / season.at(how), origins)[:, :horizon]
    return np.sqrt(np.exp(log_var) * season.ahead(how[origins], horizon))


def fit_band(
    name: str,
    returns: np.ndarray,
    close: np.ndarray,
    train_origins: np.ndarray,
    horizon: int,
    level: float = 0.8,
    garch_returns_until: int | None = None,
) -> BandModel:
    """Fit ``name`` on the training windows ending at ``train_origins`` (their targets must lie in
    the training period); ``returns``: a ``build_features`` matrix (or the hourly returns, except
    for ``har``). The GARCH (and the seasonal profile of ``har``) is fitted on the rows
    ``<= garch_returns_until`` (default: the last training target row)."""
    train_origins = np.asarray(train_origins, dtype=np.int64)
    if len(train_origins) == 0:
        raise ValueError("no training windows to fit a band on")
    alpha = (1.0 - level) / 2.0
    model = BandModel(name, level, np.zeros(horizon), np.zeros(horizon))
    end = int(train_origins[-1] + horizon if garch_returns_until is None else garch_returns_until)
    if name == "garch":
        model.garch = fit_garch(_returns(returns)[: end + 1])
    elif name == "har":
        proxy, how = har_variance_proxy(returns)
        recent = slice(max(0, end + 1 - HAR_SEASON_ROWS), end + 1)
        model.season = SeasonalProfile.fit(proxy[recent], how[recent])
        model.har = HarModel.fit(proxy / model.season.at(how), train_origins, horizon)
        if HAR_SHORT_STEPS > 0:
            model.season_short = SeasonalProfile.fit(proxy[recent], how[recent], shrink=HAR_SHORT_SHRINK)
            model.har_short = HarModel.fit(proxy / model.season_short.at(how), train_origins,
                                           min(horizon, HAR_SHORT_STEPS))
    steps = np.arange(1, horizon + 1)
    y = np.log(close[train_origins[:, None] + steps[None, :]] / close[train_origins][:, None])
    z = y / model.scale(returns, train_origins, horizon)
    model.q_low = np.quantile(z, alpha, axis=0)
    model.q_high = np.quantile(z, 1.0 - alpha, axis=0)
    return model


def fit_baselines(
    returns: np.ndarray, close: np.ndarray, train_origins: np.ndarray, horizon: int, level: float = 0.8
) -> dict[str, BandModel]:
    """Every baseline fitted on the training windows (``har`` only when given the features
    matrix). A GARCH whose fit fails (too few returns, no convergence) is left out with a warning
    naming why; the other bands still serve."""
    out = {}
    for name in BASELINES:
        if name == "har" and np.ndim(returns) != 2:
            continue
        try:
            out[name] = fit_band(name, returns, close, train_origins, horizon, level)
        except (RuntimeError, ValueError) as exc:
            if name != "garch":
                raise
            log.warning("GARCH(1,1) band left out of this model: %s", exc)
    return out


# ---- scores -----------------------------------------------------------------------------------
def interval_score(actual: np.ndarray, low: np.ndarray, high: np.ndarray, level: float = 0.8) -> np.ndarray:
    """Winkler / interval score per element (lower is better)."""
    a = 1.0 - level
    return (high - low) + (2.0 / a) * np.maximum(low - actual, 0.0) + (2.0 / a) * np.maximum(actual - high, 0.0)


def pinball(actual: np.ndarray, pred: np.ndarray, q: float) -> np.ndarray:
    e = actual - pred
    return np.maximum(q * e, (q - 1.0) * e)


def band_scores(actual: np.ndarray, low: np.ndarray, high: np.ndarray, level: float = 0.8) -> dict:
    """Per step (arrays of shape (horizon,)) and overall (key ``*_all``) band scores."""
    a = (1.0 - level) / 2.0
    inside = (actual >= low) & (actual <= high)
    iscore = interval_score(actual, low, high, level)
    pin = 0.5 * (pinball(actual, low, a) + pinball(actual, high, 1.0 - a))
    width = high - low
    out = {}
    for name, values in (("coverage", inside.astype(float)), ("winkler", iscore), ("pinball", pin), ("width", width)):
        out[name] = values.mean(axis=0)
        out[f"{name}_all"] = float(values.mean())
    return out


def best_band(scores: dict[str, float]) -> str:
    """Name of the band with the lowest overall interval score (ties: first given)."""
    return min(scores, key=lambda k: (scores[k], list(scores).index(k)))
