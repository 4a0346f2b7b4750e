"""``btc_platform.lakehouse.lineage``: the Airflow task instance read from a task's environment, written
into and read back from a commit's info, and its Airflow UI route."""

from __future__ import annotations

import json

from btc_platform.lakehouse import lineage

ENV = {"AIRFLOW_CTX_DAG_ID": "btc_hourly_consolidation", "AIRFLOW_CTX_DAG_RUN_ID": "scheduled__2026-12-03T15:00:00+00:00",
       "AIRFLOW_CTX_TASK_ID": "consolidate", "AIRFLOW_CTX_TRY_NUMBER": "3", "PATH": "/usr/bin"}


def test_task_instance_from_the_environment():
    assert lineage.airflow_task(ENV) == {"dag_id": "btc_hourly_consolidation",
                                         "run_id": "scheduled__2026-12-03T15:00:00+00:00",
                                         "task_id": "consolidate", "try_number": 3}
    assert lineage.airflow_task({"PATH": "/usr/bin"}) is None  # outside Airflow
    partial = {k: v for k, v in ENV.items() if k != "AIRFLOW_CTX_DAG_RUN_ID"}
    assert lineage.airflow_task(partial) is None  # no run: nothing to link, nothing invented
    assert lineage.user_metadata({}) is None and lineage.commit_info({}) is None
    assert lineage.with_task({"job": "backfill"}, {}) == {"job": "backfill"}


def test_commit_round_trip_and_ui_route():
    metadata = lineage.with_task({"job": "consolidate", "minute_metrics_version": 7}, ENV)
    commit = {"version": 4, "userMetadata": json.dumps(metadata)}
    task = lineage.from_commit(commit)
    assert task == lineage.airflow_task(ENV)
    assert lineage.from_commit(lineage.commit_info(ENV)) == task  # delta-rs: the same field
    assert lineage.ui_path(task) == ("dags/btc_hourly_consolidation/runs/scheduled__2026-12-03T15%3A00%3A00%2B00%3A00"
                                     "/tasks/consolidate?try_number=3")
    assert lineage.run_path(task) == "dags/btc_hourly_consolidation/runs/scheduled__2026-12-03T15%3A00%3A00%2B00%3A00"


def test_commits_without_a_valid_task_give_none():
    assert lineage.from_commit({}) is None
    assert lineage.from_commit({"userMetadata": "not json"}) is None
    assert lineage.from_commit({"userMetadata": json.dumps({"job": "backfill"})}) is None
    assert lineage.from_commit({"userMetadata": json.dumps({"airflow": {"dag_id": "d", "run_id": "", "task_id": "t"}})}) is None
    assert lineage.from_commit({"userMetadata": json.dumps(["airflow"])}) is None


def test_the_task_instance_reaches_the_stream_but_not_its_launch_fingerprint(settings_env, monkeypatch):
    """A supervisor run starts the stream with its AIRFLOW_CTX_* environment (so the stream's
    commits name it), while the launch's fingerprint (argv + BTC_* settings) stays the same from
    one supervisor run to the next: a new run id must not restart the stream."""
    from btc_platform.ops.supervisor import launch

    settings = settings_env()
    for var, value in ENV.items():
        monkeypatch.setenv(var, value)
    first = launch.stream_spec(settings)
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "scheduled__2026-12-03T15:01:00+00:00")
    second = launch.stream_spec(settings)
    assert first.fingerprint == second.fingerprint
    assert not any("userMetadata" in arg for arg in second.argv)
    assert lineage.airflow_task(second.env)["run_id"] == "scheduled__2026-12-03T15:01:00+00:00"


def test_a_mapped_task_instance_links_its_own_page():
    """The retrain's per-symbol tasks are mapped: Airflow exports no map index, the task does
    (``export_map_index``), the commit keeps it and the link names it (without it the UI's route
    is the list of instances, not a task page: the dashboard's link answered 404)."""
    env = {**ENV, "AIRFLOW_CTX_TASK_ID": "forecast.write_outputs", "AIRFLOW_CTX_TRY_NUMBER": "1"}
    lineage.export_map_index(-1, env)  # not mapped: nothing exported
    assert "AIRFLOW_CTX_MAP_INDEX" not in env and "map_index" not in lineage.airflow_task(env)
    lineage.export_map_index(1, env)
    task = lineage.from_commit(lineage.commit_info(env))
    assert task["map_index"] == 1
    assert lineage.ui_path(task) == ("dags/btc_hourly_consolidation/runs/scheduled__2026-12-03T15%3A00%3A00%2B00%3A00"
                                     "/tasks/forecast.write_outputs/mapped/1?try_number=1")
    zero = lineage.task_of({**task, "map_index": 0})
    assert lineage.ui_path(zero).endswith("/tasks/forecast.write_outputs/mapped/0?try_number=1")
    assert "map_index" not in lineage.task_of({**task, "map_index": "1"})  # only an index Airflow gave
