"""Metrics of the model next to the persistence and drift baselines, on exactly the same windows.

For forecast origin t (last input hour, close c_t) and step k = 1..horizon:

* persistence: c_t (the last close, repeated);
* drift: c_t + k * (c_t - c_{t-L}) / L, the straight line through the window's first and last
  close (L = lookback), i.e. the classic drift method over the input window;
* model: c_t * exp(predicted log return k).

Per step and overall (all steps pooled): MSE, RMSE, MAE (USD), MAPE (%), directional accuracy
(share of windows where sign(forecast - c_t) == sign(actual - c_t); persistence makes no
directional call, so it has none), the skill score 1 - RMSE_model / RMSE_persistence and the
empirical coverage of the prediction interval.

Bands (``bands`` argument: name -> (low, high) price bounds, e.g. the LSTM's quantiles and the
constant / EWMA / GARCH baselines of ``models.bands``): per step and overall ``band_<name>_coverage``,
``_width``, ``_winkler`` (interval score, USD), ``_pinball`` (USD) and
``band_<name>_winkler_skill_vs_<other>`` = 1 - IS_name / IS_other for every baseline other.

Per step and overall, ``dm_p_model_better``: ``diebold_mariano`` of the model's squared errors
against persistence's (per step k with k - 1 lags). ``diebold_mariano`` tests whether two forecasts' losses differ beyond noise (HAC variance with
``horizon - 1`` Newey-West lags, Harvey-Leybourne-Newbold small-sample correction, Student-t
p-value); overlapping multi-step windows are autocorrelated, which is why the HAC variance is
needed.
"""

from __future__ import annotations

import math

import numpy as np

METHODS = ("model", "persistence", "drift")


def persistence_forecast(last_close: np.ndarray, horizon: int) -> np.ndarray:
    return np.repeat(np.asarray(last_close, dtype=np.float64)[:, None], horizon, axis=1)


def drift_forecast(first_close: np.ndarray, last_close: np.ndarray, lookback: int, horizon: int) -> np.ndarray:
    slope = (np.asarray(last_close, dtype=np.float64) - first_close) / lookback
    return last_close[:, None] + slope[:, None] * np.arange(1, horizon + 1)[None, :]


def _metrics(pred: np.ndarray, actual: np.ndarray, last_close: np.ndarray, axis) -> dict:
    err = pred - actual
    mse = np.mean(err**2, axis=axis)
    out = {
        "mse": mse,
        "rmse": np.sqrt(mse),
        "mae": np.mean(np.abs(err), axis=axis),
        "mape": 100.0 * np.mean(np.abs(err) / np.abs(actual), axis=axis),
    }
    pred_dir = np.sign(pred - last_close[:, None])
    if np.all(pred_dir == 0):
        out["directional_accuracy"] = np.full_like(np.asarray(mse, dtype=float), np.nan)
    else:
        true_dir = np.sign(actual - last_close[:, None])
        out["directional_accuracy"] = np.mean(pred_dir == true_dir, axis=axis)
    return out


def _clean(value):
    value = float(value)
    return None if math.isnan(value) else value


