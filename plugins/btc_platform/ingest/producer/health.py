"""What the producer tells about itself: per-upstream health, what it waits for, rejected
payloads, and the JSON status record (``btc_platform.status``) that assembles them with the
delivery counters (keys in :mod:`btc_platform.ingest.producer`)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from btc_platform.status import LAST_PUBLISH_KEY
from btc_platform.timestamps import epoch_iso

log = logging.getLogger(__name__)

REJECTED_FILE = "producer_rejected.jsonl"
MAX_GAPS = 20  # gaps kept in the status record (the newest)


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
            "last_poll_ok_at": epoch_iso(self.last_poll_ok),
            LAST_PUBLISH_KEY: epoch_iso(self.last_publish),
            "published": self.published,
            "poll_errors": self.poll_errors,
            "last_error": self.last_error,
            "last_error_at": epoch_iso(self.last_error_at),
        }


class ProducerHealth:
    """Health of the sources behind the producer (the SourceContext's reporting half)."""

    def __init__(self, settings, *, source_mode: str):
        self.settings = settings
        self.source_mode = source_mode
        self.rejected_path: Path = settings.logs_dir / REJECTED_FILE
        self.started_at = time.time()
        self.state = "starting"
        self.rejected = self.retried = 0
        self.upstreams: dict[str, UpstreamHealth] = {}
        self.http_errors: dict[str, dict[str, int]] = {}
        self.waiting: dict[str, dict[str, Any]] = {}
        self.gaps: list[dict[str, Any]] = []

    def upstream(self, name: str) -> UpstreamHealth:
        health = self.upstreams.get(name)
        if health is None:
            health = self.upstreams[name] = UpstreamHealth()
        return health

    def poll_ok(self, source: str) -> None:
        self.upstream(source).last_poll_ok = time.time()

    def poll_failed(self, source: str, error: BaseException) -> None:
        health = self.upstream(source)
        health.poll_errors += 1
        health.last_error = f"{type(error).__name__}: {error}"
        health.last_error_at = time.time()

    def set_waiting(self, upstream: str, reason: str | None, until: float | None, **details: Any) -> None:
        if reason is None:
            self.waiting.pop(upstream, None)
        else:
            self.waiting[upstream] = {"reason": reason, "until": epoch_iso(until), **details}

    def open_gap(self, reason: str) -> None:
        """The producer stopped polling its source: a gap in the data starts now (also a
        ``waiting`` entry, so the supervisor knows the producer is not stuck)."""
        now = epoch_iso(time.time())
        self.gaps = [*self.gaps[-(MAX_GAPS - 1):], {"start": now, "end": None, "reason": reason}]
        self.waiting["spool"] = {"reason": "spool_full", "until": None, "since": now, "detail": reason}

    def close_gap(self) -> None:
        """Polling resumed (or the producer stopped): the open gap ends now."""
        if self.gaps and self.gaps[-1]["end"] is None:
            self.gaps[-1]["end"] = epoch_iso(time.time())
        self.waiting.pop("spool", None)

    @property
    def in_gap(self) -> bool:
        return bool(self.gaps) and self.gaps[-1]["end"] is None

    def reject(self, source: str, reason: str, payload: Any) -> None:
        """Count, log and keep (with the reason) a payload that cannot become a message."""
        self.rejected += 1
        log.warning("rejected %s payload: %s", source, reason)
        if isinstance(payload, bytes):
            payload = payload.decode("utf-8", errors="replace")
        line = json.dumps({"rejected_at": epoch_iso(time.time()), "source": source, "reason": reason,
                           "payload": payload}, default=str)
        self.rejected_path.parent.mkdir(parents=True, exist_ok=True)
        with self.rejected_path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def status(self, delivery: dict[str, Any]) -> dict[str, Any]:
        """The status record: identity and state, the ``delivery`` counters, per-upstream health,
        the gaps in polling (``{"start", "end", "reason"}``, ``end`` null while it lasts)."""
        now = time.time()
        for health in self.upstreams.values():
            if health.published != health.reported:
                health.reported, health.last_publish = health.published, now
        publishes = [h.last_publish for h in self.upstreams.values() if h.last_publish]
        polls = [h.last_poll_ok for h in self.upstreams.values() if h.last_poll_ok]
        return {
            "pid": os.getpid(),
            "source_mode": self.source_mode,
            "state": self.state,
            "started_at": epoch_iso(self.started_at),
            "updated_at": epoch_iso(now),
            "topic": self.settings.kafka_topic,
            "bootstrap_servers": self.settings.kafka_bootstrap_servers,
            "accepted": delivery["accepted"],
            "published": delivery["published"],
            "failed": delivery["failed"],
            "rejected": self.rejected,
            "retried": self.retried,
            "in_flight": delivery["in_flight"],
            "spooled": delivery["spooled"],
            "from_spool": delivery["from_spool"],
            "from_journal": delivery["from_journal"],
            LAST_PUBLISH_KEY: epoch_iso(max(publishes)) if publishes else None,
            "last_poll_ok_at": epoch_iso(max(polls)) if polls else None,
            "sources": {name: h.as_dict() for name, h in sorted(self.upstreams.items())},
            "http_errors": self.http_errors,
            "waiting": dict(self.waiting),
            "refused": delivery["refused"],
            "spool_bytes": delivery["spool_bytes"],
            "spool_max_bytes": delivery["spool_max_bytes"],
            "gaps": [dict(gap) for gap in self.gaps],
            "fatal_error": delivery["fatal_error"],
        }
