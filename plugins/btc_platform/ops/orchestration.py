"""Small helpers the DAG files use to turn settings into Airflow arguments.

Kept here (not in dags/) so DAG files stay thin graphs and so tests can check the values.
Everything a DAG file calls at parse time is cheap and side-effect free: it reads the
environment and globs the jars directory, nothing else (no DB, no network, no files written).
:func:`clean_airflow_metadata` is what the maintenance DAG's task runs (``airflow db clean``).

``requests`` is imported inside the one function that calls Airflow's REST API, so parsing stays light.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from btc_platform.lakehouse.spark_session import environment_script, spark_conf
from btc_platform.settings import PROJECT_ROOT, Settings
from btc_platform.status import read_status
from btc_platform.timerange import EXAMPLE, RangeError, parse_utc, require_hour_aligned

log = logging.getLogger(__name__)

#: Airflow connection id of the Spark master (AIRFLOW_CONN_SPARK_DEFAULT, set by airflow_env).
SPARK_CONN_ID = "spark_default"
#: Airflow connection id of the Kafka cluster (AIRFLOW_CONN_KAFKA_DEFAULT).
KAFKA_CONN_ID = "kafka_default"

#: Name (and URI path under the storage root) of the Asset marking fresh hourly metrics.
HOURLY_METRICS_ASSET = "hourly_metrics"

#: Airflow pool of every task that writes a Delta table (consolidation, backfill, gap repair,
#: their data-quality checks, the ingest audit, maintenance's OPTIMIZE/VACUUM, the retrain's
#: delta-rs writes of predictions, prediction_metrics, future_predictions and forecast_actuals).
#: One slot: two such writes never run at once (concurrent MERGEs into one Delta table would
#: conflict; a conflict that still happens, with a writer outside Airflow, is retried with backoff
#: by ``btc_platform.lakehouse.conflicts``). The stream is not in it: it only appends blindly. The local
#: platform creates it when Airflow starts (:func:`ensure_table_writers_pool`); docker compose
#: in ``airflow-init``.
TABLE_WRITERS_POOL = "btc_table_writers"
TABLE_WRITERS_POOL_SLOTS = 1
TABLE_WRITERS_POOL_DESCRIPTION = "tasks writing hourly_metrics / data_quality: one at a time"


def table_writer_kwargs() -> dict[str, Any]:
    """Operator arguments of a task that writes a Delta table (see :data:`TABLE_WRITERS_POOL`)."""
    return {"pool": TABLE_WRITERS_POOL, "pool_slots": 1}


def ensure_table_writers_pool(
    api_url: str, password: str, timeout_s: float = 30.0, attempts: int = 5, retry_s: float = 3.0
) -> str:
    """Create (or set back to one slot) :data:`TABLE_WRITERS_POOL` through Airflow's REST API,
    as the admin user. Returns what was done; raises ``RuntimeError`` with the answer on failure."""
    import requests

    session = requests.Session()
    token = session.post(f"{api_url}/auth/token", json={"username": "admin", "password": password},
                         timeout=(3, timeout_s))  # fmt: skip
    if token.status_code not in (200, 201):
        raise RuntimeError(f"Airflow token request answered HTTP {token.status_code}: {token.text[:300]}")
    session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    # include_deferred in the PATCH too: Airflow 3.3 validates the patched pool as a whole, and a PATCH
    # without it answers 422 "include_deferred: Field required" (a second `make run`, the pool existing)
    body = {"name": TABLE_WRITERS_POOL, "slots": TABLE_WRITERS_POOL_SLOTS, "description": TABLE_WRITERS_POOL_DESCRIPTION,
            "include_deferred": False}  # fmt: skip
    url = f"{api_url}/api/v2/pools"
    for attempt in range(attempts):
        answer = session.patch(f"{url}/{TABLE_WRITERS_POOL}", json=body, timeout=(3, timeout_s))
        action = "updated"
        if answer.status_code == 404:
            answer, action = session.post(url, json=body, timeout=(3, timeout_s)), "created"
        # a 5xx right after start: SQLite "database is locked" while the scheduler and the DAG
        # processor write (seen once in CI as HTTP 500 "Database error"); tried again, bounded
        if answer.status_code < 500 or attempt == attempts - 1:
            break
        log.warning("Airflow pool %s: HTTP %d (try %d of %d), trying again in %.0f s",
                    TABLE_WRITERS_POOL, answer.status_code, attempt + 1, attempts, retry_s)  # fmt: skip
        time.sleep(retry_s)
    if answer.status_code not in (200, 201):
        raise RuntimeError(f"Airflow pool {TABLE_WRITERS_POOL}: HTTP {answer.status_code}: {answer.text[:300]}")
    log.info("Airflow pool %s %s (%d slot)", TABLE_WRITERS_POOL, action, TABLE_WRITERS_POOL_SLOTS)
    return action


def schedule_start(settings: Settings, now: datetime | None = None) -> datetime:
    """Start date of the hourly consolidation DAG (UTC, tz-aware).

    ``BTC_SCHEDULE_START_DATE`` when set (ISO date or date-time; naive values are UTC),
    otherwise the start of the current UTC day, so a fresh install catches up at most a day
    instead of years (``make run`` always sets it: to the hour of the first start of the
    installation, see ``airflow_env.schedule_start_date``).
    """
    if settings.schedule_start_date:
        try:
            moment = datetime.fromisoformat(settings.schedule_start_date.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(
                f"BTC_SCHEDULE_START_DATE: expected an ISO date/date-time, got {settings.schedule_start_date!r}"
            ) from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    current = now or datetime.now(UTC)
    day = current.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=1)


def _parse_instant(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


#: Why a run of the hourly consolidation without a data interval cannot run.
NO_DATA_INTERVAL = (
    "this run has no data interval (triggered without a logical date): trigger it with the logical "
    "date of the hour to consolidate (the run covers [logical date, + 1 h)), or use btc_backfill for a range"
)


def minute_metrics_ready(settings: Settings, hour_end: datetime, now: datetime | None = None) -> tuple[bool, str]:
    """Whether the minutes of the hour ending at ``hour_end`` are all in minute_metrics.

    The stream writes minute window [H:59, H+1:00) once its event-time watermark passes H+1:00;
    its status record (``settings.stream_status_path``) carries the watermark of the last
    committed minute_metrics batch. Ready when that watermark reached ``hour_end``, or when
    ``consolidation_max_wait_s`` has passed since ``hour_end`` (a stopped or idle stream: the hour
    is then consolidated with what exists, and its coverage says what is missing). Returns
    ``(ready, reason)``.
    """
    current = now or datetime.now(UTC)
    record = read_status(settings.stream_status_path) or {}
    query = (record.get("queries") or {}).get("minute_metrics") or {}
    watermark = _parse_instant(query.get("watermark"))
    if watermark is not None and watermark >= hour_end:
        return True, f"minute_metrics watermark {watermark.isoformat()} has passed {hour_end.isoformat()}"
    seen = f"watermark {watermark.isoformat()}" if watermark else "no minute_metrics watermark in the stream status"
    deadline = hour_end + timedelta(seconds=settings.consolidation_max_wait_s)
    if current >= deadline:
        return True, (f"waited until {deadline.isoformat()} ({seen}): consolidating the minutes that exist; "
                      "the hour's coverage shows what is missing")  # fmt: skip
    return False, f"waiting for the stream: {seen}, needs {hour_end.isoformat()} (until {deadline.isoformat()})"


def job_path(name: str) -> str:
    """Absolute path of a Spark job entry module under spark_jobs/."""
    return str(PROJECT_ROOT / "spark_jobs" / name)


def spark_job_env(settings: Settings) -> dict[str, str]:
    """Extra environment for spark-submit'ed jobs: this Python (where the project is installed)
    for the driver and the Python workers.

    BTC_* settings are inherited from the worker's environment (spark-submit runs with
    ``os.environ`` plus these), so secrets never show up in the rendered task arguments.
    """
    return {
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }


def spark_submit_kwargs(settings: Settings, name: str) -> dict[str, Any]:
    """Keyword arguments shared by every ``SparkSubmitOperator`` of the platform: every option
    of ``btc_platform.lakehouse.spark_session.spark_conf`` as ``--conf`` (spark.jars and spark.driver.memory
    included), so Airflow-submitted jobs run exactly like the others."""
    return {
        "conn_id": SPARK_CONN_ID,
        "name": name,
        "conf": spark_conf(settings, settings.batch_spark_master),
        "env_vars": spark_job_env(settings),
    }


def _range_params(params: dict[str, Any]) -> dict[str, str]:
    """The non-empty ``start``/``end`` Params, checked as the jobs check ``--start``/``--end``:
    ISO date or date-time, on a full UTC hour, start before end (``ValueError`` otherwise)."""
    values, parsed = {}, {}
    for key in ("start", "end"):
        value = str(params.get(key) or "").strip()
        if value:
            try:
                parsed[key] = parse_utc(value)
            except RangeError as exc:
                raise ValueError(f"{key} must be an ISO date or date-time (UTC, on a full hour; e.g. {EXAMPLE}), "
                                 f"got {value!r}") from exc
            values[key] = value
    require_hour_aligned(parsed.get("start"), parsed.get("end"), prefix="")
    return values


#: ``source`` Params of btc_backfill, and those that need a start and an end.
BACKFILL_SOURCES = ("binance", "file", "simulate")
RANGED_BACKFILL_SOURCES = ("binance", "simulate")


def backfill_args(params: dict[str, Any]) -> list[str]:
    """Validated command-line arguments of spark_jobs/backfill_job.py from the DAG's Params.

    Raises ``ValueError`` with a readable message on inconsistent parameters (a start/end not on
    a full UTC hour included).
    """
    source = params.get("source")
    if source not in BACKFILL_SOURCES:
        raise ValueError("source must be 'binance' (with start and end), 'file' (with file_path) or 'simulate' "
                         f"(with start and end), got {source!r}")
    args = ["--source", source]
    if source == "file":
        path = (params.get("file_path") or "").strip()
        if not path:
            raise ValueError("source=file needs file_path: the path or file:// / hdfs:// URI of an hourly candle "
                             "CSV or Parquet file (open_time_utc,open,high,low,close,volume, or Binance's kline export)")
        args += ["--file", path]
    values = _range_params(params)
    for key in ("start", "end"):
        if key in values:
            args += [f"--{key}", values[key]]
        elif source in RANGED_BACKFILL_SOURCES:
            raise ValueError(f"source={source} needs {key}: set the {key} Param (UTC, on a full hour; e.g. {EXAMPLE})")
    if params.get("overwrite_stream"):
        args.append("--overwrite-stream")
    return args


class NothingToBackfill(Exception):
    """The first start's backfill has nothing to do (its reason is the message)."""


