"""The supervision loop of the triggerer and the worker's answer to its events, without Airflow
(``trigger`` wraps them in Airflow's trigger and operator classes, so they are tested here
without importing Airflow).

:func:`watch` runs :func:`btc_platform.ops.supervisor.assess` every ``interval_s`` seconds (in a
thread, so the triggerer's event loop never blocks on a file, a process table or a Kafka query)
and yields one payload, then ends:

* ``{"due": {name: reason, ...}, "found_at": ..., "checks": n}`` when a local service, the
  producer or the stream needs a (re)start;
* ``{"ended": True, "end_at": ..., "checks": n}`` at ``end_at`` (the DAG run's day is over).

With ``supervisor_airflow_scheduler`` (set by ``btc-services run``) every check first makes sure
an Airflow scheduler of this platform runs and starts one if not
(``btc_platform.ops.services.airflow.ensure_scheduler``): the only restart done in the triggerer,
because without a scheduler the resumed task that does the others would never run.

A failing check (e.g. an unreadable status file) is logged and retried at the next interval; it
never fires. :func:`handle` is what the resumed task does with a payload; :func:`check` runs
the acting checks and remembers a failure (a service or process that cannot be (re)started):
the task then fails (a red run with the reason in its log), and the next run of the continuous
DAG, seeing :func:`recent_failure`, watches first instead of trying again at once, so a lasting
failure costs one failed run per check interval and a restart attempt, not a tight loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from btc_platform.ops import supervisor
from btc_platform.ops.process import ProcessError
from btc_platform.ops.services.airflow import ensure_scheduler
from btc_platform.ops.supervisor import ensure_all
from btc_platform.ops.supervisor.launch import state_dir
from btc_platform.settings import get_settings
from btc_platform.status import read_status, write_status

#: How often the loop writes an "all healthy" line to the task log while nothing happens.
REPORT_EVERY_S = 3600.0


#: A failure younger than this makes the next run watch first (see the module docstring).
FAILURE_PACING_S = 120.0


def _failure_path(settings):
    return state_dir(settings) / "supervise_failed.json"


def recent_failure(settings, now: float | None = None, within_s: float = FAILURE_PACING_S) -> dict[str, Any] | None:
    """The last failed check (``{"at": epoch, "reason": ...}``) if younger than ``within_s``."""
    record = read_status(_failure_path(settings))
    now = time.time() if now is None else now
    if not record or now - float(record.get("at", 0.0)) > within_s:
        return None
    return record


def check(log: logging.Logger) -> None:
    """Run every acting check (:func:`btc_platform.ops.supervisor.ensure_all`); a failure is recorded
    (for :func:`recent_failure`), logged and raised, success clears the record."""
    settings = get_settings()
    try:
        ensure_all(settings)
    except ProcessError as exc:
        write_status(_failure_path(settings), {"at": time.time(), "reason": str(exc)})
        log.error("supervision cannot do its job, this run fails (the next one checks again): %s", exc)
        raise
    _failure_path(settings).unlink(missing_ok=True)


def parse_time(moment: str) -> float:
    value = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def run_end(start: datetime | None, days: float, now: datetime | None = None) -> datetime:
    """When a supervision run hands over to the next: ``days`` after the run started (its
    retries keep that end), never before ``now``."""
    now = now or datetime.now(UTC)
    start = start or now
    return max(start + timedelta(days=days), now)


async def watch(
    end_at: str, interval_s: float, log: logging.Logger, report_every_s: float = REPORT_EVERY_S
) -> AsyncIterator[dict[str, Any]]:
    """Check health every ``interval_s`` until something is due or ``end_at`` (ISO); yields one
    payload (see the module docstring)."""
    settings = get_settings()
    end = parse_time(end_at)
    checks, last_report = 0, time.monotonic()
    log.info("supervising every %g s in the triggerer until %s", interval_s, end_at)
    while True:
        left = end - time.time()
        if left <= 0:
            log.info("supervision run over at %s after %d checks", end_at, checks)
            yield {"ended": True, "end_at": end_at, "checks": checks}
            return
        await asyncio.sleep(min(interval_s, left))
        if settings.supervisor_airflow_scheduler:
            try:
                await asyncio.to_thread(_ensure_scheduler, settings, log)
            except Exception as exc:  # noqa: BLE001 - logged; the next interval tries again
                log.error("could not start an Airflow scheduler (%s: %s); next try in %g s",
                          type(exc).__name__, exc, interval_s)  # fmt: skip
        try:
            due = await asyncio.to_thread(supervisor.assess, settings)
        except Exception as exc:  # noqa: BLE001 - one failed look must not end supervision; logged, retried
            log.warning("health check failed (%s: %s); next try in %g s", type(exc).__name__, exc, interval_s)
            continue
        checks += 1
        if due:
            for name, reason in due.items():
                log.warning("%s: needs a (re)start: %s", name, reason)
            yield {"due": due, "found_at": _iso(time.time()), "checks": checks}
            return
        if time.monotonic() - last_report >= report_every_s:
            log.info("%d checks, all healthy", checks)
            last_report = time.monotonic()


def _ensure_scheduler(settings, log: logging.Logger) -> None:
    """The one restart done in the triggerer: a dead Airflow scheduler (nothing else would
    schedule the resumed task that restarts things)."""
    pid = ensure_scheduler(settings)
    if pid is not None:
        log.warning("airflow scheduler: none of this platform was running; started one (pid %d)", pid)


def handle(event: dict[str, Any] | None, log: logging.Logger) -> bool:
    """The resumed task's answer to a payload of :func:`watch`: False when the run is over,
    else log what was found, run every check (:func:`check`: they act; a service that cannot be
    restarted raises ``SupervisorError``) and return True (watch again)."""
    event = event or {}
    if event.get("ended"):
        log.info("supervision run over (%s checks in the triggerer); the next run takes over", event.get("checks"))
        return False
    for name, reason in (event.get("due") or {}).items():
        log.warning("trigger found at %s: %s needs a (re)start: %s", event.get("found_at"), name, reason)
    check(log)
    return True
