"""Spark options are decided in one place (btc_platform.lakehouse.spark_session.spark_conf) and reach every way a
job starts: a session built in-process, the supervisor's spark-submit, Airflow's SparkSubmitOperator."""

from __future__ import annotations

from btc_platform.lakehouse.spark_session import spark_conf, spark_submit_args
from btc_platform.ops.orchestration import spark_submit_kwargs
from btc_platform.settings import load_settings


def _conf_args(args: list[str]) -> dict[str, str]:
    return dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--conf")


def test_every_launch_path_carries_the_same_options(tmp_path):
    settings = load_settings(data_dir=tmp_path, spark_shuffle_partitions=3, spark_driver_memory="1500m")
    expected = spark_conf(settings)
    assert expected["spark.sql.session.timeZone"] == "UTC"
    assert expected["spark.sql.shuffle.partitions"] == "3"
    assert expected["spark.driver.memory"] == "1500m"
    assert "-Duser.timezone=UTC" in expected["spark.driver.extraJavaOptions"]
    assert _conf_args(spark_submit_args(settings, "x")) == expected
    assert spark_submit_kwargs(settings, "x")["conf"] == expected


def test_driver_overrides_and_session_only_options(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    conf = spark_conf(settings, driver_memory="3g", driver_java_options="-XX:+UseParallelGC")
    assert conf["spark.driver.memory"] == "3g"
    assert conf["spark.driver.extraJavaOptions"] == "-Duser.timezone=UTC -XX:+UseParallelGC"
    assert conf["spark.executor.extraJavaOptions"] == "-Duser.timezone=UTC"
    assert conf["spark.sql.codegen.hugeMethodLimit"] == "8000"  # no stage HotSpot would never compile
    # a session created under spark-submit (JVM already running) gets no launch-only options
    running = spark_conf(settings, with_launch_options=False)
    assert not any(key.startswith("spark.driver.") for key in running)
    assert running["spark.sql.shuffle.partitions"] == conf["spark.sql.shuffle.partitions"]


def test_spark_session_has_the_platform_options(spark):
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get("spark.sql.sources.partitionOverwriteMode") == "dynamic"


def test_the_batch_jobs_master_defaults_to_the_spark_master_and_can_differ(tmp_path):
    from btc_platform.ops.airflow_env import airflow_env

    cluster = load_settings(data_dir=tmp_path, spark_master="spark://m:7077", spark_cores_max=1)
    assert cluster.batch_spark_master == "spark://m:7077"
    assert spark_submit_kwargs(cluster, "x")["conf"]["spark.cores.max"] == "1"
    split = load_settings(data_dir=tmp_path, spark_master="spark://m:7077", spark_cores_max=1, spark_batch_master="local[2]")
    assert split.batch_spark_master == "local[2]"
    # Airflow's jobs: no standalone options, the local master's launch options; the stream keeps the cluster
    conf = spark_submit_kwargs(split, "x")["conf"]
    assert "spark.cores.max" not in conf
    assert conf == spark_conf(split, "local[2]")
    assert _conf_args(spark_submit_args(split, "x")) == spark_conf(split, "spark://m:7077")
    assert '"host": "local[2]"' in airflow_env(split, environ={})["AIRFLOW_CONN_SPARK_DEFAULT"]
