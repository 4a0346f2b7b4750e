"""The producer: market data from a source (live APIs, replay file, simulator) into Kafka.

Run it::

    python -m btc_platform.ingest.producer --source live
    python -m btc_platform.ingest.producer --source simulate --candles ../shared/data/btc_usdt_1m_2023-03_2023-05.csv --speed 60
    python -m btc_platform.ingest.producer --source replay --replay-file captured.jsonl --speed 0

Kafka: confluent-kafka ``Producer`` with ``enable.idempotence=true`` and ``acks=all``, key = symbol,
value = ``schema.encode`` bytes. Delivery reports are counted (published / failed). If Kafka is
down librdkafka keeps every accepted message queued and retries it for
``producer_message_timeout_s``; when the local queue is full the source waits (backpressure),
nothing is dropped. SIGTERM/SIGINT stop the source and flush, bounded by
``producer_flush_timeout_s`` (below the supervisor's stop timeout, so the spool below is written
before a SIGKILL).

Spool: a message that was accepted but cannot be delivered - still queued when the flush ends
(purged then), timed out after ``producer_message_timeout_s``, or not taken by a full queue at
stop - is appended to the spool file ``<data_dir>/spool/producer.jsonl`` (one wire message a
line, fsync'ed at close) instead of being lost, and counted as ``spooled``. The next start
delivers the spool first, byte for byte (same ``message_id``), before any new message: the file
is renamed to ``producer.jsonl.sending`` and removed once every message in it was delivered or
spooled again (a process killed in between sends it again: duplicates, never a loss). Only a
SIGKILL would lose what librdkafka held in memory, hence the journal:

Journal (``producer_journal``, on by default): every message is appended to the write-ahead
journal ``<data_dir>/spool/producer.wal`` (unbuffered, so in the kernel before librdkafka has
it) before it is handed to Kafka, and the message_id of every confirmed one to
``producer.wal.delivered`` (collected, written at every status tick and poll). Both are emptied
whenever nothing is outstanding (at a status tick with an empty librdkafka queue) and removed
at a clean stop. A producer killed with SIGKILL leaves them behind: the next start re-sends,
before the spool, every journaled message without a confirmation, byte for byte (a message confirmed in the instant before the kill
is sent again: a duplicate the stream drops within its watermark delay, never a loss).
``producer_accepted_log`` (off by default) appends the ``message_id`` of every accepted message
to a file (the fault-injection suite counts losses against it).

Health: a JSON status record (``btc_platform.status``) at ``producer_status_path``, rewritten
every ``producer_status_interval_s`` and at exit: pid, source mode, started_at, updated_at,
state, counters ``published``/``rejected``/``retried``/``failed``/``accepted``/``in_flight``,
per upstream (``binance``, ``coingecko``, ``simulated``, ...) the last successful poll and
publish, ``http_errors`` (failed HTTP attempts per upstream by kind: timeout, ssl, connection,
truncated, decoding, too_many_redirects, other_transport, invalid_json, http_5xx/429/418) and
``waiting``: what the producer is legitimately waiting for, per upstream ``{"reason": "ip_ban" |
"rate_limit", "until": <time>}``, or ``{"reason": "exchange_failing", "kind": <last failure kind>,
"failures": n, "since": <time>, "last_failure": <time>, "next_attempt": <time>, "detail": ...}``
while it backs off from 5xx / transport failures / invalid JSON (cleared by the first good
answer), and for Kafka ``{"reason": "broker_unreachable", "since": <time>}``
while librdkafka reports all brokers down and no delivery succeeded since. The supervisor does
not restart a producer whose fresh status record says it is waiting. Payloads that cannot become messages are counted as rejected, logged, and appended
with the reason to ``<logs_dir>/producer_rejected.jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from btc_platform.ingest.schema import format_ts
from btc_platform.status import LAST_PUBLISH_KEY, write_status

log = logging.getLogger(__name__)

REJECTED_FILE = "producer_rejected.jsonl"
SENDING_SUFFIX = ".sending"
#: Delivery errors after which a message is spooled for the next start (transient by nature).
_SPOOL_ERRORS = ("_MSG_TIMED_OUT", "_PURGE_QUEUE", "_PURGE_INFLIGHT", "_TRANSPORT", "_ALL_BROKERS_DOWN",
                 "_TIMED_OUT", "REQUEST_TIMED_OUT", "NOT_ENOUGH_REPLICAS", "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
                 "LEADER_NOT_AVAILABLE", "NOT_LEADER_FOR_PARTITION")
_LOG_EVERY_FAILURE = 20  # log the first N delivery failures individually, then every 1000th


_MESSAGE_ID = b'"message_id":"'


def _digest(value: bytes) -> bytes:
    """What the journal records of a confirmed message: its message_id, else a hash of it."""
    start = value.find(_MESSAGE_ID)
    if start >= 0:
        return value[start + len(_MESSAGE_ID): start + len(_MESSAGE_ID) + 64]
    return hashlib.blake2b(value, digest_size=12).hexdigest().encode("ascii")


def message_id_of(value: bytes) -> bytes:
    """The ``message_id`` of an encoded message without parsing it (b"-" when it has none)."""
    start = value.find(_MESSAGE_ID)
    if start < 0:
        return b"-"
    start += len(_MESSAGE_ID)
    end = value.find(b'"', start)
    return value[start:end] if end > start else b"-"


class Journal:
    """Write-ahead journal of accepted messages until Kafka confirmed them (module docstring).

    ``accept`` before ``produce``, ``delivered`` from the delivery report; ``clear`` only when
    no message is outstanding. Accepted messages are written at once (``os.write`` on an
    O_APPEND file: a SIGKILL of the process loses nothing written); delivery digests are
    collected and written by ``flush_delivered`` (at every status tick and poll of the producer
    loop): a kill before that only makes the next start send a confirmed message again."""

    RECOVERING = ".recovering"

    def __init__(self, path: Path):
        self.path = path
        self.delivered_path = self._delivered(path)
        self._fd: int | None = None
        self._delivered_fd: int | None = None
        self._confirmed: list[bytes] = []
        self.dirty = False

    @staticmethod
    def _delivered(path: Path) -> Path:
        return path.with_name(path.name + ".delivered")

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self._fd = os.open(self.path, flags | os.O_TRUNC, 0o644)
        self._delivered_fd = os.open(self.delivered_path, flags | os.O_TRUNC, 0o644)

    def accept(self, value: bytes) -> None:
        os.write(self._fd, value + b"\n")
        self.dirty = True

    def delivered(self, value: bytes) -> None:
        self._confirmed.append(_digest(value))

    def flush_delivered(self) -> None:
        if self._confirmed and self._delivered_fd is not None:
            self._confirmed.append(b"")
            os.write(self._delivered_fd, b"\n".join(self._confirmed))
            self._confirmed.clear()

    def clear(self) -> None:
        """Nothing is outstanding: forget every journaled message."""
        os.ftruncate(self._fd, 0)
        os.ftruncate(self._delivered_fd, 0)
        self._confirmed.clear()
        self.dirty = False

    def close(self, *, remove: bool) -> None:
        if self._fd is None:
            return
        self.flush_delivered()
        for fd in (self._fd, self._delivered_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._delivered_fd = None
        if remove:
            self.path.unlink(missing_ok=True)
            self.delivered_path.unlink(missing_ok=True)

    def take_left_over(self) -> Path | None:
        """Move the journal a killed run left behind aside (kept beside an earlier one that was
        being re-sent when that run died too); None if there is none."""
        recovering = self.path.with_name(self.path.name + self.RECOVERING)
        if self.path.exists():
            if recovering.exists():
                for src, dst in ((self.path, recovering), (self.delivered_path, self._delivered(recovering))):
                    if src.exists():
                        with dst.open("ab") as out:
                            out.write(src.read_bytes())
                        src.unlink()
            else:
                os.replace(self.path, recovering)
                if self.delivered_path.exists():
                    os.replace(self.delivered_path, self._delivered(recovering))
        return recovering if recovering.exists() else None

    @classmethod
    def undelivered(cls, recovering: Path) -> list[bytes]:
        """Journaled messages of ``recovering`` without a delivery digest, in journal order."""
        delivered_path = cls._delivered(recovering)
        done = set(delivered_path.read_bytes().split(b"\n")) if delivered_path.exists() else set()
        return [line for line in recovering.read_bytes().split(b"\n") if line and _digest(line) not in done]

    @classmethod
    def remove(cls, recovering: Path) -> None:
        recovering.unlink(missing_ok=True)
        cls._delivered(recovering).unlink(missing_ok=True)


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else format_ts(datetime.fromtimestamp(epoch, tz=UTC))


class UpstreamHealth:
    __slots__ = ("last_poll_ok", "last_publish", "published", "reported", "poll_errors", "last_error",
                 "last_error_at")

    def __init__(self):
        self.last_poll_ok: float | None = None
        self.last_publish: float | None = None
        self.published = 0
        self.reported = 0
        self.poll_errors = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "last_poll_ok_at": _iso(self.last_poll_ok),
            LAST_PUBLISH_KEY: _iso(self.last_publish),
            "published": self.published,
            "poll_errors": self.poll_errors,
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
        }


class ThrottledLog:
    """Logger facade for librdkafka: the same kind of message at most once per ``every_s`` seconds
    (a broker that is down is otherwise reported several times a second)."""

    def __init__(self, logger: logging.Logger, every_s: float = 30.0):
        self.logger = logger
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def _allow(self, kind: str) -> int | None:
        now = time.monotonic()
        if now - self._last.get(kind, -self.every_s) < self.every_s:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._suppressed.pop(kind, 0)

    def log(self, level: int, msg: str, *args: Any) -> None:
        kind = str(args[0]) if args else msg  # librdkafka passes (fac, name, message)
        suppressed = self._allow(kind)
        if suppressed is not None:
            self.logger.log(level, msg + (" (%d similar suppressed)" if suppressed else ""),
                            *args, *((suppressed,) if suppressed else ()))

    def warning(self, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, msg, *args)

    def error(self, msg: str, *args: Any) -> None:
        self.log(logging.ERROR, msg, *args)


def kafka_config(settings, **overrides: Any) -> dict[str, Any]:
    """librdkafka configuration of the platform's producer."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "client.id": "btc-producer",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": settings.producer_linger_ms,
        "compression.type": settings.producer_compression,
        "message.timeout.ms": int(settings.producer_message_timeout_s * 1000),
        "queue.buffering.max.messages": settings.producer_queue_max_messages,
        "queue.buffering.max.kbytes": 1048576,
        "logger": ThrottledLog(logging.getLogger("librdkafka")),
    }
    config.update(overrides)
    return config


