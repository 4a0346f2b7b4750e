"""What the fault-injection suite (bench/chaos.py) reports, without services: for the Airflow
group only the starts and restarts the supervisor DAG's task did in the scenario's time count;
the time to alert is read from the monitor's webhook texts, per scenario, against its limit."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from types import SimpleNamespace

from bench import chaos, chaos_alerts


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


def test_time_to_alert_is_the_first_alert_after_the_fault_and_resolved_when_all_it_opened_are():
    from btc_platform.monitoring import state

    fault = 1_000_000.0
    opened = {"id": 1, "key": "process_down:stream", "rule": "process_down", "opened_at": fault + 4,
              "summary": "stream is down: process 9 is not running", "updated_at": fault + 4}  # fmt: skip
    earlier = {**opened, "key": "raw_stale", "rule": "raw_stale", "opened_at": fault - 50, "summary": "stale"}
    # the texts the webhook channel posts (state.render): a single message, then a digest
    texts = [(fault - 50, [{"kind": "firing", **earlier, "at": fault - 50}]),
             (fault + 4.5, [{"kind": "firing", **opened, "at": fault + 4}]),
             (fault + 20, [{"kind": "resolved", **opened, "resolved_at": fault + 19, "resolution": "running",
                            "at": fault + 19},
                           {"kind": "resolved", **earlier, "resolved_at": fault + 19, "resolution": "rows",
                            "at": fault + 19}])]  # fmt: skip
    arrivals = [a for at, messages in texts for a in chaos_alerts.parse("\n".join(state.render(messages)), at)]
    assert [(a.kind, a.key) for a in arrivals] == [("firing", "raw_stale"), ("firing", "process_down:stream"),
                                                  ("resolved", "process_down:stream"), ("resolved", "raw_stale")]  # fmt: skip

    told = chaos_alerts.told(arrivals, fault)
    assert (told.first_s, told.first_key, told.resolved_s) == (4.5, "process_down:stream", 20.0)
    assert chaos_alerts.judge(["stream_kill"], arrivals, fault) is None
    assert chaos_alerts.judge(["producer_kill"], arrivals, fault) == (
        "no process_down:producer alert (expected within 60 s)")
    assert chaos_alerts.judge(["stream_kill"], arrivals, fault - 60) == (
        "process_down:stream alert after 64 s (limit 60 s)")
    still = chaos_alerts.told(arrivals[:2], fault)
    assert still.still_open == ("process_down:stream",) and still.resolved_s is None
    assert chaos_alerts.told(arrivals, fault + 30).first_s is None  # nothing fired after that fault
