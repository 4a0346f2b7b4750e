"""The Airflow DAGs: integrity, hygiene, and real ``dag.test()`` runs on small data.

Airflow reads its configuration when it is first imported, so everything Airflow-related runs
in a subprocess with its own AIRFLOW_HOME (built with ``btc_platform.ops.airflow_env`` - the same
environment ``make run`` gives Airflow) and a temporary BTC_DATA_DIR / storage root. The
subprocess prints one JSON line that the tests assert on, together with the datasets the DAG
runs wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"
EXPECTED_DAGS = {"btc_stream_supervisor", "btc_hourly_consolidation", "btc_retrain", "btc_backfill", "btc_maintenance"}
MARK = "DAGTEST_JSON "

# Runs inside the Airflow subprocess. argv: mode, then mode-specific arguments.
RUNNER = textwrap.dedent(
    """
    import builtins, json, os, socket, sys

    MARK = "DAGTEST_JSON "
    mode = sys.argv[1]
    connects, queries = [], []

    def guard_parsing():
        # refuse (and record) network connections; record every DB statement from now on

        def guard(self, *args, **kwargs):
            connects.append(repr(args))
            raise OSError("network connection attempted while parsing DAG files")

        socket.socket.connect = guard
        socket.socket.connect_ex = guard
        import airflow  # noqa: F401  (configures the ORM engine; parsing must not use it)
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "before_cursor_execute", lambda c, cur, stmt, *a: queries.append(stmt))

    if mode == "imports":
        # argv: dag file, comma-separated heavy top-level modules, comma-separated own packages.
        # Every import statement executed while DagBag parses the one file is seen here: which
        # airflow modules the file imports itself, and who (our code or Airflow) imports a heavy one.
        dag_file = os.path.realpath(sys.argv[2])
        heavy, own = set(sys.argv[3].split(",")), set(sys.argv[4].split(","))
        direct, heavy_imports = set(), {}
        real_import = builtins.__import__

        def owner(frame):
            name = str(frame.f_globals.get("__name__", ""))
            if os.path.realpath(frame.f_code.co_filename) == dag_file or name.split(".")[0] in own:
                return "ours"
            return "airflow" if name.split(".")[0] == "airflow" else None

        def watching_import(name, globals=None, locals=None, fromlist=(), level=0):
            caller = sys._getframe(1)
            if level == 0 and os.path.realpath(caller.f_code.co_filename) == dag_file:
                direct.add(name)
            if level == 0 and name.split(".")[0] in heavy:
                frame = caller  # the nearest frame of our code or of Airflow decides who asked
                while frame is not None and owner(frame) is None:
                    frame = frame.f_back
                who = owner(frame) if frame is not None else "unknown"
                where = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"
                heavy_imports.setdefault(name.split(".")[0], []).append([who, where])
            return real_import(name, globals, locals, fromlist, level)

        guard_parsing()
        from airflow.dag_processing.dagbag import DagBag

        loaded_before = sorted(m for m in heavy if m in sys.modules)
        builtins.__import__ = watching_import
        try:
            bag = DagBag(dag_folder=dag_file)
        finally:
            builtins.__import__ = real_import
        print(MARK + json.dumps({
            "errors": bag.import_errors, "dags": sorted(bag.dags), "queries": queries,
            "connects": connects, "direct": sorted(direct), "heavy_imports": heavy_imports,
            "loaded_before": loaded_before, "loaded": sorted(m for m in heavy if m in sys.modules),
            "models_loaded": sorted(m for m in sys.modules if m.split(".")[0] == "models"),
        }, default=str))

    elif mode == "parse":
        guard_parsing()
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=sys.argv[2])
        dags = {}
        for dag_id, dag in bag.dags.items():
            tasks = {}
            for t in dag.tasks:
                tasks[t.task_id] = {
                    "retries": t.retries,
                    "pool": t.pool,
                    "retry_delay_s": t.retry_delay.total_seconds(),
                    "type": type(t).__name__,
                    "upstream": sorted(t.upstream_task_ids),
                    "trigger_rule": str(getattr(t.trigger_rule, "value", t.trigger_rule)),
                    "outlets": [getattr(o, "name", str(o)) for o in (t.outlets or [])],
                    "application": getattr(t, "application", None),
                    "application_args": [str(a) for a in (getattr(t, "application_args", None) or [])]
                    if isinstance(getattr(t, "application_args", None), list) else None,
                    "conn_id": getattr(t, "_conn_id", None),
                    "group": type(t.task_group).__name__ if t.task_group is not None else None,
                }
            dags[dag_id] = {
                "fileloc": dag.fileloc,
                "tags": sorted(dag.tags),
                "doc_md": dag.doc_md or "",
                "catchup": dag.catchup,
                "max_active_runs": dag.max_active_runs,
                "max_consecutive_failed_dag_runs": dag.max_consecutive_failed_dag_runs,
                "start_date": dag.start_date.isoformat() if dag.start_date else None,
                "timetable": type(dag.timetable).__name__,
                "timetable_summary": getattr(dag.timetable, "expression", None),
                "params": {k: dag.params.get_param(k).value for k in dag.params},
                "tasks": tasks,
            }
        print(MARK + json.dumps({"errors": bag.import_errors, "dags": dags,
                                  "queries": queries, "connects": connects}, default=str))

    elif mode == "test":
        from datetime import datetime
        from airflow.dag_processing.dagbag import DagBag

        dag_id, logical, conf = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
        bag = DagBag(dag_folder=sys.argv[5])
        dag = bag.dags[dag_id]
        run = dag.test(logical_date=datetime.fromisoformat(logical) if logical else None, run_conf=conf)
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session

        with create_session() as session:
            tis = session.query(TaskInstance).filter(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id).all()
            def key(task_id, map_index):  # a mapped task instance: task_id[map_index]
                return task_id if map_index is None or map_index < 0 else f"{task_id}[{map_index}]"

            states = {key(ti.task_id, ti.map_index): str(ti.state) for ti in tis}
            names = {key(ti.task_id, ti.map_index): ti.rendered_map_index for ti in tis if ti.map_index >= 0}
            from airflow.models.asset import AssetEvent
            from airflow.models.xcom import XComModel

            events = [e.extra for e in session.query(AssetEvent).filter(
                AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run.run_id).all()]
            xcoms = {key(x.task_id, x.map_index): XComModel.deserialize_value(x) for x in session.query(XComModel).filter(
                XComModel.dag_id == dag_id, XComModel.run_id == run.run_id, XComModel.key == "return_value").all()}
        print(MARK + json.dumps({"state": str(run.state), "run_id": run.run_id, "tasks": states, "names": names,
                                  "asset_extras": events, "xcoms": xcoms,
                                  "interval": [str(run.data_interval_start), str(run.data_interval_end)]},
                                 default=str))
    """
)


def _result(output: str) -> dict:
    lines = [line for line in output.splitlines() if line.startswith(MARK)]
    assert lines, f"runner printed no result:\n{output[-6000:]}"
    return json.loads(lines[-1][len(MARK) :])


class AirflowSandbox:
    """An isolated Airflow configuration (home, SQLite DB) + platform settings in a temp dir."""

    def __init__(self, base: Path):
        from btc_platform.ops.airflow_env import airflow_env
        from btc_platform.settings import load_settings

        # schedule start before the test data, or manual runs of those hours get no task instances
        self.settings = load_settings(
            data_dir=base / "data", spark_master="local[2]", schedule_start_date="2025-01-01"
        )
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("BTC_", "AIRFLOW"))}
        self.env = {**environ, **airflow_env(self.settings, environ)}
        self.env["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
        self.env["BTC_SPARK_MASTER"] = "local[2]"
        self.env["BTC_SPARK_SHUFFLE_PARTITIONS"] = "2"
        self.env["BTC_PRODUCER_SOURCE"] = "simulate"  # no gap repair from the (unreachable) exchange
        self.runner = base / "dagtest_runner.py"
        self.runner.write_text(RUNNER)
        self.migrated = False

    @property
    def storage(self) -> Path:
        return Path(self.settings.storage_root.removeprefix("file://"))

    def reset_storage(self) -> Path:
        """Empty storage root, so each DAG run test sees only the data it built."""
        import shutil

        shutil.rmtree(self.storage, ignore_errors=True)
        self.storage.mkdir(parents=True)
        return self.storage

    def run(self, *args: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(self.runner), *args],
            env={**self.env, **(env or {})},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def migrate(self) -> None:
        if not self.migrated:
            airflow = Path(sys.executable).parent / "airflow"
            proc = subprocess.run(
                [str(airflow), "db", "migrate"], env=self.env, capture_output=True, text=True, timeout=600
            )
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            self.migrated = True

    def dag_test(self, dag_id: str, logical_date: str = "", conf: dict | None = None,
                 env: dict | None = None) -> tuple[dict, str]:
        """One run of ``dag_id`` (``env``: settings of this run, e.g. BTC_BINANCE_SYMBOLS)."""
        self.migrate()
        proc = self.run("test", dag_id, logical_date, json.dumps(conf or {}), str(DAGS), env=env)
        output = proc.stdout + proc.stderr
        return _result(output), output


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> AirflowSandbox:
    return AirflowSandbox(tmp_path_factory.mktemp("airflow"))


@pytest.fixture(scope="module")
def parsed(sandbox) -> dict:
    proc = sandbox.run("parse", str(DAGS), timeout=300)
    return _result(proc.stdout + proc.stderr)


# ---------------------------------------------------------------------------------------------
# Integrity and hygiene
# ---------------------------------------------------------------------------------------------
def test_dagbag_has_every_dag_and_no_import_errors(parsed):
    assert parsed["errors"] == {}
    assert set(parsed["dags"]) == EXPECTED_DAGS
    files = {Path(d["fileloc"]).name for d in parsed["dags"].values()}
    assert files == {p.name for p in DAGS.glob("*.py")}, "every DAG file yields exactly one DAG"


def test_parsing_makes_no_db_queries_and_opens_no_connections(parsed):
    assert parsed["queries"] == []
    assert parsed["connects"] == []


def test_parse_guards_detect_a_connecting_dag(sandbox, tmp_path):
    """Control: the same guards do catch a DAG file that connects at parse time."""
    bad = tmp_path / "dags"
    bad.mkdir()
    (bad / "bad_dag.py").write_text(
        "import socket\nfrom airflow.sdk import dag\n"
        "socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
        "@dag(schedule=None)\ndef bad():\n    pass\nbad()\n"
    )
    result = _result((lambda p: p.stdout + p.stderr)(sandbox.run("parse", str(bad), timeout=300)))
    assert result["connects"], "the socket guard did not see the connection"
    assert result["errors"], "a DAG that connects at parse time must be an import error"


def test_every_dag_has_tags_docs_and_retries(parsed):
    for dag_id, dag in parsed["dags"].items():
        assert "btc" in dag["tags"] and len(dag["tags"]) >= 2, dag_id
        assert dag["doc_md"].strip().startswith(f"### {dag_id}"), dag_id
        for task_id, task in dag["tasks"].items():
            assert task["retries"] is not None, f"{dag_id}.{task_id} has no retries setting"


#: Modules a DAG file must not load at parse time (the DAG processor parses every file every
#: ``min_file_process_interval``): they belong inside the tasks.
HEAVY_MODULES = ("tensorflow", "keras", "pyspark", "pandas", "numpy", "pyarrow", "requests", "confluent_kafka",
                 "spark_jobs")  # fmt: skip
#: The one module of ``models`` a DAG file may load: the dataclasses that hold the Params' defaults.
MODELS_AT_PARSE = {"models", "models.config"}
OWN_PACKAGES = ("btc_platform", "spark_jobs", "models")


def parse_one(sandbox, dag_file: Path) -> dict:
    """Parse one DAG file with DagBag in a fresh interpreter, watching its imports (see RUNNER)."""
    proc = sandbox.run("imports", str(dag_file), ",".join(HEAVY_MODULES), ",".join(OWN_PACKAGES), timeout=300)
    return _result(proc.stdout + proc.stderr)


def heavy_imports_of_ours(result: dict) -> dict[str, list[str]]:
    """Heavy modules our code (the DAG file, btc_platform, ...) imported while the file was parsed."""
    return {
        module: [where for who, where in calls if who != "airflow"]
        for module, calls in result["heavy_imports"].items()
        if any(who != "airflow" for who, _ in calls)
    }


@pytest.mark.parametrize("dag_file", sorted(DAGS.glob("*.py")), ids=lambda p: p.name)
def test_parsing_a_dag_file_loads_no_heavy_module(sandbox, dag_file):
    """Each DAG file really imported (DagBag, fresh interpreter): our code imports none of the
    heavy modules at parse time; any that is loaded afterwards was loaded by Airflow itself (the
    Spark provider imports requests); no connection, no DB query; airflow only via airflow.sdk."""
    result = parse_one(sandbox, dag_file)
    assert result["errors"] == {} and len(result["dags"]) == 1, result
    assert heavy_imports_of_ours(result) == {}
    by_airflow = set(result["loaded_before"]) | set(result["heavy_imports"])
    assert set(result["loaded"]) <= by_airflow, f"loaded, importer unknown: {set(result['loaded']) - by_airflow}"
    assert not {"spark_jobs", "pyspark", "pandas", "tensorflow"} & set(result["loaded"])
    assert set(result["models_loaded"]) <= MODELS_AT_PARSE, result["models_loaded"]
    assert result["connects"] == [] and result["queries"] == []
    for module in result["direct"]:
        if module.startswith("airflow") and not module.startswith("airflow.providers"):
            assert module == "airflow.sdk", f"{dag_file.name}: use airflow.sdk, not {module}"


def test_heavy_import_guard_catches_heavy_imports_of_ours(sandbox, tmp_path):
    """Control: a DAG file importing a heavy module itself, and one reaching requests through
    btc_platform.lakehouse.namenode, are both caught; an import inside a task is not (it runs at task time)."""
    folder = tmp_path / "dags"
    folder.mkdir()
    header = "import pendulum\nfrom airflow.sdk import dag, task\n"
    body = ("@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz='UTC'))\n"
            "def d():\n    @task\n    def t():\n        import pandas\n        return 1\n    t()\nd()\n")  # fmt: skip
    (folder / "direct.py").write_text(header + "import pyarrow\n" + body)
    (folder / "indirect.py").write_text(header + "from btc_platform.lakehouse import namenode\n" + body)
    (folder / "clean.py").write_text(header + body)
    direct = parse_one(sandbox, folder / "direct.py")
    assert "pyarrow" in heavy_imports_of_ours(direct)  # (and numpy, which pyarrow imports)
    assert "pyarrow" in direct["loaded"]
    indirect = heavy_imports_of_ours(parse_one(sandbox, folder / "indirect.py"))
    assert list(indirect) == ["requests"] and "btc_platform/lakehouse/namenode.py" in indirect["requests"][0]
    clean = parse_one(sandbox, folder / "clean.py")
    assert heavy_imports_of_ours(clean) == {} and "pandas" not in clean["loaded"]


def test_supervisor_dag_shape(parsed):
    dag = parsed["dags"]["btc_stream_supervisor"]
    assert dag["catchup"] is False and dag["max_active_runs"] == 1
    # one run at a time, the next as soon as one ends (a day when healthy, at once after a failure)
    assert dag["timetable"] == "ContinuousTimetable"
    assert dag["max_consecutive_failed_dag_runs"] == 0, "a lasting outage must never pause supervision"
    assert set(dag["tasks"]) == {"supervise"}, "one deferrable task, not two task processes a minute"
    supervise = dag["tasks"]["supervise"]
    assert supervise["type"] == "SupervisorOperator"
    # a service that cannot be restarted fails the task and the run (red, not up_for_retry)
    assert supervise["retries"] == 0


def test_table_writers_share_one_pool(parsed):
    """Every task writing a Delta table (backfill, consolidation, gap repair, their quality checks,
    the ingest audit, maintenance, the retrain's delta-rs writes): all in the one-slot pool, so two
    of them never write at once."""
    from btc_platform.ops.orchestration import TABLE_WRITERS_POOL

    writers = {
        ("btc_hourly_consolidation", "consolidate"), ("btc_hourly_consolidation", "data_quality"),
        ("btc_hourly_consolidation", "repair_gaps"), ("btc_hourly_consolidation", "audit_ingest"),
        ("btc_backfill", "backfill"), ("btc_backfill", "data_quality"), ("btc_maintenance", "optimize_vacuum"),
        ("btc_retrain", "forecast.predict_next_24h"), ("btc_retrain", "forecast.score_forecasts"),
        ("btc_retrain", "forecast.write_outputs"),
    }  # fmt: skip
    pooled = {
        (dag_id, task_id)
        for dag_id, dag in parsed["dags"].items()
        for task_id, task in dag["tasks"].items()
        if task["pool"] == TABLE_WRITERS_POOL
    }
    assert pooled == writers


def test_consolidation_dag_shape(parsed, sandbox):
    from btc_platform.ops.orchestration import schedule_start

    dag = parsed["dags"]["btc_hourly_consolidation"]
    assert dag["catchup"] is True
    assert dag["timetable"] == "CronDataIntervalTimetable" and dag["timetable_summary"] == "0 * * * *"
    pinned = sandbox.settings.model_copy(
        update={"schedule_start_date": sandbox.env["BTC_SCHEDULE_START_DATE"]}
    )
    assert dag["start_date"] == schedule_start(pinned).isoformat()
    consolidate, quality = dag["tasks"]["consolidate"], dag["tasks"]["data_quality"]
    assert consolidate["type"] == quality["type"] == "SparkSubmitOperator"
    assert consolidate["conn_id"] == "spark_default"
    assert consolidate["application"].endswith("spark_jobs/consolidate_job.py")
    assert quality["application"].endswith("spark_jobs/quality_job.py")
    assert consolidate["application_args"] == [
        "--start",
        "{{ data_interval_start.isoformat() }}",
        "--end",
        "{{ data_interval_end.isoformat() }}",
    ]
    assert quality["upstream"] == ["repair_gaps"] and quality["trigger_rule"] == "none_failed"
    assert quality["outlets"] == ["hourly_metrics"]
    gaps, repair, audit = dag["tasks"]["find_gaps"], dag["tasks"]["repair_gaps"], dag["tasks"]["audit_ingest"]
    assert gaps["upstream"] == ["consolidate"] and repair["upstream"] == ["find_gaps"]
    assert repair["application"].endswith("spark_jobs/backfill_job.py")
    assert repair["application_args"] == ["--source", "binance", "--repair", "{{ ti.xcom_pull(task_ids='find_gaps') }}"]
    assert audit["application"].endswith("spark_jobs/quality_job.py") and audit["upstream"] == ["consolidate"]
    assert audit["application_args"] == ["--audit-ingest", *consolidate["application_args"]]


def test_retrain_dag_shape(parsed):
    from models.config import RetrainParams

    dag = parsed["dags"]["btc_retrain"]
    assert dag["catchup"] is False and dag["max_active_runs"] == 1
    assert dag["timetable"] == "AssetOrTimeSchedule"  # daily and on new hourly_metrics data
    assert set(dag["params"]) == {"epochs", "lookback", "horizon", "test_hours", "force_promotion", "as_of_version",
                                  "min_promotion_windows", "min_retrain_hours"}
    for name, value in dag["params"].items():  # the defaults are the dataclass's, not retyped
        assert value == RetrainParams.default(name), name
    assert dag["params"]["test_hours"] == 672
    tasks = dag["tasks"]
    chain = ["check_sufficiency", "train", "evaluate", "promote_or_keep", "predict_next_24h", "write_outputs",
             "publish_metrics"]
    for before, after in zip(chain, chain[1:], strict=False):  # one group, mapped over the symbols
        assert f"forecast.{before}" in tasks[f"forecast.{after}"]["upstream"], f"{before} -> {after}"
    assert {task["group"] for task in tasks.values()} == {"MappedTaskGroup"}, tasks
    assert tasks["forecast.score_forecasts"]["upstream"] == ["forecast.predict_next_24h"]
    assert tasks["forecast.publish_metrics"]["outlets"] == ["prediction_metrics"]
    assert tasks["forecast.check_sufficiency"]["retries"] == 0  # short history is not transient


def test_backfill_dag_shape(parsed):
    dag = parsed["dags"]["btc_backfill"]
    # one scheduled run, the first start's (history for an empty table: test_first_run); then manual only
    assert dag["timetable"] == "OnceTimetable"
    assert set(dag["params"]) == {"source", "file_path", "start", "end", "overwrite_stream"}
    assert set(dag["tasks"]) == {"wait_for_stream", "backfill_arguments", "backfill", "quality_arguments",
                                 "data_quality"}
    assert dag["tasks"]["backfill_arguments"]["upstream"] == dag["tasks"]["quality_arguments"]["upstream"] == [
        "wait_for_stream"]
    backfill, quality = dag["tasks"]["backfill"], dag["tasks"]["data_quality"]
    assert backfill["type"] == quality["type"] == "SparkSubmitOperator"
    assert backfill["application"].endswith("spark_jobs/backfill_job.py")
    assert quality["application"].endswith("spark_jobs/quality_job.py")
    assert backfill["upstream"] == ["backfill_arguments"]
    # the data-quality checks of the backfilled range end the run; a pass updates the Asset
    assert quality["upstream"] == ["backfill", "quality_arguments"]
    assert quality["outlets"] == ["hourly_metrics"] and backfill["outlets"] == []


def test_maintenance_dag_shape(parsed):
    dag = parsed["dags"]["btc_maintenance"]
    assert dag["catchup"] is False and dag["max_active_runs"] == 1
    assert dag["timetable"] == "CronTriggerTimetable" and dag["timetable_summary"] == "30 2 * * *"
    job, clean = dag["tasks"]["optimize_vacuum"], dag["tasks"]["clean_airflow_metadata"]
    assert job["type"] == "SparkSubmitOperator" and job["conn_id"] == "spark_default"
    assert job["application"].endswith("spark_jobs/maintenance_job.py")
    assert clean["upstream"] == ["optimize_vacuum"]


def test_airflow_db_clean_command_and_environment(settings_env):
    """The cut-off is the retention, and the task's blocked metadata-DB variable is replaced by
    the worker's (the command's effect: test_airflow_db_clean_command_deletes_only_old_metadata)."""
    from datetime import datetime

    from btc_platform.ops import orchestration as o

    settings = settings_env(maintenance_airflow_retention_days=3)
    command = o.airflow_db_clean_command(settings, now=datetime(2026, 1, 10, 12, tzinfo=UTC))
    assert command[1:] == ["db", "clean", "--clean-before-timestamp", "2026-01-07T12:00:00+00:00",
                           "--yes", "--skip-archive", "--error-on-cleanup-failure"]  # fmt: skip

    blocked = {"PATH": "/bin", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": o.BLOCKED_DB_CONN,
               "AIRFLOW__CORE__SQL_ALCHEMY_CONN": o.BLOCKED_DB_CONN}  # fmt: skip
    worker = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////x/airflow.db"}
    assert o.airflow_cli_env(blocked, worker) == {"PATH": "/bin", **worker}
    assert o.airflow_cli_env({"PATH": "/bin", **worker}, {}) == {"PATH": "/bin", **worker}


@pytest.mark.slow
def test_airflow_db_clean_command_deletes_only_old_metadata(sandbox):
    """The installed Airflow runs the maintenance DAG's command: metadata older than the retention
    goes (no prompt, no archive table), newer stays."""
    import sqlite3
    from datetime import datetime, timedelta

    from btc_platform.ops import orchestration as o

    sandbox.migrate()
    database = sandbox.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    now = datetime.now(UTC)
    settings = sandbox.settings.model_copy(update={"maintenance_airflow_retention_days": 3})
    with sqlite3.connect(database) as db:
        db.executemany("INSERT INTO log (dttm, event) VALUES (?, ?)",
                       [((now - timedelta(days=5)).isoformat(" "), "old"),
                        ((now - timedelta(days=1)).isoformat(" "), "recent")])  # fmt: skip
    assert _log_events(database) == {"old", "recent"}
    command = o.airflow_db_clean_command(settings, now=now)
    proc = subprocess.run(command, env=sandbox.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _log_events(database) == {"recent"}
    with sqlite3.connect(database) as db:
        archives = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE name LIKE '_airflow_deleted%'")]
    assert archives == []


def _log_events(database: str) -> set[str]:
    import sqlite3

    with sqlite3.connect(database) as db:
        return {row[0] for row in db.execute("SELECT event FROM log WHERE event IN ('old', 'recent')")}


def test_backfill_arguments_validation():
    from btc_platform.ops.orchestration import backfill_args

    assert backfill_args({"source": "file", "file_path": "/x.csv", "start": "", "end": ""}) == [
        "--source",
        "file",
        "--file",
        "/x.csv",
    ]
    assert backfill_args(
        {"source": "binance", "start": "2024-01-01", "end": "2024-01-02T00:00:00Z", "overwrite_stream": True}
    ) == [
        "--source",
        "binance",
        "--start",
        "2024-01-01",
        "--end",
        "2024-01-02T00:00:00Z",
        "--overwrite-stream",
    ]
    with pytest.raises(ValueError, match="needs file_path"):
        backfill_args({"source": "file", "file_path": " "})
    with pytest.raises(ValueError, match="needs start"):
        backfill_args({"source": "binance", "end": "2024-01-02"})
    with pytest.raises(ValueError, match="must be before"):
        backfill_args({"source": "binance", "start": "2024-01-03", "end": "2024-01-02"})
    with pytest.raises(ValueError, match="ISO date"):
        backfill_args({"source": "binance", "start": "yesterday", "end": "2024-01-02"})
    # on a full UTC hour, as the job requires (a +05:30 offset makes 00:00 a half hour in UTC)
    for params, message in (
        ({"start": "2024-01-01T10:15:00Z", "end": "2024-01-02"}, r"start must be on a full hour \(UTC\), got "
         r"2024-01-01T10:15:00\+00:00"),
        ({"start": "2024-01-01", "end": "2024-01-02T00:00:30"}, r"end must be on a full hour"),
        ({"start": "2024-01-01T00:00:00+05:30", "end": "2024-01-02"}, r"start must be on a full hour \(UTC\), got "
         r"2023-12-31T18:30:00\+00:00"),
    ):
        with pytest.raises(ValueError, match=message):
            backfill_args({"source": "binance", **params})
        with pytest.raises(ValueError, match=message):
            backfill_args({"source": "file", "file_path": "/x.csv", **params})
    assert backfill_args({"source": "binance", "start": "2024-01-01T05:00:00+01:00", "end": "2024-01-02"})[3] == (
        "2024-01-01T05:00:00+01:00")


@pytest.mark.parametrize(
    ("params", "what_to_do"),
    [
        ({"source": "ftp"}, "'binance' (with start and end), 'file' (with file_path) or 'simulate'"),
        ({"source": "file", "file_path": ""}, "the path or file:// / hdfs:// URI of an hourly candle CSV"),
        ({"source": "binance", "end": "2024-01-02"}, "set the start Param (UTC, on a full hour; e.g. 2024-05-01 or"),
        ({"source": "binance", "start": "yesterday", "end": "2024-01-02"}, "e.g. 2024-05-01 or 2024-05-01T13:00:00Z"),
        ({"source": "binance", "start": "2024-01-01T10:15:00Z", "end": "2024-01-02"},
         "use 2024-01-01T10:00:00+00:00 or the hour after"),
        ({"source": "binance", "start": "2024-01-03", "end": "2024-01-02"}, "the end is exclusive: swap them"),
    ],
)
def test_backfill_param_errors_say_what_to_do(params, what_to_do):
    """Each refusal of the btc_backfill Params names the value to give, not only what is wrong."""
    from btc_platform.ops.orchestration import backfill_args

    with pytest.raises(ValueError) as refused:
        backfill_args(params)
    assert what_to_do in str(refused.value)


@pytest.mark.parametrize(
    ("params", "what_to_do"),
    [
        ({"test_hours": 12}, "set test_hours above it (default 672, 4 weeks) or lower the horizon"),
        ({"as_of_version": -1}, "leave it empty to train on the current hourly_metrics"),
        ({"promotion_policy": "always"}, "use beat_current_and_persistence or beat_persistence"),
    ],
)
def test_retrain_param_errors_say_what_to_do(params, what_to_do, tmp_path):
    """The btc_retrain Params that the pipeline refuses (before reading any data) say what to set."""
    from btc_platform.settings import load_settings
    from models.pipeline import resolve

    with pytest.raises(ValueError) as refused:
        resolve(params, load_settings(data_dir=tmp_path))
    assert what_to_do in str(refused.value)


def test_backfill_quality_arguments():
    from btc_platform.ops.orchestration import backfill_quality_args

    assert backfill_quality_args({"source": "binance", "start": "2024-01-01", "end": "2024-01-02T00:00:00Z"}) == [
        "--start", "2024-01-01", "--end", "2024-01-02T00:00:00Z"]  # fmt: skip
    # a file without both bounds: the range the backfill wrote
    assert backfill_quality_args({"source": "file", "file_path": "/x.csv", "start": "", "end": ""}) == [
        "--last-backfill"]  # fmt: skip
    assert backfill_quality_args({"source": "file", "file_path": "/x.csv", "start": "2024-01-01"}) == [
        "--last-backfill"]  # fmt: skip
    with pytest.raises(ValueError, match="must be on a full hour"):
        backfill_quality_args({"source": "binance", "start": "2024-01-01T00:30:00Z", "end": "2024-01-02"})


def test_schedule_start_is_bounded_and_configurable(settings_env):
    from datetime import datetime

    from btc_platform.ops.orchestration import schedule_start

    now = datetime(2026, 3, 10, 15, 42, tzinfo=UTC)
    assert schedule_start(settings_env(), now) == datetime(2026, 3, 9, tzinfo=UTC)
    configured = settings_env(schedule_start_date="2026-02-01T06:00:00")
    assert schedule_start(configured, now) == datetime(2026, 2, 1, 6, tzinfo=UTC)
    with pytest.raises(ValueError, match="BTC_SCHEDULE_START_DATE"):
        schedule_start(settings_env(schedule_start_date="last tuesday"), now)


def test_airflow_env_has_connections_and_unpaused_dags(tmp_path):
    from datetime import datetime

    from btc_platform.ops.airflow_env import airflow_env
    from btc_platform.settings import load_settings

    settings = load_settings(data_dir=tmp_path, spark_master="spark://master:7077")
    env = airflow_env(settings, {"PATH": "/usr/bin"})
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
    assert json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"]) == {
        "conn_type": "spark",
        "host": "spark://master:7077",
    }
    assert (
        json.loads(env["AIRFLOW_CONN_KAFKA_DEFAULT"])["extra"]["bootstrap.servers"]
        == settings.kafka_bootstrap_servers
    )
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)  # spark-submit
    # the consolidation catch-up starts at the first start of the installation, and stays there
    first = env["BTC_SCHEDULE_START_DATE"]
    assert first.endswith(":00:00+00:00") and first[:13] <= datetime.now(UTC).isoformat()[:13]
    assert airflow_env(settings, {"PATH": "/usr/bin"})["BTC_SCHEDULE_START_DATE"] == first
    pinned = load_settings(data_dir=tmp_path, schedule_start_date="2026-01-01")
    assert airflow_env(pinned, {})["BTC_SCHEDULE_START_DATE"] == "2026-01-01"


# ---------------------------------------------------------------------------------------------
# dag.test() runs on small data
# ---------------------------------------------------------------------------------------------
def _write_minute_metrics(storage: Path, rows: list[dict]) -> None:
    """The minute_metrics Delta table as the stream writes it (columns, types, change data feed)."""
    import pandas as pd

    from btc_platform.lakehouse import datasets, lake

    frame = pd.DataFrame(rows)
    for name, _ in datasets.MINUTE_METRICS_COLUMNS:
        if name not in frame:
            frame[name] = None
    frame = frame[datasets.column_names(datasets.MINUTE_METRICS_COLUMNS)]
    layout = datasets.TABLES[datasets.MINUTE_METRICS]
    lake.write_at(f"file://{storage / datasets.MINUTE_METRICS}", frame,
                  schema=lake.arrow_schema(datasets.MINUTE_METRICS_COLUMNS), properties=layout.properties)  # fmt: skip


def _read_dataset(path: Path):
    from btc_platform.lakehouse import lake

    return lake.read_at(f"file://{path}")


@pytest.mark.slow
@pytest.mark.spark
def test_consolidation_dag_run_writes_the_hour(sandbox):
    import pandas as pd

    from btc_platform.lakehouse import datasets

    start = pd.Timestamp("2026-01-05T10:00:00Z")
    minutes = [  # (minute, open, high, low, close, ticks)
        (0, 100.0, 101.0, 99.5, 100.5, 10),
        (1, 100.5, 103.0, 100.0, 102.0, 12),
        (2, 102.0, 102.5, 98.0, 99.0, 8),
    ]
    rows = []
    for minute, o, h, lo, c, ticks in minutes:
        ws = start + pd.Timedelta(minutes=minute)
        rows.append(
            {
                "symbol": "BTCUSDT", "window_start": ws, "window_end": ws + pd.Timedelta(minutes=1),
                "mid_open": o, "mid_high": h, "mid_low": lo, "mid_close": c,
                "spread_mean": 0.02, "spread_max": 0.05, "spread_pct_mean": 0.0002, "spread_pct_max": 0.0005,
                "bid_liquidity_mean": 1.0, "ask_liquidity_mean": 2.0, "liquidity_base_mean": 3.0,
                "liquidity_quote_mean": 300.0, "volatility": 0.001, "mid_range": h - lo, "tick_count": ticks,
                "date": "2026-01-05", "hour": 10,
            }
        )  # fmt: skip
    _write_minute_metrics(sandbox.reset_storage(), rows)

    # a manual run's data interval is the last complete hour before the logical date
    result, output = sandbox.dag_test("btc_hourly_consolidation", "2026-01-05T11:00:00+00:00")
    assert result["state"] == "success", output[-8000:]
    # the hour is long closed: the sensor does not wait (no stream status, past its maximum wait)
    assert result["tasks"] == {"wait_for_minutes": "success", "consolidate": "success", "find_gaps": "skipped",
                               "repair_gaps": "skipped", "data_quality": "success",
                               "audit_ingest": "success"}, output[-8000:]  # no stream ran: nothing to audit
    assert result["interval"][0].startswith("2026-01-05 10:00:00")

    hourly = _read_dataset(sandbox.storage / datasets.HOURLY_METRICS)
    assert len(hourly) == 1
    row = hourly.iloc[0]
    assert pd.Timestamp(row["hour_start"]).tz_localize(None) == start.tz_localize(None)
    assert (row["open"], row["high"], row["low"], row["close"]) == (100.0, 103.0, 98.0, 99.0)
    assert row["tick_count"] == 30 and row["minutes_present"] == 3
    assert row["coverage"] == pytest.approx(3 / 60)
    assert row["source"] == "stream"
    assert "--start 2026-01-05T10:00:00+00:00 --end 2026-01-05T11:00:00+00:00" in output


@pytest.mark.slow
@pytest.mark.spark
def test_backfill_dag_run_from_a_candle_file(sandbox, tmp_path):
    import pandas as pd

    from btc_platform.lakehouse import datasets, lake
    from btc_platform.lakehouse.quality import CHECKS

    csv = tmp_path / "candles.csv"
    csv.write_text(
        "open_time_utc,open,high,low,close,volume\n"
        "2025-12-01T00:00:00Z,90000.5,90100.0,89900.0,90050.0,12.5\n"
        "2025-12-01T01:00:00Z,90050.0,90500.0,90000.0,90400.0,20.0\n"
        "2025-12-01T02:00:00Z,90400.0,90450.0,89000.0,89100.0,33.0\n"
    )
    conf = {"source": "file", "file_path": str(csv), "start": "", "end": "", "overwrite_stream": False}
    sandbox.reset_storage()
    result, output = sandbox.dag_test("btc_backfill", "", conf)
    assert result["state"] == "success", output[-8000:]
    assert result["tasks"] == {"wait_for_stream": "success", "backfill_arguments": "success", "backfill": "success",
                               "quality_arguments": "success", "data_quality": "success"}, output[-8000:]
    hourly = lake.read_table(datasets.HOURLY_METRICS, sandbox.settings)
    hourly = hourly[hourly["source"] == "backfill"].sort_values("hour_start")
    assert [pd.Timestamp(t).hour for t in hourly["hour_start"]] == [0, 1, 2]
    assert hourly["open"].tolist() == [90000.5, 90050.0, 90400.0]
    assert hourly["close"].tolist() == [90050.0, 90400.0, 89100.0]
    assert hourly["volume"].tolist() == [12.5, 20.0, 33.0]
    assert hourly["spread_mean"].isna().all()  # microstructure is never invented from candles
    # the data-quality results of the backfilled hours, next to the data
    quality = lake.read_table(datasets.DATA_QUALITY, sandbox.settings)
    btc = quality[quality["symbol"] == "BTCUSDT"]
    assert sorted({pd.Timestamp(t).hour for t in btc["hour_start"]}) == [0, 1, 2]
    assert len(btc) == 3 * len(CHECKS) and set(btc["status"]) == {"pass"}
    assert "--last-backfill" in output
    # each table's commit names the task instance that wrote it (spark-submit inherits the task's
    # AIRFLOW_CTX_* environment): the dashboard links the exact run and task log
    from btc_platform.dashboard.data.health import dataset_runs

    tables = {d["table"]: d for d in dataset_runs(sandbox.settings)}
    for table, task_id in ((datasets.HOURLY_METRICS, "backfill"), (datasets.DATA_QUALITY, "data_quality")):
        produced = tables[table]["produced_by"]
        assert produced["operation"] == "MERGE", tables[table]
        assert produced["airflow"] == {"dag_id": "btc_backfill", "run_id": result["run_id"], "task_id": task_id,
                                       "try_number": 1}, tables[table]
        assert produced["task_log"] == (f"../dags/btc_backfill/runs/{quote(result['run_id'], safe='')}"
                                        f"/tasks/{task_id}?try_number=1")
    # the backfill job's own metadata is still there next to it
    history = lake.open_table(datasets.HOURLY_METRICS, sandbox.settings).history(5)
    merge = next(c for c in history if c["operation"] == "MERGE")
    assert json.loads(merge["userMetadata"])["job"] == "backfill"


@pytest.mark.slow
def test_backfill_dag_rejects_inconsistent_params(sandbox):
    conf = {"source": "file", "file_path": "", "start": "", "end": "", "overwrite_stream": False}
    result, output = sandbox.dag_test("btc_backfill", "", conf)
    assert result["state"] == "failed"
    assert result["tasks"]["backfill_arguments"] == "failed"
    assert "source=file needs file_path" in output


@pytest.mark.slow
def test_retrain_dag_serves_every_symbol_and_one_without_history_blocks_nothing(sandbox):
    """Two symbols, one without history. Fresh install: no hourly data -> the run succeeds with
    skipped tasks (no red run), each naming its symbol. Then BTCUSDT has history, ETHUSDT 30 hours:
    BTCUSDT's candidate is rejected by the promotion rule (too few windows), its forecast served
    (persistence + best band); ETHUSDT skips training with why and is still served persistence
    with a small-sample band; headline metrics are BTCUSDT's publish XCom and asset event extra.
    A second run on the same data skips training (nothing changed) and refreshes the forecasts."""
    from btc_platform.lakehouse import datasets, lake
    from btc_platform.testing.models_testdata import (
        candles_from_close,
        periodic_close,
        to_hourly_metrics,
        write_hourly_metrics,
    )

    sandbox.reset_storage()
    two = {"BTC_BINANCE_SYMBOLS": "BTCUSDT,ETHUSDT"}
    conf = {"epochs": 2, "lookback": 12, "horizon": 24, "test_hours": 72}
    result, output = sandbox.dag_test("btc_retrain", "", conf, env=two)
    tasks = result["tasks"]
    assert result["state"] == "success", output[-8000:]
    for i in (0, 1):
        assert tasks[f"forecast.check_sufficiency[{i}]"] == "skipped" and tasks[f"forecast.train[{i}]"] == "skipped"
    assert result["names"]["forecast.check_sufficiency[1]"] == "ETHUSDT"
    assert "failed" not in tasks.values()
    assert "btc_backfill" in output and "ETHUSDT: insufficient history" in output  # each skip says what to do

    frame = candles_from_close(periodic_close(700))
    write_hourly_metrics(to_hourly_metrics(frame), sandbox.storage / datasets.HOURLY_METRICS)
    eth = to_hourly_metrics(candles_from_close(periodic_close(30) * 0.05), symbol="ETHUSDT")
    write_hourly_metrics(eth, sandbox.storage / datasets.HOURLY_METRICS)
    result, output = sandbox.dag_test("btc_retrain", "", conf, env=two)
    tasks = result["tasks"]
    assert result["state"] == "success", output[-8000:]
    btc = {k: v for k, v in tasks.items() if k.endswith("[0]")}
    assert set(btc.values()) == {"success"}, tasks
    assert tasks["forecast.check_sufficiency[1]"] == "skipped" and tasks["forecast.predict_next_24h[1]"] == "success"
    assert "vs baselines" in output and "80 % bands" in output
    decision = result["xcoms"]["forecast.promote_or_keep[0]"]
    assert decision["status"] == "rejected" and decision["forced"] is False
    assert "only 48 test windows, promotion needs 504" in decision["reason"]
    headline = result["xcoms"]["forecast.publish_metrics[0]"]
    assert headline["symbol"] == "BTCUSDT" and headline["decision"] == "rejected"
    assert headline["served_point_model"] == "persistence"
    assert set(headline) >= {"lstm_skill_h1", "lstm_skill_h24", "band_coverage", "band_winkler_skill_vs_constant"}
    assert result["asset_extras"] == [headline]
    eth_served = result["xcoms"]["forecast.predict_next_24h[1]"]
    assert eth_served["symbol"] == "ETHUSDT" and eth_served["point_model"] == "persistence"
    assert eth_served["band_model"] == "ewma_t" and "30 found" in eth_served["point_reason"]
    future = lake.read_at(str(sandbox.storage / datasets.FUTURE_PREDICTIONS))
    assert future.groupby("symbol").size().to_dict() == {"BTCUSDT": 24, "ETHUSDT": 24}
    btc_future = future[future["symbol"] == "BTCUSDT"]
    assert set(btc_future["point_model"]) == {"persistence"}
    assert set(btc_future["band_model"]) == {headline["served_band_model"]}
    metrics = lake.read_at(str(sandbox.storage / datasets.PREDICTION_METRICS))
    assert metrics["symbol"].tolist() == ["BTCUSDT"] and metrics["decision"].tolist() == ["rejected"]
    assert metrics["data_table_version"].tolist() == [1]  # train ran on the version check_sufficiency read
    assert (sandbox.storage / "models" / "BTCUSDT" / decision["version"] / "decision.json").is_file()

    result, output = sandbox.dag_test("btc_retrain", "", conf, env=two)
    assert result["state"] == "success", output[-8000:]
    assert result["tasks"]["forecast.train[0]"] == "skipped"
    assert result["tasks"]["forecast.predict_next_24h[0]"] == "success"
    assert "nothing changed" in output
    assert result["asset_extras"] == []  # no new model, no metrics event
