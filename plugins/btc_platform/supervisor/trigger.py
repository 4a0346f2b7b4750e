"""Supervision in Airflow's triggerer: the health checks run in the triggerer's event loop and a
worker is woken only when something must be (re)started.

:class:`SupervisionTrigger` runs :func:`btc_platform.supervisor.assess` every
``interval_s`` seconds (in a thread, so the triggerer's event loop never blocks on a file, a
process table or a Kafka query). It fires one event and ends

* ``{"due": {name: reason, ...}, "found_at": ...}`` when a local service, the producer or the
  stream needs a (re)start (the task resumes on a worker, acts, and defers again);
* ``{"ended": True, ...}`` at ``end_at``, when this DAG run's day is over (the task succeeds and
  the next daily run takes over).

A failing check (e.g. an unreadable status file) is logged and retried at the next interval;
the trigger never fires on it. :class:`SupervisorOperator` is the deferrable task of the
``btc_stream_supervisor`` DAG.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

#: How often the trigger writes an "all healthy" line to the task log while nothing happens.
REPORT_EVERY_S = 3600.0


def _parse(moment: str) -> float:
    value = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


class SupervisionTrigger(BaseTrigger):
    """Checks health every ``interval_s`` seconds until something is due or ``end_at`` (ISO)."""

    def __init__(self, end_at: str, interval_s: float, report_every_s: float = REPORT_EVERY_S):
        super().__init__()
        self.end_at = end_at
        self.interval_s = float(interval_s)
        self.report_every_s = float(report_every_s)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"end_at": self.end_at, "interval_s": self.interval_s, "report_every_s": self.report_every_s},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from btc_platform.settings import get_settings
        from btc_platform.supervisor import assess

        settings = get_settings()
        end = _parse(self.end_at)
        checks, last_report = 0, time.monotonic()
        self.log.info("supervising every %g s in the triggerer until %s", self.interval_s, self.end_at)
        while True:
            left = end - time.time()
            if left <= 0:
                self.log.info("supervision run over at %s after %d checks", self.end_at, checks)
                yield TriggerEvent({"ended": True, "end_at": self.end_at, "checks": checks})
                return
            await asyncio.sleep(min(self.interval_s, left))
            try:
                due = await asyncio.to_thread(assess, settings)
            except Exception as exc:  # noqa: BLE001 - one failed look must not end supervision; logged, retried
                self.log.warning("health check failed (%s: %s); next try in %g s", type(exc).__name__, exc,
                            self.interval_s)  # fmt: skip
                continue
            checks += 1
            if due:
                for name, reason in due.items():
                    self.log.warning("%s: needs a (re)start: %s", name, reason)
                yield TriggerEvent({"due": due, "found_at": _iso(time.time()), "checks": checks})
                return
            if time.monotonic() - last_report >= self.report_every_s:
                self.log.info("%d checks, all healthy", checks)
                last_report = time.monotonic()


def run_end(start: datetime | None, days: float, now: datetime | None = None) -> datetime:
    """When a supervision run hands over to the next: ``days`` after the run started (its
    retries keep that end), never before ``now``."""
    now = now or datetime.now(UTC)
    start = start or now
    return max(start + timedelta(days=days), now)


class SupervisorOperator(BaseOperator):
    """Deferrable supervision task: checks and (re)starts on a worker, watches in the triggerer.

    ``execute`` runs every check once (start what is missing), then defers to
    :class:`SupervisionTrigger`. When the trigger reports something due, :meth:`resume` logs
    what the trigger found, runs the checks (they act, with the reason in this task's log) and
    defers again; when the run's day is over it returns. A service that cannot be restarted
    fails the try with the reason (the task's retries check again after ``retry_delay``).
    """

    ui_color = "#d9ecff"

    def __init__(self, *, interval_s: float, run_days: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.interval_s = interval_s
        self.run_days = run_days

    def execute(self, context: Any) -> None:
        from btc_platform.supervisor import ensure_all

        dag_run = context.get("dag_run")
        end_at = run_end(getattr(dag_run, "start_date", None), self.run_days).isoformat()
        ensure_all()
        self._defer(end_at)

    def resume(self, context: Any, event: dict[str, Any] | None = None, end_at: str = "") -> None:
        from btc_platform.supervisor import ensure_all

        event = event or {}
        if event.get("ended"):
            self.log.info("supervision run over (%s checks in the triggerer); the next run takes over",
                          event.get("checks"))  # fmt: skip
            return
        for name, reason in (event.get("due") or {}).items():
            self.log.warning("trigger found at %s: %s needs a (re)start: %s", event.get("found_at"), name, reason)
        ensure_all()
        self._defer(end_at or run_end(None, self.run_days).isoformat())

    def _defer(self, end_at: str) -> None:
        self.log.info("checks done; watching in the triggerer every %g s until %s", self.interval_s, end_at)
        self.defer(
            trigger=SupervisionTrigger(end_at=end_at, interval_s=self.interval_s),
            method_name="resume",
            kwargs={"end_at": end_at},
        )