def hourly_hours(settings: Settings) -> int:
    """How many rows hourly_metrics holds (0 when the table does not exist yet)."""
    from btc_platform.lakehouse import datasets, lake

    try:
        table = lake.open_table(datasets.HOURLY_METRICS, settings)
    except lake.TableNotFoundError:
        return 0
    return len(lake.to_frame(table, columns=["hour_start"]))


def first_run_params(settings: Settings, hours: int, now: datetime | None = None) -> dict[str, Any]:
    """The btc_backfill Params of the first start: history up to the current UTC hour when
    hourly_metrics holds ``hours == 0`` rows and ``first_run_backfill`` is on; simulated hours for
    the simulate source, the last ``first_run_backfill_days`` of Binance klines for the live one.
    Raises :class:`NothingToBackfill` with the reason otherwise."""
    if not settings.first_run_backfill:
        raise NothingToBackfill("BTC_FIRST_RUN_BACKFILL is off: no automatic history (trigger btc_backfill by hand)")
    if hours:
        raise NothingToBackfill(f"hourly_metrics already holds {hours} row(s): the first-start backfill is only "
                                "for an empty table (trigger btc_backfill by hand for more history)")  # fmt: skip
    end = (now or datetime.now(UTC)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if settings.producer_source == "simulate":
        source, start = "simulate", end - timedelta(hours=settings.first_run_simulate_hours)
    elif settings.producer_source == "live":
        source, start = "binance", end - timedelta(days=settings.first_run_backfill_days)
    else:
        raise NothingToBackfill(f"producer source {settings.producer_source}: the history of a replay file is not "
                                "known here; trigger btc_backfill (source=file) for history")  # fmt: skip
    return {"source": source, "start": start.isoformat(), "end": end.isoformat(), "overwrite_stream": False}


#: The first start's backfill waits at most this long for the stream's first minute (seconds).
FIRST_RUN_STREAM_WAIT_S = 300.0


def _manual(run_type: object) -> bool:
    return str(run_type).lower().endswith("manual")


def first_run_may_start(settings: Settings, run_type: object, started: datetime | None,
                        now: datetime | None = None) -> tuple[bool, str]:
    """Whether btc_backfill's run may start its Spark jobs, and why: a manual run at once; the
    first start's run once the stream wrote its first minute_metrics row (the backfill, its
    data-quality job and the retrain after it would otherwise take the two cores from the
    stream's first batches), or :data:`FIRST_RUN_STREAM_WAIT_S` after the run started."""
    from btc_platform.lakehouse import datasets, lake

    if _manual(run_type):
        return True, "a manual run"
    try:
        minutes = not lake.read_table(datasets.MINUTE_METRICS, settings, columns=["window_start"]).empty
    except lake.TableNotFoundError:
        minutes = False
    if minutes:
        return True, "the stream wrote its first minute"
    waited = ((now or datetime.now(UTC)) - started).total_seconds() if started else FIRST_RUN_STREAM_WAIT_S
    if waited >= FIRST_RUN_STREAM_WAIT_S:
        return True, f"no minute of the stream after {waited:.0f} s: not waiting longer"
    return False, f"waiting for the stream's first minute ({waited:.0f} of at most {FIRST_RUN_STREAM_WAIT_S:.0f} s)"


def backfill_plan(params: dict[str, Any], run_type: object, settings: Settings, now: datetime | None = None) -> list[str]:
    """The backfill job's arguments of a btc_backfill run: a manual run's Params, or for the DAG's
    one scheduled run (``@once``: the first start of an installation) :func:`first_run_params`
    (:class:`NothingToBackfill` when there is nothing to do)."""
    if _manual(run_type):
        return backfill_args(params)
    return backfill_args(first_run_params(settings, hourly_hours(settings), now))


def backfill_quality_args(params: dict[str, Any]) -> list[str]:
    """Command-line arguments of spark_jobs/quality_job.py after a backfill with these Params:
    the Params' range when both bounds are given, else the range the backfill wrote (recorded
    in hourly_metrics' commit metadata: ``--last-backfill``)."""
    values = _range_params(params)
    if "start" in values and "end" in values:
        return ["--start", values["start"], "--end", values["end"]]
    return ["--last-backfill"]


#: What Airflow 3's task supervisor puts in a task process's environment instead of the metadata
#: database URL (``airflow.sdk.execution_time.supervisor.block_orm_access``).
BLOCKED_DB_CONN = "airflow-db-not-allowed:///"
DB_CONN_VARS = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__SQL_ALCHEMY_CONN")


def airflow_db_clean_command(settings: Settings, now: datetime | None = None) -> list[str]:
    """``airflow db clean`` of the metadata older than ``maintenance_airflow_retention_days``:
    no prompt, no archive tables, exit status != 0 when a table's cleanup fails."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.maintenance_airflow_retention_days)
    return [environment_script("airflow"), "db", "clean", "--clean-before-timestamp", cutoff.isoformat(),
            "--yes", "--skip-archive", "--error-on-cleanup-failure"]  # fmt: skip


def _process_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def airflow_cli_env(
    environ: Mapping[str, str] | None = None, parent_environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment for an ``airflow`` CLI command started by a task: the task's own, with the
    metadata database connection of the worker put back.

    Airflow 3 replaces the connection in every task process by :data:`BLOCKED_DB_CONN` (task code
    must not use the database); the task supervisor, the task's parent process, still has the real
    one (``parent_environ``, default its /proc environ). A variable the worker did not have is
    dropped, so the CLI falls back to airflow.cfg.
    """
    env = dict(os.environ if environ is None else environ)
    if not any(env.get(var) == BLOCKED_DB_CONN for var in DB_CONN_VARS):
        return env
    parent = _process_environ(os.getppid()) if parent_environ is None else parent_environ
    for var in DB_CONN_VARS:
        if env.get(var) != BLOCKED_DB_CONN:
            continue
        if parent.get(var) and parent[var] != BLOCKED_DB_CONN:
            env[var] = parent[var]
        else:
            del env[var]
    return env


def clean_airflow_metadata(settings: Settings, now: datetime | None = None, timeout_s: float = 1800) -> str:
    """Run :func:`airflow_db_clean_command` (output in the log); raise ``RuntimeError`` if it fails.
    Returns the cut-off it used."""
    command = airflow_db_clean_command(settings, now)
    cutoff = command[command.index("--clean-before-timestamp") + 1]
    log.info("purging Airflow metadata older than %s (%d days): %s", cutoff,
             settings.maintenance_airflow_retention_days, " ".join(command))  # fmt: skip
    proc = subprocess.run(command, env=airflow_cli_env(), capture_output=True, text=True,
                          timeout=timeout_s, check=False)  # fmt: skip
    for line in (proc.stdout + proc.stderr).splitlines():
        log.info("airflow db clean: %s", line)
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db clean exited with {proc.returncode} (its output is above)")
    return cutoff
