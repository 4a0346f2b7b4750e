"""Produce and consume keyed test messages with confluent-kafka (shared by the foundation tests)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass


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


def produce(bootstrap: str, topic: str, messages: list[tuple[str, str]]) -> list[Delivered]:
    """Send with an idempotent, acks=all producer; return the delivery reports in send order.
    Raises AssertionError if any delivery failed."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
        }
    )
    reports: dict[int, Delivered] = {}
    errors: list[str] = []

    def on_delivery(index: int):
        def callback(err, msg):
            if err is not None:
                errors.append(f"message {index}: {err}")
            else:
                reports[index] = Delivered(msg.key().decode(), msg.value().decode(), msg.partition(), msg.offset())

        return callback

    for index, (key, value) in enumerate(messages):
        while True:
            try:
                producer.produce(topic, key=key.encode(), value=value.encode(), on_delivery=on_delivery(index))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(60)
    assert remaining == 0, f"{remaining} messages still undelivered after flush"
    assert not errors, errors[:5]
    return [reports[i] for i in range(len(messages))]


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
