"""The band served when no fitted band model can be used (no model evaluated yet, or too few
hours to warm one up): EWMA volatility of the hourly returns that exist, with quantiles widened
for how few they are.

Pure numpy/scipy, no I/O. For a forecast made at the last observed hour t and step k:

* sigma^2_{t+1} = the RiskMetrics EWMA (``models.bands.ewma_variance``, lambda 0.94) of the
  finite hourly log returns (a return across a gap is unknown and skipped, never invented), and
  sigma_k = sigma_{t+1} sqrt(k) (a random walk);
* the band is ``c_t * exp(+-m sigma_k)`` with the small-sample multiplier
  ``m = t_{1-alpha/2}(n_eff - 1) * sqrt(1 + 1/n_eff)``: the Student-t quantile and the
  prediction-interval factor of a variance estimated from ``n_eff`` observations, where
  ``n_eff = 1 / sum(w_i^2)`` is the effective number of returns behind the EWMA estimate (weights
  ``w_i``: the EWMA's, including those of its start value, the mean of the first squares). With a
  long history n_eff approaches (1 + lambda) / (1 - lambda) ~= 32 and m is ~4 % above the normal
  quantile; with 3 returns m is ~1.7x the normal quantile; below :data:`MIN_RETURNS` no band is
  given at all.

It assumes conditionally normal returns; hourly BTC returns have fat tails, which at the 80 %
level is close to neutral but not exact: this band is uncalibrated, and says so where it is served.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.bands import RISKMETRICS_LAMBDA, ewma_variance

#: fewer finite hourly returns than this: no band (the t quantile needs >= 1 degree of freedom)
MIN_RETURNS = 2
#: returns the EWMA's start value averages (as in ``models.bands.ewma_variance``)
EWMA_INIT_RETURNS = 500


class TooFewReturnsError(ValueError):
    """Fewer finite hourly returns than :data:`MIN_RETURNS`."""


@dataclass(frozen=True)
class FallbackBand:
    low: np.ndarray  # (horizon,) price bounds
    high: np.ndarray
    returns: int  # finite hourly returns used
    effective_returns: float
    multiplier: float  # m of the module docstring
    normal_quantile: float  # what m would be with a known variance

    @property
    def widening(self) -> float:
        return self.multiplier / self.normal_quantile

    def describe(self) -> str:
        return (f"EWMA (lambda {RISKMETRICS_LAMBDA}) of the {self.returns} hourly returns available, Student-t "
                f"quantiles for an effective sample of {self.effective_returns:.1f} returns: {self.widening:.2f}x "
                "the normal band; uncalibrated (no evaluated band model to use)")


def ewma_weights(n: int, lam: float = RISKMETRICS_LAMBDA, init_returns: int = EWMA_INIT_RETURNS) -> np.ndarray:
    """Weight of each of ``n`` squared returns in the EWMA variance after the last one (sums to 1)."""
    if n < 1:
        return np.zeros(0)
    w = (1.0 - lam) * lam ** np.arange(n - 1, -1, -1, dtype=np.float64)
    m = min(n, init_returns)
    w[:m] += lam**n / m  # the start value: the mean of the first m squares, decayed n times
    return w


def small_sample_multiplier(n_eff: float, level: float) -> float:
    """t quantile with n_eff - 1 degrees of freedom times the prediction-interval factor."""
    from scipy.stats import t as student_t

    return float(student_t.ppf(0.5 + level / 2.0, max(n_eff - 1.0, 1.0)) * math.sqrt(1.0 + 1.0 / n_eff))


def fallback_band(returns: np.ndarray, last_close: float, horizon: int, level: float,
                  lam: float = RISKMETRICS_LAMBDA) -> FallbackBand:
    """Band of the next ``horizon`` closes from the hourly log ``returns`` (NaN across gaps)."""
    from scipy.stats import norm

    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    if len(r) < MIN_RETURNS:
        raise TooFewReturnsError(f"{len(r)} hourly return(s) in the history, a band needs at least {MIN_RETURNS} "
                                 f"({MIN_RETURNS + 1} consecutive hours)")
    sigma = math.sqrt(ewma_variance(r, lam)[-1])
    w = ewma_weights(len(r), lam)
    n_eff = float(1.0 / np.sum(w**2))
    m = small_sample_multiplier(n_eff, level)
    half = m * sigma * np.sqrt(np.arange(1, horizon + 1))
    return FallbackBand(last_close * np.exp(-half), last_close * np.exp(half), len(r), n_eff, m,
                        float(norm.ppf(0.5 + level / 2.0)))
