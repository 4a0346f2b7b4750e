"""
### btc_stream_supervisor

Keeps the two long-running processes of the platform alive: the **producer** (exchange APIs ->
Kafka `cryptoTopic`) and the **Spark streaming job** (Kafka -> raw_data, minute_metrics,
quarantine).

Airflow is not built for never-ending tasks, so this DAG does not *run* them: every
`BTC_SUPERVISOR_INTERVAL_S` seconds (default 60) two short tasks check them and

* start the process when it is absent (detached, own process group, outlives the task);
* restart it when it died, when it is stale (producer: no publish for
  `BTC_SUPERVISOR_PRODUCER_STALE_S`; stream: no progress for `BTC_SUPERVISOR_STREAM_STALE_S`
  or more than `BTC_SUPERVISOR_MAX_LAG_MESSAGES` behind Kafka) or when its configuration changed;
* never start the same configuration twice (pid record + config fingerprint + file lock).

Each check and every restart reason is in the task log. Process logs:
`<BTC_DATA_DIR>/logs/producer.log` and `stream.log`. The producer source comes from
`BTC_PRODUCER_SOURCE` (`make run SOURCE=simulate` when the live APIs are unreachable).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from btc_platform.settings import get_settings


@dag(
    dag_id="btc_stream_supervisor",
    schedule=timedelta(seconds=get_settings().supervisor_interval_s),
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=10),
    default_args={"retries": 1, "retry_delay": timedelta(seconds=10)},
    tags=["btc", "streaming", "supervision"],
    doc_md=__doc__,
)
def btc_stream_supervisor():
    @task
    def ensure_producer() -> dict:
        """Start / keep / restart the producer; the outcome and its reason are logged."""
        from btc_platform.supervisor import ensure_producer as check

        result = check()
        return {"action": result.action, "reason": result.reason, "pid": result.pid}

    @task
    def ensure_stream() -> dict:
        """Start / keep / restart the Spark streaming job; the outcome and its reason are logged."""
        from btc_platform.supervisor import ensure_stream as check

        result = check()
        return {"action": result.action, "reason": result.reason, "pid": result.pid}

    ensure_producer()
    ensure_stream()


btc_stream_supervisor()
