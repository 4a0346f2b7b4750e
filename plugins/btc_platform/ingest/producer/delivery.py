"""Publishing: hands messages to librdkafka and settles each one by its delivery report.

Kafka: confluent-kafka ``Producer`` with ``enable.idempotence=true`` and ``acks=all``, key =
symbol, value = ``schema.encode`` bytes. Every accepted message is journaled first
(:mod:`~btc_platform.ingest.producer.journal`); its delivery report then settles it: confirmed
(``published``), spooled for a later send (``spooled``, :mod:`~btc_platform.ingest.producer.spool`)
or failed. While the local queue is full the caller waits (backpressure), nothing is dropped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from btc_platform.ingest.producer.health import ProducerHealth, iso
from btc_platform.ingest.producer.journal import Journal, message_id_of
from btc_platform.ingest.producer.spool import Spool

log = logging.getLogger(__name__)

#: Delivery errors after which a message is spooled for the next start (transient by nature).
_SPOOL_ERRORS = ("_MSG_TIMED_OUT", "_PURGE_QUEUE", "_PURGE_INFLIGHT", "_TRANSPORT", "_ALL_BROKERS_DOWN",
                 "_TIMED_OUT", "REQUEST_TIMED_OUT", "NOT_ENOUGH_REPLICAS", "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
                 "LEADER_NOT_AVAILABLE", "NOT_LEADER_FOR_PARTITION")
_LOG_EVERY_FAILURE = 20  # log the first N delivery failures individually, then every 1000th


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


class Publisher:
    """The librdkafka producer with the platform's bookkeeping around it (module docstring).

    ``accept`` + ``kafka.produce`` is the fast path (the producer loop inlines it); ``publish``
    waits while the local queue is full, calling ``service`` (delivery reports are served by
    ``kafka.poll``) between attempts."""

    def __init__(
        self,
        settings,
        health: ProducerHealth,
        *,
        journal: Journal | None,
        spool: Spool,
        stop: threading.Event,
        service: Callable[[], None],
        record_path: str | Path | None = None,
        kafka_overrides: dict[str, Any] | None = None,
        collect_latency: bool = False,
    ):
        from confluent_kafka import Producer

        self.settings = settings
        self.topic = settings.kafka_topic
        self.health = health
        self.journal = journal
        self.spool = spool
        self._stop = stop
        self._service = service
        self.accepted = self.published = self.failed = 0
        self.latencies: list[float] | None = [] if collect_latency else None
        self._callbacks: dict[str, Any] = {}
        self._spool_codes: frozenset[int] | None = None
        self._accepted_fd: int | None = None
        if settings.producer_accepted_log:
            accepted_log = Path(settings.producer_accepted_log)
            accepted_log.parent.mkdir(parents=True, exist_ok=True)
            self._accepted_fd = os.open(accepted_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._record = open(record_path, "ab") if record_path else None  # closed in close()
        self._kafka_log = ThrottledLog(log)
        self.kafka = Producer(kafka_config(settings, error_cb=self.on_kafka_error, **(kafka_overrides or {})))

    @property
    def bookkeeping(self) -> Callable[[bytes], None] | None:
        """``accept``, or None when there is nothing to record of an accepted message."""
        return self.accept if (self.journal is not None or self._accepted_fd is not None) else None

    def accept(self, value: bytes) -> None:
        """Bookkeeping of a message about to be handed to librdkafka."""
        if self.journal is not None:
            self.journal.accept(value)
        if self._accepted_fd is not None:
            os.write(self._accepted_fd, message_id_of(value) + b"\n")

    def publish(self, key: bytes, value: bytes, source: str, *, journaled: bool = False) -> bool:
        """Hand one message to librdkafka; wait (serving reports) while its queue is full.

        Returns False only when a stop was requested while the queue stayed full past the flush
        timeout: that message was never handed over, it is spooled.
        """
        callback = self._callbacks.get(source) or self.callback(source)
        if not journaled:
            self.accept(value)
        try:
            self.kafka.produce(self.topic, value, key, on_delivery=callback)
            self.accepted += 1
            return True
        except BufferError:
            pass
        stop_seen: float | None = None
        while True:
            self.kafka.poll(0.05)
            self._service()
            try:
                self.kafka.produce(self.topic, value, key, on_delivery=callback)
                self.accepted += 1
                return True
            except BufferError:
                if self._stop.is_set():
                    stop_seen = stop_seen or time.monotonic()
                    if time.monotonic() - stop_seen > self.settings.producer_flush_timeout_s:
                        self.spool.append(value)
                        log.error("stopping with the Kafka queue still full: message for %s spooled", key)
                        return False

    def on_kafka_error(self, err) -> None:
        from confluent_kafka import KafkaError

        waiting = self.health.waiting
        if err.fatal():
            log.error("fatal Kafka producer error, stopping: %s", err)
            self._stop.set()
        elif err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            if err.code() == KafkaError._ALL_BROKERS_DOWN and "kafka" not in waiting:
                waiting["kafka"] = {"reason": "broker_unreachable", "since": iso(time.time())}
            self._kafka_log.error(
                "Kafka unreachable at %s (%s): accepted messages stay queued and are retried for up to %.0fs",
                self.settings.kafka_bootstrap_servers, err.str(), self.settings.producer_message_timeout_s,
            )
        else:
            self._kafka_log.warning("Kafka: %s", err)

    def callback(self, source: str):
        """The delivery report callback of ``source``'s messages (one per source, cached)."""
        callback = self._callbacks.get(source)
        if callback is None:
            upstream = self.health.upstream(source)
            waiting = self.health.waiting

            def callback(err, msg, _health=upstream):
                if err is None:
                    if self.journal is not None:
                        self.journal.delivered(msg.value())
                    if waiting:
                        waiting.pop("kafka", None)
                    self.published += 1
                    _health.published += 1
                    if self.latencies is not None:
                        self.latencies.append(msg.latency())
                    if self._record is not None:
                        self._record.write(msg.value() + b"\n")
                elif self._spoolable(err):
                    self.spool.append(msg.value())
                else:
                    self.failed += 1
                    if self.failed <= _LOG_EVERY_FAILURE or self.failed % 1000 == 0:
                        log.error("delivery failed (%d so far) for key %s: %s", self.failed, msg.key(), err)

            self._callbacks[source] = callback
        return callback

    def _spoolable(self, err) -> bool:
        if self._spool_codes is None:
            from confluent_kafka import KafkaError

            self._spool_codes = frozenset(getattr(KafkaError, name) for name in _SPOOL_ERRORS
                                          if hasattr(KafkaError, name))
        return err.code() in self._spool_codes or err.retriable()

    def settle(self) -> None:
        """Empty the journal when nothing is outstanding (every report served; spooled ones on disk)."""
        if self.journal is None:
            return
        self.journal.flush_delivered()
        if self.journal.dirty and len(self.kafka) == 0:
            self.spool.sync()
            self.journal.clear()

    def close(self) -> int:
        """Flush (bounded), spool what is still undelivered, close the files; return the count of
        messages neither delivered nor spooled (0 unless the spool cannot be written)."""
        timeout = self.settings.producer_flush_timeout_s
        remaining = self.kafka.flush(timeout)
        if remaining:
            log.warning("%d message(s) undelivered after the %.0fs flush: spooling them", remaining, timeout)
            self.kafka.purge(in_queue=True, in_flight=True)
            remaining = self.kafka.flush(5.0)  # serves the purged messages' reports: they spool
            if remaining:
                self.failed += remaining
                log.error("%d message(s) neither delivered nor spooled: counted as failed", remaining)
        self.spool.close()
        if self.journal is not None:  # kept when a message is neither delivered nor spooled
            self.journal.close(remove=remaining == 0)
        if self._accepted_fd is not None:
            os.close(self._accepted_fd)
            self._accepted_fd = None
        self.spool.release()
        if self._record is not None:
            self._record.close()
            self._record = None
        return remaining
