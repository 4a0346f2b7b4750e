"""Each class of delivery error, provoked against the real local Kafka (``kafka_service``): a
message leaves the journal only when Kafka confirmed it or it is kept on disk (spooled for a later
send, or refused with its error), and the spool's bound stops the polling instead of filling the
disk.

* message too large (broker: the topic's max.message.bytes; client: message.max.bytes): refused,
  kept with the error, the other messages delivered;
* topic deleted (producer auto-creation off): spooled; the spool reaches its bound, polling stops
  with a gap in the status record; the topic comes back, the spool drains while the producer runs,
  polling resumes;
* fatal idempotence error (``enable.gapless.guarantee`` with a refused batch): the producer stops
  non-zero and keeps its journal; the next start delivers everything it had accepted.

Broker gone: tests/test_producer_spool.py (closed port) and test_producer_kafka.py (broker stopped).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from types import SimpleNamespace

import pytest

from btc_platform.ingest.producer import FeedProducer
from btc_platform.ingest.schema import decode
from btc_platform.ingest.sources import SimulateSource
from btc_platform.settings import load_settings
from btc_platform.status import read_status
from tests.helpers_kafka import consume_all

pytestmark = pytest.mark.integration

KIB = 1024 / (1024 * 1024)  # producer_spool_max_mb of one KiB


def simulated(count: int, seed: int) -> list[bytes]:
    source = SimulateSource(["BTCUSDT"], coingecko_symbol="BTCUSDT", speed=0, seed=seed)
    ctx = SimpleNamespace(poll_ok=lambda _source: None)
    return [value for _, (_, value, _) in zip(range(count), source.messages(ctx), strict=False)]


def oversized(size: int) -> bytes:
    """A message of about ``size`` incompressible bytes (the producer does not validate; it never
    reaches the stream)."""
    return json.dumps({"message_id": f"big{uuid.uuid4().hex}", "symbol": "BTCUSDT", "source": "simulated",
                       "pad": os.urandom(size // 2).hex()}, separators=(",", ":")).encode()


def ids(values) -> list[str]:
    return [json.loads(v)["message_id"] for v in values]


class GatedSource:
    """Yields each step's messages once the test opens its gate; waits through ``ctx.idle``
    (serving the producer) in between. ``yielded`` counts what the producer pulled."""

    def __init__(self, *steps: list[bytes]):
        self.steps = steps
        self.gates = [threading.Event() for _ in steps]
        self.yielded = 0

    def messages(self, ctx):
        for step, gate in zip(self.steps, self.gates, strict=True):
            while not gate.is_set():
                if not ctx.idle(0.05):
                    return
            for value in step:
                self.yielded += 1
                yield b"BTCUSDT", value, "simulated"


def create_topic(kafka_service, prefix: str, **config: str) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_service.bootstrap_servers})
    admin.create_topics([NewTopic(name, 1, 1, config=config)])[name].result(30)
    return kafka_service.create_topic(name, 1)  # waits for the leader


def in_topic(kafka_service, topic: str) -> list[str]:
    """message_id of every message in ``topic`` (one partition), in offset order."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": kafka_service.bootstrap_servers, "group.id": uuid.uuid4().hex})
    try:
        end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)[1]
    finally:
        consumer.close()
    consumed = consume_all(kafka_service.bootstrap_servers, topic, expected=end, group=uuid.uuid4().hex)
    assert len(consumed) == end
    return [decode(d.value)["message_id"] for d in sorted(consumed, key=lambda d: d.offset)]


