"""Shared fixtures. Service fixtures (real Kafka / HDFS started from the Maven-resolved jars)
live in tests/fixtures_services.py; Spark and settings fixtures are here."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.fixtures_services"]

#: JVM options of every JVM the tests start (Kafka, HDFS, Spark drivers, the jobs Airflow submits):
#: the client compiler only. The tests' JVMs live seconds to minutes on small data, where the
#: server compiler's threads take the two cores from the work itself. ``JDK_JAVA_OPTIONS`` is read
#: by the ``java`` launcher alone (not by ``javac`` or ``jar``), before each command's own options.
TEST_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"


def pytest_configure(config):
    """Every JVM started from this session (and its subprocesses) gets :data:`TEST_JVM_OPTIONS`."""
    import os

    current = os.environ.get("JDK_JAVA_OPTIONS", "")
    if TEST_JVM_OPTIONS not in current:
        os.environ["JDK_JAVA_OPTIONS"] = f"{current} {TEST_JVM_OPTIONS}".strip()


@pytest.fixture
def settings_env(monkeypatch, tmp_path):
    """Isolated settings: BTC_DATA_DIR in a temp dir; returns a function to (re)load them."""
    from btc_platform import settings as settings_mod

    monkeypatch.setenv("BTC_DATA_DIR", str(tmp_path / "data"))
    settings_mod.get_settings.cache_clear()

    def load(**env):
        for key, value in env.items():
            monkeypatch.setenv(f"BTC_{key.upper()}", str(value))
        settings_mod.get_settings.cache_clear()
        return settings_mod.get_settings()

    yield load
    settings_mod.get_settings.cache_clear()


@pytest.fixture(scope="session")
def spark():
    """One local[2] SparkSession for the whole run: UTC, UI off, 2 shuffle partitions,
    with the Kafka connector jars when btc-jars has resolved them."""
    from btc_platform.lakehouse.spark_session import build_session
    from btc_platform.settings import load_settings

    session = build_session(
        "tests",
        load_settings(),
        master="local[2]",
        extra_conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2"},
    )
    yield session
    session.stop()
