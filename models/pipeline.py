"""Task functions of the ``btc_retrain`` DAG (and the CLI): JSON in, JSON out, idempotent by version.

Order: ``check_sufficiency`` -> ``train_candidate`` -> ``evaluate_candidate`` ->
``decide_promotion`` -> ``predict_future`` -> ``write_outputs``. Each call can be repeated: a
version is derived from the data (range, rows, hourly_metrics table version) and the
hyperparameters, and work already stored for that version is reused instead of redone.

Data: hourly_metrics is a Delta table read with delta-rs (``models.data.read_hourly_metrics``:
one symbol, the columns used, filters pushed down), at most once per task (a task's
:class:`Context` keeps what it read). A model records the table version it was trained on
(``data_table_version`` in training.json); its evaluation re-reads exactly that version (time
travel), and ``as_of_version`` trains on a past version again.

``params`` keys (all optional): ``epochs``, ``lookback`` (12), ``horizon`` (24), ``test_hours``
(length of the test window, the latest hours; default 168), ``force_promotion`` (False),
``data_uri`` (default ``hourly_metrics`` under the storage root; a candle CSV also works),
``symbol`` (default first of ``settings.binance_symbols``), ``promotion_policy`` (default
``settings.model_promotion_policy``), ``min_train_windows``, ``batch_size``, ``seed``,
``lstm_units`` (two ints; tests use tiny models), ``as_of_version`` (read hourly_metrics at this
Delta version instead of the current one: reproduces a past training run).

Outputs under the storage root: ``models/<version>/`` (registry files) and three Delta tables
written with delta-rs (``btc_platform.lake.write_table``), where a repeat replaces the rows of
the same key instead of adding copies: ``predictions`` (backtest forecasts with actuals, errors
and interval bounds; key ``model_version``), ``prediction_metrics`` (one record per model version)
and ``future_predictions`` (next ``horizon`` hours from the current model with interval bounds,
model version, issue time; key symbol + model_version + origin_hour_start).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from btc_platform import datasets, lake
from btc_platform.settings import Settings, get_settings
from models.config import ModelConfig
from models.data import (
    HOUR,
    DataError,
    HistoryNotFoundError,
    HourlyData,
    InsufficientHistoryError,
    describe,
    load_series,
    segment_ids,
)

log = logging.getLogger(__name__)

#: horizons (hours) whose skill is reported
SKILL_HORIZONS = (1, 6, 12, 24)
#: what identifies one forecast in future_predictions (a repeat replaces those rows)
FUTURE_KEYS = ("symbol", "model_version", "origin_hour_start")

__all__ = [
    "InsufficientHistoryError",
    "check_sufficiency",
    "train_candidate",
    "evaluate_candidate",
    "decide_promotion",
    "predict_future",
    "write_outputs",
    "evaluate_offline",
]

DEFAULT_TEST_HOURS = 168
_CONFIG_KEYS = ("epochs", "lookback", "horizon", "min_train_windows", "min_val_windows", "batch_size", "seed", "patience")


@dataclass
class Context:
    settings: Settings
    config: ModelConfig
    data_uri: str
    symbol: str
    test_hours: int
    force: bool
    policy: str
    as_of_version: int | None = None
    #: what this task has read, by (uri, symbol, version, until): each series is read once per task
    loaded: dict = field(default_factory=dict)


def resolve(params: dict | None, settings: Settings | None = None) -> Context:
    p = dict(params or {})
    s = settings or get_settings()
    overrides: dict = {k: int(p[k]) for k in _CONFIG_KEYS if p.get(k) is not None}
    if p.get("lstm_units"):
        overrides["lstm_units"] = tuple(int(u) for u in p["lstm_units"])
    config = ModelConfig().replace(**overrides)
    test_hours = int(p.get("test_hours") or DEFAULT_TEST_HOURS)
    if test_hours <= config.horizon:
        raise ValueError(f"test_hours must exceed the horizon ({config.horizon}), got {test_hours}")
    policy = p.get("promotion_policy") or s.model_promotion_policy
    if policy not in ("beat_current_and_persistence", "beat_persistence"):
        raise ValueError(f"unknown promotion_policy {policy!r}")
    as_of = p.get("as_of_version")
    if as_of is not None and int(as_of) < 0:
        raise ValueError(f"as_of_version must be a table version >= 0, got {as_of}")
    return Context(
        settings=s,
        config=config,
        data_uri=p.get("data_uri") or s.path(datasets.HOURLY_METRICS),
        symbol=(p.get("symbol") or s.binance_symbols[0]).upper(),
        test_hours=test_hours,
        force=bool(p.get("force_promotion", False)),
        policy=policy,
        as_of_version=None if as_of is None else int(as_of),
    )


def _load(
    ctx: Context,
    *,
    uri: str | None = None,
    symbol: str | None = None,
    version: int | None = None,
    until: pd.Timestamp | None = None,
) -> HourlyData:
    """The series of ``uri``/``symbol`` (default: the context's) at table ``version``, up to
    ``until``; read on first use, then kept in the context for the rest of the task."""
    key = (uri or ctx.data_uri, symbol or ctx.symbol, version, until)
    if key not in ctx.loaded:
        ctx.loaded[key] = load_series(key[0], key[1], version=version, until=until)
    return ctx.loaded[key]


def _test_from(frame: pd.DataFrame, test_hours: int) -> pd.Timestamp:
    return frame["hour_start"].iloc[-1] + HOUR - pd.Timedelta(hours=test_hours)


def check_history(frame: pd.DataFrame, config: ModelConfig, test_from: pd.Timestamp) -> dict:
    """Raise InsufficientHistoryError (hours needed vs found) unless training and test parts suffice."""
    from models.features import hours_needed

    span = config.lookback + config.horizon
    train_end = test_from - pd.Timedelta(hours=span)
    train_needed = hours_needed(config, 0) - span
    train_found = int((frame["hour_start"] < train_end).sum()) if len(frame) else 0
    test_found = int((frame["hour_start"] >= test_from).sum()) if len(frame) else 0
    if train_found < train_needed:
        raise InsufficientHistoryError(
            train_needed,
            train_found,
            what="hours of training history",
            detail=f"before {train_end.isoformat()}, i.e. {span} h before the test window starting {test_from.isoformat()}",
        )
    if test_found < config.horizon + 1:
        raise InsufficientHistoryError(
            config.horizon + 1, test_found, what="hours in the test window", detail=f"from {test_from.isoformat()}"
        )
    return {"train_hours_needed": train_needed, "train_hours_found": train_found, "test_hours_found": test_found}


# ---- DAG tasks ------------------------------------------------------------------------------
def check_sufficiency(params: dict | None = None) -> dict:
    """Is there enough history for ``params``? Raises InsufficientHistoryError naming needed vs found."""
    from btc_platform import lake
    from models.features import hours_needed, split_windows

    ctx = resolve(params)
    lake.check_layout(ctx.settings)  # a storage root of the Parquet layout is refused, with the command
    try:
        data = _load(ctx, version=ctx.as_of_version)
    except HistoryNotFoundError as exc:
        raise InsufficientHistoryError(hours_needed(ctx.config, ctx.test_hours), 0, detail=str(exc)) from exc
    frame = data.frame
    info = describe(frame)
    needed = hours_needed(ctx.config, ctx.test_hours)
    if info["hours"] < needed:
        raise InsufficientHistoryError(needed, info["hours"], detail=f"{ctx.symbol} in {ctx.data_uri}")
    test_from = _test_from(frame, ctx.test_hours)
    check_history(frame, ctx.config, test_from)
    split = split_windows(frame, ctx.config, test_from)  # raises with window counts if gaps eat history
    result = {
        **info,
        "hours_needed": needed,
        "data_uri": ctx.data_uri,
        "symbol": ctx.symbol,
        "table_version": data.table_version,
        **split.summary(frame),
    }
    log.info("history sufficient: %d hours found, %d needed (%d gaps)", info["hours"], needed, info["gaps"])
    return result


def make_version(ctx: Context, data: HourlyData) -> str:
    frame = data.frame
    end = frame["hour_start"].iloc[-1]
    key = json.dumps(
        {
            "config": ctx.config.to_dict(),
            "data_uri": ctx.data_uri,
            "symbol": ctx.symbol,
            "start": frame["hour_start"].iloc[0].isoformat(),
            "end": end.isoformat(),
            "rows": len(frame),
            "test_hours": ctx.test_hours,
            **({"table_version": data.table_version} if data.table_version is not None else {}),
        },
        sort_keys=True,
    )
    return f"{end:%Y%m%dT%H}Z-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def train_candidate(params: dict | None = None) -> dict:
    """Train a candidate on all data before the latest test window; save it in the registry."""
    from models.registry import Registry
    from models.train import train

    ctx = resolve(params)
    data = _load(ctx, version=ctx.as_of_version)
    frame = data.frame
    if frame.empty:
        raise InsufficientHistoryError(1, 0, detail=f"no rows for {ctx.symbol} in {data.origin}")
    version = make_version(ctx, data)
    registry = Registry(ctx.settings)
    if registry.exists(version):
        training = registry.read_json(version, "training.json")
        log.info("candidate %s already trained (%s): reusing it", version, registry.uri(version))
        return {"version": version, "uri": registry.uri(version), "reused": True, **_training_summary(training)}
    test_from = _test_from(frame, ctx.test_hours)
    check_history(frame, ctx.config, test_from)
    forecaster, _split, info = train(frame, ctx.config, test_from, threads=ctx.settings.model_tf_threads)
    training = {
        **info,
        "version": version,
        "data_uri": ctx.data_uri,
        "data_table_version": data.table_version,  # None for a candle CSV
        "symbol": ctx.symbol,
        "data_end": frame["hour_start"].iloc[-1].isoformat(),
        "data": describe(frame),
        "test_hours": ctx.test_hours,
        "test_from": test_from.isoformat(),
    }
    registry.save_forecaster(version, forecaster, training)
    return {"version": version, "uri": registry.uri(version), "reused": False, **_training_summary(training)}


def _training_summary(training: dict) -> dict:
    keys = ("data_start", "data_end", "train_rows_end", "test_from", "epochs_run", "best_epoch", "train_seconds",
            "data_table_version")
    return {k: training.get(k) for k in keys}


def _backtest_version(registry, version: str, ctx: Context):
    from models.features import split_windows
    from models.train import backtest

    training = registry.read_json(version, "training.json")
    forecaster = registry.load_forecaster(version)
    data = registry.trained_on(version)  # exactly the table version it was trained on
    frame = _load(
        ctx,
        uri=data["data_uri"],
        symbol=data["symbol"],
        version=data["data_table_version"],
        until=pd.Timestamp(data["data_end"]),
    ).frame
    split = split_windows(frame, forecaster.config, pd.Timestamp(training["test_from"]))
    return forecaster, frame, split, backtest(forecaster, frame, split.test), training


def evaluate_candidate(version: str, params: dict | None = None) -> dict:
    """Metrics of ``version`` on its test window next to persistence and drift (+ table string)."""
    from models.registry import Registry

    ctx = resolve(params)
    return _evaluate(ctx, Registry(ctx.settings), version)


def _evaluate(ctx: Context, registry, version: str) -> dict:
    from models.evaluate import evaluate_forecasts, format_table

    if registry.exists(version, "metrics.json"):
        metrics = registry.read_json(version, "metrics.json")
    else:
        forecaster, _frame, _split, bt, training = _backtest_version(registry, version, ctx)
        metrics = evaluate_forecasts(bt["actual"], bt["last_close"], bt["forecasts"], bt["low"], bt["high"])
        metrics.update(
            {
                "version": version,
                "test_from": training["test_from"],
                "data_end": training["data_end"],
                "predict_seconds": round(bt["predict_seconds"], 3),
                "interval_level": forecaster.config.interval_level,
            }
        )
        registry.write_frame(version, "backtest.parquet", _backtest_frame(version, bt))
        registry.write_json(version, "metrics.json", metrics)
    table = format_table(metrics, title=f"model {version}: test window from {metrics['test_from']} to {metrics['data_end']}")
    log.info("evaluation of %s:\n%s", version, table)
    return {"version": version, "overall": metrics["overall"], "skill": _skills(metrics), "table": table}


def _skills(metrics: dict) -> dict:
    rows = {r["horizon"]: r for r in metrics["per_horizon"]}
    out = {f"h{h}": rows[h].get("model_skill") for h in SKILL_HORIZONS if h in rows}
    out["overall"] = metrics["overall"].get("model_skill")
    out["interval_coverage"] = metrics["overall"].get("interval_coverage")
    return out


def _backtest_frame(version: str, bt: dict) -> pd.DataFrame:
    n, horizon = bt["actual"].shape
    steps = np.tile(np.arange(1, horizon + 1), n)
    origin = pd.to_datetime(np.repeat(bt["origin_time"], horizon), utc=True)
    pred = bt["forecasts"]["model"].ravel()
    actual = bt["actual"].ravel()
    low, high = bt["low"].ravel(), bt["high"].ravel()
    return pd.DataFrame(
        {
            "model_version": version,
            "origin_hour_start": origin,
            "horizon": steps.astype("int32"),
            "target_hour_start": origin + pd.to_timedelta(steps, unit="h"),  # close of this hour
            "last_close": np.repeat(bt["last_close"], horizon),
            "actual_close": actual,
            "predicted_close": pred,
            "lower": low,
            "upper": high,
            "inside_interval": (actual >= low) & (actual <= high),
            "persistence_close": bt["forecasts"]["persistence"].ravel(),
            "drift_close": bt["forecasts"]["drift"].ravel(),
            "error": pred - actual,
            "abs_error": np.abs(pred - actual),
            "abs_pct_error": 100.0 * np.abs(pred - actual) / np.abs(actual),
        }
    )


def _rmse_on_common_windows(registry, cand_version: str, other_version: str, ctx: Context) -> tuple[float, float, int]:
    """RMSE (all steps) of candidate and another model on the candidate's test windows."""
    from models.features import window_origins
    from models.train import backtest

    cand, frame, split, bt_cand, _ = _backtest_version(registry, cand_version, ctx)
    other = registry.load_forecaster(other_version)
    steps = min(cand.config.horizon, other.config.horizon)
    valid = window_origins(frame, other.config.lookback, other.config.horizon).origins
    common = np.intersect1d(split.test, valid)
    if len(common) == 0:
        raise DataError(f"no test window usable by both {cand_version} and {other_version}")
    bt_other = backtest(other, frame, common)
    keep = np.isin(split.test, common)

    def rmse(pred, actual):
        return float(np.sqrt(np.mean((pred[:, :steps] - actual[:, :steps]) ** 2)))

    return rmse(bt_cand["forecasts"]["model"][keep], bt_cand["actual"][keep]), rmse(
        bt_other["forecasts"]["model"], bt_other["actual"]
    ), int(len(common))


def promotion_rule(
    candidate_rmse: float,
    persistence_rmse: float,
    *,
    current_version: str | None = None,
    current_rmse: float | None = None,
    candidate_rmse_common: float | None = None,
    force: bool = False,
) -> tuple[str, str, bool]:
    """(status, reason, forced): "promoted" only if the candidate's RMSE is strictly below
    persistence and (when ``current_rmse`` is given) below the current model on the same windows;
    otherwise "rejected" with every reason, unless ``force`` (then promoted, forced=True)."""
    against = []
    if not candidate_rmse < persistence_rmse:
        against.append(f"RMSE {candidate_rmse:.2f} is not below persistence {persistence_rmse:.2f}")
    if current_rmse is not None:
        cand = candidate_rmse if candidate_rmse_common is None else candidate_rmse_common
        if not cand < current_rmse:
            against.append(f"RMSE {cand:.2f} is not below current model {current_version} ({current_rmse:.2f})")
    if not against:
        reason = f"beats persistence ({candidate_rmse:.2f} < {persistence_rmse:.2f})"
        if current_rmse is not None:
            cand = candidate_rmse if candidate_rmse_common is None else candidate_rmse_common
            reason += f" and current model {current_version} ({cand:.2f} < {current_rmse:.2f})"
        return "promoted", reason, False
    if force:
        return "promoted", "FORCED despite: " + "; ".join(against), True
    return "rejected", "; ".join(against), False


def decide_promotion(version: str, params: dict | None = None) -> dict:
    """Promote ``version`` to ``current`` only if it beats persistence (and the current model,
    per policy) on the latest test window, or if ``force_promotion``; record the decision."""
    from models.registry import Registry, utcnow_iso

    ctx = resolve(params)
    registry = Registry(ctx.settings)
    if registry.exists(version, "decision.json"):
        previous = registry.read_json(version, "decision.json")
        if previous["status"] == "promoted" or not ctx.force:
            log.info("decision for %s already made: %s (%s)", version, previous["status"], previous["reason"])
            return previous
    if not registry.exists(version, "metrics.json"):
        _evaluate(ctx, registry, version)
    overall = registry.read_json(version, "metrics.json")["overall"]
    current = registry.current_version()
    checks: dict = {"candidate_rmse": overall["model_rmse"], "persistence_rmse": overall["persistence_rmse"],
                    "current_version": current}
    if current and current != version and ctx.policy == "beat_current_and_persistence":
        cand_common, cur_rmse, n_common = _rmse_on_common_windows(registry, version, current, ctx)
        checks.update({"current_rmse": cur_rmse, "candidate_rmse_common": cand_common, "common_windows": n_common})
    status, reason, forced = promotion_rule(
        overall["model_rmse"],
        overall["persistence_rmse"],
        current_version=None if current == version else current,
        current_rmse=checks.get("current_rmse"),
        candidate_rmse_common=checks.get("candidate_rmse_common"),
        force=ctx.force,
    )
    if current == version:
        status, reason, forced = "promoted", "already the current model", False
    decision = {
        "version": version,
        "status": status,
        "reason": reason,
        "forced": forced,
        "policy": ctx.policy,
        "decided_at": utcnow_iso(),
        **checks,
    }
    registry.write_json(version, "decision.json", decision)
    if status == "promoted" and current != version:
        registry.set_current(version, reason, forced=forced)
    log.info("promotion decision for %s: %s - %s", version, status, reason)
    return decision


def predict_future(params: dict | None = None) -> dict:
    """Forecast the next ``horizon`` hours from the latest data with the ``current`` model.

    Without a current model (none yet promoted) nothing is served: returns status "skipped"
    with the reason. The forecast goes to the future_predictions table; a repeat for the same
    symbol, model version and last observed hour replaces those rows, never duplicates them.
    """
    from models.registry import Registry, utcnow_iso

    ctx = resolve(params)
    registry = Registry(ctx.settings)
    current = registry.current_version()
    if current is None:
        reason = "no current model: no candidate has beaten persistence yet (or been force-promoted)"
        log.warning("future predictions skipped: %s", reason)
        return {"status": "skipped", "reason": reason}
    forecaster = registry.load_forecaster(current)
    cfg = forecaster.config
    data = _load(ctx, version=ctx.as_of_version)
    frame = data.frame
    need = cfg.lookback + 1
    if len(frame) < need:
        raise InsufficientHistoryError(need, len(frame), what="latest consecutive hours")
    seg = segment_ids(frame["hour_start"])
    if seg[-need] != seg[-1]:
        raise DataError(
            f"the latest {need} hours up to {frame['hour_start'].iloc[-1].isoformat()} contain a gap; "
            "consolidate or backfill the missing hours first"
        )
    from models.features import build_features

    origin = np.array([len(frame) - 1])
    out = forecaster.forecast(build_features(frame), frame["close"].to_numpy(dtype=np.float64), origin)
    origin_time = frame["hour_start"].iloc[-1]
    steps = np.arange(1, cfg.horizon + 1)
    issue_time = pd.Timestamp(utcnow_iso())
    result = pd.DataFrame(
        {
            "symbol": ctx.symbol,
            "model_version": current,
            "issue_time": issue_time,
            "origin_hour_start": origin_time,
            "last_close": float(out["last_close"][0]),
            "horizon": steps.astype("int32"),
            "target_hour_start": origin_time + pd.to_timedelta(steps, unit="h"),  # close of this hour
            "predicted_close": out["prices"][0],
            "lower": out["low"][0],
            "upper": out["high"][0],
            "interval_level": cfg.interval_level,
            "data_table_version": pd.array([data.table_version] * len(steps), dtype="Int64"),
            "date": f"{origin_time:%Y-%m-%d}",  # of the origin hour, for filters
            "hour": np.full(len(steps), origin_time.hour, dtype=np.int32),
        }
    )
    table_version = lake.write_table(datasets.FUTURE_PREDICTIONS, result, ctx.settings, replace_on=FUTURE_KEYS)
    uri = lake.table_uri(datasets.FUTURE_PREDICTIONS, ctx.settings)
    log.info("future predictions by %s from %s written to %s (version %d)", current, origin_time, uri, table_version)
    return {
        "status": "written",
        "model_version": current,
        "origin_hour_start": origin_time.isoformat(),
        "uri": uri,
        "table_version": table_version,
        "predicted_close": [round(float(v), 2) for v in out["prices"][0]],
    }


def write_outputs(version: str, params: dict | None = None) -> dict:
    """Publish the backtest of ``version`` to the predictions table and its run record to
    prediction_metrics (both replace the rows of ``version`` if it was published before)."""
    from models.registry import Registry

    ctx = resolve(params)
    registry = Registry(ctx.settings)
    if not registry.exists(version, "metrics.json"):
        _evaluate(ctx, registry, version)
    metrics = registry.read_json(version, "metrics.json")
    training = registry.read_json(version, "training.json")
    decision = registry.read_json(version, "decision.json") if registry.exists(version, "decision.json") else {}
    keys = datasets.TABLES[datasets.PREDICTIONS].keys
    pred_version = lake.write_table(
        datasets.PREDICTIONS, registry.read_frame(version, "backtest.parquet"), ctx.settings, replace_on=keys
    )
    o = metrics["overall"]
    skills = _skills(metrics)
    record = {
        "model_version": version,
        "symbol": training["symbol"],
        "trained_at": training.get("saved_at"),
        "data_start": training["data_start"],
        "data_end": training["data_end"],
        "train_rows_end": training["train_rows_end"],
        "test_from": training["test_from"],
        "test_windows": metrics["n_windows"],
        "epochs_run": training["epochs_run"],
        "train_seconds": training["train_seconds"],
        "code_version": training.get("code_version"),
        "data_table_version": training.get("data_table_version"),
        **{k: o.get(k) for k in sorted(o) if k != "horizon"},
        # every horizon column in every record (null beyond the model's horizon): one table schema
        **{f"skill_h{h}": skills.get(f"h{h}") for h in SKILL_HORIZONS},
        "decision": decision.get("status", "undecided"),
        "decision_reason": decision.get("reason"),
        "forced": decision.get("forced", False),
    }
    metrics_version = lake.write_table(
        datasets.PREDICTION_METRICS,
        _metrics_frame(record),
        ctx.settings,
        replace_on=datasets.TABLES[datasets.PREDICTION_METRICS].keys,
    )
    pred_uri = lake.table_uri(datasets.PREDICTIONS, ctx.settings)
    metrics_uri = lake.table_uri(datasets.PREDICTION_METRICS, ctx.settings)
    log.info("outputs of %s: %s version %d, %s version %d", version, pred_uri, pred_version, metrics_uri, metrics_version)
    return {
        "version": version,
        "predictions_uri": pred_uri,
        "predictions_table_version": pred_version,
        "prediction_metrics_uri": metrics_uri,
        "prediction_metrics_table_version": metrics_version,
    }


#: prediction_metrics columns that are not floats (every metric is float64, even when null)
_METRICS_TEXT = ("model_version", "symbol", "trained_at", "data_start", "data_end", "train_rows_end", "test_from",
                 "code_version", "decision", "decision_reason")
_METRICS_INT = ("test_windows", "epochs_run", "data_table_version")


def _metrics_frame(record: dict) -> pd.DataFrame:
    """The run record as one typed row (a null metric stays a null double, never an untyped column)."""
    columns = {}
    for name, value in record.items():
        if name in _METRICS_TEXT:
            columns[name] = pd.Series([value], dtype="string")
        elif name in _METRICS_INT:
            columns[name] = pd.Series([value], dtype="Int64")
        elif name == "forced":
            columns[name] = pd.Series([bool(value)], dtype="bool")
        else:
            columns[name] = pd.Series([value], dtype="float64")
    return pd.DataFrame(columns)


# ---- offline evaluation (CLI evaluate, benchmark) --------------------------------------------
def evaluate_offline(
    data: str,
    test_from: str | None = None,
    config: ModelConfig | None = None,
    symbol: str | None = None,
    settings: Settings | None = None,
    as_of_version: int | None = None,
) -> dict:
    """Train on the data before ``test_from`` (default: the last 6 months) and evaluate after it.

    ``data`` is a candle CSV or an hourly_metrics Delta table (read at ``as_of_version`` if
    given). Nothing is written to the registry. Returns metrics, the formatted table and timings.
    """
    import time

    from models.evaluate import evaluate_forecasts, format_table
    from models.train import backtest, train

    s = settings or get_settings()
    cfg = config or ModelConfig()
    started = time.perf_counter()
    loaded = load_series(data, (symbol or s.binance_symbols[0]).upper(), version=as_of_version)
    frame = loaded.frame
    load_seconds = time.perf_counter() - started
    if frame.empty:
        raise InsufficientHistoryError(1, 0, detail=f"no rows in {data}")
    if test_from:
        start = pd.Timestamp(test_from)
        start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    else:
        start = (frame["hour_start"].iloc[-1] + HOUR) - pd.DateOffset(months=6)
    check_history(frame, cfg, start)
    forecaster, split, info = train(frame, cfg, start, threads=s.model_tf_threads)
    bt = backtest(forecaster, frame, split.test)
    metrics = evaluate_forecasts(bt["actual"], bt["last_close"], bt["forecasts"], bt["low"], bt["high"])
    summary = split.summary(frame)
    title = (
        f"{data}: trained on {info['data_start']} .. {info['train_rows_end']} "
        f"({summary['fit_windows']} fit + {summary['val_windows']} val windows, {info['epochs_run']} epochs, "
        f"{info['train_seconds']:.1f} s); test origins {summary['test_origins'][0]} .. {summary['test_origins'][1]}; "
        f"{summary['windows_skipped_gap']} windows skipped across gaps"
    )
    return {
        "metrics": metrics,
        "skill": _skills(metrics),
        "table": format_table(metrics, title=title),
        "train_seconds": info["train_seconds"],
        "predict_seconds": bt["predict_seconds"],
        "predict_ms_per_window": 1000.0 * bt["predict_seconds"] / max(len(split.test), 1),
        "load_seconds": load_seconds,
        "epochs_run": info["epochs_run"],
        "split": summary,
        "data": describe(frame),
        "data_origin": loaded.origin,
        "data_table_version": loaded.table_version,
    }
