"""Task functions of the ``btc_retrain`` DAG (and the CLI), per symbol: JSON in, JSON out,
idempotent by version.

Order: ``check_sufficiency`` -> ``train_candidate`` (when ``retrain_needed``) ->
``evaluate_candidate`` -> ``models.promotion.decide_promotion`` -> ``models.serving.predict_future``
-> ``write_outputs`` -> ``headline_metrics``. Each call can be repeated: a version is derived from
the data (range, rows, hourly_metrics table version) and the hyperparameters, and work already
stored for that version is reused instead of redone.

``params`` is a flat dict (the DAG's Params, the CLI's arguments) or a
``models.config.RetrainParams``, which documents every key and holds its default. A model records
the table version it was trained on (``data_table_version`` in training.json); its evaluation
re-reads exactly that version (time travel), and ``as_of_version`` trains on a past version again.

Outputs under the storage root: ``models/<SYMBOL>/<version>/`` (the registry,
``btc_platform.lakehouse.model_registry``) and three Delta tables written with delta-rs
(``btc_platform.lakehouse.lake.write_table``), where a repeat replaces the rows of the same key
instead of adding copies: ``predictions`` (backtest forecasts with actuals, errors, the LSTM band
and the baseline bands; key ``model_version``), ``prediction_metrics`` (one record per model
version) and ``future_predictions`` (``models.serving``).
"""

from __future__ import annotations

import logging

import pandas as pd

from btc_platform.lakehouse import datasets, lake
from btc_platform.lakehouse.model_registry import BACKTEST, DECISION, TRAINING
from models.candidate import SKILL_HORIZONS, evaluate_version, skills, stored_metrics
from models.config import RetrainParams
from models.context import TRAINING_SNAPSHOT, check_history, first_test_origin, make_version, resolve
from models.data import HOUR, HistoryNotFoundError, InsufficientHistoryError, describe
from models.features import hours_needed, split_windows
from models.serving import choose_served
from models.train import train

log = logging.getLogger(__name__)

Params = dict | RetrainParams | None


def check_sufficiency(params: Params = None) -> dict:
    """Is there enough history for ``params``? Raises InsufficientHistoryError naming needed vs found."""
    ctx = resolve(params)
    lake.check_layout(ctx.settings)  # a storage root of the Parquet layout is refused, with the command
    needed = hours_needed(ctx.config, ctx.params.test_hours)
    try:
        data = ctx.load(version=ctx.params.as_of_version)
    except HistoryNotFoundError as exc:
        raise InsufficientHistoryError(needed, 0, detail=str(exc)) from exc
    frame = data.frame
    info = describe(frame)
    if info["hours"] < needed:
        raise InsufficientHistoryError(needed, info["hours"], detail=f"{ctx.symbol} in {ctx.data_uri}")
    start = first_test_origin(frame, ctx.params.test_hours)
    check_history(frame, ctx.config, start)
    split = split_windows(frame, ctx.config, start)  # raises with window counts if gaps eat history
    result = {
        **info,
        "hours_needed": needed,
        "data_uri": ctx.data_uri,
        "symbol": ctx.symbol,
        "table_version": data.table_version,
        **split.summary(frame),
    }
    log.info("history of %s sufficient: %d hours found, %d needed (%d gaps)", ctx.symbol, info["hours"], needed,
             info["gaps"])
    return result


def train_candidate(params: Params = None) -> dict:
    """Train a candidate on all data before the latest test window; save it in the registry."""
    ctx = resolve(params)
    data = ctx.load(version=ctx.params.as_of_version)
    frame = data.frame
    if frame.empty:
        raise InsufficientHistoryError(1, 0, detail=f"no rows for {ctx.symbol} in {data.origin}")
    version = make_version(ctx, data)
    registry = ctx.registry()
    if registry.exists(version):
        training = registry.read_json(version, TRAINING)
        log.info("candidate %s already trained (%s): reusing it", version, registry.uri(version))
        return {"version": version, "uri": registry.uri(version), "reused": True, **_training_summary(training)}
    start = first_test_origin(frame, ctx.params.test_hours)
    check_history(frame, ctx.config, start)
    forecaster, _split, info = train(frame, ctx.config, start, threads=ctx.settings.model_tf_threads)
    training = {
        **info,
        "version": version,
        "data_uri": ctx.data_uri,
        "data_table_version": data.table_version,  # None for a candle CSV
        "symbol": ctx.symbol,
        "data_end": frame["hour_start"].iloc[-1].isoformat(),
        "data": describe(frame),
        "test_hours": ctx.params.test_hours,
        "test_from": start.isoformat(),
    }
    if data.table_version is not None:  # a table version: keep the rows, VACUUM will not keep them for ever
        registry.write_frame(version, TRAINING_SNAPSHOT, frame)
    registry.save_forecaster(version, forecaster, training)
    return {"version": version, "uri": registry.uri(version), "reused": False, **_training_summary(training)}


