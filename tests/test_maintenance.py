"""Table maintenance: OPTIMIZE compacts many small files (only closed raw_data days), rows stay the
same, VACUUM with retention 0 removes the replaced files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from btc_platform.lakehouse import datasets
from btc_platform.settings import load_settings

pytestmark = pytest.mark.spark

TODAY = date(2024, 1, 3)
DAYS = ("2024-01-01", "2024-01-02", TODAY.isoformat())


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings(storage_root=f"file://{tmp_path}/bitcoin", data_dir=tmp_path / "data")


def data_files(settings, name: str) -> set[str]:
    """Parquet files on disk under the table's directory (referenced or not)."""
    root = Path(settings.path(name).removeprefix("file://"))
    return {str(p.relative_to(root)) for p in root.rglob("*.parquet") if "_delta_log" not in p.parts}


def test_optimize_and_vacuum(spark, settings, caplog):
    from delta.tables import DeltaTable

    from spark_jobs import maintenance_job, tables

    raw_uri, hourly_uri = settings.path(datasets.RAW_DATA), settings.path(datasets.HOURLY_METRICS)
    for batch in range(4):  # four micro-batches, each writing a file into every day
        rows = [(f"m{batch}-{day}-{i}", float(i), day, i % 24) for day in DAYS for i in range(5)]
        df = spark.createDataFrame(rows, "message_id string, price double, date string, hour int")
        tables.append_rows(spark, settings, datasets.RAW_DATA, df.repartition(1))
        hourly = spark.createDataFrame([("BTCUSDT", batch, 1.0)], "symbol string, n int, close double")
        tables.append_rows(spark, settings, datasets.HOURLY_METRICS, hourly.repartition(1))
    raw_rows = sorted(spark.read.format("delta").load(raw_uri).collect())
    hourly_rows = sorted(spark.read.format("delta").load(hourly_uri).collect())
    today_files = set(spark.read.format("delta").load(raw_uri).where(f"date = '{TODAY}'").inputFiles())
    assert DeltaTable.forPath(spark, raw_uri).detail().first()["numFiles"] == 12
    assert DeltaTable.forPath(spark, hourly_uri).detail().first()["numFiles"] == 4
    on_disk = {name: data_files(settings, name) for name in (datasets.RAW_DATA, datasets.HOURLY_METRICS)}

    with caplog.at_level("INFO", logger="spark_jobs.maintenance_job"):
        reports = {r.name: r for r in maintenance_job.run(spark, settings, today=TODAY, retention_hours=0)}

    assert set(reports) == {datasets.RAW_DATA, datasets.HOURLY_METRICS}  # the others do not exist
    raw, hourly = reports[datasets.RAW_DATA], reports[datasets.HOURLY_METRICS]
    # the two closed days: 4 files each -> 1; today's 4 files untouched
    assert (raw.files_before, raw.files_after) == (12, 6)
    assert raw.scope == f"`date` < '{TODAY}'"
    assert set(spark.read.format("delta").load(raw_uri).where(f"date = '{TODAY}'").inputFiles()) == today_files
    assert (hourly.files_before, hourly.files_after) == (4, 1)
    assert DeltaTable.forPath(spark, hourly_uri).detail().first()["numFiles"] == 1
    assert sorted(spark.read.format("delta").load(raw_uri).collect()) == raw_rows
    assert sorted(spark.read.format("delta").load(hourly_uri).collect()) == hourly_rows

    # VACUUM (retention 0) deleted exactly the files OPTIMIZE replaced
    assert raw.vacuumed_files == 8 and hourly.vacuumed_files == 4
    assert len(data_files(settings, datasets.RAW_DATA)) == 6
    assert len(on_disk[datasets.RAW_DATA] - data_files(settings, datasets.RAW_DATA)) == 8
    assert len(data_files(settings, datasets.HOURLY_METRICS)) == 1
    assert "raw_data: OPTIMIZE (`date` < '2024-01-03') 12 files" in caplog.text
    assert "-> 6 files" in caplog.text and "removed 8 files" in caplog.text
    assert "below Delta's default of 168 h" in caplog.text
    assert spark.conf.get(maintenance_job.RETENTION_CHECK, "true") == "true"  # restored


def test_compaction_filter():
    from spark_jobs.maintenance_job import compaction_filter

    assert compaction_filter(datasets.TABLES[datasets.RAW_DATA], TODAY) == "`date` < '2024-01-03'"
    assert compaction_filter(datasets.TABLES[datasets.HOURLY_METRICS], TODAY) is None
