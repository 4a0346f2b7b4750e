"""
### btc_stream_supervisor

Keeps the long-running parts of the platform alive: the local **Kafka** broker (and **HDFS**
when it is the storage), the **producer** (exchange APIs -> Kafka `cryptoTopic`) and the
**Spark streaming job** (Kafka -> raw_data, minute_metrics, quarantine).

Airflow is not built for never-ending tasks, and a DAG run every minute costs two task
processes a minute. So this DAG is **`@continuous`** (one run at a time, the next starts when
one ends) and a healthy run lasts **a day** (`BTC_SUPERVISOR_RUN_DAYS`) with one deferrable
task, `supervise`:

* on a worker it checks everything once (starts what is missing), then **defers**: the health
  checks run in Airflow's **triggerer** every `BTC_SUPERVISOR_INTERVAL_S` seconds (20), with no
  worker and no task process;
* when something is due the trigger fires and the task resumes on a worker, logs what the
  trigger found, and restarts: a service that is down (`BTC_SUPERVISOR_SERVICES`, set by
  `make run`), a process that died, is stale (producer: no publish for
  `BTC_SUPERVISOR_PRODUCER_STALE_S` unless it says it waits for a ban or the broker; stream:
  no progress for `BTC_SUPERVISOR_STREAM_STALE_S` with data waiting, or more than
  `BTC_SUPERVISOR_MAX_LAG_MESSAGES` behind Kafka) or was reconfigured; then it defers again;
* a service (or the producer / stream) that cannot be restarted **fails the task and the run**
  (red in the grid) with the reason in the log; the next run starts at once, watches in the
  triggerer first (a failure less than 2 minutes old) and tries again when the check interval
  finds it still down: one red run per attempt until it is back, then green runs of a day;
* never starts the same configuration twice (pid record + config fingerprint + file lock).

Every restart and its reason is in this task's log (and `supervisor_events.jsonl`). Process
logs: `<BTC_DATA_DIR>/logs/producer.log` and `stream.log`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from btc_platform.ops.supervisor.trigger import SupervisorOperator
from btc_platform.settings import get_settings


@dag(
    dag_id="btc_stream_supervisor",
    schedule="@continuous",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    max_consecutive_failed_dag_runs=0,  # never paused: failed runs are how a lasting outage shows
    tags=["btc", "streaming", "supervision"],
    doc_md=__doc__,
)
def btc_stream_supervisor():
    SupervisorOperator(
        task_id="supervise",
        interval_s=get_settings().supervisor_interval_s,
        run_days=get_settings().supervisor_run_days,
        retries=0,  # a failure is a red run; the next run checks again
    )


btc_stream_supervisor()