def diebold_mariano(loss_a: np.ndarray, loss_b: np.ndarray, horizon: int = 1) -> dict:
    """DM test of equal expected loss of forecasts a and b, one loss per forecast origin.

    ``mean_diff`` < 0 means a is better; ``p_a_better`` is the one-sided p-value of "a has lower
    expected loss", ``p_value`` the two-sided one.
    """
    from scipy import stats

    d = np.asarray(loss_a, dtype=np.float64) - np.asarray(loss_b, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = len(d)
    if n < 2:
        raise ValueError(f"Diebold-Mariano needs at least 2 loss differences, got {n}")
    mean = float(d.mean())
    dc = d - mean
    lags = max(0, min(int(horizon) - 1, n - 1))
    var = float(dc @ dc) / n
    for lag in range(1, lags + 1):
        weight = 1.0 - lag / (lags + 1.0)  # Bartlett kernel keeps the variance positive
        var += 2.0 * weight * float(dc[lag:] @ dc[:-lag]) / n
    if var <= 0:
        stat = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    else:
        stat = mean / math.sqrt(var / n)
        h = lags + 1
        stat *= math.sqrt(max(0.0, (n + 1 - 2 * h + h * (h - 1) / n) / n))  # HLN correction
    return {
        "n": n,
        "mean_diff": mean,
        "statistic": float(stat),
        "p_value": float(2.0 * stats.t.sf(abs(stat), df=n - 1)),
        "p_a_better": float(stats.t.cdf(stat, df=n - 1)),
    }


#: a band serves only if calibrated on the evaluation: overall coverage within this of the level
#: and no horizon below ``level - BAND_MIN_HORIZON_SHORTFALL``; among those the lowest interval score
BAND_COVERAGE_TOLERANCE = 0.03
BAND_MIN_HORIZON_SHORTFALL = 0.05


def choose_band(rows: list[dict], total: dict, names: list[str], level: float = 0.8) -> str:
    """The band to serve: lowest overall interval score among the calibrated bands (coverage
    overall within ``BAND_COVERAGE_TOLERANCE`` of ``level``, every horizon at least ``level -
    BAND_MIN_HORIZON_SHORTFALL``); if none is calibrated, the lowest interval score of all."""
    def calibrated(name: str) -> bool:
        cov = total[f"band_{name}_coverage"]
        worst = min(r[f"band_{name}_coverage"] for r in rows)
        return abs(cov - level) <= BAND_COVERAGE_TOLERANCE and worst >= level - BAND_MIN_HORIZON_SHORTFALL

    pool = [n for n in names if calibrated(n)] or names
    return min(pool, key=lambda n: total[f"band_{n}_winkler"])


def _band_rows(actual: np.ndarray, bands: dict, level: float) -> tuple[list[dict], dict]:
    from models.bands import BASELINES, band_scores

    scores = {name: band_scores(actual, lo, hi, level) for name, (lo, hi) in bands.items()}
    horizon = actual.shape[1]
    rows = [{} for _ in range(horizon)]
    total: dict = {}
    for name, sc in scores.items():
        for metric in ("coverage", "width", "winkler", "pinball"):
            for k in range(horizon):
                rows[k][f"band_{name}_{metric}"] = _clean(sc[metric][k])
            total[f"band_{name}_{metric}"] = _clean(sc[f"{metric}_all"])
        for other in BASELINES:
            if other == name or other not in scores:
                continue
            for k in range(horizon):
                rows[k][f"band_{name}_winkler_skill_vs_{other}"] = _clean(
                    1.0 - sc["winkler"][k] / scores[other]["winkler"][k])
            total[f"band_{name}_winkler_skill_vs_{other}"] = _clean(
                1.0 - sc["winkler_all"] / scores[other]["winkler_all"])
    return rows, total


def evaluate_forecasts(
    actual: np.ndarray,
    last_close: np.ndarray,
    forecasts: dict[str, np.ndarray],
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
    bands: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    level: float = 0.8,
) -> dict:
    """JSON-ready metrics: ``{"per_horizon": [...], "overall": {...}, "n_windows": n}``.

    ``forecasts`` maps method name -> (n, horizon) price forecasts (``model``, ``persistence``,
    ``drift``); a skill score is given for every method relative to persistence. ``bands`` adds
    the band metrics and ``band_best`` (``choose_band``); the Diebold-Mariano test of model vs
    persistence is in ``dm_statistic`` / ``dm_p_model_better``.
    """
    n, horizon = actual.shape
    per_step = {m: _metrics(f, actual, last_close, axis=0) for m, f in forecasts.items()}
    overall = {m: _metrics(f, actual, last_close, axis=None) for m, f in forecasts.items()}
    cov_step = None
    if low is not None and high is not None:
        inside = (actual >= low) & (actual <= high)
        cov_step = inside.mean(axis=0)
        cov_all = inside.mean()
    rows = []
    for k in range(horizon):
        row = {"horizon": k + 1}
        for m, mets in per_step.items():
            for name, values in mets.items():
                row[f"{m}_{name}"] = _clean(values[k])
        for m in per_step:
            if m != "persistence" and "persistence" in per_step:
                row[f"{m}_skill"] = _clean(1.0 - per_step[m]["rmse"][k] / per_step["persistence"]["rmse"][k])
        if cov_step is not None:
            row["interval_coverage"] = _clean(cov_step[k])
        rows.append(row)
    total = {"horizon": "all"}
    for m, mets in overall.items():
        for name, value in mets.items():
            total[f"{m}_{name}"] = _clean(value)
    for m in overall:
        if m != "persistence" and "persistence" in overall:
            total[f"{m}_skill"] = _clean(1.0 - overall[m]["rmse"] / overall["persistence"]["rmse"])
    if cov_step is not None:
        total["interval_coverage"] = _clean(cov_all)
    if bands:
        band_rows, band_total = _band_rows(actual, bands, level)
        for row, extra in zip(rows, band_rows, strict=True):
            row.update(extra)
        total.update(band_total)
        total["band_best"] = choose_band(band_rows, band_total, list(bands), level)
    if "model" in forecasts and "persistence" in forecasts and n >= 2:
        # per step k: squared errors of overlapping k-step forecasts, k - 1 Newey-West lags
        for k, row in enumerate(rows):
            dm_k = diebold_mariano((forecasts["model"][:, k] - actual[:, k]) ** 2,
                                   (forecasts["persistence"][:, k] - actual[:, k]) ** 2, k + 1)
            row["dm_statistic"] = _clean(dm_k["statistic"])
            row["dm_p_model_better"] = _clean(dm_k["p_a_better"])
        # is the model's squared error per window (mean over steps) below persistence's beyond noise?
        dm = diebold_mariano(
            np.mean((forecasts["model"] - actual) ** 2, axis=1),
            np.mean((forecasts["persistence"] - actual) ** 2, axis=1),
            horizon,
        )
        total["dm_statistic"] = _clean(dm["statistic"])
        total["dm_p_model_better"] = _clean(dm["p_a_better"])
    return {"n_windows": int(n), "horizon": int(horizon), "per_horizon": rows, "overall": total}


def _fmt(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def format_table(result: dict, title: str = "") -> str:
    """Fixed-width text table: per horizon and overall, model vs persistence vs drift."""
    methods = [m for m in METHODS if f"{m}_rmse" in result["overall"]]
    head = (
        f"{'h':>4} | " + " ".join(f"{'RMSE ' + m[:7]:>13}" for m in methods)
        + " | " + " ".join(f"{'MAE ' + m[:7]:>12}" for m in methods)
        + " | " + " ".join(f"{'MAPE% ' + m[:5]:>11}" for m in methods)
        + " | " + " ".join(f"{'DirAcc ' + m[:5]:>12}" for m in methods)
        + f" | {'skill':>7} | {'DM p':>6} | {'cover':>6}"
    )
    lines = []
    if title:
        lines.append(title)
    lines.append(f"windows: {result['n_windows']}  (skill = 1 - RMSE_model / RMSE_persistence; DM p = one-sided "
                 "Diebold-Mariano p-value of model better than persistence; cover = share of actuals in the interval)")
    lines.append(head)
    lines.append("-" * len(head))
    for row in [*result["per_horizon"], result["overall"]]:
        cells = [f"{str(row['horizon']):>4}"]
        cells.append(" ".join(f"{_fmt(row.get(f'{m}_rmse')):>13}" for m in methods))
        cells.append(" ".join(f"{_fmt(row.get(f'{m}_mae')):>12}" for m in methods))
        cells.append(" ".join(f"{_fmt(row.get(f'{m}_mape'), 3):>11}" for m in methods))
        cells.append(" ".join(f"{_fmt(row.get(f'{m}_directional_accuracy'), 3):>12}" for m in methods))
        cells.append(f"{_fmt(row.get('model_skill'), 4):>7}")
        cells.append(f"{_fmt(row.get('dm_p_model_better'), 3):>6}")
        cells.append(f"{_fmt(row.get('interval_coverage'), 3):>6}")
        if row["horizon"] == "all":
            lines.append("-" * len(head))
        lines.append(" | ".join(cells))
    o = result["overall"]
    lines.append(
        "overall MSE (USD^2): " + ", ".join(f"{m} {_fmt(o.get(f'{m}_mse'), 0)}" for m in methods)
        + f"; drift skill {_fmt(o.get('drift_skill'), 4)}"
    )
    return "\n".join(lines)


def format_band_table(result: dict) -> str:
    """Fixed-width table of the bands: coverage, interval score and its skill per horizon and overall."""
    o = result["overall"]
    names = [k[len("band_"):-len("_winkler")] for k in o if k.startswith("band_") and k.endswith("_winkler")]
    if not names:
        return ""
    ref = [b for b in ("constant", "ewma") if b in names]
    head = (f"{'h':>4} | " + " ".join(f"{'cover ' + n[:8]:>14}" for n in names)
            + " | " + " ".join(f"{'IS ' + n[:8]:>11}" for n in names)
            + " | " + " ".join(f"{'skill ' + n[:5] + '/' + r[:5]:>18}" for n in names for r in ref if r != n))
    lines = [f"80 % bands (IS = interval/Winkler score in USD, skill = 1 - IS / IS_ref); best: {o.get('band_best')}",
             head, "-" * len(head)]
    for row in [*result["per_horizon"], o]:
        if row["horizon"] == "all":
            lines.append("-" * len(head))
        cells = [f"{str(row['horizon']):>4}",
                 " ".join(f"{_fmt(row.get(f'band_{n}_coverage'), 3):>14}" for n in names),
                 " ".join(f"{_fmt(row.get(f'band_{n}_winkler'), 1):>11}" for n in names),
                 " ".join(f"{_fmt(row.get(f'band_{n}_winkler_skill_vs_{r}'), 4):>18}" for n in names for r in ref
                          if r != n)]
        lines.append(" | ".join(cells))
    if o.get("dm_statistic") is not None:
        lines.append(f"Diebold-Mariano (model vs persistence, squared error): stat {o['dm_statistic']:.3f}, "
                     f"one-sided p(model better) {o['dm_p_model_better']:.4f}")
    return "\n".join(lines)
