"""SparkSession construction shared by every Spark job, the models and the tests.

The session gets the Kafka connector jars that infra/ resolved with Maven (``spark.jars``),
UTC as its time zone, few shuffle partitions (2-core machines) and the master from settings.
pyspark is imported inside the functions that start Spark: DAG files import this module at parse time.

Local sessions (``local[...]`` masters) also get the ``file://`` file system of
``infra/localfs`` (:func:`local_fs_conf`): without Hadoop's native library, the stock one forks
``chmod`` for every file and directory it creates and writes a ``.crc`` side file for each,
which made writing the 60k hour partitions of a history backfill, and every streaming
checkpoint commit, several times slower.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import zipfile
from pathlib import Path

from btc_platform.lakehouse import lineage
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


#: Delta Lake in every session: SQL (MERGE, OPTIMIZE, VACUUM, DESCRIBE HISTORY) and the catalog.
#: MERGE does not copy its source first (``materializeSource``): our sources are deterministic
#: (cached DataFrames), and the copy made a small MERGE several times slower (docs/benchmarks.md).
DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.databricks.delta.merge.materializeSource": "none",
}

#: JVM options of every driver and executor (Spark's own time zone is set separately).
JVM_OPTIONS = "-Duser.timezone=UTC"


def jvm_options(extra: str = "") -> str:
    """Extra JVM options of a driver: :data:`JVM_OPTIONS` plus ``extra`` (e.g. the streaming job's GC)."""
    return f"{JVM_OPTIONS} {extra}".strip()


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


#: Delta's commit user metadata (JSON here: a job's own record and the Airflow task instance).
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"


def spark_conf(
    settings: Settings,
    master: str | None = None,
    *,
    with_launch_options: bool = True,
    driver_memory: str | None = None,
    driver_java_options: str = "",
    cores_max: int | None = None,
) -> dict[str, str]:
    """Every Spark option of the platform, the one place they are decided.

    Used by :func:`build_session` (a job or test that creates its own session), by
    :func:`spark_submit_args` (the supervised stream job) and by
    ``orchestration.spark_submit_kwargs`` (Airflow's SparkSubmitOperator). ``with_launch_options``
    adds what only takes effect when the driver JVM is launched (memory, JVM options, the
    local file system's classpath); ``driver_memory`` defaults to ``settings.spark_driver_memory``.
    On a ``spark://`` master: executor cores and memory, ``spark.cores.max`` (``cores_max``,
    default ``settings.spark_cores_max``; 0 leaves it unset) and the driver's address.
    """
    master = master or settings.spark_master
    conf = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.executor.extraJavaOptions": JVM_OPTIONS,
        # HotSpot never JIT-compiles a method of more than 8,000 bytes of bytecode, and whole-stage
        # code generation of a wide projection makes one (the stream's parse and validation: one
        # processNext of ~18,000 bytes), which would run in the bytecode interpreter for ever. At
        # this limit such a stage runs without whole-stage codegen instead, its expressions in
        # generated projections split into small methods (what Spark's own docs advise on
        # HotSpot); it makes a stream's first batch faster and leaves warm ones as they were
        # (docs/benchmarks.md). -XX:-DontCompileHugeMethods, the earlier fix, made HotSpot compile
        # that method into a huge piece of machine code, seconds of C2 time.
        "spark.sql.codegen.hugeMethodLimit": "8000",
        **DELTA_CONF,
        # Delta's snapshot state of these small tables: as few partitions as the shuffles (the default
        # of 50 doubled the time of a small MERGE, docs/benchmarks.md)
        "spark.databricks.delta.snapshotPartitions": str(settings.spark_shuffle_partitions),
        # VACUUM lists files with this many tasks (default 10,000)
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(4 * settings.spark_shuffle_partitions),
    }
    if master.startswith("spark://"):
        conf.update(standalone_conf(settings, cores_max))
    jars = settings.spark_jars()
    if jars:
        conf["spark.jars"] = ",".join(jars)
    else:
        log.warning("no Spark jars under %s: Delta tables and the Kafka source are unavailable "
                    "(run `make jars`)", settings.jars_dir / "spark")  # fmt: skip
    if with_launch_options:
        conf["spark.driver.memory"] = driver_memory or settings.spark_driver_memory
        conf["spark.driver.extraJavaOptions"] = jvm_options(driver_java_options)
        conf.update(local_fs_conf(settings, master))
    return conf


