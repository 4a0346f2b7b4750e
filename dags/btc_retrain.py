"""
### btc_retrain

Daily (and on demand: **Trigger DAG w/ config**) retraining of the LSTM that forecasts BTC
hourly closes from `hourly_metrics`.

1. **check_sufficiency** - enough hourly history for lookback + test window? If not, the task
   fails with a clear message: run the **btc_backfill** DAG first. Returns the `hourly_metrics`
   Delta table version it read.
2. **train** - trains a candidate model version (chronological split, scaler fitted on the
   training part only) on exactly that table version (time travel), which the model records.
3. **evaluate** - scores the candidate on the test window next to naive baselines; the task log
   shows the metrics table.
4. **promote_or_keep** - promotes the candidate when it beats the current model (or when
   `force_promotion`), else keeps the current one; the decision is logged.
5. **predict_next_24h** - forecasts the next `horizon` hours with the promoted model.
6. **write_outputs** - writes the prediction_metrics and predictions Delta tables (the forecast
   of step 5 is in future_predictions).

Every task reads `hourly_metrics` once, through delta-rs (one symbol, the columns it needs).

Params: `epochs`, `lookback` (hours of input), `horizon` (hours forecast), `test_hours` (test
window), `force_promotion`, `as_of_version` (retrain on `hourly_metrics` as it was at that Delta
version, e.g. the `data_table_version` in a model's training.json; empty = current).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

from btc_platform.settings import get_settings

settings = get_settings()


def _params(params) -> dict:
    """The pipeline's params: the DAG Params plus data location and symbol from settings."""
    from btc_platform import datasets

    out = dict(params or {})
    out.setdefault("data_uri", settings.path(datasets.HOURLY_METRICS))
    out.setdefault("symbol", settings.binance_symbols[0])
    return out


@dag(
    dag_id="btc_retrain",
    schedule=settings.retrain_schedule,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    tags=["btc", "ml", "lstm"],
    doc_md=__doc__,
    params={
        "epochs": Param(
            30, type="integer", minimum=1, maximum=500, description="Max training epochs (early stopping)."
        ),
        "lookback": Param(12, type="integer", minimum=2, maximum=720, description="Input window, hours."),
        "horizon": Param(24, type="integer", minimum=1, maximum=168, description="Forecast horizon, hours."),
        "test_hours": Param(
            168, type="integer", minimum=2, description="Test window, hours (the most recent; > horizon)."
        ),
        "force_promotion": Param(
            False, type="boolean", description="Promote the candidate regardless of metrics."
        ),
        "as_of_version": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            description="hourly_metrics Delta version to train on (time travel); empty = current.",
        ),
    },
)
def btc_retrain():
    @task(retries=0)
    def check_sufficiency(params=None) -> dict:
        """Fail early (no retry) with a pointer to btc_backfill when history is too short."""
        from airflow.sdk.exceptions import AirflowFailException

        from models.pipeline import InsufficientHistoryError, check_sufficiency

        try:
            return check_sufficiency(_params(params))
        except InsufficientHistoryError as exc:
            raise AirflowFailException(
                f"{exc} -- not enough hourly history to train: trigger the btc_backfill DAG "
                "(source=binance with a date range, or source=file with a candle file) and retry."
            ) from exc

    @task(execution_timeout=timedelta(hours=2))
    def train(sufficiency: dict, params=None) -> str:
        """Train (or reuse, same data + hyperparameters) a candidate on the table version that
        check_sufficiency read; returns its version."""
        import logging

        from models.pipeline import train_candidate

        pinned = _params(params)
        if pinned.get("as_of_version") is None:
            pinned["as_of_version"] = sufficiency.get("table_version")
        result = train_candidate(pinned)
        logging.getLogger("btc_retrain").info("candidate: %s", result)
        return result["version"]

    @task
    def evaluate(version: str, params=None) -> dict:
        """Metrics on the test window next to the naive baselines (the table is in the log)."""
        import logging

        from models.pipeline import evaluate_candidate

        result = evaluate_candidate(version, _params(params))
        logging.getLogger("btc_retrain").info(
            "metrics of candidate %s vs baselines:\n%s", version, result["table"]
        )
        return {k: v for k, v in result.items() if k != "table"}

    @task
    def promote_or_keep(version: str, _metrics: dict, params=None) -> dict:
        import logging

        from models.pipeline import decide_promotion

        decision = decide_promotion(version, _params(params))
        logging.getLogger("btc_retrain").info("promotion decision for %s: %s", version, decision)
        return decision

    @task
    def predict_next_24h(_decision: dict, params=None) -> dict:
        from models.pipeline import predict_future

        return predict_future(_params(params))

    @task
    def write_outputs(version: str, _forecast: dict, params=None) -> dict:
        from models.pipeline import write_outputs

        return write_outputs(version, _params(params))

    ok = check_sufficiency()
    version = train(ok)
    metrics = evaluate(version)
    decision = promote_or_keep(version, metrics)
    forecast = predict_next_24h(decision)
    write_outputs(version, forecast)


btc_retrain()
