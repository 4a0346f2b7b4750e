"""btc_platform.lakehouse.lake as the models use it: delta-rs writes that replace by key, time travel with the
table version, Spark reading what delta-rs wrote, and delta-rs on a real HDFS."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest

from btc_platform.lakehouse import datasets, lake
from btc_platform.testing.models_testdata import (
    candles_from_close,
    random_walk_close,
    to_hourly_metrics,
    write_hourly_metrics,
)
from models.data import DataError, load_series, read_hourly_metrics


def _forecast_rows(version: str, origin: str, value: float, hours: int = 3) -> pd.DataFrame:
    origin_ts = pd.Timestamp(origin)
    steps = np.arange(1, hours + 1)
    return pd.DataFrame(
        {
            "symbol": "BTCUSDT",
            "model_version": version,
            "origin_hour_start": origin_ts,
            "horizon": steps.astype("int32"),
            "target_hour_start": origin_ts + pd.to_timedelta(steps, unit="h"),
            "predicted_close": value,
            "inside_interval": steps % 2 == 0,
            "note": pd.Series([None, "o'clock", None], dtype="string"),
        }
    )


def test_write_replaces_rows_of_the_same_key_and_keeps_the_others(tmp_path):
    uri = f"file://{tmp_path}/future_predictions"
    keys = ("symbol", "model_version", "origin_hour_start")
    assert lake.write_at(uri, _forecast_rows("v1", "2024-01-01T00:00Z", 1.0), replace_on=keys) == 0
    assert lake.write_at(uri, _forecast_rows("v1", "2024-01-01T01:00Z", 2.0), replace_on=keys) == 1
    assert lake.write_at(uri, _forecast_rows("v2", "2024-01-01T00:00Z", 3.0), replace_on=keys) == 2
    # a repeat of v1 at 00:00 replaces its 3 rows (one commit), nothing else changes
    assert lake.write_at(uri, _forecast_rows("v1", "2024-01-01T00:00Z", 9.0), replace_on=keys) == 3
    back = lake.read_at(uri).sort_values(["model_version", "origin_hour_start", "horizon"])
    assert len(back) == 9
    by_key = back.groupby(["model_version", "origin_hour_start"])["predicted_close"].agg(["count", "max"])
    assert by_key.to_dict("index") == {
        ("v1", pd.Timestamp("2024-01-01T00:00Z")): {"count": 3, "max": 9.0},
        ("v1", pd.Timestamp("2024-01-01T01:00Z")): {"count": 3, "max": 2.0},
        ("v2", pd.Timestamp("2024-01-01T00:00Z")): {"count": 3, "max": 3.0},
    }
    assert str(back["origin_hour_start"].dtype) == "datetime64[us, UTC]"
    assert back["note"].isna().sum() == 6 and set(back["note"].dropna()) == {"o'clock"}
    # the previous version is still there (time travel)
    assert lake.read_at(uri, version=2, filters=[("model_version", "=", "v1")])["predicted_close"].max() == 2.0


def test_write_adds_new_columns_only_when_asked(tmp_path):
    uri = f"file://{tmp_path}/future_predictions"
    keys = ("symbol", "model_version", "origin_hour_start")
    lake.write_at(uri, _forecast_rows("v1", "2024-01-01T00:00Z", 1.0), replace_on=keys)
    newer = _forecast_rows("v2", "2024-01-01T00:00Z", 2.0).assign(band_model="garch")
    with pytest.raises(Exception, match="(?i)schema"):
        lake.write_at(uri, newer, replace_on=keys)
    lake.write_at(uri, newer, replace_on=keys, add_columns=True)
    back = lake.read_at(uri)
    assert back.groupby("model_version")["band_model"].apply(lambda c: c.isna().all()).to_dict() == {
        "v1": True, "v2": False}


def test_filters_are_pushed_down_as_sql(tmp_path):
    uri = f"file://{tmp_path}/t"
    lake.write_at(uri, _forecast_rows("v1", "2024-01-01T00:00Z", 1.0))
    lake.write_at(uri, _forecast_rows("v2", "2024-01-01T03:00Z", 2.0))
    assert lake.select_sql(["a"], [("b", "in", ["x", "o'k"]), ("c", ">=", np.int64(2))]) == (
        """SELECT "a" FROM t WHERE "b" IN ('x', 'o''k') AND "c" >= 2"""
    )
    got = lake.read_at(
        uri,
        columns=["horizon", "target_hour_start"],
        filters=[
            ("model_version", "in", ["v2", "v9"]),
            ("horizon", "!=", np.int32(2)),
            ("target_hour_start", "<", pd.Timestamp("2024-01-01T06:00Z")),
            ("inside_interval", "=", np.bool_(False)),
        ],
    )
    assert list(got.columns) == ["horizon", "target_hour_start"]
    assert got["horizon"].tolist() == [1] and got["target_hour_start"].tolist() == [pd.Timestamp("2024-01-01T04:00Z")]
    with pytest.raises(ValueError, match="unsupported filter operator"):
        lake.read_at(uri, filters=[("horizon", "~", 1)])
    with pytest.raises(ValueError, match="needs a list"):
        lake.read_at(uri, filters=[("symbol", "in", "BTCUSDT")])


def test_write_refuses_untyped_columns_and_bad_keys(tmp_path):
    uri = f"file://{tmp_path}/t"
    rows = _forecast_rows("v1", "2024-01-01T00:00Z", 1.0)
    with pytest.raises(ValueError, match=r"columns \['empty'\] have no type"):
        lake.write_at(uri, rows.assign(empty=None))
    lake.write_at(uri, rows)
    with pytest.raises(ValueError, match="not in the frame"):
        lake.write_at(uri, rows, replace_on=("nope",))
    with pytest.raises(lake.TableNotFoundError, match="no Delta table"):
        lake.read_at(f"file://{tmp_path}/absent")
    with pytest.raises(lake.VersionNotFoundError, match="versions 0..0; version 3"):
        lake.read_at(uri, version=3)


def test_table_names_resolve_under_the_storage_root(settings_env):
    s = settings_env()
    assert lake.table_version(datasets.PREDICTION_METRICS, s) is None
    row = pd.DataFrame({"model_version": ["v1"], "model_rmse": [1.5]})
    lake.write_table(datasets.PREDICTION_METRICS, row, s, replace_on=("model_version",))
    lake.write_table(datasets.PREDICTION_METRICS, row.assign(model_rmse=2.5), s, replace_on=("model_version",))
    assert lake.table_version(datasets.PREDICTION_METRICS, s) == 1
    assert lake.read_table(datasets.PREDICTION_METRICS, s)["model_rmse"].tolist() == [2.5]
    with pytest.raises(KeyError, match="unknown table"):
        lake.write_table("nope", row, s)


def test_time_travel_reads_the_rows_of_a_past_version(tmp_path):
    """Version A, then more rows (version B): reading as of A gives the old rows only."""
    uri = f"file://{tmp_path}/hourly_metrics"
    frame = candles_from_close(random_walk_close(48))
    rows = to_hourly_metrics(frame)
    other = to_hourly_metrics(frame, symbol="ETHUSDT")
    version_a = write_hourly_metrics(pd.concat([rows.iloc[:30], other]), uri)
    version_b = write_hourly_metrics(rows.iloc[30:], uri)
    assert (version_a, version_b) == (0, 1)
    old = read_hourly_metrics(uri, "BTCUSDT", version=version_a)
    new = read_hourly_metrics(uri, "BTCUSDT")
    assert (old.table_version, len(old.frame)) == (version_a, 30)
    assert (new.table_version, len(new.frame)) == (version_b, 48)
    assert list(old.frame["hour_start"]) == list(frame["hour_start"].iloc[:30])
    until = frame["hour_start"].iloc[9]
    assert len(load_series(uri, "BTCUSDT", version=version_b, until=until).frame) == 10  # pushed down
    with pytest.raises(DataError, match=r"version 7 does not exist: use one of those \(DESCRIBE HISTORY"):
        read_hourly_metrics(uri, "BTCUSDT", version=7)
    with pytest.raises(ValueError, match="needs a Delta table"):
        load_series(str(tmp_path / "candles.csv"), "BTCUSDT", version=0)


@pytest.mark.spark
def test_spark_reads_what_delta_rs_wrote(spark, settings_env):
    """Every column type the models write (string, int32, double, bool, UTC timestamp) as Spark sees it."""
    s = settings_env()
    keys = datasets.TABLES[datasets.PREDICTIONS].keys
    lake.write_table(datasets.PREDICTIONS, _forecast_rows("v1", "2024-03-01T05:00Z", 1.0), s, replace_on=keys)
    lake.write_table(datasets.PREDICTIONS, _forecast_rows("v2", "2024-03-01T06:00Z", 2.0), s, replace_on=keys)
    lake.write_table(datasets.PREDICTIONS, _forecast_rows("v1", "2024-03-01T05:00Z", 4.0), s, replace_on=keys)
    df = spark.read.format("delta").load(lake.table_uri(datasets.PREDICTIONS, s))
    assert dict(df.dtypes) == {
        "symbol": "string",
        "model_version": "string",
        "origin_hour_start": "timestamp",
        "horizon": "int",
        "target_hour_start": "timestamp",
        "predicted_close": "double",
        "inside_interval": "boolean",
        "note": "string",
    }
    rows = df.where("model_version = 'v1'").orderBy("horizon").collect()
    assert [r.predicted_close for r in rows] == [4.0, 4.0, 4.0]  # replaced, not duplicated
    assert df.count() == 6
    # the session runs in UTC: the instant is the one written
    first = rows[0].target_hour_start
    assert (first.year, first.month, first.day, first.hour) == (2024, 3, 1, 6)
    history = spark.sql(f"DESCRIBE HISTORY delta.`{lake.table_uri(datasets.PREDICTIONS, s)}`").count()
    assert history == 3


@pytest.mark.integration
@pytest.mark.spark
@pytest.mark.slow
def test_delta_rs_reads_and_writes_tables_on_hdfs(spark, hdfs_service):
    """delta-rs (hdfs-native, no storage options) on a real NameNode + DataNode: it reads a table
    Spark wrote on hdfs://, and Spark reads a table delta-rs wrote there (with time travel)."""
    from btc_platform.lakehouse.datasets import HOURLY_METRICS_COLUMNS, struct_type

    base = f"{hdfs_service.uri}/lake-{uuid.uuid4().hex[:8]}"
    frame = candles_from_close(random_walk_close(30))
    rows = to_hourly_metrics(frame, stream_from=20)
    records = [
        tuple(None if pd.isna(v) else (v.to_pydatetime() if isinstance(v, pd.Timestamp) else v) for v in rec)
        for rec in rows.astype(object).itertuples(index=False)
    ]
    spark_uri = f"{base}/hourly_metrics"
    spark.createDataFrame(records, schema=struct_type(HOURLY_METRICS_COLUMNS)).write.format("delta").save(spark_uri)
    loaded = read_hourly_metrics(spark_uri, "BTCUSDT")
    assert loaded.table_version == 0 and len(loaded.frame) == 30
    assert list(loaded.frame["hour_start"]) == list(frame["hour_start"])
    np.testing.assert_allclose(loaded.frame["close"], frame["close"])
    assert list(loaded.frame["source"][-10:]) == ["stream"] * 10

    rs_uri = f"{base}/predictions"
    keys = ("model_version",)
    lake.write_at(rs_uri, _forecast_rows("v1", "2024-01-01T00:00Z", 1.0), replace_on=keys)
    lake.write_at(rs_uri, _forecast_rows("v1", "2024-01-01T00:00Z", 5.0), replace_on=keys)
    back = spark.read.format("delta").load(rs_uri)
    assert back.count() == 3 and {r.predicted_close for r in back.collect()} == {5.0}
    first = spark.read.format("delta").option("versionAsOf", 0).load(rs_uri)
    assert {r.predicted_close for r in first.collect()} == {1.0}
    assert lake.read_at(rs_uri, version=0)["predicted_close"].tolist() == [1.0, 1.0, 1.0]
