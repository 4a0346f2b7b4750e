"""btc_platform.lakehouse.storage: file:// round trips (thorough) and one hdfs:// round trip on a real HDFS."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from btc_platform.lakehouse import storage
from btc_platform.lakehouse.storage import DatasetNotFoundError, StorageError, open_storage


def test_local_bytes_round_trip_is_atomic_and_overwrites(tmp_path):
    fs = open_storage(f"file://{tmp_path}")
    uri = f"file://{tmp_path}/a/b/blob.bin"
    assert not fs.exists(uri)
    fs.write_bytes(uri, b"first")
    fs.write_bytes(uri, b"\x00second")
    assert fs.read_bytes(uri) == b"\x00second"
    # no temporary files left next to it
    assert sorted(os.listdir(tmp_path / "a" / "b")) == ["blob.bin"]
    fs.write_text(f"file://{tmp_path}/a/t.json", "{\"x\": 1}")
    assert fs.read_text(f"file://{tmp_path}/a/t.json") == "{\"x\": 1}"
    assert fs.listdir(f"file://{tmp_path}/a") == ["b", "t.json"]
    assert fs.isdir(f"file://{tmp_path}/a/b") and not fs.isdir(uri)


def test_local_failed_write_keeps_old_content(tmp_path, monkeypatch):
    fs = open_storage(f"file://{tmp_path}")
    uri = f"file://{tmp_path}/x.bin"
    fs.write_bytes(uri, b"old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        fs.write_bytes(uri, b"new")
    monkeypatch.undo()
    assert fs.read_bytes(uri) == b"old"
    assert os.listdir(tmp_path) == ["x.bin"]


def test_local_makedirs_rename_delete(tmp_path):
    fs = open_storage(f"file://{tmp_path}")
    fs.makedirs(f"file://{tmp_path}/d/e")
    fs.write_bytes(f"file://{tmp_path}/d/e/f", b"1")
    fs.rename(f"file://{tmp_path}/d/e/f", f"file://{tmp_path}/g/h")
    assert not fs.exists(f"file://{tmp_path}/d/e/f")
    assert fs.read_bytes(f"file://{tmp_path}/g/h") == b"1"
    fs.delete(f"file://{tmp_path}/d")
    assert not fs.exists(f"file://{tmp_path}/d")
    fs.delete(f"file://{tmp_path}/does-not-exist")  # deleting nothing is fine
    with pytest.raises(StorageError, match="does not exist"):
        fs.read_bytes(f"file://{tmp_path}/nope")
    with pytest.raises(StorageError, match="not a directory"):
        fs.listdir(f"file://{tmp_path}/g/h")


def test_unsupported_scheme_is_rejected():
    with pytest.raises(StorageError, match="file:// or hdfs://"):
        open_storage("s3://bucket/x")


def test_webhdfs_url_defaults_to_storage_host_and_setting(settings_env):
    s = settings_env()
    assert storage.webhdfs_base_url("hdfs://nn.example:8020/bitcoin", s) == f"http://nn.example:{s.hdfs_namenode_http_port}"
    s2 = settings_env(webhdfs_url="http://gateway:1234/")
    assert storage.webhdfs_base_url("hdfs://nn.example:8020/bitcoin", s2) == "http://gateway:1234"


def _partitioned(tmp_path: Path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for date, hour, close in (("2024-01-01", 0, 1.5), ("2024-01-01", 23, 2.5), ("2024-01-02", 5, 3.5)):
        folder = tmp_path / "ds" / f"date={date}" / f"hour={hour}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"close": [close], "symbol": ["BTCUSDT"]}), folder / "part-00000.parquet")
        (folder / ".part-00000.parquet.crc").write_bytes(b"crc")
        rows.append((date, hour, close))
    (tmp_path / "ds" / "_SUCCESS").write_text("")
    return pd.DataFrame(rows, columns=["date", "hour", "close"])


def test_read_parquet_dataset_restores_hive_partitions(tmp_path):
    expected = _partitioned(tmp_path)
    got = storage.read_parquet_dataset(f"file://{tmp_path}/ds")
    got = got.sort_values(["date", "hour"]).reset_index(drop=True)
    assert list(got["date"]) == list(expected["date"])
    assert list(got["hour"]) == [0, 23, 5]
    assert got["hour"].dtype == np.int64
    assert got["date"].map(type).eq(str).all()  # "2024-01-01" stays a string, not a date
    assert list(got["close"]) == [1.5, 2.5, 3.5]


def test_read_parquet_dataset_missing_dir_raises(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        storage.read_parquet_dataset(f"file://{tmp_path}/none")


def test_write_parquet_round_trip(tmp_path):
    df = pd.DataFrame(
        {
            "t": pd.date_range("2024-01-01", periods=3, freq="h", tz="UTC"),
            "price": [1.0, np.nan, 3.25],
            "name": ["a", None, "c"],
        }
    )
    uri = f"file://{tmp_path}/out/x=1/part-0.parquet"
    storage.write_parquet(df, uri)
    back = storage.read_parquet_dataset(f"file://{tmp_path}/out")
    assert list(back["x"]) == ["1", "1", "1"]
    pd.testing.assert_frame_equal(back.drop(columns=["x"]), df, check_dtype=False)
    assert back["t"].iloc[2] == pd.Timestamp("2024-01-01T02:00:00Z")


@pytest.mark.integration
@pytest.mark.slow
def test_hdfs_round_trip(hdfs_service):
    hdfs = hdfs_service
    root = f"{hdfs.uri}/models-test-{os.getpid()}"
    fs = open_storage(root, hdfs.settings)  # WebHDFS address derived from the URI host + http port
    assert isinstance(fs, storage.WebHdfsStorage)
    assert fs.base_url == hdfs.http_url.rstrip("/")
    fs.makedirs(root)
    fs.write_bytes(f"{root}/a/blob.bin", b"one")
    fs.write_bytes(f"{root}/a/blob.bin", b"two")  # overwrite through tmp + RENAME
    assert fs.read_bytes(f"{root}/a/blob.bin") == b"two"
    assert fs.listdir(f"{root}/a") == ["blob.bin"]
    df = pd.DataFrame({"close": [1.0, 2.0]})
    storage.write_parquet(df, f"{root}/ds/date=2024-01-01/hour=3/part-0.parquet", storage=fs)
    back = storage.read_parquet_dataset(f"{root}/ds", storage=fs)
    assert list(back["close"]) == [1.0, 2.0] and list(back["hour"]) == [3, 3]
    fs.rename(f"{root}/a/blob.bin", f"{root}/b.bin")
    assert not fs.exists(f"{root}/a/blob.bin") and fs.read_bytes(f"{root}/b.bin") == b"two"
    fs.delete(root)
    assert not fs.exists(root)
