"""What the supervisor runs: launch specifications of the producer and the streaming job, the
child environment (every setting as ``BTC_*``), the configuration fingerprint, and where each
supervised process keeps its record, lock and log."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from btc_platform.lakehouse.spark_session import spark_submit_args, spark_submit_binary
from btc_platform.settings import ENV_PREFIX, PROJECT_ROOT, Settings

PRODUCER = "producer"
STREAM = "stream"
NAMES = (PRODUCER, STREAM)
#: Command-line marker of the Python driver under spark-submit (it gets the graceful SIGTERM).
STREAM_DRIVER_MARKER = "stream_job.py"


@dataclass(frozen=True)
class LaunchSpec:
    """What to run for one supervised process, and the fingerprint of that configuration."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    fingerprint: str


def state_dir(settings: Settings) -> Path:
    return settings.data_dir / "supervisor"


def record_path(settings: Settings, name: str) -> Path:
    return state_dir(settings) / f"{name}.pid.json"


def lock_path(settings: Settings, name: str) -> Path:
    return state_dir(settings) / f"{name}.lock"


def log_path(settings: Settings, name: str) -> Path:
    return settings.logs_dir / f"{name}.log"


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as its ``BTC_*`` environment variable, so a child process sees the exact
    configuration of the supervisor (also what the configuration fingerprint is taken over)."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="json").items():
        key = f"{ENV_PREFIX}{name.upper()}"
        if isinstance(value, bool):
            env[key] = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            env[key] = ",".join(str(v) for v in value)
        elif isinstance(value, dict):
            env[key] = json.dumps(value, sort_keys=True)
        elif value is None:
            continue
        else:
            env[key] = str(value)
    return env


def fingerprint(argv: tuple[str, ...], btc_env: Mapping[str, str]) -> str:
    """Short hash of the command line and the explicitly set ``BTC_*`` settings of a launch."""
    payload = json.dumps({"argv": list(argv), "env": dict(sorted(btc_env.items()))}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def child_env(settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
    """(full environment of a supervised child, its ``BTC_*`` part)."""
    btc_env = settings_env(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(btc_env)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYSPARK_PYTHON"] = env.get("PYSPARK_PYTHON", sys.executable)
    env["PYSPARK_DRIVER_PYTHON"] = env.get("PYSPARK_DRIVER_PYTHON", sys.executable)
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")]).rstrip(os.pathsep)
    return env, btc_env


def explicit_env(settings: Settings, btc_env: Mapping[str, str]) -> dict[str, str]:
    """The part of ``btc_env`` that was set explicitly (environment, .env file, arguments).

    The fingerprint is taken over these only: a default's value belongs to the code, and while a
    code change rolls through a running platform the triggerer (old code) and the tasks (new
    code) would otherwise compute different fingerprints and restart the processes at every check.
    """
    keys = {f"{ENV_PREFIX}{name.upper()}" for name in settings.model_fields_set}
    return {key: value for key, value in btc_env.items() if key in keys}


def spec(settings: Settings, name: str, argv: tuple[str, ...]) -> LaunchSpec:
    """A launch of ``argv`` with the settings' child environment and its fingerprint."""
    env, btc_env = child_env(settings)
    return LaunchSpec(name, argv, env, fingerprint(argv, explicit_env(settings, btc_env)))


def producer_spec(settings: Settings, source: str | None = None) -> LaunchSpec:
    """``python -m btc_platform.ingest.producer --source <source>`` (source defaults to the setting)."""
    source = source or settings.producer_source
    return spec(settings, PRODUCER, (sys.executable, "-m", "btc_platform.ingest.producer", "--source", source))


def stream_spec(settings: Settings) -> LaunchSpec:
    """``spark-submit [options] spark_jobs/stream_job.py`` against the configured master."""
    argv = (
        spark_submit_binary(),
        *spark_submit_args(settings, "btc-stream", driver_memory=settings.stream_driver_memory,
                           driver_java_options=settings.stream_driver_java_options,
                           cores_max=settings.stream_cores_max),  # fmt: skip
        str(PROJECT_ROOT / "spark_jobs" / STREAM_DRIVER_MARKER),
        "--master", settings.spark_master,
    )  # fmt: skip
    return spec(settings, STREAM, argv)
