"""
### btc_maintenance

Daily at 02:30 UTC: compacts and vacuums the Delta tables, then purges old Airflow metadata.

* `optimize_vacuum` (`spark_jobs/maintenance_job.py`, a `spark-submit` through `spark_default`):
  for every table that exists, OPTIMIZE compacts its small files (raw_data only in its closed
  days, `date < today`; the other tables whole), then VACUUM deletes the files no version of the
  last `BTC_MAINTENANCE_VACUUM_RETENTION_HOURS` (default 168) references. Its log has, per table,
  the data files and bytes before/after OPTIMIZE and the files VACUUM removed.
* `clean_airflow_metadata`: `airflow db clean` of DAG runs, task instances, XComs, logs table...
  older than `BTC_MAINTENANCE_AIRFLOW_RETENTION_DAYS` (default 7), without archive tables; its
  output is in the task log.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import CronTriggerTimetable, chain, dag, task

from btc_platform.ops.orchestration import job_path, schedule_start, spark_submit_kwargs, table_writer_kwargs
from btc_platform.settings import get_settings

settings = get_settings()


@dag(
    dag_id="btc_maintenance",
    # off the hour: the hourly consolidation runs at :00, and yesterday's late records are in
    schedule=CronTriggerTimetable("30 2 * * *", timezone="UTC"),
    start_date=pendulum.instance(schedule_start(settings)),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=10)},
    tags=["btc", "maintenance", "spark"],
    doc_md=__doc__,
)
def btc_maintenance():
    optimize_vacuum = SparkSubmitOperator(
        task_id="optimize_vacuum",
        application=job_path("maintenance_job.py"),
        execution_timeout=timedelta(hours=2),
        **spark_submit_kwargs(settings, "btc-maintenance"),
        **table_writer_kwargs(),
    )

    @task(execution_timeout=timedelta(minutes=30))
    def clean_airflow_metadata() -> str:
        from btc_platform.ops.orchestration import clean_airflow_metadata as clean

        return clean(settings)

    chain(optimize_vacuum, clean_airflow_metadata())


btc_maintenance()
