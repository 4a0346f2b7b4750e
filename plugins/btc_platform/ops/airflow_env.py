"""Environment of the local Airflow (``airflow standalone`` started by btc_platform.ops.services).

``airflow_env(settings)`` returns the variables to add to the process environment: Airflow's
own configuration (home, dags/plugins folders, API server address, no examples), the
connections the DAGs use (``AIRFLOW_CONN_SPARK_DEFAULT``, ``AIRFLOW_CONN_KAFKA_DEFAULT``)
built from the settings, and
every ``BTC_*`` variable of the caller passed through so tasks see the same settings.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from btc_platform.settings import ENV_PREFIX, PROJECT_ROOT, Settings


def airflow_home(settings: Settings) -> Path:
    """AIRFLOW_HOME of the local Airflow: airflow.cfg, SQLite DB, logs, generated passwords."""
    return settings.data_dir / "airflow"


def api_url(settings: Settings) -> str:
    """Base URL of the local Airflow API server / UI."""
    return f"http://127.0.0.1:{settings.airflow_port}"


def password_file(settings: Settings) -> Path:
    """Where Airflow 3's simple auth manager writes the generated admin password."""
    return airflow_home(settings) / "simple_auth_manager_passwords.json.generated"


#: How long a task process keeps trying to reach Airflow's execution API before it gives up (the
#: task then fails with no retry left for tasks that have none). ``airflow standalone`` starts the
#: scheduler beside the API server, and on a loaded machine the scheduler queues the first tasks
#: (the retrain's daily run, the supervisor, the first-start backfill) before the API server
#: answers: with Airflow's defaults (5 attempts, waits from 1 s) those tasks fail within seconds
#: and the first start shows red runs. Attempts x minimum wait: at least a minute of retries.
EXECUTION_API_RETRIES = 16
EXECUTION_API_RETRY_WAIT_MIN_S = 4.0
EXECUTION_API_RETRY_WAIT_MAX_S = 60.0

#: role and database of Airflow's metadata on the local PostgreSQL server
DATABASE_USER = "airflow"
DATABASE_NAME = "airflow"


def database_password_file(settings: Settings) -> Path:
    """Where the generated password of the local PostgreSQL server's ``airflow`` role is kept."""
    return settings.data_dir / "postgres" / "password"


def database_password(settings: Settings) -> str:
    """The password of the local PostgreSQL server's ``airflow`` role: generated on first use
    into :func:`database_password_file` (mode 0600, created whole: a concurrent first use reads
    the winner's) and reused."""
    path = database_password_file(settings)
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(24) + "\n")  # hex: URL-safe, it goes into the SQLAlchemy URL
    try:
        os.link(staging, path)  # fails if another process created it first
    except FileExistsError:
        pass
    finally:
        staging.unlink()
    return path.read_text().strip()


def database_url(settings: Settings) -> str:
    """SQLAlchemy URL of Airflow's metadata DB: the SQLite file in AIRFLOW_HOME, or the local
    PostgreSQL server (``BTC_AIRFLOW_DATABASE=postgres``, psycopg2 driver, generated password)."""
    if settings.airflow_database == "postgres":
        return (f"postgresql+psycopg2://{DATABASE_USER}:{database_password(settings)}@127.0.0.1:"
                f"{settings.postgres_port}/{DATABASE_NAME}")  # fmt: skip
    return f"sqlite:///{quote(str(airflow_home(settings) / 'airflow.db'))}"


def spark_conn(master: str) -> str:
    """``spark_default`` as a JSON connection: host carries the master (local[2], spark://h:p, yarn)."""
    return json.dumps({"conn_type": "spark", "host": master})


def _kafka_conn(bootstrap_servers: str) -> str:
    """``kafka_default`` for the Kafka provider: its ``extra`` is the confluent-kafka config."""
    return json.dumps(
        {"conn_type": "kafka", "extra": {"bootstrap.servers": bootstrap_servers, "group.id": "airflow"}}
    )


