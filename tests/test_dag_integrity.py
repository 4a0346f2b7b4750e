"""DAG integrity: every file in dags/ imports through Airflow's own DagBag without import errors
and defines at least one DAG. The DagBag runs in a subprocess with the local Airflow environment
(``btc_platform.ops.airflow_env``) pointed at a temporary AIRFLOW_HOME, exactly as the scheduler's
DAG processor would see the files, and without touching any real Airflow state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"

_HARNESS = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
print("DAGBAG-RESULT " + json.dumps({
    "dags": {dag_id: dag.fileloc for dag_id, dag in bag.dags.items()},
    "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
}))
"""


def load_dagbag(folder: Path, airflow_home: Path, harness: str = _HARNESS) -> dict:
    """Parse ``folder`` with DagBag in a fresh interpreter; return dag ids -> file and import errors
    (or what ``harness`` prints after ``DAGBAG-RESULT``)."""
    from btc_platform.ops.airflow_env import airflow_env
    from btc_platform.settings import load_settings

    settings = load_settings(data_dir=airflow_home.parent)
    env = {**os.environ, **airflow_env(settings)}
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(folder)
    proc = subprocess.run(
        [sys.executable, "-c", harness, str(folder)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("DAGBAG-RESULT ")]
    assert proc.returncode == 0 and lines, f"DagBag harness failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1].removeprefix("DAGBAG-RESULT "))


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory) -> dict:
    return load_dagbag(DAGS, tmp_path_factory.mktemp("af") / "airflow")


def _dag_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))


def test_no_import_errors(dagbag):
    assert dagbag["import_errors"] == {}


def test_every_dag_file_defines_a_dag(dagbag):
    files_with_dags = {Path(loc).resolve() for loc in dagbag["dags"].values()}
    missing = [p.name for p in _dag_files(DAGS) if p.resolve() not in files_with_dags]
    assert missing == [], f"files in dags/ that define no DAG: {missing}"


def test_harness_reports_broken_and_empty_files(tmp_path):
    """The check above must be able to fail: a broken file shows up as an import error and a file
    without a DAG is spotted, next to a good DAG that loads."""
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "good.py").write_text(
        "import pendulum\nfrom airflow.sdk import dag, task\n\n"
        "@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz='UTC'), catchup=False)\n"
        "def good_dag():\n    @task\n    def hello():\n        return 1\n    hello()\n\ngood_dag()\n"
    )
    (folder / "broken.py").write_text("from airflow.sdk import DAG\nimport module_that_does_not_exist\n")
    (folder / "nodag.py").write_text("VALUE = 1  # airflow dag\n")
    bag = load_dagbag(folder, tmp_path / "airflow")
    assert list(bag["dags"]) == ["good_dag"]
    assert [Path(k).name for k in bag["import_errors"]] == ["broken.py"]
    assert "module_that_does_not_exist" in next(iter(bag["import_errors"].values()))
    files_with_dags = {Path(loc).resolve() for loc in bag["dags"].values()}
    assert [p.name for p in _dag_files(folder) if p.resolve() not in files_with_dags] == ["broken.py", "nodag.py"]


_NO_INTERVAL_HARNESS = _HARNESS.split("print(")[0] + """
sensor = bag.dags["btc_hourly_consolidation"].get_task("wait_for_minutes")
try:
    sensor.python_callable(data_interval_end=None)
    outcome = {"raised": None}
except BaseException as exc:
    outcome = {"raised": type(exc).__name__, "message": str(exc)}
print("DAGBAG-RESULT " + json.dumps(outcome))
"""


def test_consolidation_run_without_data_interval_fails_at_once_with_the_reason(tmp_path):
    """A REST trigger without logical_date has no data interval: the sensor fails without retries
    (AirflowFailException) and says how to trigger it, instead of a TypeError three times."""
    from btc_platform.ops.orchestration import NO_DATA_INTERVAL

    outcome = load_dagbag(DAGS, tmp_path / "airflow", _NO_INTERVAL_HARNESS)
    assert outcome == {"raised": "AirflowFailException", "message": NO_DATA_INTERVAL}


_API_RETRY_HARNESS = """
import json
from airflow.sdk.api import client
print("DAGBAG-RESULT " + json.dumps({"retries": client.API_RETRIES, "wait_min": client.API_RETRY_WAIT_MIN,
                                      "wait_max": client.API_RETRY_WAIT_MAX}))
"""


def test_task_processes_wait_for_a_slow_api_server(tmp_path):
    """On a first start the scheduler queues tasks before the API server answers: the task
    processes of the platform's Airflow keep retrying the execution API for at least a minute
    (what Airflow's task SDK reads from the environment), not Airflow's few seconds."""
    retry = load_dagbag(DAGS, tmp_path / "airflow", _API_RETRY_HARNESS)
    assert (retry["retries"] - 1) * retry["wait_min"] >= 60  # tenacity: each wait at least wait_min
    assert retry["wait_min"] <= retry["wait_max"]
