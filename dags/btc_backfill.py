"""
### btc_backfill

Manual backfill of `hourly_metrics` from hourly candles, for history the stream never saw
(a fresh install needs this before the first retrain: the retrain DAG's sufficiency check
points here when history is short).

Params:

* **source** - `binance` (the klines REST API, paginated politely) or `file` (a candle CSV /
  Parquet file with open_time_utc, open, high, low, close, volume ...);
* **file_path** - the file for `source=file` (local path, file:// or hdfs:// URI);
* **start** / **end** - UTC range (ISO date or date-time, on a full hour); required for
  `binance`, optional filters for `file`;
* **overwrite_stream** - also overwrite hours that already hold stream-consolidated rows
  (default: keep stream hours, fill only the gaps).

Rows written carry `source=backfill`; microstructure fields stay null (never invented). The
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
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["btc", "batch", "backfill"],
    doc_md=__doc__,
    params={
        "source": Param(
            "binance", type="string", enum=["binance", "file"], description="Where candles come from."
        ),
        "file_path": Param("", type="string", description="Candle file (source=file)."),
        "start": Param("", type="string", description="UTC start, ISO date or date-time."),
        "end": Param("", type="string", description="UTC end (exclusive), ISO date or date-time."),
        "overwrite_stream": Param(False, type="boolean", description="Overwrite stream-consolidated hours."),
    },
)
def btc_backfill():
    @task(retries=0)
    def backfill_arguments(params=None) -> list[str]:
        """Validate the Params and build the job's command line (fails with a readable reason)."""
        from btc_platform.ops.orchestration import backfill_args

        return backfill_args(dict(params or {}))

    @task(retries=0)
    def quality_arguments(params=None) -> list[str]:
        """The data-quality job's command line for the backfilled range."""
        from btc_platform.ops.orchestration import backfill_quality_args

        return backfill_quality_args(dict(params or {}))

    backfill = SparkSubmitOperator(
        task_id="backfill",
        application=job_path("backfill_job.py"),
        application_args=backfill_arguments(),
        execution_timeout=timedelta(hours=2),
        **spark_submit_kwargs(settings, "btc-backfill"),
        **table_writer_kwargs(),
    )
    data_quality = SparkSubmitOperator(
        task_id="data_quality",
        application=job_path("quality_job.py"),
        application_args=quality_arguments(),
        outlets=[Asset(name=HOURLY_METRICS_ASSET, uri=settings.path(datasets.HOURLY_METRICS))],
        execution_timeout=timedelta(minutes=30),
        **spark_submit_kwargs(settings, "btc-quality"),
        **table_writer_kwargs(),
    )
    chain(backfill, data_quality)


btc_backfill()
