"""infra/: Maven dependency parsing and the Spark jar selection, process stop semantics of
services.py on real process groups, the Airflow environment and .env.example coverage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from btc_platform import jars, services
from btc_platform.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]

MVN_LIST = """
The following files have been resolved:
   org.apache.spark:spark-sql-kafka-0-10_2.13:jar:4.2.0:compile:/m2/org/apache/spark/spark-sql-kafka-0-10_2.13-4.2.0.jar
   org.apache.kafka:kafka-clients:jar:3.9.2:compile:/m2/kafka-clients-3.9.2.jar -- module kafka.clients (auto)
   org.apache.hadoop:hadoop-hdfs:jar:tests:3.4.2:compile:/m2/hadoop-hdfs-3.4.2-tests.jar
   org.scala-lang:scala-library:jar:2.13.15:compile:/m2/scala-library-2.13.15.jar -- module scala.library [auto]
"""


def test_parse_dependency_list():
    parsed = jars._parse_dependency_list(MVN_LIST)
    assert [(a.artifact_id, a.version, a.path.name) for a in parsed] == [
        ("spark-sql-kafka-0-10_2.13", "4.2.0", "spark-sql-kafka-0-10_2.13-4.2.0.jar"),
        ("kafka-clients", "3.9.2", "kafka-clients-3.9.2.jar"),
        ("hadoop-hdfs", "3.4.2", "hadoop-hdfs-3.4.2-tests.jar"),
        ("scala-library", "2.13.15", "scala-library-2.13.15.jar"),
    ]


@pytest.mark.parametrize(
    ("artifact", "shipped", "expected"),
    [
        ("scala-library", ["scala-library-2.13.18.jar"], True),
        ("hadoop-client", ["hadoop-client-api-3.5.0.jar"], False),
        ("spark-sql-kafka-0-10_2.13", ["spark-sql_2.13-4.2.0.jar"], False),
        ("lz4-java", ["lz4-java-1.11.0.jar"], True),
    ],
)
def test_ships_matches_artifact_any_version(artifact, shipped, expected):
    assert jars._ships(artifact, shipped) is expected


def test_spark_jars_complete_pyspark_without_duplicates():
    """The resolved spark group holds the connector and what it needs beyond pyspark, nothing more."""
    settings = load_settings()
    resolved = jars.ensure_jars(settings, ("spark",))["spark"]
    names = sorted(p.name for p in resolved)
    assert names == sorted(Path(j).name for j in settings.spark_jars())
    prefixes = ("spark-sql-kafka-0-10_2.13-", "spark-token-provider-kafka-0-10_2.13-", "kafka-clients-", "commons-pool2-")
    assert all(any(n.startswith(p) for n in names) for p in prefixes), names
    shipped = [p.name for p in jars._pyspark_jars_dir().glob("*.jar")]
    assert [n for n in names if n in shipped] == []
    assert len(names) == len(prefixes)


def test_second_resolution_is_a_no_op():
    settings = load_settings()
    jars.ensure_jars(settings)
    assert jars.is_ready(settings)
    stamp = json.loads((settings.jars_dir / jars.STAMP_NAME).read_text())
    before = {g: sorted(p.stat().st_mtime_ns for p in (settings.jars_dir / g).glob("*.jar")) for g in jars.GROUPS}
    jars.ensure_jars(settings)
    after = {g: sorted(p.stat().st_mtime_ns for p in (settings.jars_dir / g).glob("*.jar")) for g in jars.GROUPS}
    assert before == after
    assert json.loads((settings.jars_dir / jars.STAMP_NAME).read_text()) == stamp


def _settings(tmp_path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


def _alive(pid: int) -> bool:
    return services._proc_start_ticks(pid) is not None


def test_stop_kills_the_whole_process_group_and_detached_descendants(tmp_path):
    settings = _settings(tmp_path)
    pid_file = tmp_path / "pids"
    # the leader starts one child in its group and one in a new session (like an Airflow task
    # launching the producer): both must go when the service stops
    script = (
        "import subprocess, sys, time\n"
        "a = subprocess.Popen(['sleep', '300'])\n"
        "b = subprocess.Popen(['sleep', '301'], start_new_session=True)\n"
        f"open({str(pid_file)!r}, 'w').write(f'{{a.pid}} {{b.pid}}')\n"
        "time.sleep(300)\n"
    )
    leader = services._spawn(settings, "airflow", [sys.executable, "-c", script], dict(os.environ), tmp_path)
    deadline = time.monotonic() + 30
    while not pid_file.exists() or len(pid_file.read_text().split()) < 2:
        assert time.monotonic() < deadline, "helper did not start its children"
        time.sleep(0.1)
    in_group, detached = (int(p) for p in pid_file.read_text().split())
    assert services.status("airflow", settings).pids == {"airflow": leader}
    assert set(services.marked_processes(settings, "airflow")) == {leader, in_group, detached}

    assert services.stop("airflow", settings, timeout=2) is True
    assert not any(_alive(p) for p in (leader, in_group, detached))
    assert services.running_pid(settings, "airflow") is None
    assert services.status("airflow", settings).problem == "not running"
    assert services.stop("airflow", settings) is False  # idempotent


def test_stop_escalates_to_sigkill(tmp_path):
    settings = _settings(tmp_path)
    ready = tmp_path / "ready"
    script = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(ready)!r}, 'w').write('x')\n"
        "time.sleep(300)\n"
    )
    pid = services._spawn(settings, "kafka", [sys.executable, "-c", script], dict(os.environ), tmp_path)
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    started = time.monotonic()
    assert services.stop("kafka", settings, timeout=1.0) is True
    assert not _alive(pid)
    assert time.monotonic() - started < 15  # bounded: 1 s grace, then SIGKILL
    assert not (services.run_dir(settings) / "kafka.pid").exists()


def test_start_fails_fast_with_the_log_when_the_process_dies(tmp_path):
    settings = _settings(tmp_path)
    script = "import sys; print('boom: bad config'); sys.exit(3)"
    services._spawn(settings, "kafka", [sys.executable, "-c", script], dict(os.environ), tmp_path)
    with pytest.raises(services.ServiceError, match="boom: bad config"):
        services._wait_until(settings, "kafka", lambda: "never healthy", timeout=60, what="health")


def test_port_in_use_is_reported_with_the_setting(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(services.PortInUseError, match=f"port {port}.*BTC_KAFKA_PORT"):
            services._check_port_free(port, "Kafka broker", "BTC_KAFKA_PORT")


def test_airflow_env_builds_connections_from_settings(tmp_path):
    from btc_platform.airflow_env import airflow_env

    settings = load_settings(data_dir=tmp_path, spark_master="spark://10.0.0.5:7077",
                             kafka_bootstrap_servers="k1:9092,k2:9092", airflow_port=18081)  # fmt: skip
    env = airflow_env(settings, environ={"BTC_KAFKA_TOPIC": "t1", "HOME": "/root", "PYTHONPATH": "/x"})
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(ROOT / "dags")
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(ROOT / "plugins")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__API__PORT"] == "18081"
    assert json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"]) == {"conn_type": "spark", "host": "spark://10.0.0.5:7077"}
    kafka = json.loads(env["AIRFLOW_CONN_KAFKA_DEFAULT"])
    assert kafka["conn_type"] == "kafka" and kafka["extra"]["bootstrap.servers"] == "k1:9092,k2:9092"
    assert env.get("PYTHONPATH") is None  # the project is installed: nothing to put on a path
    # BTC_* of the caller and explicit overrides reach the Airflow processes; others are not copied
    assert env["BTC_KAFKA_TOPIC"] == "t1"
    assert env["BTC_SPARK_MASTER"] == "spark://10.0.0.5:7077"
    assert env["BTC_DATA_DIR"] == str(tmp_path)
    assert "HOME" not in env


def test_env_example_documents_every_setting():
    text = (ROOT / ".env.example").read_text()
    names = {line.lstrip("# ").split("=", 1)[0] for line in text.splitlines() if "=" in line and line.lstrip("# ").startswith("BTC_")}
    missing = sorted(f"BTC_{n.upper()}" for n in Settings.model_fields if f"BTC_{n.upper()}" not in names)
    assert missing == [], f"run `btc-envfile`: {missing}"


def test_cli_help_documents_options():
    for script, options in (("btc-services", ["start", "stop", "status", "run"]), ("btc-jars", ["--offline", "--force", "--group"])):
        proc = subprocess.run([str(Path(sys.executable).parent / script), "--help"],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert proc.returncode == 0
        assert all(option in proc.stdout for option in options), proc.stdout


def test_kafka_cluster_id_never_reads_as_an_option(tmp_path, monkeypatch):
    settings = load_settings(data_dir=tmp_path / "data")
    stored = services.kafka_dir(settings) / "cluster_id"
    stored.parent.mkdir(parents=True)
    stored.write_text("-leading-dash-id\n")  # what a failed format left behind
    ids = iter([b"\xfb" + bytes(15), b"\x01" * 16])  # base64 "-w..." first, then "AQEB..."
    monkeypatch.setattr(services.uuid, "uuid4", lambda: type("U", (), {"bytes": next(ids)})())
    cluster_id = services._kafka_cluster_id(settings)
    assert cluster_id == "AQEBAQEBAQEBAQEBAQEBAQ"
    assert stored.read_text().strip() == cluster_id
    assert services._kafka_cluster_id(settings) == cluster_id  # kept once it is good
