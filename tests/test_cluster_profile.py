"""The cluster profile's configuration: which processes each service has per profile, what
`make stop` finds, Airflow's DB and executor, Spark options on the standalone master, the
stream's launch; and its PostgreSQL server (started, integration): password required, on
127.0.0.1 only. The other services run in tests/test_cluster_faults.py and bench/bench_cluster.py."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from btc_platform.lakehouse.spark_session import spark_conf
from btc_platform.ops.airflow_env import airflow_env
from btc_platform.ops.services.base import processes, recorded_processes, run_dir
from btc_platform.ops.supervisor.launch import stream_spec
from btc_platform.settings import SettingsError, load_settings
from btc_platform.topology import CLUSTER_SHAPE


@pytest.fixture
def cluster(tmp_path):
    return load_settings(data_dir=tmp_path, profile="cluster", kafka_port=19092, spark_master_port=17077,
                         hdfs_namenode_port=18020, postgres_port=15432)  # fmt: skip


def test_cluster_profile_processes_and_addresses(cluster):
    assert processes(cluster, "kafka") == ("kafka-1", "kafka-2", "kafka-3")
    assert processes(cluster, "spark") == ("spark-master", "spark-worker-1", "spark-worker-2")
    assert processes(cluster, "postgres") == ("postgres",)
    assert cluster.kafka_bootstrap_servers == "127.0.0.1:19092,127.0.0.1:19192,127.0.0.1:19292"
    assert cluster.spark_master == "spark://127.0.0.1:17077"
    assert cluster.storage_root == "hdfs://127.0.0.1:18020/bitcoin"
    local = load_settings(data_dir=cluster.data_dir)
    assert (processes(local, "kafka"), processes(local, "spark"), processes(local, "postgres")) == (("kafka",), (), ())


def test_stop_finds_the_processes_of_any_profile(cluster):
    """`make stop` runs without PROFILE: it still finds the cluster's brokers, workers and PostgreSQL."""
    run_dir(cluster).mkdir(parents=True)
    for name in ("kafka-2", "spark-worker-2", "postgres", "hdfs-namenode"):
        (run_dir(cluster) / f"{name}.pid").write_text("{}")
    local = load_settings(data_dir=cluster.data_dir)
    assert recorded_processes(local, "kafka") == ["kafka", "kafka-2"]
    assert recorded_processes(local, "spark") == ["spark-worker-2"]
    assert recorded_processes(local, "postgres") == ["postgres"]
    assert recorded_processes(local, "hdfs") == ["hdfs-datanode", "hdfs-namenode"]


