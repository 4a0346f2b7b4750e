"""``FeedProducer``: the loop that moves a source's messages into Kafka, and the source's context.

It puts the parts together: :class:`~btc_platform.ingest.producer.delivery.Publisher` (librdkafka
and delivery reports), :class:`~btc_platform.ingest.producer.journal.Journal` and
:class:`~btc_platform.ingest.producer.spool.Spool` (what is on disk until Kafka confirmed it),
:class:`~btc_platform.ingest.producer.backlog.Backlog` (re-sending them, the spool's bound),
:class:`~btc_platform.ingest.producer.health.ProducerHealth` (the status record). At start it
re-sends what a killed run journaled, then the spool, then runs the source. While the spool is
full it holds: the source is not polled (no ``next`` on its iterator, ``idle`` does not return),
delivery reports are served and the spool drained, and the gap is in the status record.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from btc_platform.ingest.producer.backlog import Backlog
from btc_platform.ingest.producer.delivery import Publisher
from btc_platform.ingest.producer.health import ProducerHealth
from btc_platform.ingest.producer.journal import Journal
from btc_platform.ingest.producer.spool import Spool
from btc_platform.status import write_status

log = logging.getLogger(__name__)


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
        self.settings = settings
        self.source_mode = source_mode
        self.topic = settings.kafka_topic
        self.status_path = Path(status_path or settings.producer_status_path)
        self.health = ProducerHealth(settings, source_mode=source_mode)
        self.spool = Spool(settings.producer_spool_path)
        self.journal = Journal(settings.producer_journal_path) if settings.producer_journal else None
        self._stop = threading.Event()
        self._deadline: float | None = None
        self._next_status = 0.0
        self.publisher = Publisher(
            settings, self.health, journal=self.journal, spool=self.spool, stop=self._stop, service=self._service,
            record_path=record_path, kafka_overrides=kafka_overrides, collect_latency=collect_latency,
        )  # fmt: skip
        self.backlog = Backlog(settings, self.publisher, self.health, spool=self.spool, journal=self.journal,
                               reject=self.reject)

    # ---- counters (the status record's, also read by tests and benchmarks) --------------------
    @property
    def accepted(self) -> int:
        return self.publisher.accepted

    @property
    def published(self) -> int:
        return self.publisher.published

    @property
    def failed(self) -> int:
        return self.publisher.failed

    @property
    def spooled(self) -> int:
        return self.spool.spooled

    @property
    def from_spool(self) -> int:
        return self.backlog.from_spool

    @property
    def from_journal(self) -> int:
        return self.backlog.from_journal

    def send_spool(self) -> int:
        return self.backlog.send_spool()

    def send_journal(self) -> int:
        return self.backlog.send_journal()

    @property
    def rejected(self) -> int:
        return self.health.rejected

    @property
    def retried(self) -> int:
        return self.health.retried

    @property
    def latencies(self) -> list[float] | None:
        return self.publisher.latencies

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
        """Wait ``seconds`` while serving delivery reports and the status (and longer while the
        spool is full, see :meth:`hold`); False once stopping."""
        end = time.monotonic() + seconds
        while not self.stopping():
            self.backlog.drain_if_due(probe=False)
            if self.backlog.full() and not self.hold():
                return False
            remaining = end - time.monotonic()
            if remaining <= 0:
                return True
            self.publisher.poll(min(remaining, 0.2))
            self._service()
        return False

    def hold(self) -> bool:
        """The spool is full: stop polling the source (record the gap) until it drained below
        half its bound, serving reports and draining meanwhile; False once stopping."""
        reason = self.backlog.full_reason()
        log.error("stopped polling the source: %s", reason)
        self.health.open_gap(reason)
        self.write_status()
        try:
            while not self.stopping():
                self.publisher.poll(0.2)
                self._service()
                self.backlog.drain_if_due(probe=True)
                if self.backlog.drained():
                    log.warning("spool drained (%d bytes held): polling the source again",
                                self.backlog.held_bytes())
                    return True
            return False
        finally:
            self.health.close_gap()

    def sleep(self, seconds: float) -> None:
        """``sleep`` for the HTTP clients: a wait that keeps the producer serviced."""
        self.idle(seconds)

    def poll_ok(self, source: str) -> None:
        self.health.poll_ok(source)

    def poll_failed(self, source: str, error: BaseException) -> None:
        self.health.poll_failed(source, error)

    def set_retried(self, count: int) -> None:
        self.health.retried = count

    def set_http_errors(self, errors: dict[str, dict[str, int]]) -> None:
        self.health.http_errors = errors

    def set_waiting(self, upstream: str, reason: str | None, until: float | None, **details: Any) -> None:
        self.health.set_waiting(upstream, reason, until, **details)

    def reject(self, source: str, reason: str, payload: Any) -> None:
        self.health.reject(source, reason, payload)

    # ---- status ------------------------------------------------------------------------------
    def _service(self) -> None:
        if self.journal is not None:
            self.journal.flush_delivered()
        now = time.monotonic()
        if now >= self._next_status:
            self._next_status = now + self.settings.producer_status_interval_s
            if self.publisher.settle():
                self.backlog.release()
            self.write_status()

    def status(self) -> dict[str, Any]:
        publisher = self.publisher
        return self.health.status({
            "accepted": publisher.accepted, "published": publisher.published, "failed": publisher.failed,
            "in_flight": len(publisher.kafka), "spooled": self.spool.spooled, "from_spool": self.from_spool,
            "from_journal": self.from_journal, "refused": publisher.refused, "spool_bytes": self.spool.held_bytes,
            "spool_max_bytes": self.backlog.max_bytes, "fatal_error": publisher.fatal,
        })  # fmt: skip

    def write_status(self) -> None:
        write_status(self.status_path, self.status())

    # ---- run ---------------------------------------------------------------------------------
    def request_stop(self, signum: int | None = None, _frame: Any = None) -> None:
        if signum is not None:
            log.info("received %s: stopping and flushing", signal.Signals(signum).name)
        self._stop.set()

    def run(self, source, *, max_messages: int | None = None, duration_s: float | None = None) -> int:
        """Publish until the source ends, ``max_messages``, ``duration_s`` or a signal; return an exit code."""
        from confluent_kafka import KafkaException

        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self.request_stop)
        if duration_s is not None:
            self._deadline = time.monotonic() + duration_s
        self.health.state = "running"
        self.write_status()
        log.info("producer started: source=%s topic=%s bootstrap=%s", self.source_mode, self.topic,
                 self.settings.kafka_bootstrap_servers)
        count = 0
        self.send_journal()
        self.send_spool()
        iterator = source.messages(self)
        publisher, backlog = self.publisher, self.backlog
        produce, topic, callbacks = publisher.kafka.produce, self.topic, publisher._callbacks
        bookkeeping = publisher.bookkeeping
        try:
            for key, value, src in iterator:
                callback = callbacks.get(src) or publisher.callback(src)
                try:  # fast path inline; publish() waits while the local queue is full
                    if bookkeeping is not None:
                        bookkeeping(value)
                    produce(topic, value, key, on_delivery=callback)
                    publisher.accepted += 1
                except BufferError:
                    if not publisher.publish(key, value, src, journaled=True):
                        break
                except KafkaException as exc:
                    publisher.produce_failed(value, exc)
                count += 1
                if max_messages is not None and count >= max_messages:
                    log.info("max messages (%d) reached", max_messages)
                    break
                if count & 255 == 0:
                    publisher.poll(0)
                    self._service()
                    backlog.drain_if_due(probe=False)
                    if self.stopping() or (backlog.full() and not self.hold()):
                        break
                elif self._stop.is_set():
                    break
        finally:
            iterator.close()
            self.health.state = "stopping"
            remaining = self.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        ok = remaining == 0 and self.failed == 0 and self.publisher.fatal is None
        log.info("producer stopped: accepted=%d published=%d failed=%d rejected=%d retried=%d spooled=%d",
                 self.accepted, self.published, self.failed, self.rejected, self.retried, self.spooled)
        return 0 if ok else 1

    def close(self) -> int:
        """Flush (bounded), spool what is still undelivered, write the final status; return the
        count of messages neither delivered nor spooled (0 unless the spool cannot be written)."""
        remaining = self.publisher.close()
        if remaining == 0:  # everything sent from a taken spool file is delivered or kept again
            self.backlog.release()
        self.health.state = "stopped"
        self.write_status()
        return remaining
