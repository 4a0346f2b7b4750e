"""The producer's backlog: what earlier runs or earlier failures left undelivered on disk.

* At start, every message a killed run journaled without a confirmation is sent again, then the
  spool, byte for byte (same ``message_id``), before anything new.
* While running, the spool is sent again (drained) as soon as Kafka can take it: a delivery was
  confirmed after the last message was spooled, or (while the producer holds) a metadata request
  finds the broker and the topic. One drain at a time: its file is released once everything sent
  from it is settled, so a message is never in two drains.
* The spool is bounded (``producer_spool_max_mb``): when what it holds (plus, while Kafka is
  unreachable, an estimate of what librdkafka still queues) reaches the bound, the producer stops
  polling its source (:meth:`full`) and resumes once the spool drained below half the bound
  (:meth:`drained`). The gap is recorded by the producer's health (``gaps``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from btc_platform.ingest.producer.delivery import Publisher
from btc_platform.ingest.producer.health import ProducerHealth
from btc_platform.ingest.producer.journal import Journal
from btc_platform.ingest.producer.spool import Spool

log = logging.getLogger(__name__)

MIB = 1024 * 1024
MESSAGE_BYTES = 512  # what a queued message is taken to weigh before the spool tells its mean size


class Backlog:
    """Re-sends the journal and the spool, and keeps the spool within its bound (module docstring)."""

    def __init__(self, settings, publisher: Publisher, health: ProducerHealth, *, spool: Spool,
                 journal: Journal | None, reject: Callable[[str, str, Any], None]):
        self.settings = settings
        self.publisher = publisher
        self.health = health
        self.spool = spool
        self.journal = journal
        self.reject = reject
        self.max_bytes = int(settings.producer_spool_max_mb * MIB)
        self.from_spool = self.from_journal = 0
        self.draining = False
        self._next_probe = 0.0

    # ---- re-sending ----------------------------------------------------------------------------
    def _resend(self, value: bytes, kind: str, where: str, *, journaled: bool) -> bool | None:
        """Publish a message read back from the journal or the spool (``kind``); None if the line
        is not a message (a line cut by a kill: rejected, saying ``where`` it was)."""
        try:
            head = json.loads(value)
            key, source = head["symbol"].encode("utf-8"), head["source"]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self.reject(kind, f"{where}: {exc}", value[:500])
            return None
        return self.publisher.publish(key, value, source, journaled=journaled)

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
            sent = self._resend(value, "journal", f"{recovering.name} message {number}", journaled=False)
            if sent is False:
                break  # stopped with a full queue: that one is spooled, the rest stays journaled
            count += sent is True
        else:
            Journal.remove(recovering)  # every message in it is journaled again (or spooled)
        self.from_journal += count
        log.warning("re-sent %d message(s) a killed run had accepted but Kafka had not confirmed (%s)",
                    count, recovering)
        return count

    def send_spool(self) -> int:
        """Hand the spooled messages to Kafka (not journaled: the taken file keeps them until
        ``release``); returns how many."""
        if self.draining:
            return 0
        sending = self.spool.take()
        if sending is None:
            return 0
        self.draining = True
        count = 0
        stopped = False
        for lineno, value in Spool.lines(sending):
            if stopped:  # stopped with a full queue: the rest stays spooled
                self.spool.append(value)
                continue
            sent = self._resend(value, "spool", f"{sending.name} line {lineno}", journaled=True)
            stopped = sent is False
            count += sent is True
        self.draining = False
        self.from_spool += count
        log.info("re-sent %d spooled message(s) from %s", count, sending)
        return count

    def release(self) -> None:
        """Everything sent from the taken spool file is settled (called when nothing is outstanding)."""
        if not self.draining:
            self.spool.release()

    def drain_if_due(self, *, probe: bool) -> int:
        """Send the spool again when Kafka can take it (module docstring); returns how many."""
        if self.draining or self.spool.taken or self.spool.file_bytes == 0 or self.publisher.fatal:
            return 0
        due = self.publisher.published > self.publisher.published_at_spool
        if not due and probe and time.monotonic() >= self._next_probe:
            self._next_probe = time.monotonic() + self.settings.producer_status_interval_s
            due = len(self.publisher.kafka) == 0 and self.topic_ready()
        return self.send_spool() if due else 0

    def topic_ready(self) -> bool:
        """Kafka answers and knows the topic (a metadata request: no message is sent)."""
        from confluent_kafka import KafkaException

        topic_name = self.settings.kafka_topic
        try:
            topic = self.publisher.kafka.list_topics(topic_name, timeout=2.0).topics.get(topic_name)
        except KafkaException as exc:
            log.debug("Kafka metadata for %s: %s", topic_name, exc)
            return False
        return topic is not None and topic.error is None and bool(topic.partitions)

    # ---- the bound ---------------------------------------------------------------------------
    def held_bytes(self) -> int:
        """Undelivered bytes on disk, plus (while Kafka is unreachable) what librdkafka queues,
        which is bound to be spooled too (at the spool's mean message size)."""
        held = self.spool.held_bytes
        if "kafka" in self.health.waiting:
            spool = self.spool
            mean = spool.file_bytes // spool.spooled if spool.spooled and spool.file_bytes else MESSAGE_BYTES
            held += len(self.publisher.kafka) * mean
        return held

    def full(self) -> bool:
        return self.held_bytes() >= self.max_bytes

    def drained(self) -> bool:
        return self.held_bytes() < self.max_bytes // 2

    def full_reason(self) -> str:
        kafka = self.health.waiting.get("kafka")
        why = f"; Kafka {kafka['reason']} since {kafka['since']}" if kafka else ""
        return (f"spool_full: {_size(self.held_bytes())} of undelivered messages held, bound "
                f"{_size(self.max_bytes)} (producer_spool_max_mb){why}")


def _size(count: int) -> str:
    return f"{count / MIB:.1f} MiB" if count >= MIB else f"{count / 1024:.1f} KiB"
