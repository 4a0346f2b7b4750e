"""End to end on the local stack: real Kafka, real Airflow standalone (started through
btc_platform.ops.services exactly like ``make run``), simulate source, everything driven by the DAGs.

1. Airflow comes up with the DAGs unpaused; the ``btc_stream_supervisor`` DAG (one deferrable
   task, watching in the triggerer) starts the
   producer and the Spark streaming job by itself.
2. The first start fills the empty hourly_metrics by itself: ``btc_backfill``'s one scheduled
   run backfills simulated history (simulate source), ending at the simulator's start price.
   Then, through the Airflow REST API (v2, JWT from /auth/token with the generated admin
   password), ``btc_retrain`` with small Params must succeed on that history.
3. The ``evaluate`` task log fetched through the API holds the metrics table (model vs
   persistence and drift); the ``promote_or_keep`` log holds the decision.
4. The supervised stream wrote minute_metrics. The time from Airflow start to the first minute
   metrics is logged as a figure.
5. Every TCP socket the running platform listens on (Airflow, producer, stream and its Spark
   driver UI, the broker) is bound to 127.0.0.1: no log server, no UI on every interface.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from pathlib import Path

import psutil
import pytest

from btc_platform.testing.polling import wait_until

log = logging.getLogger(__name__)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.spark]

#: Simulated history of the first start: enough for the small retrain below (test window 72 h)
#: and too little for the asset-triggered retrain with the defaults (skipped at once, no training).
SIMULATED_HOURS = 500


class AirflowApi:
    def __init__(self, base_url: str, password_file: Path):
        import requests

        self.base = base_url
        self.session = requests.Session()
        users = json.loads(password_file.read_text())
        response = self.session.post(
            f"{base_url}/auth/token", json={"username": "admin", "password": users["admin"]}, timeout=(3, 30)
        )
        response.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def get(self, path: str, **kwargs):
        response = self.session.get(f"{self.base}/api/v2{path}", timeout=(3, 60), **kwargs)
        response.raise_for_status()
        return response

    def trigger(self, dag_id: str, conf: dict) -> str:
        response = self.session.post(
            f"{self.base}/api/v2/dags/{dag_id}/dagRuns",
            json={"logical_date": None, "conf": conf},
            timeout=(3, 60),
        )
        assert response.status_code in (200, 201), response.text
        return response.json()["dag_run_id"]

    def wait_run(self, dag_id: str, run_id: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(5)
        raise AssertionError(f"{dag_id} run {run_id} not finished after {timeout_s:.0f} s")

    def task_log(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
        """The task's log; ``map_index`` >= 0 for one instance of a mapped task (the retrain's
        ``forecast.*`` tasks, one per symbol)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        tries = self.get(path + (f"/{map_index}" if map_index >= 0 else "")).json()["try_number"]
        params = {"full_content": "true"} | ({"map_index": map_index} if map_index >= 0 else {})
        body = self.get(f"{path}/logs/{tries}", params=params, headers={"Accept": "application/json"}).json()
        content = body.get("content")
        if isinstance(content, list):  # structured log events
            return "\n".join(
                item.get("event", "") if isinstance(item, dict) else str(item) for item in content
            )
        return str(content)

    def failure_logs(self, dag_id: str, run_id: str) -> str:
        tis = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
        return "\n".join(
            f"--- {ti['task_id']} ({ti['state']})\n"
            f"{self.task_log(dag_id, run_id, ti['task_id'], ti.get('map_index', -1))[-4000:]}"
            for ti in tis
            if ti["state"] not in ("success", None)
        )


def _minute_metric_files(storage: Path) -> list[Path]:
    """Data files of the minute_metrics Delta table (not its log's checkpoints)."""
    return [f for f in (storage / "minute_metrics").rglob("*.parquet") if "_delta_log" not in f.parts]


def _hourly(settings):
    from btc_platform.lakehouse import lake

    return lake.read_table("hourly_metrics", settings).sort_values("hour_start")


def _minute_metric_rows(settings) -> int:
    from btc_platform.lakehouse import lake

    try:
        return len(lake.read_table("minute_metrics", settings, columns=["symbol"]))
    except lake.TableNotFoundError:
        return 0


