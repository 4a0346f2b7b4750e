"""Upgrade from the Parquet layout: the layout check refuses it (naming the command), and
``btc-lake convert`` turns each dataset into a Delta table with the same rows, keeping a backup."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from btc_platform.lakehouse import datasets, lake
from btc_platform.settings import load_settings

STAMP_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
STAMP = "20260102T030405Z"


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings(storage_root=f"file://{tmp_path}/bitcoin", data_dir=tmp_path / "data")


def root(settings) -> Path:
    return Path(settings.storage_root.removeprefix("file://"))


def test_check_layout_refuses_parquet_datasets_and_names_the_command(settings):
    base = root(settings)
    lake.check_layout(settings)  # nothing there yet
    (base / datasets.RAW_DATA).mkdir(parents=True)  # the stream creates it empty: fine
    (base / datasets.HOURLY_METRICS / "_delta_log").mkdir(parents=True)  # a Delta table: fine
    lake.check_layout(settings)
    assert lake.existing_tables(settings) == [datasets.HOURLY_METRICS]

    (base / datasets.RAW_DATA / "_spark_metadata").mkdir()
    (base / datasets.RAW_DATA / "date=2024-01-01").mkdir()
    (base / datasets.PREDICTIONS).mkdir()
    (base / datasets.PREDICTIONS / "part-00000.parquet").write_bytes(b"PAR1")
    with pytest.raises(lake.LegacyLayoutError) as err:
        lake.check_layout(settings)
    message = str(err.value)
    assert lake.CONVERT_COMMAND in message and "btc-lake convert" in message
    assert "raw_data (_spark_metadata, date=2024-01-01)" in message
    assert "predictions (part-00000.parquet)" in message
    assert datasets.HOURLY_METRICS not in message


def test_jobs_refuse_the_parquet_layout(settings, monkeypatch, caplog):
    """A job main stops before starting Spark (exit 2) with the message."""
    from spark_jobs import consolidate_job
    from spark_jobs._cli import EXIT_CONFIG

    (root(settings) / datasets.MINUTE_METRICS / "date=2024-01-01").mkdir(parents=True)
    monkeypatch.setenv("BTC_DATA_DIR", str(settings.data_dir))
    code = consolidate_job.main(["--start", "2024-01-01T00:00:00Z", "--end", "2024-01-01T01:00:00Z",
                                 "--storage-root", settings.storage_root])  # fmt: skip
    assert code == EXIT_CONFIG
    assert lake.CONVERT_COMMAND in caplog.text and "minute_metrics (date=2024-01-01)" in caplog.text


def _write_stream_parquet(spark, tmp_path: Path, target: str, rows: list[dict]) -> None:
    """Write ``rows`` the way the old stream did: a file sink with a _spark_metadata log."""
    import json

    source = tmp_path / "json-source"
    source.mkdir()
    (source / "rows.json").write_text("\n".join(json.dumps(r) for r in rows))
    stream = spark.readStream.schema("message_id string, price double, date string, hour int").json(str(source))
    query = (
        stream.writeStream.format("parquet").partitionBy("date", "hour")
        .option("checkpointLocation", str(tmp_path / "json-checkpoint"))
        .trigger(availableNow=True).start(target)
    )  # fmt: skip
    query.awaitTermination(120)


@pytest.mark.spark
def test_convert_turns_parquet_datasets_into_delta_tables(spark, settings, tmp_path):
    from delta.tables import DeltaTable

    from spark_jobs import convert_job

    base = root(settings)
    raw = [{"message_id": f"m{i}", "price": 100.0 + i, "date": f"2024-01-0{1 + i % 2}", "hour": i % 3}
           for i in range(10)]  # fmt: skip
    _write_stream_parquet(spark, tmp_path, settings.path(datasets.RAW_DATA), raw)
    # a file of a failed batch, not in _spark_metadata: the conversion must leave it out
    stray = spark.createDataFrame([("stray", 1.0)], "message_id string, price double")
    stray.write.parquet(str(tmp_path / "stray"))
    next((tmp_path / "stray").glob("*.parquet")).rename(base / datasets.RAW_DATA / "date=2024-01-01" / "hour=0" / "part-stray.parquet")
    # hourly_metrics of the Parquet layout: plain files under date=/hour= (no _spark_metadata)
    hourly = spark.createDataFrame(
        [("BTCUSDT", datetime(2024, 1, 1, h, tzinfo=UTC), 100.0 + h, "2024-01-01", h) for h in range(4)],
        "symbol string, hour_start timestamp, close double, date string, hour int",
    )
    hourly.write.partitionBy("date", "hour").parquet(settings.path(datasets.HOURLY_METRICS))
    metrics_checkpoint = base / "checkpoints" / "metrics"
    (metrics_checkpoint / "offsets").mkdir(parents=True)
    (base / "checkpoints" / "raw").mkdir()

    with pytest.raises(lake.LegacyLayoutError):
        lake.check_layout(settings)
    done = convert_job.convert(spark, settings, now=STAMP_AT)

    assert {d.name: d.rows for d in done} == {datasets.RAW_DATA: 10, datasets.HOURLY_METRICS: 4}
    lake.check_layout(settings)  # nothing left to convert
    assert convert_job.convert(spark, settings) == []

    raw_table = DeltaTable.forPath(spark, settings.path(datasets.RAW_DATA))
    assert raw_table.detail().first()["partitionColumns"] == ["date"]
    got = {(r["message_id"], r["price"], r["date"], r["hour"]) for r in raw_table.toDF().collect()}
    assert got == {(r["message_id"], r["price"], r["date"], r["hour"]) for r in raw}
    assert dict(raw_table.toDF().dtypes)["hour"] == "int"

    hourly_table = DeltaTable.forPath(spark, settings.path(datasets.HOURLY_METRICS))
    assert hourly_table.detail().first()["partitionColumns"] == []
    assert sorted(r["close"] for r in hourly_table.toDF().collect()) == [100.0, 101.0, 102.0, 103.0]

    for name in (datasets.RAW_DATA, datasets.HOURLY_METRICS):
        assert (base / f"{name}.parquet-backup-{STAMP}").is_dir()
    assert (base / f"{datasets.RAW_DATA}.parquet-backup-{STAMP}" / "_spark_metadata").is_dir()
    assert not metrics_checkpoint.exists()
    assert (base / "checkpoints" / f"metrics.parquet-backup-{STAMP}" / "offsets").is_dir()
    assert (base / "checkpoints" / "raw").is_dir()  # the ingest query's Kafka offsets stay
    assert lake.existing_tables(settings) == [datasets.RAW_DATA, datasets.HOURLY_METRICS]


def test_stream_job_and_retraining_refuse_the_parquet_layout(settings_env, tmp_path):
    """Exit 2 with the command, before any Spark session or model read."""
    from models import pipeline
    from spark_jobs import stream_job

    settings = settings_env(storage_root=f"file://{tmp_path}/bitcoin")
    (root(settings) / datasets.RAW_DATA / "_spark_metadata").mkdir(parents=True)
    code = stream_job.main(["--storage-root", settings.storage_root, "--checkpoint-root", f"file://{tmp_path}/cp"])
    assert code == stream_job.EXIT_CONFIG
    with pytest.raises(lake.LegacyLayoutError, match=lake.CONVERT_COMMAND):
        pipeline.check_sufficiency({})
