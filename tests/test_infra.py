"""Maven dependency parsing and the Spark jar selection (btc_platform.ops.jars), process stop
semantics of btc_platform.ops.services on real process groups, its CLI, the Airflow environment and
.env.example coverage. The tests that run Maven are marked ``integration``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from btc_platform.ops import jars, process, services
from btc_platform.ops.services import base
from btc_platform.ops.services import kafka as kafka_service
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


@pytest.mark.integration
def test_spark_jars_complete_pyspark_without_duplicates():
    """The resolved spark group holds the Kafka connector and Delta Lake and what they need beyond
    pyspark, nothing more (Delta's other dependencies ship with pyspark)."""
    settings = load_settings()
    resolved = jars.ensure_jars(settings, ("spark",))["spark"]
    names = sorted(p.name for p in resolved)
    assert names == sorted(Path(j).name for j in settings.spark_jars())
    prefixes = ("spark-sql-kafka-0-10_2.13-", "spark-token-provider-kafka-0-10_2.13-", "kafka-clients-", "commons-pool2-",
                "delta-spark_4.2_2.13-", "delta-storage-")
    assert all(any(n.startswith(p) for n in names) for p in prefixes), names
    shipped = [p.name for p in jars._pyspark_jars_dir().glob("*.jar")]
    assert [n for n in names if n in shipped] == []
    assert len(names) == len(prefixes)


@pytest.mark.integration
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
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


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
    leader = base.spawn(settings, "airflow", [sys.executable, "-c", script], dict(os.environ), tmp_path).pid
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
    pid = base.spawn(settings, "kafka", [sys.executable, "-c", script], dict(os.environ), tmp_path).pid
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
    record = base.spawn(settings, "kafka", [sys.executable, "-c", script], dict(os.environ), tmp_path)
    started = time.monotonic()
    with pytest.raises(process.ProcessError, match="boom: bad config"):
        process.wait_until_healthy(record, lambda: "never healthy", timeout_s=60, what="health")
    assert time.monotonic() - started < 30  # failed fast, not at the timeout


def test_port_in_use_is_reported_with_the_setting(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(services.PortInUseError, match=f"port {port}.*BTC_KAFKA_PORT"):
            base.check_port_free(port, "Kafka broker", "BTC_KAFKA_PORT")


def test_airflow_env_builds_connections_from_settings(tmp_path):
    from btc_platform.ops.airflow_env import airflow_env

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


def _services_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BTC_DATA_DIR": str(settings.data_dir)}
    return subprocess.run([sys.executable, "-m", "btc_platform.ops.services.cli", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)  # fmt: skip


def test_cli_status_of_a_never_started_service_exits_1(tmp_path):
    proc = _services_cli(_settings(tmp_path), "status", "kafka", "airflow")
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if " INFO " in line]
    assert any("kafka    stopped   kafka=-  (not running)" in line for line in lines), proc.stderr
    assert any("airflow  stopped   airflow=-  (not running)" in line for line in lines), proc.stderr


def test_cli_stop_kills_the_process_group_of_a_recorded_process(tmp_path):
    settings = _settings(tmp_path)
    pid_file = tmp_path / "pids"
    script = (
        "import subprocess, time\n"
        "a = subprocess.Popen(['sleep', '300'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(a.pid))\n"
        "time.sleep(300)\n"
    )
    record = base.spawn(settings, "kafka", [sys.executable, "-c", script], dict(os.environ), tmp_path)
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "helper did not start its child"
        time.sleep(0.1)
    child = int(pid_file.read_text())
    assert process.group_members(record.pgid) == sorted([record.pid, child])

    proc = _services_cli(settings, "stop", "kafka")
    assert proc.returncode == 0, proc.stderr
    assert "stopped kafka" in proc.stderr
    assert not _alive(record.pid) and not _alive(child)
    assert process.group_members(record.pgid) == []
    assert not base.pid_path(settings, "kafka").exists()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((), "cli.py: error: the following arguments are required: COMMAND"),
        (("status",), "cli.py status: error: the following arguments are required: SERVICE"),
        (("status", "zookeeper"), "cli.py status: error: argument SERVICE: invalid choice: 'zookeeper'"),
        (("run", "--source", "bogus"), "cli.py run: error: argument --source: invalid choice: 'bogus'"),
    ],
)
def test_cli_argument_errors_exit_2_naming_the_error_and_touch_nothing(tmp_path, args, error):
    settings = _settings(tmp_path)
    proc = _services_cli(settings, *args)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr and error in proc.stderr, proc.stderr
    assert not settings.data_dir.exists()  # no pid file, log or service directory written


def test_jars_cli_rejects_an_unknown_group(capsys):
    with pytest.raises(SystemExit) as info:
        jars.main(["--group", "zookeeper"])
    assert info.value.code == 2
    assert "argument --group: invalid choice: 'zookeeper'" in capsys.readouterr().err


def test_kafka_cluster_id_never_reads_as_an_option(tmp_path, monkeypatch):
    settings = load_settings(data_dir=tmp_path / "data")
    stored = services.kafka_dir(settings) / "cluster_id"
    stored.parent.mkdir(parents=True)
    stored.write_text("-leading-dash-id\n")  # what a failed format left behind
    ids = iter([b"\xfb" + bytes(15), b"\x01" * 16])  # base64 "-w..." first, then "AQEB..."
    monkeypatch.setattr(kafka_service.uuid, "uuid4", lambda: type("U", (), {"bytes": next(ids)})())
    cluster_id = kafka_service.kafka_cluster_id(settings)
    assert cluster_id == "AQEBAQEBAQEBAQEBAQEBAQ"
    assert stored.read_text().strip() == cluster_id
    assert kafka_service.kafka_cluster_id(settings) == cluster_id  # kept once it is good
