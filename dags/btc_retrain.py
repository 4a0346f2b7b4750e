"""
### btc_retrain

Retrains the quantile LSTM that forecasts hourly closes from `hourly_metrics`, and serves the
next `horizon` hours, for **every symbol of `BTC_BINANCE_SYMBOLS`**: the task group `forecast`
is mapped over the symbols (one map index per symbol, named after it), each with its own model,
registry (`models/<SYMBOL>/`), promotion decision and served forecast. A symbol that fails or
lacks history fails or skips only its own tasks, saying why; the others go on. Scheduled daily
(`BTC_RETRAIN_SCHEDULE`) **and** on every update of the `hourly_metrics` asset (new consolidated
or backfilled hours); also on demand (**Trigger DAG w/ config**). A run that has nothing to do
is *skipped* with its reason, never failed.

1. **check_sufficiency** - enough hourly history for lookback + test window? If not, the task
   is skipped (a fresh install shows no red run) with the hours needed vs found: run
   **btc_backfill** first. Returns the `hourly_metrics` Delta table version it read.
2. **train** - trains a candidate on exactly that table version, unless nothing changed since
   the newest model's `data_table_version`, or (asset/scheduled runs) the newest model's data
   ends less than `min_retrain_hours` before the latest hour: then skipped with the reason, and
   only the forecast is refreshed. Manual runs retrain whenever the data changed.
3. **evaluate** - the candidate, persistence, drift and the 80 % bands (LSTM quantiles,
   constant, EWMA, GARCH) on the test window; the task log shows both tables.
4. **promote_or_keep** - promotes the candidate only if it beats persistence (and the current
   model) on at least `min_promotion_windows` windows with a Diebold-Mariano p-value < 0.05,
   or `force_promotion`; the decision and its reason are logged.
5. **predict_next_24h** - runs after every run that did not fail, also when training was
   skipped for short history: the champion point forecast (current LSTM, else persistence)
   with the best band the history allows, each row naming both and why.
6. **score_forecasts** - joins past forecasts with the closes that arrived
   (`forecast_actuals`: errors and band hits per model version).
7. **write_outputs** - the prediction_metrics and predictions Delta tables.
8. **publish_metrics** - headline metrics (skill per horizon, band coverage, interval-score
   skill, decision) as XCom and as the `extra` of the `prediction_metrics` asset event.

Params (defaults from `models.config.RetrainParams`): `epochs`, `lookback`, `horizon`,
`test_hours` (test window, default 4 weeks), `force_promotion`, `min_promotion_windows`,
`min_retrain_hours`, `as_of_version` (retrain on `hourly_metrics` as it was at that Delta version;
empty = current).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    chain,
    dag,
    get_current_context,
    task,
    task_group,
)

from btc_platform.lakehouse import datasets, lineage
from btc_platform.ops.orchestration import HOURLY_METRICS_ASSET, table_writer_kwargs
from btc_platform.settings import get_settings
from models.config import RetrainParams  # dataclasses only: the Params' defaults, read without building it

settings = get_settings()
hourly_metrics = Asset(name=HOURLY_METRICS_ASSET, uri=settings.path(datasets.HOURLY_METRICS))
prediction_metrics = Asset(name=datasets.PREDICTION_METRICS, uri=settings.path(datasets.PREDICTION_METRICS))
D = RetrainParams.default


#: each mapped task instance is named after its symbol (``map_index_template``)
BY_SYMBOL = "{{ symbol }}"


def _named(symbol: str) -> str:
    """``symbol``, after naming this task instance after it (rendered from the context) and
    exporting its map index, so that the tables it writes link this very instance."""
    context = get_current_context()
    context["symbol"] = symbol
    lineage.export_map_index(context["ti"].map_index)
    return symbol


def _params(params, symbol: str) -> dict:
    """The pipeline's params: the DAG Params and the symbol of this map index."""
    return {**(params or {}), "symbol": _named(symbol)}


