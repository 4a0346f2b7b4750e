"""10,000 keyed messages through the real local Kafka broker (KRaft, started by the fixture):
everything arrives, every key stays on one partition in send order, and a broker restart keeps
the log."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict

import pytest

from tests.helpers_kafka import consume_all, keyed_messages, produce

pytestmark = pytest.mark.integration

COUNT = 10_000
PARTITIONS = 3


def _by_partition(records):
    grouped = defaultdict(list)
    for record in records:
        grouped[record.partition].append(record)
    return grouped


def _check_same_log(consumed, delivered):
    """consumed == delivered per partition, in offset order."""
    got = {p: [(r.offset, r.key, r.value) for r in rs] for p, rs in _by_partition(consumed).items()}
    want = {
        p: sorted((r.offset, r.key, r.value) for r in rs) for p, rs in _by_partition(delivered).items()
    }
    assert got == want


def test_keyed_messages_survive_a_broker_restart(kafka_service):
    topic = kafka_service.create_topic(f"foundation-{uuid.uuid4().hex[:8]}", PARTITIONS)
    sent = keyed_messages(COUNT)
    delivered = produce(kafka_service.bootstrap_servers, topic, sent)

    # the broker acknowledged every message, under the key it was sent with
    assert [(d.key, d.value) for d in delivered] == sent
    # keyed partitioning: each key maps to exactly one partition, and all partitions are used
    partitions_of_key = defaultdict(set)
    for d in delivered:
        partitions_of_key[d.key].add(d.partition)
    assert all(len(p) == 1 for p in partitions_of_key.values()), partitions_of_key
    assert {d.partition for d in delivered} == set(range(PARTITIONS))
    # per partition, offsets are 0..n-1 in send order (idempotent producer: no duplicates, no gaps)
    for partition, records in _by_partition(delivered).items():
        assert [r.offset for r in records] == list(range(len(records))), partition

    consumed = consume_all(kafka_service.bootstrap_servers, topic, COUNT, group=f"g-{uuid.uuid4().hex}")
    assert len(consumed) == COUNT
    assert sorted((r.key, r.value) for r in consumed) == sorted(sent)
    # per-key order kept: key_seq runs 0,1,2,... for each key in consumption order
    seen = defaultdict(list)
    for record in consumed:
        body = json.loads(record.value)
        assert body["key"] == record.key
        seen[record.key].append(body["key_seq"])
    assert all(seqs == list(range(len(seqs))) for seqs in seen.values())
    _check_same_log(consumed, delivered)

    kafka_service.stop()
    kafka_service.start()

    again = consume_all(kafka_service.bootstrap_servers, topic, COUNT, group=f"g-{uuid.uuid4().hex}")
    assert len(again) == COUNT
    _check_same_log(again, delivered)


def test_platform_topic_created_with_configured_partitions(kafka_service):
    from confluent_kafka.admin import AdminClient

    settings = kafka_service.settings
    metadata = AdminClient({"bootstrap.servers": kafka_service.bootstrap_servers}).list_topics(timeout=10)
    topic = metadata.topics[settings.kafka_topic]
    assert topic.error is None
    assert sorted(topic.partitions) == list(range(settings.kafka_partitions))
    assert all(p.leader == 1 for p in topic.partitions.values())
