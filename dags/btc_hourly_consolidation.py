"""
### btc_hourly_consolidation

Every hour, waits until the streaming job has written the last minute of the run's data interval
(`[data_interval_start, data_interval_end)`), consolidates that hour's `minute_metrics` into
`hourly_metrics` with one MERGE (re-running an hour leaves the table as it was; earlier hours
that received late minutes are re-merged too), then runs the data-quality checks on that hour
as their own task. A successful check updates the `hourly_metrics` Asset.

* `wait_for_minutes` is a sensor in reschedule mode (no worker slot held while it waits): ready
  once the stream's minute_metrics watermark has passed the hour's end, or after
  `BTC_CONSOLIDATION_MAX_WAIT_S` (the hour is then consolidated with the minutes that exist, and
  its coverage says so). Its log says which.

* `find_gaps` / `repair_gaps` (live mode, `BTC_PRODUCER_SOURCE=live`): the hours of the last
  `BTC_GAP_REPAIR_LOOKBACK_HOURS` that have no row or only a stream row below
  `BTC_HOURLY_MIN_STREAM_COVERAGE` are fetched as closed 1-hour klines (at most
  `BTC_GAP_REPAIR_MAX_REQUESTS` requests) and MERGEd; skipped, with the reason, when there is none.
* `audit_ingest`: every Kafka record of the hour is in raw_data once (or in quarantine):
  a `data_quality` row `ingest_complete` per symbol, red (and a failed task) on a mismatch.

* The Spark steps are `spark-submit`s through the `spark_default` connection
  (`AIRFLOW_CONN_SPARK_DEFAULT`, set from `BTC_SPARK_MASTER` by `make run` / compose).
* Missed hours are caught up (`catchup=True`) from `BTC_SCHEDULE_START_DATE` (`make run` pins it
  to the hour of the installation's first start; unset: the start of the current UTC day), so a
  fresh install does not consolidate years of empty hours. For older history use `btc_backfill`.
* A failing data-quality task names the failed checks in its log (`DataQualityError`).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, CronDataIntervalTimetable, PokeReturnValue, chain, dag, task

from btc_platform.lakehouse import datasets
from btc_platform.ops.orchestration import (
    HOURLY_METRICS_ASSET,
    job_path,
    schedule_start,
    spark_submit_kwargs,
    table_writer_kwargs,
)
from btc_platform.settings import get_settings

settings = get_settings()
hourly_metrics = Asset(name=HOURLY_METRICS_ASSET, uri=settings.path(datasets.HOURLY_METRICS))
interval_args = [
    "--start",
    "{{ data_interval_start.isoformat() }}",
    "--end",
    "{{ data_interval_end.isoformat() }}",
]


@dag(
    dag_id="btc_hourly_consolidation",
    # a data-interval timetable: each run covers [hour, hour + 1h) (Airflow 3's "@hourly"
    # would be a trigger timetable whose interval is empty)
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=pendulum.instance(schedule_start(settings)),
    catchup=True,
    max_active_runs=2,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["btc", "batch", "spark"],
    doc_md=__doc__,
)
def btc_hourly_consolidation():
    @task.sensor(
        poke_interval=20,
        mode="reschedule",
        timeout=settings.consolidation_max_wait_s + 600,  # the callable itself gives up first
    )
    def wait_for_minutes(data_interval_end=None) -> PokeReturnValue:
        import logging

        from airflow.sdk.exceptions import AirflowFailException

        from btc_platform.ops.orchestration import NO_DATA_INTERVAL, minute_metrics_ready

        if data_interval_end is None:  # a REST trigger without logical_date: no retries, the reason
            raise AirflowFailException(NO_DATA_INTERVAL)
        ready, reason = minute_metrics_ready(settings, data_interval_end)
        logging.getLogger("btc_hourly_consolidation").info("%s", reason)
        return PokeReturnValue(is_done=ready, xcom_value=reason)

    consolidate = SparkSubmitOperator(
        task_id="consolidate",
        application=job_path("consolidate_job.py"),
        application_args=interval_args,
        execution_timeout=timedelta(minutes=30),
        **spark_submit_kwargs(settings, "btc-consolidate"),
        **table_writer_kwargs(),
    )
    data_quality = SparkSubmitOperator(
        task_id="data_quality",
        application=job_path("quality_job.py"),
        application_args=interval_args,
        outlets=[hourly_metrics],
        trigger_rule="none_failed",  # also after a skipped gap repair
        execution_timeout=timedelta(minutes=30),
        **spark_submit_kwargs(settings, "btc-quality"),
        **table_writer_kwargs(),
    )
    @task
    def find_gaps() -> str:
        """The ranges of missing or thin hours to repair (skipped when there is nothing to do)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from btc_platform.lakehouse.gaps import find_gaps, format_ranges

        if settings.producer_source != "live":
            raise AirflowSkipException(f"no gap repair: the producer's source is {settings.producer_source!r}, not live")
        ranges = find_gaps(settings)
        if not ranges:
            raise AirflowSkipException(f"no missing or thin hour in the last {settings.gap_repair_lookback_hours} h")
        return format_ranges(ranges)

    gaps = find_gaps()
    repair_gaps = SparkSubmitOperator(
        task_id="repair_gaps",
        application=job_path("backfill_job.py"),
        application_args=["--source", "binance", "--repair", "{{ ti.xcom_pull(task_ids='find_gaps') }}"],
        execution_timeout=timedelta(minutes=30),
        **spark_submit_kwargs(settings, "btc-repair-gaps"),
        **table_writer_kwargs(),
    )
    audit_ingest = SparkSubmitOperator(
        task_id="audit_ingest",
        application=job_path("quality_job.py"),
        application_args=["--audit-ingest", *interval_args],
        execution_timeout=timedelta(minutes=30),
        **spark_submit_kwargs(settings, "btc-audit"),
        **table_writer_kwargs(),
    )
    chain(wait_for_minutes(), consolidate, gaps, repair_gaps, data_quality)
    chain(consolidate, audit_ingest)


btc_hourly_consolidation()
