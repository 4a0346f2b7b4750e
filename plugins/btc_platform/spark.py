"""SparkSession construction shared by every Spark job, the models and the tests.

The session gets the Kafka connector jars that infra/ resolved with Maven (``spark.jars``),
UTC as its time zone, few shuffle partitions (2-core machines) and the master from settings.
pyspark is imported inside the function so that importing this module stays cheap.

Local sessions (``local[...]`` masters) also get the ``file://`` file system of
``infra/localfs`` (:func:`local_fs_conf`): without Hadoop's native library, the stock one forks
``chmod`` for every file and directory it creates and writes a ``.crc`` side file for each,
which made writing the 60k hour partitions of a history backfill, and every streaming
checkpoint commit, several times slower.
"""

from __future__ import annotations

import logging
import os

from btc_platform.settings import Settings, get_settings

log = logging.getLogger(__name__)


#: Hadoop settings that select infra/localfs's file:// implementation (FileSystem and FileContext).
LOCAL_FS_HADOOP_CONF = {
    "fs.file.impl": "io.btcplatform.localfs.NioLocalFileSystem",
    "fs.AbstractFileSystem.file.impl": "io.btcplatform.localfs.NioLocalFs",
}


def local_fs_conf(settings: Settings, master: str) -> dict[str, str]:
    """Spark conf for the java.nio ``file://`` file system, for a JVM about to be launched.

    Empty unless ``master`` is local (on a cluster the executors would need the jar too, and
    storage is hdfs:// there) and ``make jars`` has built the jar. The jar goes on the driver's
    launch classpath because Hadoop looks file systems up in the JVM's class loader.
    """
    if not master.startswith("local"):
        return {}
    jars = settings.spark_jars("localfs")
    if not jars:
        log.warning("no %s: local Spark writes fall back to Hadoop's chmod-forking file system "
                    "(run `make jars`)", settings.jars_dir / "localfs")  # fmt: skip
        return {}
    conf = {"spark.driver.extraClassPath": jars[0]}
    conf.update({f"spark.hadoop.{key}": value for key, value in LOCAL_FS_HADOOP_CONF.items()})
    return conf


#: JVM option of every driver and executor (Spark's own time zone is set separately).
UTC_JAVA_OPTION = "-Duser.timezone=UTC"


def jvm_options(extra: str = "") -> str:
    """Extra JVM options of a driver: UTC plus ``extra`` (e.g. the streaming job's GC)."""
    return f"{UTC_JAVA_OPTION} {extra}".strip()


def hadoop_fs(spark, uri: str):
    """``(jvm, Path, FileSystem)`` of ``uri`` through the session's Hadoop configuration."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return jvm, path, path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def path_exists(spark, uri: str) -> bool:
    _, path, fs = hadoop_fs(spark, uri)
    return bool(fs.exists(path))


def _launches_jvm() -> bool:
    """True if creating a session here starts a new JVM (not under spark-submit, none running)."""
    from pyspark import SparkContext

    return SparkContext._active_spark_context is None and "PYSPARK_GATEWAY_PORT" not in os.environ


def build_session(
    app_name: str,
    settings: Settings | None = None,
    *,
    master: str | None = None,
    extra_conf: dict[str, str] | None = None,
    with_kafka: bool = True,
    driver_memory: str | None = None,
    driver_java_options: str = "",
):
    """Create (or return the active) SparkSession configured for this platform.

    ``driver_memory`` (default ``settings.spark_driver_memory``) and ``driver_java_options`` only
    take effect when this call launches the JVM (not under spark-submit, which gets them as
    arguments instead).
    """
    from pyspark.sql import SparkSession

    s = settings or get_settings()
    master = master or s.spark_master
    builder = (
        SparkSession.builder.appName(app_name)
        .master(master)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(s.spark_shuffle_partitions))
        .config("spark.driver.memory", driver_memory or s.spark_driver_memory)
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        .config("spark.driver.extraJavaOptions", jvm_options(driver_java_options))
        .config("spark.executor.extraJavaOptions", UTC_JAVA_OPTION)
    )
    if with_kafka:
        jars = s.spark_jars()
        if not jars:
            log.warning(
                "no Spark connector jars under %s: the Kafka source will be unavailable "
                "(run `make jars`)",
                s.jars_dir / "spark",
            )
        else:
            builder = builder.config("spark.jars", ",".join(jars))
    if _launches_jvm():
        for key, value in local_fs_conf(s, master).items():
            builder = builder.config(key, value)
    for key, value in (extra_conf or {}).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    log.info("spark session %s on %s (version %s)", app_name, session.sparkContext.master, session.version)
    return session