def standalone_conf(settings: Settings, cores_max: int | None = None) -> dict[str, str]:
    """Options of an application on a Spark standalone master (only the ones that are set)."""
    cores_max = settings.spark_cores_max if cores_max is None else cores_max
    conf = {}
    if settings.spark_executor_memory:
        conf["spark.executor.memory"] = settings.spark_executor_memory
    if settings.spark_executor_cores:
        conf["spark.executor.cores"] = str(settings.spark_executor_cores)
    if cores_max:
        conf["spark.cores.max"] = str(cores_max)
    if settings.spark_driver_host:
        conf["spark.driver.host"] = settings.spark_driver_host
        conf["spark.driver.bindAddress"] = settings.spark_driver_host
    return conf


def build_session(
    app_name: str,
    settings: Settings | None = None,
    *,
    master: str | None = None,
    extra_conf: dict[str, str] | None = None,
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
    conf = spark_conf(s, master, with_launch_options=_launches_jvm(),
                      driver_memory=driver_memory, driver_java_options=driver_java_options)  # fmt: skip
    # Every Delta commit of a job run by an Airflow task (or by a process it started) names that
    # task instance (btc_platform.lakehouse.lineage; the dashboard links it). Set here, in the driver, and
    # never in spark_conf: spark-submit's argv is part of the supervisor's launch fingerprint, and a
    # run id in it would restart the stream at every supervisor run.

    task_metadata = lineage.user_metadata()
    if task_metadata:
        conf[USER_METADATA_CONF] = task_metadata
    conf.update(extra_conf or {})
    builder = SparkSession.builder.appName(app_name).master(master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    log.info("spark session %s on %s (version %s)", app_name, session.sparkContext.master, session.version)
    return session


def environment_script(name: str) -> str:
    """A script of this Python environment (pyspark's ``spark-submit`` and ``spark-sql``,
    ``airflow``), else the one on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found next to the Python interpreter nor on PATH")
    return found


def spark_submit_binary() -> str:
    """The ``spark-submit`` of this Python environment (pyspark ships it), else the one on PATH."""
    return environment_script("spark-submit")


#: Packages shipped to executors with ``--py-files``: found by name where this environment
#: installed them (``importlib.util.find_spec``), never imported from here (this module is the
#: bottom layer; ``spark_jobs`` sits above it).
ZIPPED_PACKAGES = ("btc_platform", "spark_jobs")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {name} is not installed in this environment (make venv)")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def package_zip(settings: Settings) -> Path:
    """Zip of ``btc_platform`` + ``spark_jobs`` for ``--py-files`` (executors on a cluster, which
    do not have this project installed)."""
    target = settings.data_dir / "supervisor" / "btc_platform.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for package in ZIPPED_PACKAGES:
            base = _package_dir(package)
            for path in sorted(base.rglob("*.py")):
                archive.write(path, (Path(base.name) / path.relative_to(base)).as_posix())
    os.replace(tmp, target)
    return target


def spark_submit_args(
    settings: Settings,
    app_name: str,
    *,
    with_py_files: bool | None = None,
    driver_memory: str | None = None,
    driver_java_options: str = "",
    cores_max: int | None = None,
) -> list[str]:
    """spark-submit options of a platform job (master, name, every :func:`spark_conf` option,
    ``--py-files`` with the package zip on non-local masters)."""
    args = ["--master", settings.spark_master, "--name", app_name]
    conf = spark_conf(settings, settings.spark_master, driver_memory=driver_memory,
                      driver_java_options=driver_java_options, cores_max=cores_max)  # fmt: skip
    for key, value in conf.items():
        args += ["--conf", f"{key}={value}"]
    if with_py_files is None:
        with_py_files = not settings.spark_master.startswith("local")
    if with_py_files:
        args += ["--py-files", str(package_zip(settings))]
    return args