def wait_for(what, condition, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def settings_for(kafka_service, tmp_path, topic, **overrides):
    values = dict(data_dir=tmp_path / "data", kafka_bootstrap_servers=kafka_service.bootstrap_servers,
                  kafka_topic=topic, producer_status_interval_s=0.2, producer_flush_timeout_s=10.0,
                  producer_accepted_log=str(tmp_path / "accepted.log"))
    values.update(overrides)
    return load_settings(**values)


def test_a_message_too_large_is_refused_and_kept_and_the_others_delivered(kafka_service, tmp_path):
    topic = create_topic(kafka_service, "producer-too-large", **{"max.message.bytes": "2000"})
    settings = settings_for(kafka_service, tmp_path, topic)
    normal = simulated(20, seed=21)
    broker_refuses, client_refuses = oversized(5000), oversized(2_000_000)  # topic limit, message.max.bytes
    source = GatedSource(normal[:10] + [broker_refuses] + normal[10:] + [client_refuses])
    source.gates[0].set()
    app = FeedProducer(settings, source_mode="simulate", kafka_overrides={"batch.num.messages": 1})
    assert app.run(source) == 1  # a message was refused: not a clean run

    status = read_status(settings.producer_status_path)
    assert (status["published"], status["refused"], status["failed"], status["spooled"]) == (20, 2, 2, 0)
    assert sorted(in_topic(kafka_service, topic)) == sorted(ids(normal))
    refused = [json.loads(line) for line in (settings.producer_spool_path.parent / "producer.refused.jsonl")
               .read_text().splitlines()]  # fmt: skip
    assert sorted(r["message"].encode() for r in refused) == sorted([broker_refuses, client_refuses])  # as sent
    assert all("too large" in r["error"] for r in refused) and all(r["refused_at"] for r in refused)
    assert not settings.producer_journal_path.exists()  # every message settled: journal removed at stop
    assert not settings.producer_spool_path.exists()


def test_topic_deleted_spools_until_the_bound_stops_polling_then_drains_and_resumes(kafka_service, tmp_path):
    from confluent_kafka.admin import AdminClient

    topic = kafka_service.create_topic(f"producer-deleted-{uuid.uuid4().hex[:8]}", 1)
    values = simulated(70, seed=22)
    before, during, after = values[:20], values[20:60], values[60:]
    bound_kib = 8  # the 40 messages sent while the topic is gone weigh about 16 KiB
    settings = settings_for(kafka_service, tmp_path, topic, producer_message_timeout_s=3.0,
                            producer_spool_max_mb=bound_kib * KIB)
    overrides = {"allow.auto.create.topics": False, "topic.metadata.refresh.interval.ms": 500,
                 "topic.metadata.propagation.max.ms": 500}
    app = FeedProducer(settings, source_mode="simulate", kafka_overrides=overrides)
    source = GatedSource(before, during, after)
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(app.run(source)))
    source.gates[0].set()
    runner.start()
    try:
        wait_for("the first 20 delivered", lambda: app.published == 20)
        admin = AdminClient({"bootstrap.servers": kafka_service.bootstrap_servers})
        admin.delete_topics([topic])[topic].result(30)
        source.gates[1].set()
        wait_for("the spool full and polling stopped",
                 lambda: "spool" in (read_status(settings.producer_status_path) or {}).get("waiting", {}))
        source.gates[2].set()  # the source may go on, but only once the spool drained
        held = read_status(settings.producer_status_path)
        assert held["waiting"]["spool"]["reason"] == "spool_full"
        assert held["spool_bytes"] >= bound_kib * 1024 and held["spooled"] == 40
        gap = held["gaps"][-1]
        assert gap["end"] is None and gap["reason"].startswith("spool_full")
        time.sleep(1.0)  # holding: the source is not asked for anything more
        assert source.yielded == 60 and app.accepted == 60

        kafka_service.create_topic(topic, 1)  # the topic is back: the spool drains, polling resumes
        runner.join(120)
        assert not runner.is_alive()
    finally:
        app.request_stop()
        for gate in source.gates:
            gate.set()
        runner.join(60)
    assert result == [0]
    status = read_status(settings.producer_status_path)
    assert (status["published"], status["spooled"], status["from_spool"], status["failed"]) == (70, 40, 40, 0)
    assert status["accepted"] == 110 and source.yielded == 70  # 70 new (10 after the gap) + 40 from the spool
    gap = status["gaps"][-1]
    assert gap["end"] is not None and gap["end"] >= gap["start"] and "spool" not in status["waiting"]
    assert sorted(in_topic(kafka_service, topic)) == sorted(ids(during + after))  # each once
    assert not settings.producer_spool_path.exists()
    assert not settings.producer_spool_path.with_name("producer.jsonl.sending").exists()


def test_a_fatal_idempotence_error_stops_the_producer_and_the_next_start_delivers_the_rest(kafka_service, tmp_path):
    """With ``enable.gapless.guarantee`` a refused message in the middle of a partition's sequence is
    a fatal error. (A broker refuses a whole batch: one message a batch keeps the refusal to the
    big message, in both runs.)"""
    topic = create_topic(kafka_service, "producer-fatal", **{"max.message.bytes": "2000"})
    settings = settings_for(kafka_service, tmp_path, topic)
    normal = simulated(40, seed=23)
    big = oversized(5000)
    source = GatedSource(normal[:20], [big] + normal[20:])
    source.gates[0].set()
    gapless = {"enable.gapless.guarantee": True, "batch.num.messages": 1, "linger.ms": 50}
    first = FeedProducer(settings, source_mode="simulate", kafka_overrides=gapless)
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(first.run(source)))
    runner.start()
    try:
        wait_for("the first 20 delivered", lambda: first.published == 20)
        source.gates[1].set()
        runner.join(120)
    finally:
        first.request_stop()
        source.gates[1].set()
        runner.join(60)
    assert result == [1]
    status = read_status(settings.producer_status_path)
    assert "gap-less" in status["fatal_error"] and status["state"] == "stopped"
    assert settings.producer_journal_path.exists()  # kept whole for the next start

    second = FeedProducer(settings, source_mode="simulate", kafka_overrides={"batch.num.messages": 1})
    assert second.run(GatedSource()) == 1  # the big message is refused again
    assert second.from_journal >= 1
    accepted = set((tmp_path / "accepted.log").read_text().split())
    assert accepted == set(ids(normal + [big]))
    assert set(in_topic(kafka_service, topic)) == set(ids(normal))  # nothing accepted is lost (maybe sent twice)
    refused_file = settings.producer_spool_path.parent / "producer.refused.jsonl"
    refused = {json.loads(json.loads(line)["message"])["message_id"] for line in refused_file.read_text().splitlines()}
    assert refused == set(ids([big]))
    assert not settings.producer_journal_path.exists()
