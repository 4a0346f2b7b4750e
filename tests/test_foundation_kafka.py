"""10,000 keyed messages through the real local Kafka broker (KRaft, started by the fixture),
published by the platform's producer (``FeedProducer``) and read back by the streaming job's
Kafka source (``stream_job.kafka_source`` on a ``build_session`` session): everything arrives,
every key stays on one partition in send order, and a broker restart keeps the log."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict

import pytest

from btc_platform.settings import load_settings
from tests.helpers_kafka import keyed_messages, publish, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

COUNT = 10_000
PARTITIONS = 3


def _log(spark, settings) -> list[tuple[int, int, str, str]]:
    """The topic as (partition, offset, key, value), in log order."""
    rows = read_topic(spark, settings).select("partition", "offset", "key", "value").collect()
    return sorted((r.partition, r.offset, r.key, r.value) for r in rows)


def test_keyed_messages_survive_a_broker_restart(spark, kafka_service, tmp_path):
    topic = kafka_service.create_topic(f"foundation-{uuid.uuid4().hex[:8]}", PARTITIONS)
    settings = load_settings(data_dir=tmp_path / "data", kafka_bootstrap_servers=kafka_service.bootstrap_servers,
                             kafka_topic=topic, stream_starting_offsets="earliest")  # fmt: skip
    sent = keyed_messages(COUNT)
    confirmed = tmp_path / "confirmed.jsonl"
    publish(settings, sent, confirmed)

    # the producer's delivery reports: every message confirmed once; per key in send order
    values = confirmed.read_text().splitlines()
    assert sorted(values) == sorted(value for _, value in sent)
    confirmed_seqs = defaultdict(list)
    for value in values:
        body = json.loads(value)
        confirmed_seqs[body["key"]].append(body["key_seq"])
    assert all(seqs == list(range(len(seqs))) for seqs in confirmed_seqs.values())

    log = _log(spark, settings)
    assert len(log) == COUNT
    assert sorted((key, value) for _, _, key, value in log) == sorted(sent)
    # keyed partitioning: each key maps to exactly one partition, and all partitions are used
    partitions_of_key = defaultdict(set)
    for partition, _, key, _ in log:
        partitions_of_key[key].add(partition)
    assert all(len(p) == 1 for p in partitions_of_key.values()), partitions_of_key
    assert {partition for partition, *_ in log} == set(range(PARTITIONS))
    # per partition, offsets are 0..n-1 (idempotent producer: no duplicates, no gaps) ...
    offsets = defaultdict(list)
    for partition, offset, _, _ in log:
        offsets[partition].append(offset)
    assert all(offs == list(range(len(offs))) for offs in offsets.values()), offsets
    # ... and in offset order each key's key_seq runs 0,1,2,...: per-key send order kept
    seen = defaultdict(list)
    for _, _, key, value in log:
        body = json.loads(value)
        assert body["key"] == key
        seen[key].append(body["key_seq"])
    assert all(seqs == list(range(len(seqs))) for seqs in seen.values())

    kafka_service.stop()
    kafka_service.start()

    assert _log(spark, settings) == log


def test_platform_topic_created_with_configured_partitions(kafka_service):
    from confluent_kafka.admin import AdminClient

    settings = kafka_service.settings
    metadata = AdminClient({"bootstrap.servers": kafka_service.bootstrap_servers}).list_topics(timeout=10)
    topic = metadata.topics[settings.kafka_topic]
    assert topic.error is None
    assert sorted(topic.partitions) == list(range(settings.kafka_partitions))
    assert all(p.leader == 1 for p in topic.partitions.values())
