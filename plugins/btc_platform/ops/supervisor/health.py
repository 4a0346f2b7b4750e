"""Health observations of the supervised processes: the producer's last publish and the stream's
last progress and offsets (from their status files), Kafka end offsets and the stream's lag
(real broker query), and the producer's reports of unreachable live APIs (from its log).

confluent_kafka is imported only by the lag query: DAG files reach this module at parse time
(through the supervisor's trigger).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from btc_platform.ops.process import ProcessError, log_tail
from btc_platform.ops.supervisor.launch import PRODUCER, log_path
from btc_platform.settings import Settings
from btc_platform.status import LAST_PUBLISH_KEY, read_status

log = logging.getLogger(__name__)

#: Text the producer logs when the live APIs cannot be reached; surfaced in the task log.
OFFLINE_HINT = "make run SOURCE=simulate"
#: How the supervisor's start header in a process log begins (after ``==== <time> ``).
START_HEADER = "supervisor starts"

PROGRESS_TIME_KEYS = ("timestamp", "last_progress_time", "last_batch_time", "updated_at")


class SupervisorError(ProcessError):
    """The supervisor cannot do its job (lock held too long, process refuses to start...)."""


def _parse_time(value: Any) -> float | None:
    """Epoch seconds from an ISO-8601 string (``Z`` or offset) or a number (s or ms)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value) / 1000.0 if value > 1e11 else float(value)
    text = str(value).replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        log.debug("not a time: %r", value)
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _latest(record: Any, keys: tuple[str, ...]) -> float | None:
    """Newest time found under any of ``keys`` anywhere in a (nested) status record."""
    best: float | None = None
    if isinstance(record, dict):
        for key, value in record.items():
            if key in keys and not isinstance(value, (dict, list)):
                moment = _parse_time(value)
            else:
                moment = _latest(value, keys)
            if moment is not None and (best is None or moment > best):
                best = moment
    elif isinstance(record, list):
        for item in record:
            moment = _latest(item, keys)
            if moment is not None and (best is None or moment > best):
                best = moment
    return best


def last_publish_time(settings: Settings) -> float | None:
    """Epoch seconds of the producer's last successful publish (from its status file)."""
    return _latest(read_status(settings.producer_status_path), (LAST_PUBLISH_KEY,))


def producer_waiting(settings: Settings, now: float, fresh_s: float) -> str | None:
    """What a live producer is legitimately waiting for, from its status record, or None.

    The record's ``waiting`` entries (an upstream's IP ban or 429 pause with its end, an
    upstream failing with 5xx / transport errors / invalid JSON that the producer backs off
    from, Kafka unreachable since a time) count only while the record itself is fresher than
    ``fresh_s`` (the producer is alive and servicing); bans and pauses while their end is ahead,
    failures while the last one or the next attempt is within ``fresh_s`` of now (a producer
    that stopped trying is not waiting, it is stuck).
    """
    record = read_status(settings.producer_status_path) or {}
    updated = _parse_time(record.get("updated_at"))
    waiting = record.get("waiting")
    if updated is None or now - updated > fresh_s or not isinstance(waiting, dict):
        return None
    reasons = []
    for upstream, entry in sorted(waiting.items()):
        if not isinstance(entry, dict):
            continue
        until = _parse_time(entry.get("until"))
        if entry.get("reason") == "exchange_failing":
            last = _parse_time(entry.get("last_failure"))
            after = _parse_time(entry.get("next_attempt"))
            recent = max(last or 0.0, after or 0.0)
            if now - recent <= fresh_s:
                when = "" if after is None else f", next attempt at {entry.get('next_attempt')} ({after - now:.0f} s)"
                reasons.append(f"{upstream} failing: {entry.get('failures')} failed attempts ({entry.get('kind')}: "
                               f"{entry.get('detail')}) since {entry.get('since')}, backing off{when}")  # fmt: skip
        elif until is not None and until > now:
            reasons.append(f"{upstream} {entry.get('reason')} until {entry.get('until')} ({until - now:.0f} s more)")
        elif until is None and entry.get("since"):
            reasons.append(f"{upstream} {entry.get('reason')} since {entry.get('since')}")
    return "; ".join(reasons) or None


def last_stream_progress(settings: Settings) -> float | None:
    """Epoch seconds of the streaming job's last batch progress (from its status file)."""
    return _latest(read_status(settings.stream_status_path), PROGRESS_TIME_KEYS)


def stream_offsets(settings: Settings) -> dict[int, int] | None:
    """Per-partition Kafka offsets the stream has processed up to (end offsets of its last
    batch, as Spark reports them: ``{"<topic>": {"<partition>": offset}}``), or None."""
    record = read_status(settings.stream_status_path)
    found: dict[int, int] = {}

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("end_offset", "endOffset", "end_offsets", "endOffsets"):
                    value = json.loads(value) if isinstance(value, str) else value
                    if isinstance(value, dict) and isinstance(value.get(settings.kafka_topic), dict):
                        for part, offset in value[settings.kafka_topic].items():
                            found[int(part)] = max(found.get(int(part), -1), int(offset))
                        continue
                visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(record)
    return found or None


def kafka_end_offsets(settings: Settings, timeout_s: float = 10.0) -> dict[int, int]:
    """High watermarks of every partition of the topic (real broker query via confluent_kafka)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": "btc-supervisor-lag-check",
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(settings.kafka_topic, timeout=timeout_s)
        topic = metadata.topics.get(settings.kafka_topic)
        if topic is None or topic.error is not None:
            raise SupervisorError(f"topic {settings.kafka_topic!r} not available: {topic and topic.error}")
        return {
            part: consumer.get_watermark_offsets(
                TopicPartition(settings.kafka_topic, part), timeout=timeout_s
            )[1]
            for part in sorted(topic.partitions)
        }
    finally:
        consumer.close()


def stream_lag(settings: Settings) -> int | None:
    """Messages in Kafka the stream has not processed yet, or None when unknown."""
    processed = stream_offsets(settings)
    if processed is None:
        return None
    ends = kafka_end_offsets(settings)
    return sum(max(0, end - processed.get(part, 0)) for part, end in ends.items())


def producer_problems(settings: Settings, max_lines: int = 200) -> list[str]:
    """Recent producer log lines that say the live APIs are unreachable (to echo them)."""
    lines = log_tail(log_path(settings, PRODUCER), max_lines).splitlines()
    # only lines after the last (re)start of the producer
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("==== ") and START_HEADER in lines[index]:
            lines = lines[index + 1 :]
            break
    return [line for line in lines if "unreachable" in line.lower() or OFFLINE_HINT in line][-3:]
