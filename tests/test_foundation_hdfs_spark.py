"""The real local HDFS through the platform's own code: ``btc_platform.lakehouse.namenode`` sees it ready, and
``btc_platform.lakehouse.storage`` (WebHDFS, what the models and the registry use) and Spark (a
``build_session`` session, what the jobs use) read each other's Parquet there. The rows are
10,000 keyed messages published by the platform's producer and read by the streaming job's
Kafka source; reading them back gives exactly the rows that were produced."""

from __future__ import annotations

import json
import uuid

import pytest

from btc_platform.settings import load_settings
from tests.helpers_kafka import keyed_messages, publish, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

COUNT = 10_000
PARTITIONS = 3


def test_hdfs_is_ready_and_lists_root(hdfs_service):
    from btc_platform.lakehouse.namenode import namenode_state, wait_for_hdfs_ready
    from btc_platform.lakehouse.storage import WebHdfsStorage, open_storage

    state = wait_for_hdfs_ready(hdfs_service.settings, timeout=5)  # as services and the stream job call it
    assert state.safemode == "" and state.live_datanodes == 1
    assert namenode_state(hdfs_service.http_url) == state
    root = open_storage(f"{hdfs_service.uri}/", hdfs_service.settings)
    assert isinstance(root, WebHdfsStorage) and root.isdir(f"{hdfs_service.uri}/")
    marker = f"{hdfs_service.uri}/foundation-{uuid.uuid4().hex[:8]}"
    root.makedirs(marker)
    assert marker.rsplit("/", 1)[-1] in root.listdir(f"{hdfs_service.uri}/")


def test_kafka_to_parquet_on_hdfs_round_trip(spark, kafka_service, hdfs_service, tmp_path):
    from btc_platform.lakehouse import storage

    topic = kafka_service.create_topic(f"spark-hdfs-{uuid.uuid4().hex[:8]}", PARTITIONS)
    settings = load_settings(data_dir=tmp_path / "data", kafka_bootstrap_servers=kafka_service.bootstrap_servers,
                             kafka_topic=topic, stream_starting_offsets="earliest")  # fmt: skip
    sent = keyed_messages(COUNT)
    publish(settings, sent, tmp_path / "confirmed.jsonl")

    from_kafka = read_topic(spark, settings)
    expected = sorted((r.key, r.value, r.partition, r.offset) for r in from_kafka.collect())
    assert sorted((key, value) for key, value, _, _ in expected) == sorted(sent)

    # Spark writes to HDFS, the platform's storage code reads it back over WebHDFS
    target = f"{hdfs_service.uri}/foundation/{topic}/messages"
    from_kafka.write.mode("error").parquet(target)
    fs = storage.open_storage(target, hdfs_service.settings)
    assert isinstance(fs, storage.WebHdfsStorage)
    files = list(fs.walk_files(target))
    assert files and all(f.endswith(".parquet") for f in files)
    assert fs.exists(storage.join(target, "_SUCCESS"))  # the job committed
    back = storage.read_parquet_dataset(target, storage=fs)
    assert set(back.columns) == {"key", "value", "partition", "offset", "timestamp"}
    rows = sorted(zip(back["key"], back["value"], back["partition"].tolist(), back["offset"].tolist(), strict=True))
    assert len(rows) == COUNT
    assert rows == expected
    # the values are the producer's JSON, byte for byte: the per-key sequence is intact
    per_key: dict[str, list[int]] = {}
    for key, value, _, _ in sorted(rows, key=lambda r: (r[2], r[3])):
        per_key.setdefault(key, []).append(json.loads(value)["key_seq"])
    assert all(seqs == list(range(len(seqs))) for seqs in per_key.values())

    # the platform's storage code writes to HDFS, Spark reads it
    copy = f"{hdfs_service.uri}/foundation/{topic}/copy/part-0.parquet"
    storage.write_parquet(back, copy, storage=fs)
    again = spark.read.parquet(copy.rsplit("/", 1)[0]).select("key", "value", "partition", "offset").collect()
    assert sorted((r.key, r.value, r.partition, r.offset) for r in again) == expected
