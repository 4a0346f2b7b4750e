"""The supervisor's process table: the pid record, lock, log and start/stop of each supervised
process, the outcome of a check (:class:`CheckResult`) and the event log of starts and restarts
(which the dashboard shows)."""

from __future__ import annotations

import fcntl
import json
import logging
import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from btc_platform.lakehouse import lineage
from btc_platform.ops import process
from btc_platform.ops.process import FirstSignal, ProcessRecord
from btc_platform.ops.supervisor.health import START_HEADER, SupervisorError
from btc_platform.ops.supervisor.launch import (
    STREAM,
    STREAM_DRIVER_MARKER,
    LaunchSpec,
    lock_path,
    log_path,
    record_path,
)
from btc_platform.settings import PROJECT_ROOT, Settings, get_settings
from btc_platform.status import utc_now_iso

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one supervision check (``action``: ok, starting, started, restarted, stopped)."""

    name: str
    action: str
    reason: str
    pid: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.name}: {self.action} (pid {self.pid}) - {self.reason}"



def read_record(settings: Settings, name: str) -> ProcessRecord | None:
    """The pid record of a supervised process (None if none, or one that cannot be verified)."""
    return process.read_record(record_path(settings, name))


def log_tail(settings: Settings, name: str, lines: int = 8) -> str:
    """The last lines of a supervised process's log (to show why it died)."""
    return process.log_tail(log_path(settings, name), lines, max_bytes=16 * 1024)


@contextmanager
def locked(settings: Settings, name: str, timeout_s: float = 120.0) -> Iterator[None]:
    """Exclusive lock per supervised process, so two checks never act at the same time."""
    path = lock_path(settings, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise SupervisorError(
                        f"{path} is held by another supervisor check for more than {timeout_s:.0f} s"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def service_lock(settings: Settings, name: str):
    """The lock the supervisor's check of a local service (``kafka``/``hdfs``) holds: whoever
    starts the service holds it too, so a check never restarts a service that is starting."""
    return locked(settings, name)


def start_process(settings: Settings, spec: LaunchSpec) -> ProcessRecord:
    """Start ``spec`` detached, with its log and pid record (the caller holds its lock)."""
    return process.start(
        spec.name,
        spec.argv,
        log_file=log_path(settings, spec.name),
        record_file=record_path(settings, spec.name),
        env=spec.env,
        cwd=PROJECT_ROOT,
        header=f"{START_HEADER} {spec.name} ({spec.fingerprint})",
        extra={"fingerprint": spec.fingerprint},
    )


def stop_process(settings: Settings, record: ProcessRecord, graceful: bool = True) -> str:
    """SIGTERM to the process (the Python driver of the stream), bounded wait, SIGKILL the group."""
    marker = STREAM_DRIVER_MARKER if record.name == STREAM else None
    timeout = settings.supervisor_stop_timeout_s if graceful else 0.0  # leader dead: kill leftovers now
    return process.stop(record, timeout, FirstSignal(signal.SIGTERM, marker))


#: Starts and restarts kept in the event log (older ones are dropped when it is rewritten).
MAX_EVENTS = 200


def events_path(settings: Settings):
    """JSON lines, one per start or restart of a supervised process, with its reason."""
    return settings.status_dir / "supervisor_events.jsonl"


def record_event(settings: Settings, result: CheckResult) -> None:
    """Append a start/restart and its reason to the event log (the dashboard shows them), with
    the Airflow task instance that did it when there is one; the log is cut to the last
    :data:`MAX_EVENTS` when it has grown to twice that."""
    path = events_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    event = {"time": utc_now_iso(), "name": result.name, "action": result.action, "reason": result.reason,
             "pid": result.pid}
    task = lineage.airflow_task()  # the btc_stream_supervisor task instance that did it (its log says more)
    if task:
        event["airflow"] = task
    line = json.dumps(event, sort_keys=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) > 2 * MAX_EVENTS:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines[-MAX_EVENTS:]) + "\n", encoding="utf-8")
        tmp.replace(path)


def read_events(settings: Settings, limit: int = 50) -> list[dict[str, Any]]:
    """The last ``limit`` events of the event log, oldest first (an unreadable line is skipped
    with a warning)."""
    path = events_path(settings)
    if not path.is_file():
        return []
    events = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as exc:
            log.warning("%s line %d is not JSON (%s): skipped", path, number, exc)
    return events[-limit:]



def status(name: str, settings: Settings | None = None) -> CheckResult:
    """Report whether a supervised process runs, without acting."""
    s = settings or get_settings()
    record = read_record(s, name)
    if record is None:
        return CheckResult(name, "absent", "never started")
    if not process.is_alive(record):
        return CheckResult(name, "dead", "recorded process is not running", record.pid)
    return CheckResult(name, "running", f"since {record.started_at}", record.pid, record.to_json())


def stop(name: str, settings: Settings | None = None) -> CheckResult:
    """Stop one supervised process (SIGTERM to its group, SIGKILL after the stop timeout)."""
    s = settings or get_settings()
    with locked(s, name):
        record = read_record(s, name)
        outcome = stop_process(s, record) if record else "not running"
        record_path(s, name).unlink(missing_ok=True)
    result = CheckResult(name, "stopped", outcome, record.pid if record else None)
    log.info("%s", result)
    return result
