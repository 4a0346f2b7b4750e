"""Supervision in Airflow's triggerer: the health checks run in the triggerer's event loop and a
worker is woken only when something must be (re)started.

:class:`SupervisionTrigger` runs :func:`btc_platform.ops.supervisor.watch.watch` (every
``interval_s`` seconds :func:`btc_platform.ops.supervisor.assess`, in a thread) and fires its one
event: something is due (the task resumes on a worker, acts, and defers again), or ``end_at``
is reached (the task succeeds and the next run of the ``@continuous`` DAG takes over).
:class:`SupervisorOperator` is the deferrable task of the ``btc_stream_supervisor`` DAG.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

from btc_platform.ops.supervisor.watch import REPORT_EVERY_S, check, handle, recent_failure, run_end, watch
from btc_platform.settings import get_settings


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
        async for payload in watch(self.end_at, self.interval_s, self.log, self.report_every_s):
            yield TriggerEvent(payload)


class SupervisorOperator(BaseOperator):
    """Deferrable supervision task: checks and (re)starts on a worker, watches in the triggerer.

    ``execute`` runs every check once (starts what is missing), then defers to
    :class:`SupervisionTrigger`. When the trigger reports something due, :meth:`resume` logs
    what it found, runs the checks (they act, with the reason in this task's log) and defers
    again; when the run's day is over it returns. A service or process that cannot be
    (re)started fails the task with the reason in its log (no retries: the run goes red, and the
    ``@continuous`` schedule starts the next run at once). A run that starts within
    ``watch.FAILURE_PACING_S`` of such a failure watches first and acts only when the trigger
    still finds something due, so a lasting failure is not retried in a tight loop.
    """

    ui_color = "#d9ecff"

    def __init__(self, *, interval_s: float, run_days: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.interval_s = interval_s
        self.run_days = run_days

    def execute(self, context: Any) -> None:
        dag_run = context.get("dag_run")
        end_at = run_end(getattr(dag_run, "start_date", None), self.run_days).isoformat()
        failed = recent_failure(get_settings())
        if failed is not None:
            self.log.warning("the previous run failed %.0f s ago (%s): watching first, acting when still due",
                             time.time() - float(failed["at"]), failed.get("reason"))  # fmt: skip
        else:
            check(self.log)
        self._defer(end_at)

    def resume(self, context: Any, event: dict[str, Any] | None = None, end_at: str = "") -> None:
        if handle(event, self.log):
            self._defer(end_at or run_end(None, self.run_days).isoformat())

    def _defer(self, end_at: str) -> None:
        self.log.info("checks done; watching in the triggerer every %g s until %s", self.interval_s, end_at)
        self.defer(
            trigger=SupervisionTrigger(end_at=end_at, interval_s=self.interval_s),
            method_name="resume",
            kwargs={"end_at": end_at},
        )