def _training_summary(training: dict) -> dict:
    keys = ("data_start", "data_end", "train_rows_end", "test_from", "epochs_run", "best_epoch", "train_seconds",
            "data_table_version")
    return {k: training.get(k) for k in keys}


def evaluate_candidate(version: str, params: Params = None) -> dict:
    """Metrics of ``version`` on its test window next to persistence and drift (+ table string)."""
    ctx = resolve(params)
    return evaluate_version(ctx, ctx.registry(), version)


def retrain_needed(params: Params, table_version: int | None, data_end: str) -> tuple[bool, str]:
    """Should a new candidate be trained on hourly_metrics at ``table_version`` (data up to
    ``data_end``)? No when the newest model was trained on that table version already, or on data
    ending less than ``min_retrain_hours`` hours before ``data_end``."""
    ctx = resolve(params)
    if ctx.params.as_of_version is not None or ctx.params.force_promotion:
        return True, "explicit as_of_version or force_promotion"
    registry = ctx.registry()
    versions = [v for v in registry.versions() if registry.exists(v, TRAINING)]
    if not versions:
        return True, f"no model of {ctx.symbol} trained yet"
    newest = max(versions)
    trained = registry.trained_on(newest)
    if trained["data_uri"] == ctx.data_uri and table_version is not None \
            and trained["data_table_version"] == table_version:
        return False, (f"nothing changed: model {newest} was trained on hourly_metrics version {table_version}, "
                       "the current one")
    age = (pd.Timestamp(data_end) - pd.Timestamp(trained["data_end"])) / HOUR
    if age < ctx.params.min_retrain_hours:
        return False, (f"model {newest} was trained on data up to {trained['data_end']}, {age:.0f} h before the "
                       f"latest hour (< min_retrain_hours {ctx.params.min_retrain_hours}); the forecast is "
                       "refreshed only")
    return True, f"new data since model {newest} (table version {trained['data_table_version']} -> {table_version})"


def write_outputs(version: str, params: Params = None) -> dict:
    """Publish the backtest of ``version`` to the predictions table and its run record to
    prediction_metrics (both replace the rows of ``version`` if it was published before)."""
    ctx = resolve(params)
    registry = ctx.registry()
    metrics = stored_metrics(ctx, registry, version)
    training = registry.read_json(version, TRAINING)
    decision = registry.read_json_or_none(version, DECISION) or {}
    backtest = registry.read_frame(version, BACKTEST)
    if "symbol" not in backtest.columns:  # stored before the predictions table had a symbol
        backtest.insert(1, "symbol", training["symbol"])
    pred_version = lake.write_table(datasets.PREDICTIONS, backtest, ctx.settings,
                                    replace_on=datasets.TABLES[datasets.PREDICTIONS].keys, add_columns=True)
    o = metrics["overall"]
    sk = skills(metrics)
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
        **{f"skill_h{h}": sk.get(f"h{h}") for h in SKILL_HORIZONS},
        **{f"band_coverage_h{h}": sk.get(f"band_coverage_h{h}") for h in SKILL_HORIZONS},
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


def headline_metrics(version: str, params: Params = None) -> dict:
    """The run's headline (JSON, small): LSTM skill per horizon, the served point and band
    models, band coverage and interval-score skill, the promotion decision. Published as XCom and
    as the asset event's extra by the DAG."""
    ctx = resolve(params)
    registry = ctx.registry()
    metrics = stored_metrics(ctx, registry, version)
    decision = registry.read_json_or_none(version, DECISION) or {}
    served = choose_served(registry)

    def rnd(value):
        return None if value is None else round(float(value), 4)

    sk = skills(metrics)
    return {
        "symbol": ctx.symbol,
        "model_version": version,
        "decision": decision.get("status", "undecided"),
        "decision_reason": decision.get("reason"),
        "test_windows": metrics["n_windows"],
        **{f"lstm_skill_h{h}": rnd(sk.get(f"h{h}")) for h in SKILL_HORIZONS},
        "lstm_skill": rnd(sk.get("overall")),
        "dm_p_model_better": rnd(sk.get("dm_p_model_better")),
        "served_point_model": served["point_model"],
        "served_band_model": served["band_model"],
        "band_coverage": rnd(sk.get("band_coverage")),
        **{f"band_coverage_h{h}": rnd(sk.get(f"band_coverage_h{h}")) for h in SKILL_HORIZONS},
        "band_winkler_skill_vs_constant": rnd(sk.get("band_winkler_skill_vs_constant")),
        "band_winkler_skill_vs_ewma": rnd(sk.get("band_winkler_skill_vs_ewma")),
    }
