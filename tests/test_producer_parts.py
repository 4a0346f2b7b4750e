"""The producer's parts, each on its own: the spool (and the refused file), the journal, the
health record, the backlog's bound. No broker: a closed port where one is needed (a real
librdkafka producer that can deliver nothing)."""

from __future__ import annotations

import json
import socket
import threading

from btc_platform.ingest.producer.backlog import Backlog
from btc_platform.ingest.producer.delivery import Publisher, is_fatal
from btc_platform.ingest.producer.health import ProducerHealth
from btc_platform.ingest.producer.journal import Journal
from btc_platform.ingest.producer.spool import RefusedFile, Spool
from btc_platform.ingest.schema import parse_ts
from btc_platform.settings import load_settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _message(n: int) -> bytes:
    return json.dumps({"message_id": f"{n:064x}", "symbol": "BTCUSDT", "source": "simulated"},
                      separators=(",", ":")).encode()


# ---- spool -------------------------------------------------------------------------------------
def test_the_spool_counts_what_it_holds_and_a_take_merges_a_left_over_sending_file(tmp_path):
    path = tmp_path / "spool" / "producer.jsonl"
    spool = Spool(path)
    for n in range(3):
        spool.append(_message(n))
    spool.sync()
    assert spool.held_bytes == path.stat().st_size == 3 * (len(_message(0)) + 1)
    path.with_name("producer.jsonl.sending").write_bytes(_message(9) + b"\n")  # a killed run's
    sending = spool.take()
    assert spool.taken and spool.file_bytes == 0 and spool.held_bytes == sending.stat().st_size
    assert [v for _, v in Spool.lines(sending)] == [_message(9), *(_message(n) for n in range(3))]
    spool.append(_message(4))  # after the take: a new spool file, not the one being sent
    spool.sync()
    assert path.read_bytes() == _message(4) + b"\n"
    spool.release()
    assert not sending.exists() and not spool.taken and spool.held_bytes == len(_message(4)) + 1
    assert Spool(path).held_bytes == len(_message(4)) + 1  # a new run sees what is on disk


def test_the_refused_file_keeps_the_message_and_its_error(tmp_path):
    refused = RefusedFile(tmp_path / "producer.refused.jsonl")
    refused.append(_message(1), "Broker: Message size too large", "2024-01-01T00:00:00.000Z")
    refused.close()
    line = json.loads((tmp_path / "producer.refused.jsonl").read_text())
    assert line == {"refused_at": "2024-01-01T00:00:00.000Z", "error": "Broker: Message size too large",
                    "message": _message(1).decode()}


# ---- journal -----------------------------------------------------------------------------------
def test_a_pinned_journal_is_neither_cleared_nor_removed(tmp_path):
    journal = Journal(tmp_path / "producer.wal")
    journal.open()
    journal.accept(_message(1))
    journal.accept(_message(2))
    journal.delivered(_message(1))
    journal.pinned = True
    journal.clear()
    journal.close(remove=True)
    left = journal.take_left_over()
    assert Journal.undelivered(left) == [_message(2)]


# ---- health ------------------------------------------------------------------------------------
def test_gaps_open_and_close_in_the_status_record_with_a_waiting_entry(tmp_path):
    health = ProducerHealth(load_settings(data_dir=tmp_path), source_mode="live")
    health.open_gap("spool_full: test")
    delivery = dict.fromkeys(("accepted", "published", "failed", "in_flight", "spooled", "from_spool",
                              "from_journal", "refused", "spool_bytes", "spool_max_bytes"), 0)
    during = health.status({**delivery, "fatal_error": None})
    assert during["gaps"] == [{"start": during["gaps"][0]["start"], "end": None, "reason": "spool_full: test"}]
    assert during["waiting"]["spool"]["reason"] == "spool_full" and health.in_gap
    health.close_gap()
    after = health.status({**delivery, "fatal_error": None})
    gap = after["gaps"][0]
    assert parse_ts(gap["end"]) >= parse_ts(gap["start"]) and "spool" not in after["waiting"]
    assert not health.in_gap
    health.set_waiting("binance", "ip_ban", 1_700_000_000.5)
    assert health.waiting["binance"]["until"] == "2023-11-14T22:13:20.500Z"  # schema.format_ts


def test_is_fatal_follows_the_cause_of_what_confluent_kafka_raises():
    from confluent_kafka import KafkaError, KafkaException

    fatal = KafkaError(KafkaError._GAPLESS_GUARANTEE, "gap", fatal=True)
    wrapped = SystemError("returned a result with an exception set")
    wrapped.__cause__ = KafkaException(fatal)
    assert is_fatal(fatal) and is_fatal(KafkaException(fatal)) and is_fatal(wrapped)
    assert not is_fatal(KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT))) and not is_fatal(ValueError("x"))


# ---- backlog: the bound ------------------------------------------------------------------------
def test_the_backlog_is_full_at_the_bound_and_drained_below_half_of_it(tmp_path):
    settings = load_settings(data_dir=tmp_path, kafka_bootstrap_servers=f"127.0.0.1:{_closed_port()}",
                             producer_spool_max_mb=4 * len(_message(0)) / 2**20)
    health = ProducerHealth(settings, source_mode="simulate")
    spool = Spool(settings.producer_spool_path)
    publisher = Publisher(settings, health, journal=None, spool=spool, stop=threading.Event(), service=lambda: None)
    backlog = Backlog(settings, publisher, health, spool=spool, journal=None, reject=health.reject)
    for n in range(3):
        spool.append(_message(n))
    assert not backlog.full() and not backlog.drained()
    spool.append(_message(3))
    assert backlog.full() and backlog.full_reason().startswith("spool_full: ")
    assert backlog.drain_if_due(probe=True) == 0  # nothing answers: the spool stays
    assert spool.held_bytes >= backlog.max_bytes
    mean = spool.held_bytes // 4
    publisher.kafka.produce(settings.kafka_topic, _message(5))  # queued while Kafka is unreachable:
    assert backlog.held_bytes() == spool.held_bytes  # (not counted while Kafka is not known to be down)
    health.waiting["kafka"] = {"reason": "broker_unreachable", "since": "2024-01-01T00:00:00.000Z"}
    assert backlog.held_bytes() >= spool.held_bytes + mean  # counted at the spool's mean message size
    publisher.kafka.purge()
    publisher.flush(1.0)
    del health.waiting["kafka"]
    spool.take()
    spool.append(_message(6))
    assert not backlog.drained()  # the taken file is held until released
    spool.release()
    assert backlog.drained() and not backlog.full()
