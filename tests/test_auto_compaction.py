"""raw_data's open partition stays a few files under many small writes: the layout enables Delta's
auto compaction, and it acts on the stream's appends (under app id and batch id) and on MERGEs
alike. The threshold (``spark.databricks.delta.autoCompact.minNumFiles``, 50 by default) is
lowered for the test so that a few writes show the bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from btc_platform.lakehouse import datasets
from btc_platform.settings import load_settings

pytestmark = pytest.mark.spark

DAY = "2024-01-03"
MIN_NUM_FILES = 3
WRITES = 10
MIN_NUM_FILES_CONF = "spark.databricks.delta.autoCompact.minNumFiles"


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings(storage_root=f"file://{tmp_path}/bitcoin", data_dir=tmp_path / "data")


@pytest.fixture
def few_files(spark):
    previous = spark.conf.get(MIN_NUM_FILES_CONF, None)
    spark.conf.set(MIN_NUM_FILES_CONF, str(MIN_NUM_FILES))
    yield
    if previous is None:
        spark.conf.unset(MIN_NUM_FILES_CONF)
    else:
        spark.conf.set(MIN_NUM_FILES_CONF, previous)


def batch(spark, n: int, rows: int = 3):
    """One micro-batch: ``rows`` new messages of today's partition, in one file."""
    data = [(f"m{n}-{i}", float(n * rows + i), DAY, i % 24) for i in range(rows)]
    return spark.createDataFrame(data, "message_id string, price double, date string, hour int").repartition(1)


def partition_files(uri: str) -> int:
    """Data files of the day's partition at the table's current version (delta-rs: no Spark job)."""
    from deltalake import DeltaTable

    return sum(1 for f in DeltaTable(uri.removeprefix("file://")).file_uris() if f"/date={DAY}/" in f)


def operations(spark, uri: str) -> list[str]:
    from delta.tables import DeltaTable

    return [r["operation"] for r in DeltaTable.forPath(spark, uri).history().select("operation").collect()]


def test_layout_enables_auto_compaction_on_raw_data():
    assert datasets.TABLES[datasets.RAW_DATA].properties[datasets.AUTO_COMPACT] == "true"


@pytest.mark.parametrize("mode", ["append", "merge"])
def test_open_partition_stays_bounded(spark, settings, few_files, mode):
    from spark_jobs import tables

    uri = tables.ensure_table(spark, settings, datasets.RAW_DATA, batch(spark, 0).schema)
    most = 0
    for n in range(WRITES):
        rows = batch(spark, n)
        if mode == "append":  # as the stream's foreachBatch writer: idempotent under (app id, batch id)
            rows.write.format("delta").mode("append").option("txnAppId", "test").option("txnVersion", n).save(uri)
        else:
            tables.merge_rows(spark, uri, rows, datasets.TABLES[datasets.RAW_DATA].keys)
        most = max(most, partition_files(uri))

    # without compaction the partition would hold one file per write (10)
    assert most <= MIN_NUM_FILES
    assert "OPTIMIZE" in operations(spark, uri)
    stored = spark.read.format("delta").load(uri)
    assert stored.count() == WRITES * 3
    assert stored.select("message_id").distinct().count() == WRITES * 3
    assert sorted(r["price"] for r in stored.collect()) == [float(i) for i in range(WRITES * 3)]
