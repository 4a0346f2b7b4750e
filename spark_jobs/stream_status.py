"""Progress of the streaming job: one JSON log line per micro-batch and the job's status record.

:func:`make_listener` returns a ``StreamingQueryListener`` that logs every batch's
:func:`progress_record` and keeps the status file (``settings.stream_status_path``, written
atomically with ``btc_platform.status.write_status``) up to date: per query its last progress,
running totals, when it last wrote rows (``last_rows_at``) and state (started, running, stopped,
failed), and the job's position in Kafka
(``end_offset``: per topic/partition the minimum over the queries reading Kafka).

Nothing leaves the stream without a count here: per batch and in total since the job started,
``valid`` and ``quarantined`` records (parsing), ``stored`` rows and ``duplicates`` left out of
raw_data (copies of a ``message_id`` it holds; from the writer's :class:`BatchCounts`), and
``dropped_late``: rows of raw_data that minute_metrics could not window any more (behind its
watermark; they stay in raw_data, and consolidation windows them from there).

pyspark is imported inside :func:`make_listener` so that importing this module stays cheap.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from btc_platform.status import write_status

log = logging.getLogger("spark_jobs.stream_job")

def _min_offsets(offsets: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """Per topic/partition minimum over the queries (the slowest query defines the lag)."""
    merged: dict[str, dict[str, int]] = {}
    for item in offsets:
        for topic, parts in item.items():
            for part, offset in parts.items():
                current = merged.setdefault(topic, {}).get(part)
                merged[topic][part] = offset if current is None else min(current, offset)
    return merged


def _kafka_end_offsets(sources: list[dict[str, Any]]) -> dict[str, Any]:
    """End offsets of the Kafka sources of one progress (file sources have log offsets: skipped)."""
    end_offsets: dict[str, Any] = {}
    for source in sources:
        if "kafka" not in str(source.get("description", "")).lower():
            continue
        end = source.get("endOffset")
        if isinstance(end, str):
            try:
                end = json.loads(end)
            except json.JSONDecodeError:
                log.warning("unreadable Kafka end offset in the progress: %r", end)
                end = None
        if isinstance(end, dict):
            end_offsets.update(end)
    return end_offsets


def progress_record(progress: Any) -> dict[str, Any]:
    """The structured per-batch record (query, batch, rows, rate, duration, watermark, counts)."""
    data = json.loads(progress.json)
    state = data.get("stateOperators") or []
    custom = [op.get("customMetrics") or {} for op in state]
    return {
        "query": data.get("name"),
        "id": data.get("id"),
        "batch_id": data.get("batchId"),
        "timestamp": data.get("timestamp"),
        "input_rows": data.get("numInputRows"),
        "input_rows_per_s": data.get("inputRowsPerSecond"),
        "processed_rows_per_s": data.get("processedRowsPerSecond"),
        "batch_duration_ms": data.get("batchDuration"),
        "phases_ms": data.get("durationMs") or {},  # addBatch, queryPlanning, walCommit, ...
        "watermark": (data.get("eventTime") or {}).get("watermark"),
        "valid": None,  # the ingest writer's counts (with_batch_counts)
        "quarantined": None,
        "state_rows": sum(op.get("numRowsTotal") or 0 for op in state),
        "dropped_duplicates": sum(c.get("numDroppedDuplicateRows") or 0 for c in custom),
        "dropped_late": sum(op.get("numRowsDroppedByWatermark") or 0 for op in state),
        "source_end_offset": _kafka_end_offsets(data.get("sources") or []),
    }


def batch_end(record: dict[str, Any]) -> str | None:
    """When the batch of ``record`` ended (its rows became readable): the progress's
    ``timestamp`` is the batch's start, so a long catch-up batch would otherwise look as if its
    rows were written a batch duration earlier than they were."""
    start = record.get("timestamp")
    if start is None:
        return None
    begun = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
    return (begun + timedelta(milliseconds=record.get("batch_duration_ms") or 0)).isoformat()


#: Per-batch counts summed into ``<name>_total`` since the job started.
TOTALS = ("valid", "quarantined", "input_rows", "stored", "duplicates", "dropped_late")


def with_batch_counts(record: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    """``record`` with the writer's ``counts`` of its batch (``records``, ``quarantined``,
    ``stored``): ``valid`` = records - quarantined, ``duplicates`` = valid - stored."""
    record = {**record, **counts}
    if "records" in counts:
        record["valid"] = counts["records"] - counts.get("quarantined", 0)
        record["quarantined"] = counts.get("quarantined", 0)
    if "stored" in counts and record.get("valid") is not None:
        record["duplicates"] = record["valid"] - counts["stored"]
    return record


def make_listener(status_path: Path, job: str, kafka_queries: Sequence[str], batch_counts: dict | None = None):
    """A StreamingQueryListener that logs each batch as one JSON line and keeps the status file.

    ``job`` names the job in the record; ``kafka_queries`` are the queries whose Kafka end
    offsets make the job's ``end_offset`` (``None`` until each of them reported one);
    ``batch_counts``: per query name, the ``stream_sinks.BatchCounts`` its writer fills.
    """
    batch_counts = batch_counts or {}
    from pyspark.sql.streaming import StreamingQueryListener

    class ProgressListener(StreamingQueryListener):
        def __init__(self) -> None:
            self._lock = threading.Lock()
            self.started_at = datetime.now(UTC).isoformat()
            self.queries: dict[str, dict[str, Any]] = {}

        def _write(self) -> None:
            offsets = [(self.queries.get(name) or {}).get("source_end_offset") for name in kafka_queries]
            record = {
                "job": job,
                "started_at": self.started_at,
                "updated_at": datetime.now(UTC).isoformat(),
                "end_offset": _min_offsets(offsets) if all(offsets) else None,
                "queries": self.queries,
            }
            write_status(status_path, record)

        def onQueryStarted(self, event) -> None:
            log.info("query %s started (id %s, run %s)", event.name, event.id, event.runId)
            with self._lock:
                self.queries.setdefault(
                    event.name or str(event.id), {"state": "started", "id": str(event.id)}
                )
                self._write()

        def onQueryProgress(self, event) -> None:
            record = progress_record(event.progress)
            if record["query"] in batch_counts:
                record = with_batch_counts(record, batch_counts[record["query"]].take(record["batch_id"]))
            log.info("stream progress %s", json.dumps(record, sort_keys=True, default=str))
            with self._lock:
                name = record["query"] or str(event.progress.id)
                previous = self.queries.get(name, {})
                for key in TOTALS:  # totals since the job started
                    record[f"{key}_total"] = (previous.get(f"{key}_total") or 0) + (record.get(key) or 0)
                # when this query last wrote rows (valid ones where it counts them): the monitor's
                # "raw data stale" rule; a batch without rows keeps the previous time
                rows = record["valid"] if record.get("valid") is not None else record["input_rows"]
                record["last_rows_at"] = batch_end(record) if rows else previous.get("last_rows_at")
                self.queries[name] = {**record, "state": "running"}
                self._write()

        def onQueryIdle(self, event) -> None:
            pass  # idle triggers carry no batch; the last progress stays in the status file

        def onQueryTerminated(self, event) -> None:
            if event.exception:
                log.error("query %s failed: %s", event.id, event.exception.splitlines()[0])
            else:
                log.info("query %s stopped", event.id)
            with self._lock:
                for record in self.queries.values():
                    if record.get("id") == str(event.id):
                        record["state"] = "failed" if event.exception else "stopped"
                self._write()

    return ProgressListener()
