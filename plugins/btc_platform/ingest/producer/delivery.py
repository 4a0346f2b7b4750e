"""Publishing: hands messages to librdkafka and settles each one by its delivery report.

Kafka: confluent-kafka ``Producer`` with ``enable.idempotence=true`` and ``acks=all``, key =
symbol, value = ``schema.encode`` bytes. Every accepted message is journaled first
(:mod:`~btc_platform.ingest.producer.journal`); its delivery report then settles it, and only then
may the journal forget it:

* confirmed: ``published``;
* refused for good, for these very bytes (``REFUSAL_ERRORS``: too large, invalid or corrupt record,
  policy violation): appended with the error to ``<data_dir>/spool/producer.refused.jsonl``
  (fsync'ed before the journal forgets it), counted in ``refused`` and ``failed``, never re-sent
  by itself;
* any other error (broker gone, timeouts, purge at stop, unknown or deleted topic, authorization,
  a fatal producer error, ...): spooled for a later send (``spooled``,
  :mod:`~btc_platform.ingest.producer.spool`): a later send can succeed once the cause is fixed.

A message whose outcome cannot be written (the spool or refused file fails) is counted
``failed`` and pins the journal (kept whole for the next start). A fatal producer error
(confluent-kafka raises it from ``poll``/``flush``/``produce``; with idempotence, e.g. a
gap-less guarantee that cannot be kept) stops the producer, pins the journal and makes the exit
code non-zero. While the local queue is full the caller waits (backpressure), nothing is dropped.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from btc_platform.ingest.producer.health import ProducerHealth
from btc_platform.ingest.producer.journal import AcceptedLog, Journal, message_id_of
from btc_platform.ingest.producer.spool import RefusedFile, Spool
from btc_platform.timestamps import epoch_iso

log = logging.getLogger(__name__)

#: Delivery errors that no later send of the same bytes can overcome: the message is refused.
REFUSAL_ERRORS = ("MSG_SIZE_TOO_LARGE", "_MSG_SIZE_TOO_LARGE", "INVALID_RECORD", "CORRUPT_MESSAGE",
                  "INVALID_MSG", "INVALID_MSG_SIZE", "POLICY_VIOLATION", "INVALID_TIMESTAMP", "_BAD_MSG")
REFUSED_FILE = "producer.refused.jsonl"
_LOG_EVERY_FAILURE = 20  # log the first N delivery failures individually, then every 1000th


class ThrottledLog:
    """Logger facade for librdkafka: the same kind of message at most once per ``every_s`` seconds
    (a broker that is down is otherwise reported several times a second)."""

    def __init__(self, logger: logging.Logger, every_s: float = 30.0):
        self.logger = logger
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.fatal: str | None = None  # librdkafka's last FATAL line (the reason of a fatal error)

    def _allow(self, kind: str) -> int | None:
        now = time.monotonic()
        if now - self._last.get(kind, -self.every_s) < self.every_s:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._suppressed.pop(kind, 0)

    def log(self, level: int, msg: str, *args: Any) -> None:
        kind = str(args[0]) if args else msg  # librdkafka passes (fac, name, message)
        if kind == "FATAL":
            self.fatal = str(args[-1])
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


def _kafka_exception() -> type[Exception]:
    from confluent_kafka import KafkaException

    return KafkaException


def is_fatal(exc: Any) -> bool:
    """``exc`` (a KafkaException, or a KafkaError, or caused by one) is a fatal producer error."""
    while exc is not None:
        error = exc if hasattr(exc, "fatal") else (exc.args[0] if getattr(exc, "args", None) else None)
        if hasattr(error, "fatal") and error.fatal():
            return True
        exc = getattr(exc, "__cause__", None)
    return False


class Publisher:
    """The librdkafka producer with the platform's bookkeeping around it (module docstring).

    ``accept`` + ``kafka.produce`` is the fast path (the producer loop inlines it, calling
    ``produce_failed`` when produce raises); ``publish`` waits while the local queue is full,
    calling ``service`` between attempts. Delivery reports are served by ``poll``/``flush``."""

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
        self.accepted = self.published = self.failed = self.refused = 0
        self.published_at_spool = 0  # ``published`` when the spool was last appended to
        self.fatal: str | None = None
        self.latencies: list[float] | None = [] if collect_latency else None
        self.refused_file = RefusedFile(Path(settings.producer_spool_path).with_name(REFUSED_FILE))
        self._callbacks: dict[str, Any] = {}
        self._refusal_codes: frozenset[int] | None = None
        self._accepted = AcceptedLog(settings.producer_accepted_log) if settings.producer_accepted_log else None
        self._record = open(record_path, "ab") if record_path else None  # closed in close()
        self._kafka_log = ThrottledLog(log)
        self._librdkafka_log = ThrottledLog(logging.getLogger("librdkafka"))
        self.kafka = Producer(kafka_config(settings, error_cb=self.on_kafka_error, logger=self._librdkafka_log,
                                           **(kafka_overrides or {})))

    @property
    def bookkeeping(self) -> Callable[[bytes], None] | None:
        """``accept``, or None when there is nothing to record of an accepted message."""
        return self.accept if (self.journal is not None or self._accepted is not None) else None

    def accept(self, value: bytes) -> None:
        """Bookkeeping of a message about to be handed to librdkafka."""
        if self.journal is not None:
            self.journal.accept(value)
        if self._accepted is not None:
            self._accepted.write(value)

    def publish(self, key: bytes, value: bytes, source: str, *, journaled: bool = False) -> bool:
        """Hand one message to librdkafka; wait (serving reports) while its queue is full.

        ``journaled``: already on disk (journaled, or read back from the spool). Returns False
        when the producer must stop: a stop was requested while the queue stayed full past the
        flush timeout, or the producer failed fatally (the message is spooled then); a message
        that produce refuses is kept as refused (``produce_failed``) and counts as handled.
        """
        callback = self._callbacks.get(source) or self.callback(source)
        if not journaled:
            self.accept(value)
        stop_seen: float | None = None
        while True:
            try:
                self.kafka.produce(self.topic, value, key, on_delivery=callback)
                self.accepted += 1
                return True
            except BufferError:
                if self._stop.is_set():
                    stop_seen = stop_seen or time.monotonic()
                    if time.monotonic() - stop_seen > self.settings.producer_flush_timeout_s:
                        self._spool(value)
                        log.error("stopping with the Kafka queue still full: message for %s spooled", key)
                        return False
            except _kafka_exception() as exc:
                self.produce_failed(value, exc)
                return self.fatal is None
            self.poll(0.05)
            self._service()

    def produce_failed(self, value: bytes, exc: Exception) -> None:
        """``produce`` raised (the message never reached the queue): refused when the error is
        one of ``REFUSAL_ERRORS`` (e.g. over message.max.bytes), else spooled (e.g. a deleted
        topic; a fatal producer state also stops the producer)."""
        error = exc.args[0] if exc.args else exc
        self.accepted += 1  # taken from the source (journaled), settled here
        if is_fatal(exc):
            self._on_fatal(exc)
        if hasattr(error, "code") and self._refusal(error):
            self._refuse(value, error)
        else:
            self._spool(value)

    def poll(self, timeout: float) -> None:
        """Serve delivery reports for up to ``timeout`` s (a fatal error stops the producer)."""
        try:
            self.kafka.poll(timeout)
        except:  # noqa: E722 - in its fatal state confluent-kafka may raise a KafkaError, no exception
            self._raised(sys.exc_info()[1])

    def flush(self, timeout: float) -> int:
        """``kafka.flush``: the count of messages still outstanding after ``timeout`` s."""
        try:
            return self.kafka.flush(timeout)
        except:  # noqa: E722 - see poll
            self._raised(sys.exc_info()[1])
            return len(self.kafka)

    def _raised(self, exc: Any) -> None:
        """confluent-kafka raises a fatal error from poll/flush instead of calling ``error_cb``; when
        Python code ran in between (a delivery report, the librdkafka logger) it surfaces as a
        SystemError, with or without the fatal error as its cause, or as a bare KafkaError object.
        All of it is the fatal state (nothing of the C extension's state is to be trusted then);
        anything else is raised again."""
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise exc
        odd = isinstance(exc, SystemError) or not isinstance(exc, BaseException)
        if self.fatal is None and not odd and not is_fatal(exc):
            raise exc
        self._on_fatal(exc)

    def _on_fatal(self, exc: Any) -> None:
        if self.fatal is None:
            self.fatal = self._librdkafka_log.fatal or str(getattr(exc, "__cause__", None) or exc)
            log.error("fatal Kafka producer error, stopping (the journal is kept for the next start): %s",
                      self.fatal)
        if self.journal is not None:  # a report may have been lost with the exception
            self.journal.pinned = True
        self._stop.set()

    def on_kafka_error(self, err) -> None:
        from confluent_kafka import KafkaError

        waiting = self.health.waiting
        if err.fatal():  # confluent-kafka raises fatal errors instead; kept for other versions
            self._on_fatal(Exception(err))
        elif err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            if err.code() == KafkaError._ALL_BROKERS_DOWN and "kafka" not in waiting:
                waiting["kafka"] = {"reason": "broker_unreachable", "since": epoch_iso(time.time())}
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
                elif self._refusal(err):
                    self._refuse(msg.value(), err)
                else:
                    self._spool(msg.value())

            self._callbacks[source] = callback
        return callback

    def _refusal(self, err) -> bool:
        if self._refusal_codes is None:
            from confluent_kafka import KafkaError

            self._refusal_codes = frozenset(getattr(KafkaError, name) for name in REFUSAL_ERRORS
                                            if hasattr(KafkaError, name))
        return err.code() in self._refusal_codes

    def _spool(self, value: bytes) -> None:
        try:
            self.spool.append(value)
        except OSError as exc:
            self._unsettled(value, f"spooling failed: {exc}")
        self.published_at_spool = self.published

    def _refuse(self, value: bytes, error: Any) -> None:
        """Keep a message Kafka refused for good, with the error, out of every re-send."""
        self.refused += 1
        self.failed += 1
        if self.refused <= _LOG_EVERY_FAILURE or self.refused % 1000 == 0:
            log.error("Kafka refused a message (%d so far), kept in %s: %s", self.refused, self.refused_file.path,
                      error)
        try:
            self.refused_file.append(value, str(error), epoch_iso(time.time()))
        except OSError as exc:
            self.failed -= 1  # counted by _unsettled
            self._unsettled(value, f"keeping a refused message failed: {exc}")

    def _unsettled(self, value: bytes, why: str) -> None:
        self.failed += 1
        if self.journal is not None:
            self.journal.pinned = True
        log.error("%s: message %s is neither delivered nor kept%s", why, message_id_of(value).decode(),
                  " (the journal keeps it for the next start)" if self.journal is not None else "")

    def _sync_kept(self) -> None:
        self.spool.sync()
        self.refused_file.sync()

    def settle(self) -> bool:
        """When nothing is outstanding (every report served), make the spooled and refused
        messages durable and empty the journal; True then."""
        if self.journal is not None:
            self.journal.flush_delivered()
        if len(self.kafka) != 0:
            return False
        self._sync_kept()
        if self.journal is not None and self.journal.dirty:
            self.journal.clear()
        return True

    def close(self) -> int:
        """Flush (bounded), spool what is still undelivered, close the files; return the count of
        messages neither delivered nor kept (0 unless the spool cannot be written)."""
        timeout = self.settings.producer_flush_timeout_s
        remaining = self.flush(timeout)
        if remaining:
            log.warning("%d message(s) undelivered after the %.0fs flush: spooling them", remaining, timeout)
            self.kafka.purge(in_queue=True, in_flight=True)
            remaining = self.flush(5.0)  # serves the purged messages' reports: they spool
            if remaining:
                self.failed += remaining
                log.error("%d message(s) neither delivered nor spooled: counted as failed", remaining)
        self.spool.close()
        self.refused_file.close()
        if self.journal is not None:  # kept when a message is neither delivered nor kept
            self.journal.close(remove=remaining == 0)
        if self._accepted is not None:
            self._accepted.close()
        if self._record is not None:
            self._record.close()
            self._record = None
        return remaining
