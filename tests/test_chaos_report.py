"""What the fault-injection suite (bench/chaos.py) reports for the Airflow group, without services:
only the starts and restarts the supervisor DAG's task did in the scenario's time count."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from types import SimpleNamespace

from bench import chaos


def _platform(tmp_path) -> chaos.Platform:
    kafka = SimpleNamespace(kafka_port=19092, kafka_controller_port=19093, kafka_bootstrap_servers="127.0.0.1:19092")
    return chaos.Platform(tmp_path, kafka, f"file://{tmp_path}/storage", chaos.Options(), airflow=True)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def test_dag_events_since_keeps_the_dag_tasks_restarts_after_the_moment(tmp_path):
    from btc_platform.ops import supervisor

    platform = _platform(tmp_path)
    since = time.time()
    task = {"dag_id": "btc_stream_supervisor", "run_id": "r1", "task_id": "supervise", "try_number": 1}
    events = [
        {"time": _iso(since - 60), "name": "producer", "action": "started", "reason": "no supervised process yet",
         "pid": 1, "airflow": task},  # before the scenario
        {"time": _iso(since + 5), "name": "stream", "action": "restarted", "reason": "by hand", "pid": 2},  # no task
        {"time": _iso(since + 9), "name": "producer", "action": "restarted",
         "reason": "process 1 is not running (died)", "pid": 3, "airflow": task},
    ]  # fmt: skip
    path = supervisor.events_path(platform.settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in events))

    assert platform.dag_events_since(since) == [
        "supervisor DAG restarted producer: process 1 is not running (died)"
    ]
