"""The cluster profile's configuration (no services started): which processes each service has
per profile, what `make stop` finds, Airflow's DB and executor, Spark options on the standalone
master, the stream's launch. The services themselves run in tests/test_cluster_faults.py and
bench/bench_cluster.py."""

from __future__ import annotations

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
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg2://airflow@127.0.0.1:15432/airflow"
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