class FeedProducer:
    """Publishes a source's messages to Kafka and keeps the status record; also the SourceContext."""

    def __init__(
        self,
        settings,
        *,
        source_mode: str,
        record_path: str | Path | None = None,
        status_path: str | Path | None = None,
        kafka_overrides: dict[str, Any] | None = None,
        collect_latency: bool = False,
    ):
        from confluent_kafka import Producer

        self.settings = settings
        self.source_mode = source_mode
        self.topic = settings.kafka_topic
        self.status_path = Path(status_path or settings.producer_status_path)
        self.rejected_path = settings.logs_dir / REJECTED_FILE
        self.started_at = time.time()
        self.accepted = self.published = self.failed = self.rejected = self.retried = 0
        self.spooled = self.from_spool = 0
        self.spool_path = Path(settings.producer_spool_path)
        self._spool_handle = None
        self._spool_codes: frozenset[int] | None = None
        self._sending_taken = False
        self.journal = Journal(settings.producer_journal_path) if settings.producer_journal else None
        self.from_journal = 0
        self._accepted_fd: int | None = None
        if settings.producer_accepted_log:
            accepted_log = Path(settings.producer_accepted_log)
            accepted_log.parent.mkdir(parents=True, exist_ok=True)
            self._accepted_fd = os.open(accepted_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.upstreams: dict[str, UpstreamHealth] = {}
        self.http_errors: dict[str, dict[str, int]] = {}
        self.waiting: dict[str, dict[str, Any]] = {}
        self.latencies: list[float] | None = [] if collect_latency else None
        self._callbacks: dict[str, Any] = {}
        self._stop = threading.Event()
        self._deadline: float | None = None
        self._next_status = 0.0
        self._state = "starting"
        self._record = open(record_path, "ab") if record_path else None  # closed in close()
        self._kafka_log = ThrottledLog(log)
        self._kafka = Producer(kafka_config(settings, error_cb=self._on_kafka_error, **(kafka_overrides or {})))

    # ---- SourceContext -----------------------------------------------------------------------
    def stopping(self) -> bool:
        if self._stop.is_set():
            return True
        if self._deadline is not None and time.monotonic() >= self._deadline:
            log.info("duration reached, stopping")
            self._stop.set()
            return True
        return False

    def idle(self, seconds: float) -> bool:
        """Wait ``seconds`` while serving delivery reports and the status; False once stopping."""
        end = time.monotonic() + seconds
        while not self.stopping():
            remaining = end - time.monotonic()
            if remaining <= 0:
                return True
            self._kafka.poll(min(remaining, 0.2))
            self._service()
        return False

    def sleep(self, seconds: float) -> None:
        """``sleep`` for the HTTP clients: a wait that keeps the producer serviced."""
        self.idle(seconds)

    def _upstream(self, name: str) -> UpstreamHealth:
        health = self.upstreams.get(name)
        if health is None:
            health = self.upstreams[name] = UpstreamHealth()
        return health

    def poll_ok(self, source: str) -> None:
        self._upstream(source).last_poll_ok = time.time()

    def poll_failed(self, source: str, error: BaseException) -> None:
        health = self._upstream(source)
        health.poll_errors += 1
        health.last_error = f"{type(error).__name__}: {error}"
        health.last_error_at = time.time()

    def set_retried(self, count: int) -> None:
        self.retried = count

    def set_http_errors(self, errors: dict[str, dict[str, int]]) -> None:
        self.http_errors = errors

    def set_waiting(self, upstream: str, reason: str | None, until: float | None, **details: Any) -> None:
        if reason is None:
            self.waiting.pop(upstream, None)
        else:
            self.waiting[upstream] = {"reason": reason, "until": _iso(until), **details}

    def reject(self, source: str, reason: str, payload: Any) -> None:
        self.rejected += 1
        log.warning("rejected %s payload: %s", source, reason)
        if isinstance(payload, bytes):
            payload = payload.decode("utf-8", errors="replace")
        line = json.dumps({"rejected_at": _iso(time.time()), "source": source, "reason": reason,
                           "payload": payload}, default=str)
        self.rejected_path.parent.mkdir(parents=True, exist_ok=True)
        with self.rejected_path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    # ---- Kafka -------------------------------------------------------------------------------
    def _on_kafka_error(self, err) -> None:
        from confluent_kafka import KafkaError

        if err.fatal():
            log.error("fatal Kafka producer error, stopping: %s", err)
            self._stop.set()
        elif err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            if err.code() == KafkaError._ALL_BROKERS_DOWN and "kafka" not in self.waiting:
                self.waiting["kafka"] = {"reason": "broker_unreachable", "since": _iso(time.time())}
            self._kafka_log.error(
                "Kafka unreachable at %s (%s): accepted messages stay queued and are retried for up to %.0fs",
                self.settings.kafka_bootstrap_servers, err.str(), self.settings.producer_message_timeout_s,
            )
        else:
            self._kafka_log.warning("Kafka: %s", err)

    def _callback(self, source: str):
        callback = self._callbacks.get(source)
        if callback is None:
            health = self._upstream(source)

            def callback(err, msg, _health=health):
                if err is None:
                    if self.journal is not None:
                        self.journal.delivered(msg.value())
                    if self.waiting:
                        self.waiting.pop("kafka", None)
                    self.published += 1
                    _health.published += 1
                    if self.latencies is not None:
                        self.latencies.append(msg.latency())
                    if self._record is not None:
                        self._record.write(msg.value() + b"\n")
                elif self._spoolable(err):
                    self.spool(msg.value())
                else:
                    self.failed += 1
                    if self.failed <= _LOG_EVERY_FAILURE or self.failed % 1000 == 0:
                        log.error("delivery failed (%d so far) for key %s: %s", self.failed, msg.key(), err)

            self._callbacks[source] = callback
        return callback

    # ---- spool -------------------------------------------------------------------------------
    def _spoolable(self, err) -> bool:
        if self._spool_codes is None:
            from confluent_kafka import KafkaError

            self._spool_codes = frozenset(getattr(KafkaError, name) for name in _SPOOL_ERRORS
                                          if hasattr(KafkaError, name))
        return err.code() in self._spool_codes or err.retriable()

    def spool(self, value: bytes) -> None:
        """Keep an accepted, undelivered message for the next start (see the module docstring)."""
        if self._spool_handle is None:
            self.spool_path.parent.mkdir(parents=True, exist_ok=True)
            self._spool_handle = open(self.spool_path, "ab")  # closed in _close_spool()
        self._spool_handle.write(value + b"\n")
        self.spooled += 1

    def _close_spool(self) -> None:
        if self._spool_handle is not None:
            self._spool_handle.flush()
            os.fsync(self._spool_handle.fileno())
            self._spool_handle.close()
            self._spool_handle = None
            log.warning("%d undelivered message(s) kept in %s for the next start", self.spooled, self.spool_path)

    def _sending_path(self) -> Path:
        return self.spool_path.with_name(self.spool_path.name + SENDING_SUFFIX)

    def _take_spool(self) -> Path | None:
        """Move the spool aside for sending (kept beside one left by a killed run); None if empty."""
        sending = self._sending_path()
        if self.spool_path.exists():
            if sending.exists():  # a run was killed while sending: send both
                with sending.open("ab") as out, self.spool_path.open("rb") as extra:
                    out.write(extra.read())
                    out.flush()
                    os.fsync(out.fileno())
                self.spool_path.unlink()
            else:
                os.replace(self.spool_path, sending)
        return sending if sending.exists() else None

    def send_spool(self) -> int:
        """Hand the spooled messages to Kafka before anything new; returns how many."""
        sending = self._take_spool()
        if sending is None:
            return 0
        self._sending_taken = True
        count = 0
        stopped = False
        with sending.open("rb") as handle:
            for lineno, raw in enumerate(handle, 1):
                value = raw.rstrip(b"\n")
                if not value:
                    continue
                if stopped:  # stopped with a full queue: the rest stays spooled
                    self.spool(value)
                    continue
                try:
                    head = json.loads(value)
                    key, source = head["symbol"].encode("utf-8"), head["source"]
                except (ValueError, KeyError, TypeError, AttributeError) as exc:  # a line cut by a crash
                    self.reject("spool", f"{sending.name} line {lineno}: {exc}", value[:500])
                    continue
                if not self.publish(key, value, source):  # spooled it again
                    stopped = True
                    continue
                count += 1
        self.from_spool += count
        log.info("re-sent %d spooled message(s) from %s first", count, sending)
        return count

    def send_journal(self) -> int:
        """Re-send what a killed run journaled but Kafka never confirmed; returns how many."""
        if self.journal is None:
            return 0
        recovering = self.journal.take_left_over()
        self.journal.open()
        if recovering is None:
            return 0
        count = 0
        for number, value in enumerate(Journal.undelivered(recovering), 1):
            try:
                head = json.loads(value)
                key, source = head["symbol"].encode("utf-8"), head["source"]
            except (ValueError, KeyError, TypeError, AttributeError) as exc:  # a line cut by the kill
                self.reject("journal", f"{recovering.name} message {number}: {exc}", value[:500])
                continue
            if not self.publish(key, value, source):
                break  # stopped with a full queue: that one is spooled, the rest stays journaled
            count += 1
        else:
            Journal.remove(recovering)  # every message in it is journaled again (or spooled)
        self.from_journal += count
        log.warning("re-sent %d message(s) a killed run had accepted but Kafka had not confirmed (%s)",
                    count, recovering)
        return count

    def _accept(self, value: bytes) -> None:
        """Bookkeeping of a message about to be handed to librdkafka."""
        if self.journal is not None:
            self.journal.accept(value)
        if self._accepted_fd is not None:
            os.write(self._accepted_fd, message_id_of(value) + b"\n")

    def publish(self, key: bytes, value: bytes, source: str, *, journaled: bool = False) -> bool:
        """Hand one message to librdkafka; wait (serving reports) while its queue is full.

        Returns False only when a stop was requested while the queue stayed full past the flush
        timeout: that message was never accepted, it is logged and counted as failed.
        """
        callback = self._callbacks.get(source) or self._callback(source)
        if not journaled:
            self._accept(value)
        try:
            self._kafka.produce(self.topic, value, key, on_delivery=callback)
            self.accepted += 1
            return True
        except BufferError:
            pass
        stop_seen: float | None = None
        while True:
            self._kafka.poll(0.05)
            self._service()
            try:
                self._kafka.produce(self.topic, value, key, on_delivery=callback)
                self.accepted += 1
                return True
            except BufferError:
                if self._stop.is_set():
                    stop_seen = stop_seen or time.monotonic()
                    if time.monotonic() - stop_seen > self._flush_timeout():
                        self.spool(value)
                        log.error("stopping with the Kafka queue still full: message for %s spooled", key)
                        return False

    # ---- status ------------------------------------------------------------------------------
    def _service(self) -> None:
        if self.journal is not None:
            self.journal.flush_delivered()
        now = time.monotonic()
        if now >= self._next_status:
            self._next_status = now + self.settings.producer_status_interval_s
            self._clear_journal()
            self.write_status()

    def _clear_journal(self) -> None:
        """Empty the journal when nothing is outstanding (every report served; spooled ones on disk)."""
        if self.journal is None:
            return
        self.journal.flush_delivered()
        if self.journal.dirty and len(self._kafka) == 0:
            if self._spool_handle is not None:
                self._spool_handle.flush()
                os.fsync(self._spool_handle.fileno())
            self.journal.clear()

    def status(self) -> dict[str, Any]:
        now = time.time()
        for health in self.upstreams.values():
            if health.published != health.reported:
                health.reported, health.last_publish = health.published, now
        publishes = [h.last_publish for h in self.upstreams.values() if h.last_publish]
        polls = [h.last_poll_ok for h in self.upstreams.values() if h.last_poll_ok]
        return {
            "pid": _pid(),
            "source_mode": self.source_mode,
            "state": self._state,
            "started_at": _iso(self.started_at),
            "updated_at": _iso(now),
            "topic": self.topic,
            "bootstrap_servers": self.settings.kafka_bootstrap_servers,
            "accepted": self.accepted,
            "published": self.published,
            "failed": self.failed,
            "rejected": self.rejected,
            "retried": self.retried,
            "in_flight": len(self._kafka),
            "spooled": self.spooled,
            "from_spool": self.from_spool,
            "from_journal": self.from_journal,
            LAST_PUBLISH_KEY: _iso(max(publishes)) if publishes else None,
            "last_poll_ok_at": _iso(max(polls)) if polls else None,
            "sources": {name: h.as_dict() for name, h in sorted(self.upstreams.items())},
            "http_errors": self.http_errors,
            "waiting": dict(self.waiting),
        }

    def write_status(self) -> None:
        write_status(self.status_path, self.status())

    # ---- run ---------------------------------------------------------------------------------
    def request_stop(self, signum: int | None = None, _frame: Any = None) -> None:
        if signum is not None:
            log.info("received %s: stopping and flushing", signal.Signals(signum).name)
        self._stop.set()

    def run(self, source, *, max_messages: int | None = None, duration_s: float | None = None) -> int:
        """Publish until the source ends, ``max_messages``, ``duration_s`` or a signal; return an exit code."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self.request_stop)
        if duration_s is not None:
            self._deadline = time.monotonic() + duration_s
        self._state = "running"
        self.write_status()
        log.info("producer started: source=%s topic=%s bootstrap=%s", self.source_mode, self.topic,
                 self.settings.kafka_bootstrap_servers)
        count = 0
        self.send_journal()
        self.send_spool()
        iterator = source.messages(self)
        produce, topic, callbacks = self._kafka.produce, self.topic, self._callbacks
        bookkeeping = self._accept if (self.journal is not None or self._accepted_fd is not None) else None
        try:
            for key, value, src in iterator:
                callback = callbacks.get(src) or self._callback(src)
                try:  # fast path inline; publish() waits while the local queue is full
                    if bookkeeping is not None:
                        bookkeeping(value)
                    produce(topic, value, key, on_delivery=callback)
                    self.accepted += 1
                except BufferError:
                    if not self.publish(key, value, src, journaled=True):
                        break
                count += 1
                if max_messages is not None and count >= max_messages:
                    log.info("max messages (%d) reached", max_messages)
                    break
                if count & 255 == 0:
                    self._kafka.poll(0)
                    self._service()
                    if self.stopping():
                        break
                elif self._stop.is_set():
                    break
        finally:
            iterator.close()
            self._state = "stopping"
            remaining = self.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        ok = remaining == 0 and self.failed == 0
        log.info("producer stopped: accepted=%d published=%d failed=%d rejected=%d retried=%d spooled=%d",
                 self.accepted, self.published, self.failed, self.rejected, self.retried, self.spooled)
        return 0 if ok else 1

    def _flush_timeout(self) -> float:
        return self.settings.producer_flush_timeout_s

    def close(self) -> int:
        """Flush (bounded), spool what is still undelivered, write the final status; return the
        count of messages neither delivered nor spooled (0 unless the spool cannot be written)."""
        timeout = self._flush_timeout()
        remaining = self._kafka.flush(timeout)
        if remaining:
            log.warning("%d message(s) undelivered after the %.0fs flush: spooling them", remaining, timeout)
            self._kafka.purge(in_queue=True, in_flight=True)
            remaining = self._kafka.flush(5.0)  # serves the purged messages' reports: they spool
            if remaining:
                self.failed += remaining
                log.error("%d message(s) neither delivered nor spooled: counted as failed", remaining)
        self._close_spool()
        if self.journal is not None:  # kept when a message is neither delivered nor spooled
            self.journal.close(remove=remaining == 0)
        if self._accepted_fd is not None:
            os.close(self._accepted_fd)
            self._accepted_fd = None
        sending = self._sending_path()
        if self._sending_taken and sending.exists():
            sending.unlink()  # every message in it was delivered or spooled again
        if self._record is not None:
            self._record.close()
            self._record = None
        self._state = "stopped"
        self.write_status()
        return remaining


def _pid() -> int:
    return os.getpid()


# ---- CLI -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m btc_platform.ingest.producer",
        description="Publish BTC market data to Kafka (topic, servers, intervals and paths come from BTC_* "
        "settings, see .env.example).",
    )
    parser.add_argument("--source", choices=("live", "replay", "simulate"), default=None,
                        help="live: Binance + CoinGecko APIs; replay: a JSONL file of captured messages; "
                        "simulate: synthetic market (source=simulated). Default: BTC_PRODUCER_SOURCE (live).")
    parser.add_argument("--record", metavar="FILE",
                        help="append every message confirmed by Kafka to FILE as JSONL (replayable).")
    parser.add_argument("--replay-file", metavar="FILE",
                        help="JSONL file of messages for --source replay (default: BTC_PRODUCER_REPLAY_FILE).")
    parser.add_argument("--candles", metavar="CSV",
                        help="simulate: drive the price path by a 1-minute candle CSV "
                        "(open_time_utc,open,high,low,close,volume); default: BTC_PRODUCER_SIMULATE_CANDLES, "
                        "empty = random walk.")
    parser.add_argument("--speed", type=float, default=None,
                        help="simulate/replay: simulated seconds per real second; 0 = as fast as possible "
                        "(default: BTC_PRODUCER_SPEED, 1).")
    parser.add_argument("--tick-ms", type=int, default=1000,
                        help="simulate: simulated milliseconds between book tickers, must divide 60000 "
                        "(default 1000).")
    parser.add_argument("--start-price", type=float, default=None,
                        help="simulate (random walk): starting price (default: BTC_SIMULATE_START_PRICE, 30000).")
    parser.add_argument("--seed", type=int, default=None, help="simulate: random seed (reproducible runs).")
    parser.add_argument("--market-lag", type=float, default=0.0, metavar="S",
                        help="simulate: CoinGecko-like market messages carry an exchange_time S seconds older "
                        "than their receipt, as the real CoinGecko's last_updated_at (default 0).")
    parser.add_argument("--max-messages", type=int, default=None, metavar="N",
                        help="stop after N messages were handed to Kafka (then flush).")
    parser.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds.")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="logging level (default INFO).")
    return parser


def build_source(args: argparse.Namespace, settings, *, sleep=time.sleep):
    """The source object for the parsed CLI options (``ConfigError`` on bad options)."""
    from btc_platform.ingest import sources

    if args.source == "live":
        from btc_platform.ingest.clients.binance import BinanceClient
        from btc_platform.ingest.clients.coingecko import CoinGeckoClient

        return sources.LiveSource(
            settings,
            BinanceClient.from_settings(settings, sleep=sleep),
            CoinGeckoClient.from_settings(settings, sleep=sleep),
        )
    if args.source == "replay":
        if not args.replay_file:
            raise sources.ConfigError("--source replay needs --replay-file FILE")
        return sources.ReplaySource(args.replay_file, speed=args.speed)
    return sources.SimulateSource(
        settings.binance_symbols,
        coingecko_symbol=settings.coingecko_symbol,
        candles=args.candles,
        speed=args.speed,
        tick_ms=args.tick_ms,
        start_price=settings.simulate_start_price if args.start_price is None else args.start_price,
        seed=args.seed,
        market_lag_s=args.market_lag,
    )


def main(argv: list[str] | None = None) -> int:
    from confluent_kafka import KafkaException

    from btc_platform.ingest.sources import ConfigError
    from btc_platform.settings import SettingsError, get_settings

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = get_settings()
        args.source = args.source or settings.producer_source
        args.replay_file = args.replay_file or settings.producer_replay_file or None
        args.candles = args.candles or settings.producer_simulate_candles or None
        args.speed = settings.producer_speed if args.speed is None else args.speed
        if args.max_messages is not None and args.max_messages <= 0:
            raise ConfigError("--max-messages must be > 0")
        if args.duration is not None and args.duration <= 0:
            raise ConfigError("--duration must be > 0")
        holder: list[FeedProducer] = []
        source = build_source(args, settings, sleep=lambda seconds: holder[0].sleep(seconds))
        app = FeedProducer(settings, source_mode=args.source, record_path=args.record)
        holder.append(app)
    except (SettingsError, ConfigError, OSError) as exc:
        sys.stderr.write(f"producer: {exc}\n")
        return 2
    except KafkaException as exc:  # a bad librdkafka configuration
        sys.stderr.write(f"producer: invalid Kafka configuration: {exc}\n")
        return 2
    return app.run(source, max_messages=args.max_messages, duration_s=args.duration)


if __name__ == "__main__":
    sys.exit(main())