def test_platform_end_to_end(kafka_service, tmp_path):
    from btc_platform.ops import services, supervisor
    from btc_platform.ops.airflow_env import api_url, password_file
    from btc_platform.ops.services import base
    from btc_platform.settings import load_settings
    from btc_platform.testing.polling import free_ports
    from tests.fixtures_services import listening_sockets

    topic = f"e2e-{uuid.uuid4().hex[:8]}"
    kafka_service.create_topic(topic, 2)
    (port,) = free_ports(1)
    settings = load_settings(
        data_dir=tmp_path / "data",
        airflow_port=port,
        kafka_bootstrap_servers=kafka_service.bootstrap_servers,
        kafka_port=kafka_service.settings.kafka_port,
        kafka_topic=topic,
        producer_source="simulate",
        spark_master="local[2]",
        stream_trigger_interval="2 seconds",
        stream_side_trigger_interval="2 seconds",
        stream_watermark_delay="5 seconds",
        supervisor_interval_s=15,
        first_run_simulate_hours=SIMULATED_HOURS,
    )
    storage = Path(settings.storage_root.removeprefix("file://"))
    started, started_wall = time.monotonic(), time.time()
    try:
        services.start_airflow(settings)
        airflow_ready_s = time.monotonic() - started
        api = AirflowApi(api_url(settings), password_file(settings))

        # 1. DAGs parsed and unpaused; the supervisor DAG starts producer and stream on its own
        def dags_listed():
            dags = api.get("/dags", params={"dag_id_pattern": "btc_"}).json()["dags"]
            return len(dags) == 5 and dags

        dags = _poll(dags_listed, 180, "the five DAGs to be parsed")
        assert all(not d["is_paused"] for d in dags), [(d["dag_id"], d["is_paused"]) for d in dags]
        _poll(
            lambda: all(supervisor.status(n, settings).action == "running" for n in supervisor.NAMES),
            180,
            "the supervisor DAG to start producer and stream",
        )

        # 2. the first start's backfill (btc_backfill's @once run), then retrain with small params
        def first_backfill():
            runs = api.get("/dags/btc_backfill/dagRuns").json()["dag_runs"]
            return runs and runs[0]["dag_run_id"]

        run = _poll(first_backfill, 180, "the first start's btc_backfill run")
        state = api.wait_run("btc_backfill", run, 900)
        assert state == "success", api.failure_logs("btc_backfill", run)
        hourly = _hourly(settings)
        simulated = hourly[hourly["source"] == "simulated"]
        assert len(simulated) == SIMULATED_HOURS and set(hourly["source"]) <= {"simulated", "stream"}
        assert simulated["close"].iloc[-1] == settings.simulate_start_price  # joins the simulated stream

        conf = {"epochs": 2, "lookback": 12, "horizon": 24, "test_hours": 72, "force_promotion": True}
        run = api.trigger("btc_retrain", conf)
        state = api.wait_run("btc_retrain", run, 1200)
        assert state == "success", api.failure_logs("btc_retrain", run)

        # 3. the metrics table and the promotion decision are in the task logs
        evaluate_log = api.task_log("btc_retrain", run, "forecast.evaluate", map_index=0)
        assert "vs baselines" in evaluate_log, evaluate_log[-3000:]
        for row in ("persistence", "drift"):
            assert row in evaluate_log, evaluate_log[-3000:]
        decision_log = api.task_log("btc_retrain", run, "forecast.promote_or_keep", map_index=0)
        assert "promotion decision for" in decision_log and "promoted" in decision_log

        # 4. minute metrics written by the supervised stream
        _poll(lambda: _minute_metric_rows(settings) > 0, 300, "minute metrics from the supervised stream")
        first_minute_metrics_s = min(f.stat().st_mtime for f in _minute_metric_files(storage)) - started_wall
        log.info(
            "e2e figures: airflow healthy %.0f s, first minute metrics %.0f s after starting Airflow",
            airflow_ready_s,
            first_minute_metrics_s,
        )
        print(
            f"\ne2e: airflow healthy {airflow_ready_s:.0f} s, first minute metrics {first_minute_metrics_s:.0f} s"
        )
        # one supervision run (a day long); its starts are in the task log, then it watches in the
        # triggerer (deferred: no task process while all is healthy)
        runs = api.get("/dags/btc_stream_supervisor/dagRuns", params={"order_by": "run_after"}).json()[
            "dag_runs"
        ]
        assert len(runs) == 1, [(r["dag_run_id"], r["state"]) for r in runs]
        first_run = runs[0]["dag_run_id"]
        supervise_log = api.task_log("btc_stream_supervisor", first_run, "supervise")
        assert "stream: started (pid" in supervise_log and "producer: started (pid" in supervise_log
        assert "watching in the triggerer every 15 s" in supervise_log
        task = api.get(f"/dags/btc_stream_supervisor/dagRuns/{first_run}/taskInstances/supervise").json()
        assert task["state"] in ("deferred", "running"), task["state"]  # running: resumed to restart something

        # 5. every socket the running platform listens on is on 127.0.0.1: Airflow's components,
        # the supervised producer and stream with their Spark driver, the Kafka broker
        # with their descendants: Airflow's API server and workers retitle themselves and lose the marker
        marked = base.marked_processes(settings) + base.marked_processes(kafka_service.settings)
        pids = set(marked)
        for pid in marked:
            with contextlib.suppress(psutil.NoSuchProcess):
                pids |= {child.pid for child in psutil.Process(pid).children(recursive=True)}
        sockets = listening_sockets(pids)
        assert ("127.0.0.1", port) in {(address, p) for address, p, _ in sockets}, sockets
        assert [s for s in sockets if s[0] != "127.0.0.1"] == []
    finally:
        services.stop("airflow", settings)
        for name in supervisor.NAMES:
            supervisor.stop(name, settings)


def _poll(predicate, timeout_s: float, what: str):
    return wait_until(predicate, timeout_s, what, interval_s=3.0)  # Airflow answers slowly under load