def _env_value(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def settings_overrides_env(settings: Settings) -> dict[str, str]:
    """``BTC_*`` variables for the fields that were set explicitly (env or overrides), so a child
    process rebuilds the same settings even when they were passed as Python overrides."""
    return {
        f"{ENV_PREFIX}{name.upper()}": _env_value(getattr(settings, name))
        for name in sorted(settings.model_fields_set)
    }


def airflow_env(settings: Settings, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Variables to set for every Airflow process started for this platform."""
    source = os.environ if environ is None else environ
    home = airflow_home(settings)
    env = {key: value for key, value in source.items() if key.upper().startswith(ENV_PREFIX)}
    env.update(settings_overrides_env(settings))
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": str(settings.airflow_parallelism),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url(settings),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(settings.airflow_port),
            "AIRFLOW__API__BASE_URL": api_url(settings),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url(settings)}/execution/",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": str(EXECUTION_API_RETRIES),
            "AIRFLOW__WORKERS__EXECUTION_API_RETRY_WAIT_MIN": str(EXECUTION_API_RETRY_WAIT_MIN_S),
            "AIRFLOW__WORKERS__EXECUTION_API_RETRY_WAIT_MAX": str(EXECUTION_API_RETRY_WAIT_MAX_S),
            # the web UI of every Spark driver the tasks start (the stream's, the jobs') binds the
            # address of SPARK_LOCAL_IP, all interfaces without it (Spark 4.2 has no setting for it)
            "SPARK_LOCAL_IP": "127.0.0.1",
            "AIRFLOW_CONN_SPARK_DEFAULT": spark_conn(settings.batch_spark_master),
            "AIRFLOW_CONN_KAFKA_DEFAULT": _kafka_conn(settings.kafka_bootstrap_servers),
            f"{ENV_PREFIX}DATA_DIR": str(settings.data_dir),
            f"{ENV_PREFIX}CACHE_DIR": str(settings.cache_dir),
            f"{ENV_PREFIX}STORAGE_ROOT": settings.storage_root,
        }
    )
    if settings.airflow_database == "postgres":
        # what `airflow standalone` picks on SQLite too, explicit here as in docker-compose.yml
        env["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
    env.update(orchestration_env(settings, source))
    return env


def orchestration_env(settings: Settings, environ: dict[str, str] | None = None) -> dict[str, str]:
    """What the platform's DAGs need from the Airflow environment (added by the DAG owner):

    * DAGs start unpaused, so ``make run`` brings up supervision, consolidation and retraining
      without clicks;
    * this interpreter's bin/ first on PATH, so ``SparkSubmitOperator`` finds the pyspark
      ``spark-submit`` and tasks find ``python``;
    * the supervisor schedule is fast to pick up (DAG files re-listed every 30 s).
    """
    source = os.environ if environ is None else environ
    bin_dir = str(Path(sys.executable).parent)
    path = [bin_dir] + [p for p in source.get("PATH", os.defpath).split(os.pathsep) if p and p != bin_dir]
    return {
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "PATH": os.pathsep.join(path),
        f"{ENV_PREFIX}SCHEDULE_START_DATE": schedule_start_date(settings),
    }


def schedule_start_date(settings: Settings, stamp: Path | None = None) -> str:
    """``BTC_SCHEDULE_START_DATE`` for the local Airflow: the setting when given, else the UTC hour
    of the first start of this installation, remembered in AIRFLOW_HOME (or in ``stamp``: the
    compose stack keeps it next to its secrets). So a fresh install does not consolidate empty
    hours of the past, and a restart after a pause catches up every hour missed since the install."""
    if settings.schedule_start_date:
        return settings.schedule_start_date
    stamp = stamp or airflow_home(settings) / "btc_schedule_start_date"
    if stamp.is_file() and stamp.read_text().strip():
        return stamp.read_text().strip()
    first = datetime.now(UTC).replace(minute=0, second=0, microsecond=0).isoformat()
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(first + "\n")
    return first
