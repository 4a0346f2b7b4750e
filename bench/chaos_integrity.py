"""Fault scenarios beyond the stream's watermark delay (``bench/chaos.py`` runs them, same table).

* ``resend_late``: re-send, byte for byte, valid records Kafka took more than
  ``Options.resend_age_s`` ago (a producer replaying its journal minutes after a kill, a Kafka
  re-delivery): raw_data must still hold each message_id once.
* ``producer_down``: kill -9 the producer and keep it down ``Options.producer_down_s`` (5 min by
  default), then let supervision restart it from its journal.
* ``stream_down``: kill -9 the stream and keep it down ``Options.stream_down_s`` (10 min) while a
  side publisher fills the topic's partitions at different rates (partition p at
  ``side_rate * (p + 1) ** 2`` msg/s), then let supervision restart it: it catches up with the
  default batch cap, partitions far apart in event time.
* ``crash_all``: kill -9 of the producer, the stream and the broker at once, everything held down
  ``Options.crash_down_s``, then supervision brings it all back, as ``make run`` after a host crash.
* ``spool_full``: the producer gets a small spool bound (``Options.spool_max_mb``, a restart for
  the new configuration), then the broker is killed and held down until the producer has held
  (spool full: it stops polling and records the gap in its status record) and at least
  ``Options.spool_full_down_s``; the bound stays small for what follows (it matters only while
  Kafka is unreachable).

A scenario returns ``(moment data must flow after, what recovered it, note)`` like the others; the
side publisher's message ids go to ``platform.side_ids`` (counted as accepted by ``chaos.count``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time

log = logging.getLogger("chaos")


class ScenarioError(RuntimeError):
    """The suite itself could not do what a scenario needs (named in the table)."""


def _producer(platform):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": platform.settings.kafka_bootstrap_servers, "acks": "all",
                     "enable.idempotence": True})  # fmt: skip


def _read_old_valid_records(platform, cutoff_ms: float, limit: int) -> list[tuple[bytes | None, bytes]]:
    """Up to ``limit`` (key, value) of valid messages Kafka took before ``cutoff_ms``, read from the
    start of each partition up to its end at the time of the call (never tailing new messages).
    Valid: a message the producer accepted (its id in the accepted log), so a bad burst's record
    that carries a ``message_id`` (a book ticker with ask below bid) is never taken for one."""
    from confluent_kafka import Consumer, TopicPartition

    log_path = platform.accepted_log
    accepted = set(log_path.read_text().split()) if log_path.exists() else set()
    topic = platform.settings.kafka_topic
    consumer = Consumer({"bootstrap.servers": platform.settings.kafka_bootstrap_servers,
                         "group.id": f"chaos-resend-{os.getpid()}-{time.time_ns()}", "enable.auto.commit": False})  # fmt: skip
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in partitions}
        open_ = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, 0) for p in open_])
        found: list[tuple[bytes | None, bytes]] = []
        idle_since = time.time()
        while open_ and len(found) < limit and time.time() - idle_since < 10:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            idle_since = time.time()
            if msg.offset() >= ends[msg.partition()] - 1 or msg.timestamp()[1] >= cutoff_ms:
                open_.discard(msg.partition())  # its end, or messages too new from here on
                consumer.pause([TopicPartition(topic, msg.partition())])
            if msg.timestamp()[1] >= cutoff_ms:
                continue
            try:
                doc = json.loads(msg.value())
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("message_id") in accepted:
                found.append((msg.key(), msg.value()))
        return found
    finally:
        consumer.close()


def _old_valid_records(platform, age_s: float, limit: int) -> list[tuple[bytes | None, bytes]]:
    """Up to ``limit`` (key, value) of valid messages Kafka took more than ``age_s`` ago; when the
    platform has not run that long yet, read again as its first messages age (at most ``age_s`` +
    2 min)."""
    deadline = time.time() + age_s + 120.0
    while True:
        found = _read_old_valid_records(platform, (time.time() - age_s) * 1000, limit)
        if len(found) >= limit or time.time() >= deadline:
            return found
        log.info("resend_late: %d of %d valid record(s) older than %.0f s so far; reading again in 5 s",
                 len(found), limit, age_s)
        time.sleep(5.0)


def resend_late(platform) -> tuple[float, str, str]:
    options = platform.options
    records = _old_valid_records(platform, options.resend_age_s, options.resend)
    if not records:
        raise ScenarioError(f"no valid record older than {options.resend_age_s:.0f} s in Kafka to re-send")
    producer = _producer(platform)
    for key, value in records:
        producer.produce(platform.settings.kafka_topic, value, key)
    left = producer.flush(60)
    return time.time(), "nothing to restart (raw_data's writer leaves stored ids out)", (
        f"re-sent {len(records) - left} valid record(s) more than {options.resend_age_s:.0f} s old")


def _hold_down(platform, names: tuple[str, ...], down_s: float) -> None:
    until = time.time() + down_s
    for name in names:
        platform.suspended[name] = until


def _kill(platform, name: str) -> str:
    from btc_platform.ops import services, supervisor

    if name == "kafka":
        pid = services.running_pid(platform.kafka, "kafka")
        os.kill(pid, signal.SIGKILL)
        return f"kafka pid {pid}"
    record = supervisor.read_record(platform.settings, name)
    if name == "stream":
        os.killpg(record.pgid, signal.SIGKILL)  # spark-submit, its driver JVM and Python
        return f"stream group {record.pgid}"
    os.kill(record.pid, signal.SIGKILL)
    return f"{name} pid {record.pid}"


def producer_down(platform) -> tuple[float, str, str]:
    down = platform.options.producer_down_s
    _hold_down(platform, ("producer",), down)
    killed = _kill(platform, "producer")
    moment = time.time()
    time.sleep(down)
    return moment, "supervisor check (ensure_producer) after the hold: journal re-sent", \
        f"kill -9 {killed}, down {down:.0f} s"


def _side_publisher(platform, stop: threading.Event, counts: list[int]) -> None:
    """Valid simulated book tickers into each partition p at ``side_rate * (p + 1) ** 2`` msg/s."""
    from datetime import UTC, datetime

    from bench.bench_stream import payloads

    topic = platform.settings.kafka_topic
    producer = _producer(platform)
    rates = [platform.options.side_rate * (p + 1) ** 2 for p in range(len(counts))]
    started = time.time()
    # event times about real time: one message every 1/rate s of simulated clock from now
    sources = [payloads(10**9, datetime.now(UTC), max(1, int(1000 / rate)), seed=1000 + p)
               for p, rate in enumerate(rates)]  # fmt: skip
    while not stop.is_set():
        elapsed = time.time() - started
        for p, rate in enumerate(rates):
            while counts[p] < rate * elapsed:
                key, value = next(sources[p])
                platform.side_ids.append(json.loads(value)["message_id"])
                producer.produce(topic, value, key, partition=p)
                counts[p] += 1
        producer.poll(0)
        time.sleep(0.05)
    producer.flush(60)


def stream_down(platform) -> tuple[float, str, str]:
    options = platform.options
    _hold_down(platform, ("stream",), options.stream_down_s)
    killed = _kill(platform, "stream")
    moment = time.time()
    counts = [0] * platform.settings.kafka_partitions
    stop = threading.Event()
    side = threading.Thread(target=_side_publisher, args=(platform, stop, counts), name="chaos-side", daemon=True)
    side.start()
    time.sleep(options.stream_down_s)
    stop.set()
    side.join(120)
    return moment, "supervisor check (ensure_stream) after the hold: caught up with the default batch cap", (
        f"kill -9 {killed}, down {options.stream_down_s:.0f} s while partitions took "
        + "/".join(str(c) for c in counts) + " extra messages")


def crash_all(platform) -> tuple[float, str, str]:
    down = platform.options.crash_down_s
    _hold_down(platform, ("kafka", "producer", "stream"), down)
    killed = [_kill(platform, name) for name in ("producer", "stream", "kafka")]
    moment = time.time()
    time.sleep(down)
    return moment, "supervision (ensure_services, producer, stream) after the hold, as make run", \
        f"kill -9 {', '.join(killed)} at once, down {down:.0f} s"


def _open_gap(platform) -> dict | None:
    from btc_platform.status import read_status

    gaps = (read_status(platform.settings.producer_status_path) or {}).get("gaps") or []
    return gaps[-1] if gaps and gaps[-1].get("end") is None else None


def spool_full(platform) -> tuple[float, str, str]:
    options = platform.options
    platform.build_settings(producer_spool_max_mb=options.spool_max_mb)
    reconfigured = time.time()
    platform.check()  # the supervisor restarts the producer for the new configuration
    if platform.wait_for_data_after(reconfigured, options.recovery_timeout_s) is None:
        raise ScenarioError(f"no data after the producer's restart with a {options.spool_max_mb} MiB spool bound")
    _hold_down(platform, ("kafka",), 10 * options.spool_full_down_s)
    killed = _kill(platform, "kafka")
    moment = platform.fault_at = time.time()
    gap, deadline = None, moment + options.spool_full_down_s + 240.0
    while time.time() < deadline and (gap is None or time.time() - moment < options.spool_full_down_s):
        gap = gap or _open_gap(platform)
        time.sleep(2.0)
    platform.suspended["kafka"] = 0.0  # the next supervision round restarts it
    if gap is None:
        raise ScenarioError(f"kill -9 {killed}: the producer did not hold (no open gap in its status record) "
                            f"{time.time() - moment:.0f} s into the outage with a {options.spool_max_mb} MiB bound")
    return moment, "supervisor ensure_services after the hold; the producer drains its spool, then polls again", (
        f"spool bound {options.spool_max_mb} MiB, kill -9 {killed}, down {time.time() - moment:.0f} s; "
        f"producer held from {gap['start']}: {gap['reason']}")


SCENARIOS = {"resend_late": resend_late, "producer_down": producer_down, "stream_down": stream_down,
             "crash_all": crash_all, "spool_full": spool_full}  # fmt: skip