@dag(
    dag_id="btc_retrain",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(settings.retrain_schedule, timezone="UTC"), assets=[hourly_metrics]
    ),
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    tags=["btc", "ml", "lstm"],
    doc_md=__doc__,
    params={
        "epochs": Param(
            D("epochs"), type="integer", minimum=1, maximum=500, description="Max training epochs (early stopping)."
        ),
        "lookback": Param(D("lookback"), type="integer", minimum=2, maximum=720, description="Input window, hours."),
        "horizon": Param(D("horizon"), type="integer", minimum=1, maximum=168, description="Forecast horizon, hours."),
        "test_hours": Param(
            D("test_hours"), type="integer", minimum=2, description="Test window, hours (the most recent; > horizon)."
        ),
        "force_promotion": Param(
            D("force_promotion"), type="boolean", description="Promote the candidate regardless of metrics."
        ),
        "min_promotion_windows": Param(
            D("min_promotion_windows"), type="integer", minimum=1,
            description="Test windows needed before a candidate can be promoted.",
        ),
        "min_retrain_hours": Param(
            D("min_retrain_hours"), type="integer", minimum=0,
            description="Scheduled/asset runs retrain only when the newest model's data is this many hours old.",
        ),
        "as_of_version": Param(
            D("as_of_version"),
            type=["null", "integer"],
            minimum=0,
            description="hourly_metrics Delta version to train on (time travel); empty = current.",
        ),
    },
)
def btc_retrain():
    @task(retries=0, map_index_template=BY_SYMBOL)
    def check_sufficiency(symbol: str, params=None) -> dict:
        """Skip (no retry, not a failure) with a pointer to btc_backfill when history is too short."""
        from airflow.sdk.exceptions import AirflowSkipException

        from models.data import InsufficientHistoryError
        from models.pipeline import check_sufficiency

        try:
            return check_sufficiency(_params(params, symbol))
        except InsufficientHistoryError as exc:
            raise AirflowSkipException(
                f"{symbol}: {exc} -- not enough hourly history to train yet: trigger the btc_backfill DAG "
                "(source=binance with a date range, or source=file with a candle file) or let the stream run."
            ) from exc

    @task(execution_timeout=timedelta(hours=2), map_index_template=BY_SYMBOL)
    def train(symbol: str, sufficiency: dict, params=None, dag_run=None) -> str:
        """Train (or reuse) a candidate on the table version check_sufficiency read; skipped
        with the reason when nothing changed or the newest model is recent enough."""
        import logging

        from airflow.sdk.exceptions import AirflowSkipException

        from models.pipeline import retrain_needed, train_candidate

        pinned = _params(params, symbol)
        if dag_run is not None and str(dag_run.run_type).lower().endswith("manual"):
            pinned["min_retrain_hours"] = 0
        needed, reason = retrain_needed(pinned, sufficiency.get("table_version"), sufficiency["end"])
        if not needed:
            raise AirflowSkipException(f"{symbol}: {reason}")
        if pinned.get("as_of_version") is None:
            pinned["as_of_version"] = sufficiency.get("table_version")
        result = train_candidate(pinned)
        logging.getLogger("btc_retrain").info("candidate of %s (%s): %s", symbol, reason, result)
        return result["version"]

    @task(map_index_template=BY_SYMBOL)
    def evaluate(symbol: str, version: str, params=None) -> dict:
        """Metrics on the test window next to the naive baselines (the tables are in the log)."""
        import logging

        from models.pipeline import evaluate_candidate

        result = evaluate_candidate(version, _params(params, symbol))
        logging.getLogger("btc_retrain").info(
            "metrics of candidate %s vs baselines:\n%s", version, result["table"]
        )
        return {k: v for k, v in result.items() if k != "table"}

    @task(map_index_template=BY_SYMBOL)
    def promote_or_keep(symbol: str, version: str, params=None) -> dict:
        import logging

        from models.promotion import decide_promotion

        decision = decide_promotion(version, _params(params, symbol))
        logging.getLogger("btc_retrain").info("promotion decision for %s: %s", version, decision)
        return decision

    @task(trigger_rule="none_failed", map_index_template=BY_SYMBOL, **table_writer_kwargs())
    def predict_next_24h(symbol: str, params=None) -> dict:
        """The served forecast; skipped with the reason only when the symbol has no history at all."""
        from airflow.sdk.exceptions import AirflowSkipException

        from models.serving import predict_future

        result = predict_future(_params(params, symbol))
        if result["status"] == "skipped":
            raise AirflowSkipException(f"no forecast of {symbol} served: {result['reason']}")
        return result

    @task(trigger_rule="all_done", map_index_template=BY_SYMBOL, **table_writer_kwargs())
    def score_forecasts(symbol: str) -> dict:
        from models.realised import score_forecasts

        return score_forecasts(settings, _named(symbol))

    @task(map_index_template=BY_SYMBOL, **table_writer_kwargs())
    def write_outputs(symbol: str, version: str, params=None) -> dict:
        from models.pipeline import write_outputs

        return write_outputs(version, _params(params, symbol))

    @task(outlets=[prediction_metrics], map_index_template=BY_SYMBOL)
    def publish_metrics(symbol: str, version: str, params=None, outlet_events=None) -> dict:
        """Headline metrics as XCom (this task's return value) and as the asset event's extra."""
        from models.pipeline import headline_metrics

        headline = headline_metrics(version, _params(params, symbol))
        outlet_events[prediction_metrics].extra = headline
        return headline

    @task_group(group_id="forecast")
    def per_symbol(symbol: str):
        """Every task of one symbol: one map index of the group per configured symbol."""
        ok = check_sufficiency(symbol)
        version = train(symbol, ok)
        metrics = evaluate(symbol, version)
        decision = promote_or_keep(symbol, version)
        forecast = predict_next_24h(symbol)
        outputs = write_outputs(symbol, version)
        chain(metrics, decision, forecast, outputs, publish_metrics(symbol, version))
        chain(forecast, score_forecasts(symbol))

    per_symbol.expand(symbol=list(settings.binance_symbols))


btc_retrain()
