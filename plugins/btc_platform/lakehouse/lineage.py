"""Which Airflow task instance wrote a table version: its identity travels in the Delta commit.

Airflow 3's task runner exports the running task instance to the task's environment
(``AIRFLOW_CTX_DAG_ID``, ``AIRFLOW_CTX_DAG_RUN_ID``, ``AIRFLOW_CTX_TASK_ID``,
``AIRFLOW_CTX_TRY_NUMBER``; ``airflow.sdk.execution_time.task_runner``), and every process the
task starts inherits it: spark-submit of the consolidation, backfill, quality and maintenance
jobs, and the producer and streaming job the supervisor task launches. Every Delta commit made
in such a process carries it in its commit info, as ``{"airflow": {...}}`` inside
``userMetadata`` (a JSON object, next to what a job records there itself): Spark sessions get it
from :func:`user_metadata` (``btc_platform.lakehouse.spark_session``, ``spark_jobs.tables.commit_metadata``),
delta-rs writes from :func:`commit_info` (``btc_platform.lakehouse.lake``).

The dashboard reads it back with :func:`from_commit` and links each table to
:func:`ui_path`: the Airflow UI page of that task instance (its log).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)

#: The key of the task instance inside a commit's JSON user metadata.
KEY = "airflow"
#: What Airflow's task runner exports, and the names kept in the commit.
ENV = {
    "dag_id": "AIRFLOW_CTX_DAG_ID",
    "run_id": "AIRFLOW_CTX_DAG_RUN_ID",
    "task_id": "AIRFLOW_CTX_TASK_ID",
    "try_number": "AIRFLOW_CTX_TRY_NUMBER",
    "map_index": "AIRFLOW_CTX_MAP_INDEX",
}
_REQUIRED = ("dag_id", "run_id", "task_id")


def airflow_task(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The Airflow task instance this process runs in (or was started by), else None."""
    env = os.environ if environ is None else environ
    task = {name: env.get(var) for name, var in ENV.items()}
    if not all(task[name] for name in _REQUIRED):
        return None
    try_number = task.pop("try_number")
    if try_number and try_number.isdigit():
        task["try_number"] = int(try_number)
    map_index = task.pop("map_index")
    if map_index and map_index.isdigit():
        task["map_index"] = int(map_index)
    return task


def export_map_index(map_index: int, environ: dict[str, str] | None = None) -> None:
    """Put a mapped task instance's map index into this task's environment (``environ``, default
    ``os.environ``) as :data:`ENV` ``["map_index"]``, next to the ``AIRFLOW_CTX_*`` variables
    Airflow's task runner exports (it exports no map index): the commits the task makes then name
    the very instance, whose UI page has the index in its route. -1 (not mapped) exports nothing."""
    env = os.environ if environ is None else environ
    if map_index is not None and map_index >= 0:
        env[ENV["map_index"]] = str(int(map_index))


def with_task(metadata: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``metadata`` plus the Airflow task instance under :data:`KEY` (unchanged outside Airflow)."""
    task = airflow_task(environ)
    return {**metadata, KEY: task} if task else dict(metadata)


def user_metadata(environ: Mapping[str, str] | None = None) -> str | None:
    """A commit's ``userMetadata`` naming the Airflow task instance (None outside Airflow)."""
    task = airflow_task(environ)
    return json.dumps({KEY: task}, sort_keys=True) if task else None


def commit_info(environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """Custom commit info for a delta-rs write (``CommitProperties(custom_metadata=...)``): the
    same ``userMetadata`` field Spark writes, so both engines' commits read alike."""
    text = user_metadata(environ)
    return {"userMetadata": text} if text else None


def from_commit(commit: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Airflow task instance recorded in one commit's info (a ``history()`` entry), else None."""
    raw = commit.get("userMetadata")
    if not raw:
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            log.debug("commit %s: user metadata is not JSON", commit.get("version"))
            return None
    return task_of(raw.get(KEY) if isinstance(raw, dict) else None)


def task_of(task: Any) -> dict[str, Any] | None:
    """A recorded task instance (a commit's or a supervisor event's ``airflow`` entry) checked:
    dag_id, run_id, task_id and maybe try_number and map_index, else None."""
    if not isinstance(task, dict) or not all(isinstance(task.get(name), str) and task[name] for name in _REQUIRED):
        return None
    out = {name: task[name] for name in _REQUIRED}
    for name in ("try_number", "map_index"):
        if isinstance(task.get(name), int) and not isinstance(task[name], bool) and task[name] >= 0:
            out[name] = task[name]
    return out


def ui_path(task: Mapping[str, Any]) -> str:
    """The Airflow 3 UI route of a task instance (its log), relative to the UI's base URL:
    ``dags/{dag_id}/runs/{run_id}/tasks/{task_id}[/mapped/{map_index}][?try_number=N]`` (a mapped
    task's page without its index is the list of its instances, and has no log)."""
    path = "dags/{}/runs/{}/tasks/{}".format(*(quote(str(task[name]), safe="") for name in _REQUIRED))
    if task.get("map_index") is not None:
        path += f"/mapped/{int(task['map_index'])}"
    if task.get("try_number"):
        path += f"?try_number={int(task['try_number'])}"
    return path


def run_path(task: Mapping[str, Any]) -> str:
    """The Airflow 3 UI route of the DAG run of a task instance."""
    return "dags/{}/runs/{}".format(*(quote(str(task[name]), safe="") for name in ("dag_id", "run_id")))
