"""Accepted but undelivered messages survive a producer stop in the on-disk spool and are sent
first by the next start, byte for byte (same message_id).

Real librdkafka producer; the broker is a closed port (nothing can be delivered), so every
accepted message must end up in the spool, none counted as failed. Delivery of a spool to a real
broker: tests/test_producer_kafka.py."""

from __future__ import annotations

import json
import socket
from types import SimpleNamespace

from btc_platform.ingest.producer import FeedProducer
from btc_platform.ingest.sources import SimulateSource
from btc_platform.settings import load_settings
from btc_platform.status import read_status


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ids(path) -> list[str]:
    return [json.loads(line)["message_id"] for line in path.read_bytes().splitlines()]


def test_undelivered_messages_are_spooled_and_sent_first_by_the_next_start(tmp_path):
    settings = load_settings(data_dir=tmp_path / "data", kafka_bootstrap_servers=f"127.0.0.1:{_closed_port()}",
                             producer_flush_timeout_s=1.0, producer_status_interval_s=0.2)
    first = FeedProducer(settings, source_mode="simulate")
    assert first.run(SimulateSource(["BTCUSDT"], coingecko_symbol="BTCUSDT", speed=0, seed=1), max_messages=300) == 0
    status = read_status(settings.producer_status_path)
    assert (status["accepted"], status["published"], status["spooled"], status["failed"]) == (300, 0, 300, 0)
    spooled = _ids(settings.producer_spool_path)
    assert len(spooled) == len(set(spooled)) == 300

    second = FeedProducer(settings, source_mode="simulate")
    assert second.run(SimulateSource(["BTCUSDT"], coingecko_symbol="BTCUSDT", speed=0, seed=2), max_messages=10) == 0
    status = read_status(settings.producer_status_path)
    assert (status["from_spool"], status["accepted"], status["spooled"], status["failed"]) == (300, 310, 310, 0)
    again = _ids(settings.producer_spool_path)
    assert set(spooled) <= set(again) and len(again) == len(set(again)) == 310  # same ids, nothing lost
    assert not settings.producer_spool_path.with_name("producer.jsonl.sending").exists()


def test_a_spool_left_by_a_killed_run_is_sent_with_the_new_one_and_bad_lines_rejected(tmp_path):
    settings = load_settings(data_dir=tmp_path / "data", kafka_bootstrap_servers=f"127.0.0.1:{_closed_port()}",
                             producer_flush_timeout_s=1.0)
    source = SimulateSource(["BTCUSDT"], coingecko_symbol="BTCUSDT", speed=0, seed=3)
    first = FeedProducer(settings, source_mode="simulate")
    first.run(source, max_messages=20)
    lines = settings.producer_spool_path.read_bytes().splitlines()
    sending = settings.producer_spool_path.with_name("producer.jsonl.sending")
    sending.write_bytes(b"\n".join(lines[:5]) + b"\n" + lines[5][:40] + b"\n")  # killed mid-send, last line cut
    settings.producer_spool_path.write_bytes(b"\n".join(lines[5:]) + b"\n")
    second = FeedProducer(settings, source_mode="simulate")
    second.run(SimulateSource(["BTCUSDT"], coingecko_symbol="BTCUSDT", speed=0, seed=4), max_messages=1)
    assert second.from_spool == 20 and second.rejected == 1
    assert set(_ids(settings.producer_spool_path)) >= {json.loads(line)["message_id"] for line in lines}
    assert "spool" in (settings.logs_dir / "producer_rejected.jsonl").read_text()


def test_messages_a_killed_run_journaled_but_kafka_never_confirmed_are_sent_again(tmp_path):
    """The write-ahead journal: a SIGKILLed run leaves producer.wal (+ delivery digests); the next
    start re-sends exactly the journaled messages without a digest, and a clean stop removes it."""
    from btc_platform.ingest.producer import Journal

    settings = load_settings(data_dir=tmp_path / "data", kafka_bootstrap_servers=f"127.0.0.1:{_closed_port()}",
                             producer_flush_timeout_s=1.0)
    source = SimulateSource(["BTCUSDT"], coingecko_symbol="BTCUSDT", speed=0, seed=5)
    ctx = SimpleNamespace(poll_ok=lambda _source: None)
    values = [value for _, (_, value, _) in zip(range(6), source.messages(ctx), strict=False)]
    killed = Journal(settings.producer_journal_path)
    killed.open()
    for value in values:
        killed.accept(value)
    for value in values[:2]:  # Kafka confirmed the first two before the kill
        killed.delivered(value)
    killed.flush_delivered()
    killed._fd = killed._delivered_fd = None  # the process died: nothing closed, files stay

    second = FeedProducer(settings, source_mode="simulate")
    second.run(SimulateSource(["BTCUSDT"], coingecko_symbol="BTCUSDT", speed=0, seed=6), max_messages=1)
    assert second.from_journal == 4
    spooled = _ids(settings.producer_spool_path)  # the broker is down: all of them spooled at stop
    assert [json.loads(v)["message_id"] for v in values[2:]] == spooled[:4] and len(spooled) == 5
    assert not settings.producer_journal_path.exists()
    assert not settings.producer_journal_path.with_name("producer.wal.recovering").exists()


def test_with_kafka_gone_a_full_spool_stops_the_polling_and_the_gap_is_recorded(tmp_path):
    """Broker unreachable: what librdkafka queues counts against the spool's bound; once reached
    the source is not asked for more (a gap in the status record, a waiting entry) until the stop."""
    import threading
    import time

    settings = load_settings(data_dir=tmp_path / "data", kafka_bootstrap_servers=f"127.0.0.1:{_closed_port()}",
                             producer_flush_timeout_s=1.0, producer_status_interval_s=0.1,
                             producer_spool_max_mb=64 / 1024)
    pulled = []

    class Counted:
        def messages(self, ctx):
            for item in SimulateSource(["BTCUSDT"], coingecko_symbol="BTCUSDT", speed=0, seed=7).messages(ctx):
                pulled.append(item)
                yield item

    app = FeedProducer(settings, source_mode="simulate")
    result = []
    runner = threading.Thread(target=lambda: result.append(app.run(Counted())))
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while "spool" not in ((read_status(settings.producer_status_path) or {}).get("waiting") or {}):
            assert time.monotonic() < deadline and runner.is_alive(), "the producer never held"
            time.sleep(0.05)
        held = len(pulled)
        time.sleep(1.0)
        assert len(pulled) == held  # not polled while the spool is full
    finally:
        app.request_stop()
        runner.join(60)
    assert result == [0]
    status = read_status(settings.producer_status_path)
    assert status["accepted"] == status["spooled"] == len(pulled) and status["failed"] == 0
    assert status["spool_bytes"] >= status["spool_max_bytes"] == 64 * 1024
    (gap,) = status["gaps"]
    assert gap["reason"].startswith("spool_full") and "broker_unreachable" in gap["reason"]
    assert gap["end"] >= gap["start"] and "spool" not in status["waiting"]
    assert len(_ids(settings.producer_spool_path)) == len(pulled)  # every one kept, once
