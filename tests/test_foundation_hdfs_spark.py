"""Spark (local[2]) reads keyed messages from the real local Kafka through the spark-sql-kafka
connector (batch, earliest offsets) and writes them as Parquet to the real local HDFS; reading the
Parquet back gives exactly the rows that were produced."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.helpers_kafka import keyed_messages, produce

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

COUNT = 10_000
PARTITIONS = 3


def test_hdfs_is_ready_and_lists_root(hdfs_service):
    import requests

    from btc_platform.hdfs import namenode_state, wait_for_hdfs_ready

    state = wait_for_hdfs_ready(hdfs_service.http_url, timeout=5)
    assert state.safemode == "" and state.live_datanodes == 1
    assert namenode_state(hdfs_service.http_url) == state
    listing = requests.get(f"{hdfs_service.http_url}/webhdfs/v1/?op=LISTSTATUS", timeout=60)
    assert listing.status_code == 200
    assert "FileStatuses" in listing.json()


def test_kafka_to_parquet_on_hdfs_round_trip(spark, kafka_service, hdfs_service):
    from pyspark.sql import functions as F

    topic = kafka_service.create_topic(f"spark-hdfs-{uuid.uuid4().hex[:8]}", PARTITIONS)
    sent = keyed_messages(COUNT)
    delivered = produce(kafka_service.bootstrap_servers, topic, sent)
    expected = sorted((d.key, d.value, d.partition, d.offset) for d in delivered)

    from_kafka = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", kafka_service.bootstrap_servers)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .option("failOnDataLoss", "true")
        .load()
        .select(
            F.col("key").cast("string").alias("key"),
            F.col("value").cast("string").alias("value"),
            "partition",
            "offset",
            "timestamp",
        )
    )
    target = f"{hdfs_service.uri}/foundation/{topic}/messages"
    from_kafka.write.mode("error").parquet(target)

    back = spark.read.parquet(target)
    assert dict(back.dtypes) == {
        "key": "string",
        "value": "string",
        "partition": "int",
        "offset": "bigint",
        "timestamp": "timestamp",
    }
    rows = sorted((r.key, r.value, r.partition, r.offset) for r in back.select("key", "value", "partition", "offset").collect())
    assert len(rows) == COUNT
    assert rows == expected
    # the values are the producer's JSON, byte for byte: the per-key sequence is intact
    per_key = {}
    for key, value, _, _ in sorted(rows, key=lambda r: (r[2], r[3])):
        per_key.setdefault(key, []).append(json.loads(value)["key_seq"])
    assert all(seqs == list(range(len(seqs))) for seqs in per_key.values())

    # the files really are on HDFS (NameNode listing), not on the local file system
    import requests

    listing = requests.get(
        f"{hdfs_service.http_url}/webhdfs/v1/foundation/{topic}/messages?op=LISTSTATUS", timeout=60
    ).json()["FileStatuses"]["FileStatus"]
    parquet_files = [f for f in listing if f["pathSuffix"].endswith(".parquet")]
    assert parquet_files and all(f["type"] == "FILE" and f["length"] > 0 for f in parquet_files)
    assert any(f["pathSuffix"] == "_SUCCESS" for f in listing)
