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


def evaluate_forecasts(
    actual: np.ndarray,
    last_close: np.ndarray,
    forecasts: dict[str, np.ndarray],
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
) -> dict:
    """JSON-ready metrics: ``{"per_horizon": [...], "overall": {...}, "n_windows": n}``.

    ``forecasts`` maps method name -> (n, horizon) price forecasts (``model``, ``persistence``,
    ``drift``); a skill score is given for every method relative to persistence.
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
        + f" | {'skill':>7} | {'cover':>6}"
    )
    lines = []
    if title:
        lines.append(title)
    lines.append(f"windows: {result['n_windows']}  (skill = 1 - RMSE_model / RMSE_persistence; cover = share of actuals in the interval)")
    lines.append(head)
    lines.append("-" * len(head))
    for row in [*result["per_horizon"], result["overall"]]:
        cells = [f"{str(row['horizon']):>4}"]
        cells.append(" ".join(f"{_fmt(row.get(f'{m}_rmse')):>13}" for m in methods))
        cells.append(" ".join(f"{_fmt(row.get(f'{m}_mae')):>12}" for m in methods))
        cells.append(" ".join(f"{_fmt(row.get(f'{m}_mape'), 3):>11}" for m in methods))
        cells.append(" ".join(f"{_fmt(row.get(f'{m}_directional_accuracy'), 3):>12}" for m in methods))
        cells.append(f"{_fmt(row.get('model_skill'), 4):>7}")
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
