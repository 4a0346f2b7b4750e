"""
### btc_backfill

Backfill of `hourly_metrics` from hourly candles, for history the stream never saw (the
retrain needs about 1,000 hours; its sufficiency check points here when history is short).

**First start**: the DAG's one scheduled run (`@once`, when Airflow first sees it) fills an
*empty* `hourly_metrics` by itself: `BTC_FIRST_RUN_SIMULATE_HOURS` of simulated history up to
the current hour when the producer source is `simulate` (ending at the simulator's start price,
so history and the simulated stream join), the last `BTC_FIRST_RUN_BACKFILL_DAYS` of Binance
klines when it is `live`. A table that holds rows, the `replay` source or
`BTC_FIRST_RUN_BACKFILL=false` skip it with the reason. It starts once the stream wrote its
first minute (`wait_for_stream`, at most 5 minutes), so its Spark jobs do not slow the stream's
first batches; the retrain follows on the `hourly_metrics` asset event. Every other run is triggered by hand with these

Params:

* **source** - `binance` (the klines REST API, paginated politely), `file` (a candle CSV /
  Parquet file with open_time_utc, open, high, low, close, volume ...) or `simulate` (a random
  walk of hourly candles, offline; rows carry `source=simulated`);
* **file_path** - the file for `source=file` (local path, file:// or hdfs:// URI);
* **start** / **end** - UTC range (ISO date or date-time, on a full hour); required for
  `binance` and `simulate`, optional filters for `file`;
* **overwrite_stream** - also overwrite hours that already hold stream-consolidated rows
  (default: keep stream hours, fill only the gaps).

Rows written carry `source=backfill` (`simulated` for the simulator); microstructure fields stay null (never invented). The
candles go into `hourly_metrics` with one MERGE (a re-run with the same candles changes nothing);
a file with an impossible candle (high < low, a price <= 0) fails the `backfill` task naming it,
and nothing is written.

Then `data_quality` runs the data-quality checks over the backfilled range (start/end when both
are given, otherwise the range the backfill wrote) and records them in the `data_quality` table;
its log lists each check's result (gaps, coverage, ...), and a failed error check fails it. A
successful check updates the `hourly_metrics` Asset.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, Param, chain, dag, task

from btc_platform.lakehouse import datasets
from btc_platform.ops.orchestration import (
    HOURLY_METRICS_ASSET,
    job_path,
    spark_submit_kwargs,
    table_writer_kwargs,
)
from btc_platform.settings import get_settings

settings = get_settings()


@dag(
    dag_id="btc_backfill",
    schedule="@once",  # the first start's run (see above); every other run is manual
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["btc", "batch", "backfill"],
    doc_md=__doc__,
    params={
        "source": Param(
            "binance", type="string", enum=["binance", "file", "simulate"], description="Where candles come from."
        ),
        "file_path": Param("", type="string", description="Candle file (source=file)."),
        "start": Param("", type="string", description="UTC start, ISO date or date-time."),
        "end": Param("", type="string", description="UTC end (exclusive), ISO date or date-time."),
        "overwrite_stream": Param(False, type="boolean", description="Overwrite stream-consolidated hours."),
    },
)
def btc_backfill():
    # retried: the first start's run is scheduled as Airflow starts, and on a busy machine its first
    # try can fail before Airflow's API server answers its task processes
    @task.sensor(poke_interval=15, timeout=900, mode="reschedule", retries=3)
    def wait_for_stream(dag_run=None) -> bool:
        """The first start's run waits for the stream's first minute (bounded); a manual run does not."""
        import logging

        from btc_platform.ops.orchestration import first_run_may_start

        ready, why = first_run_may_start(settings, getattr(dag_run, "run_type", "manual"),
                                         getattr(dag_run, "start_date", None))  # fmt: skip
        logging.getLogger("btc_backfill").info("%s", why)
        return ready

    @task(retries=0)
    def backfill_arguments(params=None, dag_run=None) -> list[str]:
        """The job's command line: a manual run's Params, validated (fails with a readable reason),
        or the first start's history (skipped with the reason when there is nothing to do)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from btc_platform.ops.orchestration import NothingToBackfill, backfill_plan

        try:
            return backfill_plan(dict(params or {}), getattr(dag_run, "run_type", "manual"), settings)
        except NothingToBackfill as exc:
            raise AirflowSkipException(f"first start: {exc}") from exc

    @task(retries=0)
    def quality_arguments(params=None) -> list[str]:
        """The data-quality job's command line for the backfilled range."""
        from btc_platform.ops.orchestration import backfill_quality_args

        return backfill_quality_args(dict(params or {}))

    arguments, quality = backfill_arguments(), quality_arguments()
    wait_for_stream() >> [arguments, quality]
    backfill = SparkSubmitOperator(
        task_id="backfill",
        application=job_path("backfill_job.py"),
        application_args=arguments,
        execution_timeout=timedelta(hours=2),
        **spark_submit_kwargs(settings, "btc-backfill"),
        **table_writer_kwargs(),
    )
    data_quality = SparkSubmitOperator(
        task_id="data_quality",
        application=job_path("quality_job.py"),
        application_args=quality,
        outlets=[Asset(name=HOURLY_METRICS_ASSET, uri=settings.path(datasets.HOURLY_METRICS))],
        execution_timeout=timedelta(minutes=30),
        **spark_submit_kwargs(settings, "btc-quality"),
        **table_writer_kwargs(),
    )
    chain(backfill, data_quality)


btc_backfill()