def test_airflow_runs_on_postgres_with_the_local_executor(cluster):
    env = airflow_env(cluster, environ={})
    password = (cluster.data_dir / "postgres" / "password").read_text().strip()
    assert len(password) == 48 and (cluster.data_dir / "postgres" / "password").stat().st_mode & 0o777 == 0o600
    url = f"postgresql+psycopg2://airflow:{password}@127.0.0.1:15432/airflow"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == url
    assert airflow_env(cluster, environ={})["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == url  # generated once
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["BTC_PROFILE"] == "cluster"  # tasks rebuild the same settings
    assert "spark://127.0.0.1:17077" in env["AIRFLOW_CONN_SPARK_DEFAULT"]
    local = airflow_env(load_settings(data_dir=cluster.data_dir), environ={})
    assert local["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:///")


def test_applications_on_the_standalone_master_are_sized_to_share_it(cluster):
    conf = spark_conf(cluster)
    assert conf["spark.executor.memory"] == CLUSTER_SHAPE["spark_executor_memory"]
    assert conf["spark.executor.cores"] == "1"
    assert conf["spark.cores.max"] == str(CLUSTER_SHAPE["spark_cores_max"])
    assert conf["spark.driver.host"] == "127.0.0.1"
    assert not any("localfs" in v or "NioLocal" in v for v in conf.values())  # executors lack that jar
    argv = stream_spec(cluster).argv
    assert argv[argv.index("--master") + 1] == "spark://127.0.0.1:17077"
    assert f"spark.cores.max={CLUSTER_SHAPE['stream_cores_max']}" in argv
    assert f"spark.driver.memory={CLUSTER_SHAPE['stream_driver_memory']}" in argv
    assert "--py-files" in argv
    # slots: both applications fit on the workers at once
    slots = CLUSTER_SHAPE["spark_workers"] * CLUSTER_SHAPE["spark_worker_cores"]
    assert CLUSTER_SHAPE["stream_cores_max"] + CLUSTER_SHAPE["spark_cores_max"] <= slots


def test_replication_cannot_exceed_the_brokers(tmp_path):
    with pytest.raises(SettingsError, match="kafka_replication_factor 3 > kafka_brokers 1"):
        load_settings(data_dir=tmp_path, kafka_replication_factor=3)
    with pytest.raises(SettingsError, match="kafka_min_insync_replicas 3 > kafka_replication_factor 2"):
        load_settings(data_dir=tmp_path, profile="cluster", kafka_replication_factor=2, kafka_min_insync_replicas=3)


def test_postgres_install_decision_root_with_apt_get_installs_the_debian_package():
    from btc_platform.ops.services.postgres import install_commands

    commands = install_commands(0, "/usr/bin/apt-get")
    assert commands[0] == ["/usr/bin/apt-get", "update", "-q"]
    assert commands[-1][:3] == ["/usr/bin/apt-get", "install", "-y"]
    assert commands[-1][-1] == "postgresql"


@pytest.mark.parametrize(("euid", "apt_get", "why"), [(1000, "/usr/bin/apt-get", "not running as root"),
                                                       (0, None, "apt-get not found")])  # fmt: skip
def test_postgres_install_decision_otherwise_a_clear_error_naming_the_package(euid, apt_get, why):
    from btc_platform.ops.services.base import ServiceError
    from btc_platform.ops.services.postgres import install_commands

    with pytest.raises(ServiceError, match=rf"\({why}\): install the Debian package 'postgresql'"):
        install_commands(euid, apt_get)



def test_the_log_servers_of_standalone_s_scheduler_and_triggerer_are_off():
    from btc_platform.ops.services.airflow_standalone import without_log_server

    assert without_log_server(["scheduler"]) == ["scheduler", "--skip-serve-logs"]
    assert without_log_server(["triggerer"]) == ["triggerer", "--skip-serve-logs"]
    assert without_log_server(["scheduler", "--skip-serve-logs"]) == ["scheduler", "--skip-serve-logs"]
    assert without_log_server(["api-server"]) == ["api-server"]
    assert without_log_server(["dag-processor"]) == ["dag-processor"]


def test_trust_rules_of_an_earlier_cluster_are_found():
    from btc_platform.ops.services.postgres import trust_lines

    hba = ("# TYPE DATABASE USER ADDRESS METHOD\n# a comment saying trust\nlocal all all trust\n"
           "host all all 127.0.0.1/32 trust   # old\nhost all all ::1/128 scram-sha-256\n")  # fmt: skip
    assert trust_lines(hba) == ["local all all trust", "host all all 127.0.0.1/32 trust   # old"]


@pytest.fixture
def postgres_data_dir():
    """A data dir the server's user can reach when the tests run as root (pytest's tmp_path is
    private to root)."""
    with tempfile.TemporaryDirectory(prefix="btc-postgres-") as folder:
        os.chmod(folder, 0o711)
        yield Path(folder)


@pytest.mark.integration
@pytest.mark.parametrize("earlier_trust_cluster", [False, True], ids=["new", "trust-cluster-upgraded"])
def test_postgres_requires_the_generated_password_and_listens_on_loopback(postgres_data_dir, earlier_trust_cluster):
    import psycopg2

    from btc_platform.ops import services
    from btc_platform.ops.services import base, postgres
    from btc_platform.testing.polling import free_ports
    from tests.fixtures_services import listening_sockets

    (port,) = free_ports(1)
    settings = load_settings(data_dir=postgres_data_dir, airflow_database="postgres", postgres_port=port)
    if earlier_trust_cluster:  # as btc-services initialised it before passwords
        data = postgres.postgres_dir(settings) / "data"
        data.mkdir(parents=True, mode=0o700)
        postgres._chown_to_server_user(data)
        subprocess.run(postgres._as_server_user([str(postgres.ensure_installed() / "initdb"), "-D", str(data),
                                                 "-U", "airflow", "--auth=trust", "--locale=C"]),
                       check=True, capture_output=True)  # fmt: skip
    try:
        services.start_postgres(settings)
        password = (postgres_data_dir / "postgres" / "password").read_text().strip()
        assert (postgres_data_dir / "postgres" / "password").stat().st_mode & 0o777 == 0o600
        assert postgres.trust_lines((postgres.postgres_dir(settings) / "data" / "pg_hba.conf").read_text()) == []
        for wrong in ("", "airflow", password[:-1]):
            with pytest.raises(psycopg2.OperationalError, match="password"):
                psycopg2.connect(host="127.0.0.1", port=port, user="airflow", dbname="airflow", password=wrong,
                                 connect_timeout=5)  # fmt: skip
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="airflow", dbname="airflow", password=password,
                                connect_timeout=5)  # fmt: skip
        with conn, conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone() == ("airflow",)
        conn.close()
        assert [(address, p) for address, p, _ in listening_sockets(base.marked_processes(settings))] == [
            ("127.0.0.1", port)
        ]
    finally:
        services.stop("postgres", settings)
