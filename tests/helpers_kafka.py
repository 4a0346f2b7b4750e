"""Keyed test messages, published with the platform's producer and read back with the streaming
job's Kafka source (foundation tests) or a plain confluent-kafka consumer (producer tests)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Delivered:
    key: str
    value: str
    partition: int
    offset: int


def keyed_messages(count: int, keys: int = 37) -> list[tuple[str, str]]:
    """``count`` (key, value) pairs: key ``sym-<i % keys>``, value JSON carrying the global sequence
    number and the per-key sequence number (so order can be checked from the value alone)."""
    per_key: dict[str, int] = {}
    out = []
    for seq in range(count):
        key = f"sym-{seq % keys:02d}"
        per_key[key] = per_key.get(key, -1) + 1
        out.append((key, json.dumps({"seq": seq, "key": key, "key_seq": per_key[key]}, separators=(",", ":"))))
    return out


class KeyedSource:
    """A producer source (``messages(ctx)`` generator of ``(key, value, source)``) over fixed pairs."""

    name = "foundation"

    def __init__(self, messages: list[tuple[str, str]]):
        self._messages = messages

    def messages(self, _ctx) -> Iterator[tuple[bytes, bytes, str]]:
        for key, value in self._messages:
            yield key.encode(), value.encode(), self.name


def publish(settings, messages: list[tuple[str, str]], record_path: Path) -> dict:
    """Publish ``messages`` to ``settings.kafka_topic`` with the platform's producer
    (``FeedProducer.run``: its Kafka configuration, delivery reports, flush and status record).

    Every message Kafka confirmed is appended to ``record_path`` in delivery order. Returns the
    final status record; asserts a clean run (exit code 0, all published, none failed).
    """
    from btc_platform.ingest.producer import FeedProducer
    from btc_platform.status import read_status

    producer = FeedProducer(settings, source_mode=KeyedSource.name, record_path=record_path)
    assert producer.run(KeyedSource(messages)) == 0
    status = read_status(settings.producer_status_path)
    assert status is not None
    assert (status["state"], status["accepted"], status["published"], status["failed"]) == (
        "stopped", len(messages), len(messages), 0,
    )  # fmt: skip
    return status


def read_topic(spark, settings, timeout_s: float = 300.0):
    """Everything in ``settings.kafka_topic`` now, read by the streaming job's own Kafka source
    (``stream_job.kafka_source``: its options from settings, earliest offsets) with an
    available-now query; a batch DataFrame of ``key``, ``value`` (strings), ``partition``,
    ``offset``, ``timestamp``."""
    from spark_jobs.stream_job import kafka_source

    name = f"topic_{uuid.uuid4().hex}"
    query = (
        kafka_source(spark, settings)
        .selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value", "partition", "offset",
                    "timestamp")  # fmt: skip
        .writeStream.format("memory")
        .queryName(name)
        .trigger(availableNow=True)
        .start()
    )
    try:
        assert query.awaitTermination(timeout_s), f"reading {settings.kafka_topic} took over {timeout_s} s"
    finally:
        query.stop()
    assert query.exception() is None
    return spark.table(name)


def consume_all(bootstrap: str, topic: str, expected: int, group: str, timeout_s: float = 120.0) -> list[Delivered]:
    """Read ``topic`` from the beginning with a fresh group until ``expected`` messages arrived
    (or ``timeout_s`` passed); return them in arrival order."""
    from confluent_kafka import Consumer, KafkaException

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    out: list[Delivered] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                if msg.error():
                    raise KafkaException(msg.error())
                out.append(Delivered(msg.key().decode(), msg.value().decode(), msg.partition(), msg.offset()))
    finally:
        consumer.close()
    return out
