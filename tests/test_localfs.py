"""The java.nio file:// file system of infra/localfs, as local Spark sessions use it."""

from __future__ import annotations

import stat

from btc_platform.lakehouse.spark_session import (
    LOCAL_FS_HADOOP_CONF,
    hadoop_fs,
    local_fs_conf,
    spark_submit_args,
)
from btc_platform.ops.orchestration import spark_submit_kwargs
from btc_platform.settings import load_settings


def test_local_session_uses_the_nio_file_system(spark, tmp_path):
    _, _, fs = hadoop_fs(spark, f"file://{tmp_path}")
    assert fs.getClass().getName() == LOCAL_FS_HADOOP_CONF["fs.file.impl"]
    fc = spark.sparkContext._jvm.org.apache.hadoop.fs.FileContext.getFileContext(
        spark.sparkContext._jsc.hadoopConfiguration()
    )
    assert fc.getDefaultFileSystem().getClass().getName() == LOCAL_FS_HADOOP_CONF["fs.AbstractFileSystem.file.impl"]


def test_file_system_get_local_still_works(spark):
    """Hadoop and Spark code call FileSystem.getLocal(), which casts fs.file.impl to LocalFileSystem."""
    jvm = spark.sparkContext._jvm
    local = jvm.org.apache.hadoop.fs.FileSystem.getLocal(spark.sparkContext._jsc.hadoopConfiguration())
    assert local.getClass().getName() == LOCAL_FS_HADOOP_CONF["fs.file.impl"]
    assert local.getRawFileSystem().getClass().getName() == "io.btcplatform.localfs.NioRawLocalFileSystem"


def test_permissions_are_applied_without_chmod_and_no_crc_files(spark, tmp_path):
    jvm, _, fs = hadoop_fs(spark, f"file://{tmp_path}")
    perm = jvm.org.apache.hadoop.fs.permission.FsPermission
    target = jvm.org.apache.hadoop.fs.Path(f"file://{tmp_path}/a/b")
    assert fs.mkdirs(target, perm.createImmutable(0o750))
    fs.setPermission(jvm.org.apache.hadoop.fs.Path(f"file://{tmp_path}/a"), perm.createImmutable(0o701))
    out = fs.create(jvm.org.apache.hadoop.fs.Path(f"file://{tmp_path}/a/b/f"), perm.createImmutable(0o640),
                    True, 4096, 1, 1 << 20, None)  # fmt: skip
    out.write(b"x")
    out.close()
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o701
    assert stat.S_IMODE((tmp_path / "a" / "b" / "f").stat().st_mode) == 0o640
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["f"]  # no .f.crc


def test_partitioned_write_and_read_back(spark, tmp_path):
    df = spark.createDataFrame([(d, h, float(d * 24 + h)) for d in range(3) for h in range(24)], "d int, h int, v double")
    df.write.partitionBy("d", "h").parquet(f"file://{tmp_path}/ds")
    back = spark.read.parquet(f"file://{tmp_path}/ds")
    assert sorted((r.d, r.h, r.v) for r in back.collect()) == sorted((r.d, r.h, r.v) for r in df.collect())
    assert not list(tmp_path.rglob("*.crc"))


def test_conf_only_for_local_masters_with_the_jar(tmp_path):
    settings = load_settings()
    conf = local_fs_conf(settings, "local[2]")
    assert conf["spark.hadoop.fs.file.impl"] == LOCAL_FS_HADOOP_CONF["fs.file.impl"]
    assert conf["spark.driver.extraClassPath"].endswith("btc-localfs.jar")
    assert local_fs_conf(settings, "spark://master:7077") == {}
    assert local_fs_conf(load_settings(cache_dir=tmp_path / "empty-cache"), "local[2]") == {}


def test_spark_submit_passes_the_conf_for_local_masters():
    local = load_settings(spark_master="local[2]")
    args = spark_submit_args(local, "x")
    assert f"spark.hadoop.fs.file.impl={LOCAL_FS_HADOOP_CONF['fs.file.impl']}" in args
    assert spark_submit_kwargs(local, "x")["conf"]["spark.hadoop.fs.file.impl"] == LOCAL_FS_HADOOP_CONF["fs.file.impl"]
    cluster = load_settings(spark_master="spark://master:7077")
    assert not any("fs.file.impl" in a for a in spark_submit_args(cluster, "x"))
    assert "spark.hadoop.fs.file.impl" not in spark_submit_kwargs(cluster, "x")["conf"]
