"""The producer against the real local Kafka (``kafka_service`` fixture) and the local exchange server.

* N live polls -> every message consumed back and checked field by field; the rejected payload
  is counted and absent; ``--record`` output replays to identical bytes.
* SIGTERM to a real producer subprocess mid-run: everything accepted is flushed, and the number
  of messages in the topic equals ``published`` in the status file.
* Kafka down while producing: messages stay queued and arrive once the broker is back.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from btc_platform.ingest.clients.binance import BinanceClient
from btc_platform.ingest.clients.coingecko import CoinGeckoClient
from btc_platform.ingest.producer import FeedProducer
from btc_platform.ingest.schema import compute_message_id, decode
from btc_platform.ingest.sources import LiveSource, ReplaySource, SimulateSource
from btc_platform.settings import load_settings
from btc_platform.status import LAST_PUBLISH_KEY, read_status
from btc_platform.testing.exchange_server import (
    BOOK_TICKER,
    TICKER_24HR,
    ExchangeServer,
    Reply,
    fixture,
    fixture_text,
)
from tests.helpers_kafka import consume_all

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server():
    srv = ExchangeServer().start()
    yield srv
    srv.stop()


def new_topic(kafka_service, prefix: str, partitions: int = 3) -> str:
    return kafka_service.create_topic(f"{prefix}-{uuid.uuid4().hex[:8]}", partitions)


def make_settings(kafka_service, tmp_path, topic, server=None, **overrides):
    values = dict(
        data_dir=tmp_path / "data",
        kafka_bootstrap_servers=kafka_service.bootstrap_servers,
        kafka_topic=topic,
        binance_poll_interval_s=0.05,
        producer_status_interval_s=0.2,
        http_backoff_base_s=0.05,
    )
    if server is not None:
        values.update(binance_base_url=server.url, coingecko_base_url=server.url)
    values.update(overrides)
    return load_settings(**values)


def high_watermark_total(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"wm-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in partitions)
    finally:
        consumer.close()


def test_live_polls_are_published_and_every_message_checked(kafka_service, tmp_path, server):
    topic = new_topic(kafka_service, "producer-live")
    # poll 1: 24hr answers 500 once (retried); poll 2: the book ticker lacks askQty (rejected)
    server.script(BOOK_TICKER, Reply(), Reply(200, body=fixture_text("binance_book_ticker_missing_field.json")))
    server.script(TICKER_24HR, Reply(500))
    settings = make_settings(kafka_service, tmp_path, topic, server)
    record = tmp_path / "recorded.jsonl"
    app = FeedProducer(settings, source_mode="live", record_path=record)
    source = LiveSource(settings, BinanceClient.from_settings(settings, sleep=app.sleep),
                        CoinGeckoClient.from_settings(settings, sleep=app.sleep))
    # 3 polls: (book, 24hr, last closed 1m kline, market) + (24hr) + (book) = 6 messages
    assert app.run(source, max_messages=6) == 0

    consumed = consume_all(kafka_service.bootstrap_servers, topic, expected=6, group=f"g-{uuid.uuid4().hex}")
    assert len(consumed) == 6
    messages = [decode(d.value) for d in consumed]
    assert all(d.key == "BTCUSDT" for d in consumed)
    by_type: dict[str, list] = {}
    for message in messages:
        by_type.setdefault(message["message_type"], []).append(message)
        assert message["message_id"] == compute_message_id(message)
    assert {t: len(v) for t, v in by_type.items()} == {"book_ticker": 2, "ticker_24hr": 2, "kline_1m": 1,
                                                       "market": 1}
    book = fixture("binance_book_ticker_BTCUSDT.json")
    for message in by_type["book_ticker"]:
        assert message["source"] == "binance"
        assert message["bid_price"] == Decimal(book["bidPrice"]) and message["ask_qty"] == Decimal(book["askQty"])
        assert message["event_time"] == message["ingest_time"]
    for message in by_type["ticker_24hr"]:
        assert message["exchange_time"] == "2021-12-17T09:40:42.763Z"
        assert message["event_time"] == message["ingest_time"]  # receipt
        assert message["volume_24h"] == Decimal("33136.69765000")
    kline = by_type["kline_1m"][0]
    assert kline["kline_trade_count"] == 1874 and kline["kline_volume"] == Decimal("18.42150000")
    assert kline["kline_open_time"] < kline["event_time"]  # a closed minute
    # the same 24 h ticker polled twice carries the same deterministic id
    assert len({m["message_id"] for m in by_type["ticker_24hr"]}) == 1
    market = by_type["market"][0]
    assert market["source"] == "coingecko" and market["last_price"] == Decimal("67187.3358936566")

    status = read_status(settings.producer_status_path)
    assert status["state"] == "stopped" and status["source_mode"] == "live"
    assert (status["published"], status["rejected"], status["failed"]) == (6, 1, 0)
    assert status["retried"] == 1
    assert status["http_errors"] == {"binance": {"http_5xx": 1}, "coingecko": {}}
    assert status["waiting"] == {}
    assert status["sources"]["binance"]["published"] == 5 and status["sources"]["coingecko"]["published"] == 1
    assert status["sources"]["binance"]["last_poll_ok_at"] and status[LAST_PUBLISH_KEY]
    rejected = (settings.logs_dir / "producer_rejected.jsonl").read_text().splitlines()
    assert len(rejected) == 1 and "askQty" in rejected[0]

    # --record wrote exactly what was published; replaying it publishes the same bytes
    recorded = record.read_bytes().splitlines()
    assert sorted(recorded) == sorted(d.value.encode() for d in consumed)
    replay_topic = new_topic(kafka_service, "producer-replay")
    replay_settings = make_settings(kafka_service, tmp_path / "replay", replay_topic)
    replay_app = FeedProducer(replay_settings, source_mode="replay")
    assert replay_app.run(ReplaySource(record, speed=0)) == 0
    replayed = consume_all(kafka_service.bootstrap_servers, replay_topic, expected=6, group=f"r-{uuid.uuid4().hex}")
    assert sorted(d.value.encode() for d in replayed) == sorted(recorded)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["simulate", "live"])
def test_sigterm_mid_run_flushes_everything_accepted(kafka_service, tmp_path, server, mode):
    topic = new_topic(kafka_service, f"producer-sigterm-{mode}")
    data_dir = tmp_path / "data"
    env = dict(
        os.environ,
        BTC_DATA_DIR=str(data_dir),
        BTC_KAFKA_BOOTSTRAP_SERVERS=kafka_service.bootstrap_servers,
        BTC_KAFKA_TOPIC=topic,
        BTC_PRODUCER_STATUS_INTERVAL_S="0.2",
        BTC_BINANCE_BASE_URL=server.url,
        BTC_COINGECKO_BASE_URL=server.url,
        BTC_BINANCE_POLL_INTERVAL_S="0.02",
    )
    cmd = [sys.executable, "-m", "btc_platform.ingest.producer", "--source", mode, "--log-level", "WARNING"]
    if mode == "simulate":
        cmd += ["--speed", "0", "--seed", "3"]
    threshold = 5000 if mode == "simulate" else 20
    status_path = data_dir / "status" / "producer.json"
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            status = read_status(status_path)
            if status and status["published"] >= threshold:
                break
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, f"producer did not reach {threshold} messages: {status}"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=120)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    status = read_status(status_path)
    assert status["state"] == "stopped" and status["pid"] == proc.pid
    assert status["failed"] == 0 and status["in_flight"] == 0
    assert status["published"] == status["accepted"] >= threshold
    # every accepted message is in the topic, exactly once
    assert high_watermark_total(kafka_service.bootstrap_servers, topic) == status["published"]
    consumed = consume_all(kafka_service.bootstrap_servers, topic, expected=status["published"],
                           group=f"s-{uuid.uuid4().hex}")
    assert len(consumed) == status["published"]
    sample = [decode(d.value) for d in consumed[:: max(1, len(consumed) // 500)]]
    expected_source = {"simulate": {"simulated"}, "live": {"binance", "coingecko"}}[mode]
    assert {m["source"] for m in sample} <= expected_source


@pytest.mark.slow
def test_kafka_down_keeps_accepted_messages_until_it_is_back(kafka_service, tmp_path, caplog):
    topic = new_topic(kafka_service, "producer-outage")
    settings = make_settings(kafka_service, tmp_path, topic, producer_flush_timeout_s=180.0)
    kafka_service.stop()
    restarter = None
    try:
        app = FeedProducer(settings, source_mode="simulate")
        source = SimulateSource(["BTCUSDT"], coingecko_symbol="BTCUSDT", speed=0, seed=11)
        restarter = threading.Timer(3.0, kafka_service.start)
        restarter.start()
        # all 2000 are accepted while the broker is down; run() then flushes until it is back
        with caplog.at_level(logging.ERROR, logger="btc_platform.ingest.producer"):
            assert app.run(source, max_messages=2000) == 0
        assert "Kafka unreachable" in caplog.text
    finally:
        if restarter is not None:
            restarter.join()
        kafka_service.start()  # no-op when already running
    status = read_status(settings.producer_status_path)
    assert (status["accepted"], status["published"], status["failed"]) == (2000, 2000, 0)
    assert high_watermark_total(kafka_service.bootstrap_servers, topic) == 2000


def test_spooled_messages_reach_kafka_first_and_exactly_once_on_the_next_start(kafka_service, tmp_path):
    import socket

    topic = new_topic(kafka_service, "producer-spool")
    with socket.socket() as sock:  # a broker address where nothing listens: nothing can be delivered
        sock.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{sock.getsockname()[1]}"
    down = make_settings(kafka_service, tmp_path, topic, kafka_bootstrap_servers=nowhere, producer_flush_timeout_s=1.0)
    assert FeedProducer(down, source_mode="simulate").run(
        SimulateSource(["BTCUSDT"], coingecko_symbol="BTCUSDT", speed=0, seed=5), max_messages=200) == 0
    spooled = [decode(line)["message_id"] for line in down.producer_spool_path.read_bytes().splitlines()]
    assert len(set(spooled)) == 200

    up = make_settings(kafka_service, tmp_path, topic)  # same data dir, the real broker
    app = FeedProducer(up, source_mode="simulate")
    assert app.run(SimulateSource(["BTCUSDT"], coingecko_symbol="BTCUSDT", speed=0, seed=6), max_messages=50) == 0
    assert (app.from_spool, app.published, app.spooled, app.failed) == (200, 250, 0, 0)
    assert not up.producer_spool_path.exists()
    assert high_watermark_total(kafka_service.bootstrap_servers, topic) == 250
    consumed = consume_all(kafka_service.bootstrap_servers, topic, expected=250, group=f"sp-{uuid.uuid4().hex}")
    in_order = [decode(d.value)["message_id"] for d in sorted(consumed, key=lambda d: d.offset)]  # one partition
    assert in_order[:200] == spooled  # first, byte for byte (same ids), in spool order
    assert len(set(in_order)) == 250
