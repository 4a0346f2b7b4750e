"""Task functions of the ``btc_retrain`` DAG (and the CLI): JSON in, JSON out, idempotent by version.

Order: ``check_sufficiency`` -> ``train_candidate`` (when ``retrain_needed``) ->
``evaluate_candidate`` -> ``decide_promotion`` -> ``predict_future`` -> ``write_outputs`` ->
``headline_metrics``. Each call can be repeated: a version is derived from the data (range, rows,
hourly_metrics table version) and the hyperparameters, and work already stored for that version
is reused instead of redone.

Data: hourly_metrics is a Delta table read with delta-rs (``models.data.read_hourly_metrics``:
one symbol, the columns used, filters pushed down), at most once per task (a task's
:class:`Context` keeps what it read). A model records the table version it was trained on
(``data_table_version`` in training.json); its evaluation re-reads exactly that version (time
travel), and ``as_of_version`` trains on a past version again.

``params`` keys (all optional): ``epochs``, ``lookback`` (12), ``horizon`` (24), ``test_hours``
(length of the test window, the latest hours; default 672 = 4 weeks), ``force_promotion``
(False), ``min_promotion_windows`` (504 test windows before a promotion), ``dm_alpha`` (0.05:
one-sided Diebold-Mariano level), ``min_retrain_hours`` (0: retrain whenever the table
changed), ``data_uri`` (default ``hourly_metrics`` under the storage root; a candle CSV also
works), ``symbol`` (default first of ``settings.binance_symbols``), ``promotion_policy`` (default
``settings.model_promotion_policy``), ``min_train_windows``, ``batch_size``, ``seed``,
``lstm_units`` (two ints; tests use tiny models), ``as_of_version`` (read hourly_metrics at this
Delta version instead of the current one: reproduces a past training run).

Outputs under the storage root: ``models/<version>/`` (registry files) and three Delta tables
written with delta-rs (``btc_platform.lakehouse.lake.write_table``), where a repeat replaces the rows of
the same key instead of adding copies: ``predictions`` (backtest forecasts with actuals, errors,
the LSTM band and the baseline bands; key ``model_version``), ``prediction_metrics`` (one record
per model version) and ``future_predictions`` (next ``horizon`` hours: champion point and best
band, naming both and why (``choose_served``); key symbol + model_version + origin_hour_start).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from btc_platform.lakehouse import datasets, lake
from btc_platform.settings import Settings, get_settings
from models.config import ModelConfig
from models.data import (
    HOUR,
    DataError,
    HistoryNotFoundError,
    HourlyData,
    InsufficientHistoryError,
    VersionGoneDataError,
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
    "choose_served",
    "retrain_needed",
    "write_outputs",
    "evaluate_offline",
]

#: four weeks of hourly forecast origins: enough windows to tell a real difference from noise
DEFAULT_TEST_HOURS = 672
#: promotion needs at least this many test windows (three weeks of origins) ...
DEFAULT_MIN_PROMOTION_WINDOWS = 504
#: ... and a one-sided Diebold-Mariano p-value below this
DEFAULT_DM_ALPHA = 0.05
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
    min_promotion_windows: int = DEFAULT_MIN_PROMOTION_WINDOWS
    dm_alpha: float = DEFAULT_DM_ALPHA
    #: retrain only when the newest model's data ends at least this many hours before the data
    min_retrain_hours: int = 0
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
        min_promotion_windows=int(p.get("min_promotion_windows") or DEFAULT_MIN_PROMOTION_WINDOWS),
        dm_alpha=float(p.get("dm_alpha") or DEFAULT_DM_ALPHA),
        min_retrain_hours=int(p.get("min_retrain_hours") or 0),
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
        try:
            ctx.loaded[key] = load_series(key[0], key[1], version=version, until=until)
        except VersionGoneDataError:
            kept = _training_snapshot(ctx, *key)
            if kept is None:
                raise
            ctx.loaded[key] = kept
    return ctx.loaded[key]


#: The rows a model was trained on, kept with the model: its table version stays readable after
#: VACUUM and log clean-up removed that version from the table.
TRAINING_SNAPSHOT = "training_data.parquet"


def _training_snapshot(ctx: Context, uri: str, symbol: str, version: int | None, until) -> HourlyData | None:
    """The series of ``uri``/``symbol`` at table ``version`` from the snapshot of a registered model
    trained on that version (None if no model kept one)."""
    from models.registry import Registry

    registry = Registry(ctx.settings)
    for model in registry.versions():
        if not registry.exists(model, TRAINING_SNAPSHOT):
            continue
        trained = registry.trained_on(model)
        if (trained["data_uri"], trained["symbol"], trained["data_table_version"]) != (uri, symbol, version):
            continue
        frame = registry.read_frame(model, TRAINING_SNAPSHOT)
        if until is not None:
            frame = frame[frame["hour_start"] <= until].reset_index(drop=True)
        log.warning("%s version %s is gone from the table: read the snapshot kept with model %s", uri, version, model)
        return HourlyData(frame, f"{uri}@v{version} (snapshot of model {model})", version)
    return None


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
    from btc_platform.lakehouse import lake
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
    if data.table_version is not None:  # a table version: keep the rows, VACUUM will not keep them for ever
        registry.write_frame(version, TRAINING_SNAPSHOT, frame)
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
    from models.evaluate import evaluate_forecasts, format_band_table, format_table

    if registry.exists(version, "metrics.json"):
        metrics = registry.read_json(version, "metrics.json")
    else:
        forecaster, _frame, _split, bt, training = _backtest_version(registry, version, ctx)
        metrics = evaluate_forecasts(bt["actual"], bt["last_close"], bt["forecasts"], bt["low"], bt["high"],
                                     bands=bt["bands"], level=forecaster.config.interval_level)
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
    table += "\n" + format_band_table(metrics)
    log.info("evaluation of %s:\n%s", version, table)
    return {"version": version, "overall": metrics["overall"], "skill": _skills(metrics), "table": table}


def _skills(metrics: dict) -> dict:
    rows = {r["horizon"]: r for r in metrics["per_horizon"]}
    out = {f"h{h}": rows[h].get("model_skill") for h in SKILL_HORIZONS if h in rows}
    o = metrics["overall"]
    out["overall"] = o.get("model_skill")
    out["interval_coverage"] = o.get("interval_coverage")
    best = o.get("band_best")
    if best:
        out["band_best"] = best
        out["band_coverage"] = o.get(f"band_{best}_coverage")
        for h in SKILL_HORIZONS:
            if h in rows:
                out[f"band_coverage_h{h}"] = rows[h].get(f"band_{best}_coverage")
        for other in ("constant", "ewma"):
            out[f"band_winkler_skill_vs_{other}"] = 0.0 if best == other else o.get(f"band_{best}_winkler_skill_vs_{other}")
    out["dm_p_model_better"] = o.get("dm_p_model_better")
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
            **{f"{side}_{name}": bound.ravel() for name, (lo, hi) in bt["bands"].items() if name != "lstm"
               for side, bound in (("lower", lo), ("upper", hi))},
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
    n_windows: int | None = None,
    min_windows: int = 0,
    dm_p: float | None = None,
    dm_alpha: float = 1.0,
) -> tuple[str, str, bool]:
    """(status, reason, forced): "promoted" only if the candidate's RMSE is strictly below
    persistence, on at least ``min_windows`` test windows, with a one-sided Diebold-Mariano
    p-value ``dm_p`` below ``dm_alpha`` (a smaller difference is noise, not a win), and (when
    ``current_rmse`` is given) below the current model on the same windows; otherwise "rejected"
    with every reason, unless ``force`` (then promoted, forced=True)."""
    against = []
    if not candidate_rmse < persistence_rmse:
        against.append(f"RMSE {candidate_rmse:.2f} is not below persistence {persistence_rmse:.2f}")
    if n_windows is not None and n_windows < min_windows:
        against.append(f"only {n_windows} test windows, promotion needs {min_windows}")
    if dm_p is not None and not dm_p < dm_alpha:
        against.append(f"difference to persistence is within noise (Diebold-Mariano p {dm_p:.3f} >= {dm_alpha})")
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
    metrics = registry.read_json(version, "metrics.json")
    overall = metrics["overall"]
    current = registry.current_version()
    checks: dict = {"candidate_rmse": overall["model_rmse"], "persistence_rmse": overall["persistence_rmse"],
                    "current_version": current, "test_windows": metrics["n_windows"],
                    "dm_p_model_better": overall.get("dm_p_model_better")}
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
        n_windows=metrics["n_windows"],
        min_windows=ctx.min_promotion_windows,
        dm_p=overall.get("dm_p_model_better"),
        dm_alpha=ctx.dm_alpha,
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


def latest_version(registry) -> str | None:
    """The newest complete model version that has been evaluated (versions start with their data end)."""
    evaluated = [v for v in registry.versions() if registry.exists(v, "metrics.json")]
    if not evaluated:
        return None
    end = max(v.split("-")[0] for v in evaluated)  # several models on the same data: the last saved
    same = [v for v in evaluated if v.split("-")[0] == end]
    return max(same, key=lambda v: (registry.read_json(v, "training.json").get("saved_at") or "", v))


def choose_served(registry) -> dict:
    """Which point and band model serve the forecast, and why.

    Point: the ``current`` LSTM (promoted because it beat persistence beyond noise, or forced),
    else persistence. Band: the model with the lowest interval score on the test window of the
    newest evaluated version (its LSTM band or one of its fitted baselines). Raises
    ModelNotFoundError when no version was ever evaluated.
    """
    from models.registry import ModelNotFoundError

    ref = latest_version(registry)
    if ref is None:
        raise ModelNotFoundError("no evaluated model version yet: run btc_retrain first")
    current = registry.current()
    if current is not None:
        point, point_version = "lstm", current["version"]
        point_reason = f"LSTM {current['version']} is the current model: {current['reason']}"
    else:
        point, point_version = "persistence", None
        decision = registry.read_json(ref, "decision.json") if registry.exists(ref, "decision.json") else {}
        point_reason = "persistence: no LSTM has beaten it" + (
            f" (latest candidate {ref}: {decision['reason']})" if decision.get("reason") else "")
    overall = registry.read_json(ref, "metrics.json")["overall"]
    band = overall.get("band_best") or "lstm"
    if overall.get(f"band_{band}_winkler") is not None:
        others = ", ".join(
            f"{k[len('band_'):-len('_winkler')]} {v:.1f}" for k, v in overall.items()
            if k.startswith("band_") and k.endswith("_winkler") and v is not None)
        band_reason = f"lowest interval score on the test window of {ref} ({others})"
    else:
        band_reason = f"model {ref} was evaluated before band baselines existed: its own interval"
    return {"reference_version": ref, "point_model": point, "point_version": point_version,
            "point_reason": point_reason, "band_model": band, "band_reason": band_reason}


def predict_future(params: dict | None = None) -> dict:
    """Forecast the next ``horizon`` hours from the latest data: the champion point model and
    the best band (``choose_served``), written to future_predictions.

    Returns status "skipped" with the reason, and writes nothing, when no model was evaluated
    yet or the latest hours are too few or contain a gap (nothing is invented). A repeat for the
    same symbol, model version and last observed hour replaces those rows, never duplicates them.
    """
    from models.registry import ModelNotFoundError, Registry, utcnow_iso

    ctx = resolve(params)
    registry = Registry(ctx.settings)
    try:
        served = choose_served(registry)
    except ModelNotFoundError as exc:
        log.warning("future predictions skipped: %s", exc)
        return {"status": "skipped", "reason": str(exc)}
    ref = served["reference_version"]
    forecaster = registry.load_forecaster(ref)
    cfg = forecaster.config
    try:
        data = _load(ctx, version=ctx.as_of_version)
    except HistoryNotFoundError as exc:
        log.warning("future predictions skipped: %s", exc)
        return {"status": "skipped", "reason": str(exc)}
    frame = data.frame
    need = cfg.lookback + 1
    reason = None
    if len(frame) < need:
        reason = f"{len(frame)} hours of {ctx.symbol} history, the forecast needs the latest {need} consecutive hours"
    elif segment_ids(frame["hour_start"])[-need] != segment_ids(frame["hour_start"])[-1]:
        reason = (f"the latest {need} hours up to {frame['hour_start'].iloc[-1].isoformat()} contain a gap; "
                  "consolidate or backfill the missing hours first")
    if reason:
        log.warning("future predictions skipped: %s", reason)
        return {"status": "skipped", "reason": reason}
    from models.features import build_features

    feats = build_features(frame)
    close = frame["close"].to_numpy(dtype=np.float64)
    origin = np.array([len(frame) - 1])
    out = forecaster.forecast(feats, close, origin)
    if served["point_model"] == "lstm":
        lstm = forecaster if served["point_version"] == ref else registry.load_forecaster(served["point_version"])
        point = (out if lstm is forecaster else lstm.forecast(feats, close, origin))["prices"][0]
    else:
        point = np.full(cfg.horizon, close[-1])
    low, high = out["bands"][served["band_model"]]
    origin_time = frame["hour_start"].iloc[-1]
    steps = np.arange(1, cfg.horizon + 1)
    issue_time = pd.Timestamp(utcnow_iso())
    result = pd.DataFrame(
        {
            "symbol": ctx.symbol,
            "model_version": ref,
            "issue_time": issue_time,
            "origin_hour_start": origin_time,
            "last_close": float(close[-1]),
            "horizon": steps.astype("int32"),
            "target_hour_start": origin_time + pd.to_timedelta(steps, unit="h"),  # close of this hour
            "predicted_close": point[: cfg.horizon],
            "lower": low[0],
            "upper": high[0],
            "interval_level": cfg.interval_level,
            "point_model": served["point_model"],  # lstm | persistence
            "point_model_version": pd.array([served["point_version"]] * len(steps), dtype="string"),
            "point_reason": served["point_reason"],
            "band_model": served["band_model"],  # lstm | constant | ewma | garch
            "band_reason": served["band_reason"],
            "data_table_version": pd.array([data.table_version] * len(steps), dtype="Int64"),
            "date": f"{origin_time:%Y-%m-%d}",  # of the origin hour, for filters
            "hour": np.full(len(steps), origin_time.hour, dtype=np.int32),
        }
    )
    # add_columns: tables written before point_model/band_model... existed gain them (old rows null)
    table_version = lake.write_table(datasets.FUTURE_PREDICTIONS, result, ctx.settings, replace_on=FUTURE_KEYS,
                                     add_columns=True)
    uri = lake.table_uri(datasets.FUTURE_PREDICTIONS, ctx.settings)
    log.info("future predictions from %s (point %s, band %s) written to %s (version %d): %s; %s", origin_time,
             served["point_model"], served["band_model"], uri, table_version, served["point_reason"],
             served["band_reason"])
    return {
        "status": "written",
        "model_version": ref,
        **{k: served[k] for k in ("point_model", "point_version", "band_model", "point_reason", "band_reason")},
        "origin_hour_start": origin_time.isoformat(),
        "uri": uri,
        "table_version": table_version,
        "predicted_close": [round(float(v), 2) for v in point],
    }


def retrain_needed(params: dict | None, table_version: int | None, data_end: str) -> tuple[bool, str]:
    """Should a new candidate be trained on hourly_metrics at ``table_version`` (data up to
    ``data_end``)? No when the newest model was trained on that table version already, or (with
    ``min_retrain_hours``) on data ending less than that many hours before ``data_end``."""
    from models.registry import Registry

    ctx = resolve(params)
    if ctx.as_of_version is not None or ctx.force:
        return True, "explicit as_of_version or force_promotion"
    registry = Registry(ctx.settings)
    versions = [v for v in registry.versions() if registry.exists(v, "training.json")]
    if not versions:
        return True, "no model trained yet"
    newest = max(versions)
    trained = registry.trained_on(newest)
    if trained["data_uri"] == ctx.data_uri and table_version is not None \
            and trained["data_table_version"] == table_version:
        return False, (f"nothing changed: model {newest} was trained on hourly_metrics version {table_version}, "
                       "the current one")
    age = (pd.Timestamp(data_end) - pd.Timestamp(trained["data_end"])) / HOUR
    if age < ctx.min_retrain_hours:
        return False, (f"model {newest} was trained on data up to {trained['data_end']}, {age:.0f} h before the "
                       f"latest hour (< min_retrain_hours {ctx.min_retrain_hours}); the forecast is refreshed only")
    return True, f"new data since model {newest} (table version {trained['data_table_version']} -> {table_version})"


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
        datasets.PREDICTIONS, registry.read_frame(version, "backtest.parquet"), ctx.settings, replace_on=keys,
        add_columns=True,
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
        **{f"band_coverage_h{h}": skills.get(f"band_coverage_h{h}") for h in SKILL_HORIZONS},
        "decision": decision.get("status", "undecided"),
        "decision_reason": decision.get("reason"),
        "forced": decision.get("forced", False),
    }
    metrics_version = lake.write_table(
        datasets.PREDICTION_METRICS,
        _metrics_frame(record),
        ctx.settings,
        replace_on=datasets.TABLES[datasets.PREDICTION_METRICS].keys,
        add_columns=True,
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
                 "code_version", "decision", "decision_reason", "band_best")
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
    retrain_every: str | int | None = None,
) -> dict:
    """Train on the data before ``test_from`` (default: the last 6 months) and evaluate after it;
    with ``retrain_every`` (e.g. "30d") a rolling-origin backtest refitting every that often.

    ``data`` is a candle CSV or an hourly_metrics Delta table (read at ``as_of_version`` if
    given). Nothing is written to the registry. Returns metrics, the formatted table and timings.
    """
    import time

    from models.evaluate import evaluate_forecasts, format_band_table, format_table
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
    if retrain_every:
        return _evaluate_rolling(frame, loaded, data, cfg, start, retrain_every, s, load_seconds)
    forecaster, split, info = train(frame, cfg, start, threads=s.model_tf_threads)
    bt = backtest(forecaster, frame, split.test)
    metrics = evaluate_forecasts(bt["actual"], bt["last_close"], bt["forecasts"], bt["low"], bt["high"],
                                 bands=bt["bands"], level=cfg.interval_level)
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
        "served_point": served_point(metrics),
        "table": format_table(metrics, title=title) + "\n" + format_band_table(metrics),
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


def served_point(metrics: dict, min_windows: int = DEFAULT_MIN_PROMOTION_WINDOWS,
                 dm_alpha: float = DEFAULT_DM_ALPHA) -> dict:
    """Which point model the promotion rule would serve on these metrics (lstm or persistence),
    and its skill per horizon (0 for persistence, by construction)."""
    o = metrics["overall"]
    status, reason, _ = promotion_rule(o["model_rmse"], o["persistence_rmse"], n_windows=metrics["n_windows"],
                                       min_windows=min_windows, dm_p=o.get("dm_p_model_better"), dm_alpha=dm_alpha)
    model = "lstm" if status == "promoted" else "persistence"
    rows = {r["horizon"]: r for r in metrics["per_horizon"]}
    skill = {f"h{h}": (rows[h]["model_skill"] if model == "lstm" else 0.0) for h in SKILL_HORIZONS if h in rows}
    return {"model": model, "reason": reason, "skill": skill}


def _evaluate_rolling(frame, loaded, data: str, cfg: ModelConfig, start, retrain_every, s: Settings,
                      load_seconds: float) -> dict:
    from models.backtest import parse_every, rolling_backtest
    from models.evaluate import evaluate_forecasts, format_band_table, format_table

    every = parse_every(retrain_every)
    bt = rolling_backtest(frame, cfg, start, every, threads=s.model_tf_threads)
    metrics = evaluate_forecasts(bt["actual"], bt["last_close"], bt["forecasts"], bt["low"], bt["high"],
                                 bands=bt["bands"], level=cfg.interval_level)
    refits = bt["refits"]
    origins = pd.to_datetime(bt["origin_time"], utc=True)
    title = (f"{data}: rolling-origin backtest, {len(refits)} refits every {every} h from {start.isoformat()}; "
             f"test origins {origins.min().isoformat()} .. {origins.max().isoformat()}; {bt['seconds']:.1f} s")
    lines = [f"  refit {r['refit']}: block from {r['block_start']}, {r['windows']} windows, trained on rows up to "
             f"{r['train_rows_end']} ({r['epochs_run']} epochs, {r['train_seconds']:.1f} s)" for r in refits]
    return {
        "metrics": metrics,
        "skill": _skills(metrics),
        "served_point": served_point(metrics),
        "table": "\n".join([format_table(metrics, title=title), format_band_table(metrics), "refits:", *lines]),
        "refits": refits,
        "backtest_seconds": bt["seconds"],
        "train_seconds": sum(r["train_seconds"] for r in refits),
        "predict_seconds": None,
        "predict_ms_per_window": None,
        "load_seconds": load_seconds,
        "epochs_run": sum(r["epochs_run"] for r in refits),
        "data": describe(frame),
        "data_origin": loaded.origin,
        "data_table_version": loaded.table_version,
    }


def headline_metrics(version: str, params: dict | None = None) -> dict:
    """The run's headline (JSON, small): LSTM skill per horizon, the served point and band
    models, band coverage and interval-score skill, the promotion decision. Published as XCom and
    as the asset event's extra by the DAG."""
    from models.registry import Registry

    ctx = resolve(params)
    registry = Registry(ctx.settings)
    if not registry.exists(version, "metrics.json"):
        _evaluate(ctx, registry, version)
    metrics = registry.read_json(version, "metrics.json")
    decision = registry.read_json(version, "decision.json") if registry.exists(version, "decision.json") else {}
    served = choose_served(registry)

    def rnd(value):
        return None if value is None else round(float(value), 4)

    skills = _skills(metrics)
    return {
        "model_version": version,
        "decision": decision.get("status", "undecided"),
        "decision_reason": decision.get("reason"),
        "test_windows": metrics["n_windows"],
        **{f"lstm_skill_h{h}": rnd(skills.get(f"h{h}")) for h in SKILL_HORIZONS},
        "lstm_skill": rnd(skills.get("overall")),
        "dm_p_model_better": rnd(skills.get("dm_p_model_better")),
        "served_point_model": served["point_model"],
        "served_band_model": served["band_model"],
        "band_coverage": rnd(skills.get("band_coverage")),
        **{f"band_coverage_h{h}": rnd(skills.get(f"band_coverage_h{h}")) for h in SKILL_HORIZONS},
        "band_winkler_skill_vs_constant": rnd(skills.get("band_winkler_skill_vs_constant")),
        "band_winkler_skill_vs_ewma": rnd(skills.get("band_winkler_skill_vs_ewma")),
    }
