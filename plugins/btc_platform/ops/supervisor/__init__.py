"""Supervision of the two long-running processes: the producer and the Spark streaming job.

Airflow is not built for never-ending tasks, so the platform does not run them *inside* a task.
Instead the ``btc_stream_supervisor`` DAG's one deferrable task (module ``trigger``) calls
:func:`ensure_all` (the local services of ``supervisor_services``, then :func:`ensure_producer`
and :func:`ensure_stream`), then defers to a trigger that runs :func:`assess` in Airflow's
triggerer and wakes the task only when something is due. Each ensure call is a short check that

* starts the process when none is running (detached: own session / process group, so it
  outlives the Airflow task; stdout/stderr go to ``<data_dir>/logs/<name>.log``);
* restarts it when it died, when it went stale (producer: no publish for
  ``supervisor_producer_stale_s``; stream: no progress for ``supervisor_stream_stale_s``, or
  Kafka end offsets more than ``supervisor_max_lag_messages`` ahead of the stream's offsets),
  or when its configuration changed;
* never starts the same configuration twice: a pid record (``btc_platform.ops.process``: pid,
  create time, machine, config fingerprint) is kept under ``<data_dir>/supervisor/`` and every
  check holds an exclusive file lock while it looks at it and acts.

Every check returns a :class:`CheckResult` and logs one line with the action and its reason,
which is what the Airflow task log shows.

Modules: ``launch`` (what runs: launch specs, environment, fingerprint, paths), ``health``
(observations: last publish, stream progress and offsets, Kafka lag, producer problems),
``decide`` (pure restart decisions on those observations), ``watch`` (the triggerer's check
loop and the resumed task's answer, without Airflow), ``trigger`` (the Airflow trigger and the
deferrable operator around them), ``cli`` (the command line); this module does the
orchestration (ensure / assess / stop / status / wait_until_supervised).

CLI (operators, ``make stop``)::

    python -m btc_platform.ops.supervisor check [producer|stream|all]
    python -m btc_platform.ops.supervisor status [producer|stream|all]
    python -m btc_platform.ops.supervisor stop [producer|stream|all]
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from btc_platform.lakehouse import lineage
from btc_platform.ops import process, services
from btc_platform.ops.process import FirstSignal, ProcessError, ProcessRecord
from btc_platform.ops.supervisor import decide
from btc_platform.ops.supervisor.health import (
    OFFLINE_HINT,
    START_HEADER,
    SupervisorError,
    kafka_end_offsets,
    last_publish_time,
    last_stream_progress,
    producer_problems,
    producer_waiting,
    stream_lag,
    stream_offsets,
)
from btc_platform.ops.supervisor.launch import (
    NAMES,
    PRODUCER,
    STREAM,
    STREAM_DRIVER_MARKER,
    LaunchSpec,
    fingerprint,
    lock_path,
    log_path,
    producer_spec,
    record_path,
    settings_env,
    state_dir,
    stream_spec,
)
from btc_platform.settings import PROJECT_ROOT, Settings, get_settings
from btc_platform.status import utc_now_iso

__all__ = [
    "NAMES",
    "OFFLINE_HINT",
    "PRODUCER",
    "PROJECT_ROOT",
    "STREAM",
    "CheckResult",
    "LaunchSpec",
    "SupervisorError",
    "assess",
    "ensure_all",
    "ensure_producer",
    "ensure_services",
    "ensure_stream",
    "fingerprint",
    "kafka_end_offsets",
    "last_publish_time",
    "last_stream_progress",
    "log_path",
    "log_tail",
    "producer_problems",
    "producer_spec",
    "read_record",
    "record_path",
    "service_lock",
    "service_problem",
    "settings_env",
    "state_dir",
    "status",
    "stop",
    "stream_lag",
    "stream_offsets",
    "stream_spec",
    "wait_until_supervised",
]

log = logging.getLogger(__name__)

#: Observes a running process and returns ``decide.OK`` or why it is stale.
StaleCheck = Callable[[Settings, ProcessRecord, float], str]


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


# ---------------------------------------------------------------------------------------------
# records, lock, start / stop
# ---------------------------------------------------------------------------------------------
def read_record(settings: Settings, name: str) -> ProcessRecord | None:
    """The pid record of a supervised process (None if none, or one that cannot be verified)."""
    return process.read_record(record_path(settings, name))


def log_tail(settings: Settings, name: str, lines: int = 8) -> str:
    """The last lines of a supervised process's log (to show why it died)."""
    return process.log_tail(log_path(settings, name), lines, max_bytes=16 * 1024)


@contextmanager
def _locked(settings: Settings, name: str, timeout_s: float = 120.0) -> Iterator[None]:
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
    return _locked(settings, name)


def _start(settings: Settings, spec: LaunchSpec) -> ProcessRecord:
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


def _stop_record(settings: Settings, record: ProcessRecord, graceful: bool = True) -> str:
    """SIGTERM to the process (the Python driver of the stream), bounded wait, SIGKILL the group."""
    marker = STREAM_DRIVER_MARKER if record.name == STREAM else None
    timeout = settings.supervisor_stop_timeout_s if graceful else 0.0  # leader dead: kill leftovers now
    return process.stop(record, timeout, FirstSignal(signal.SIGTERM, marker))


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------
#: The repeated checks in the triggerer (``quiet``) log a waiting producer again only when what it
#: waits for changed, or after this many seconds.
WAITING_LOG_EVERY_S = 600.0
_waiting_logged: dict[str, tuple[str, float]] = {}


def _log_waiting(name: str, text: str, quiet: bool, now: float) -> None:
    """Log why a quiet process is healthy; under ``quiet`` once per cause (numbers and times
    aside) and every :data:`WAITING_LOG_EVERY_S`."""
    if quiet:
        cause = re.sub(r"[0-9:.+-]+", "#", text)
        previous = _waiting_logged.get(name)
        if previous is not None and previous[0] == cause and now - previous[1] < WAITING_LOG_EVERY_S:
            log.debug("%s", text)
            return
        _waiting_logged[name] = (cause, now)
    log.info("%s", text)


def _producer_stale(settings: Settings, record: ProcessRecord, now: float, quiet: bool = False) -> str:
    limit = settings.supervisor_producer_stale_s
    why = decide.producer(
        record.started_epoch, now, last_publish_time(settings), limit,
        producer_waiting(settings, now, fresh_s=limit),
    )  # fmt: skip
    if why.startswith(decide.WAITING):
        _log_waiting(PRODUCER, f"producer: no publish within {limit:.0f} s but healthy, {why}", quiet, now)
        return decide.OK
    _waiting_logged.pop(PRODUCER, None)
    return why


def _stream_stale(settings: Settings, record: ProcessRecord, now: float, quiet: bool = False) -> str:
    limit = settings.supervisor_stream_stale_s
    if decide.in_grace(record.started_epoch, now, limit):
        return decide.OK  # a fresh job gets the stale limit to start up and catch up (no Kafka query)
    last = last_stream_progress(settings)
    try:
        lag = stream_lag(settings)
    except Exception as exc:  # noqa: BLE001 - a broker hiccup must not restart a healthy stream
        log.warning("stream: lag check failed (%s: %s)", type(exc).__name__, exc)
        lag = None
    if lag is not None:
        quiet_s = decide.quiet_seconds(record.started_epoch, now, last)
        log.log(logging.DEBUG if quiet else logging.INFO, "stream: %d messages behind Kafka, last progress %.0f s ago",
                lag, quiet_s)  # fmt: skip
    return decide.stream(record.started_epoch, now, last, lag, limit, settings.supervisor_max_lag_messages)


# ---------------------------------------------------------------------------------------------
# local services (Kafka, HDFS) of the platform
# ---------------------------------------------------------------------------------------------
def service_problem(settings: Settings, name: str) -> str | None:
    """Why a supervised local service (``kafka`` / ``hdfs``) is not healthy, or None."""
    return services.status(name, settings).problem


#: A running service that fails its health check is asked again this often, this many seconds
#: apart, before it is restarted (a slow answer on a busy machine is no reason to restart a broker).
SERVICE_RECHECKS = 2
SERVICE_RECHECK_S = 5.0


def _lasting_problem(settings: Settings, name: str, sleep: Callable[[float], None] = time.sleep) -> str | None:
    """The service's problem, unless a running process recovers within the rechecks."""
    problem = service_problem(settings, name)
    for _ in range(SERVICE_RECHECKS):
        if problem is None or problem == "not running":
            return problem
        log.info("%s: unhealthy (%s), asking again in %.0f s", name, problem, SERVICE_RECHECK_S)
        sleep(SERVICE_RECHECK_S)
        problem = service_problem(settings, name)
    return problem


def ensure_services(settings: Settings | None = None) -> list[CheckResult]:
    """Check every local service of ``supervisor_services`` and restart the unhealthy ones
    (bounded wait for their health check). Raises :class:`SupervisorError` with the reason when a
    service cannot be brought back, so the Airflow task fails and says why."""
    s = settings or get_settings()
    results = []
    for name in s.supervisor_services:
        with _locked(s, name):
            problem = _lasting_problem(s, name)
            if problem is None:
                pids = services.status(name, s).pids
                result = CheckResult(name, "ok", "healthy", next(iter(pids.values()), None), {"pids": pids})
                log.info("%s", result)
                results.append(result)
                continue
            log.warning("%s: unhealthy (%s): restarting it", name, problem)
            try:
                services.start(name, s)
            except ProcessError as exc:
                raise SupervisorError(f"{name} is down ({problem}) and could not be restarted: {exc}") from exc
            pid = services.status(name, s).pids
            result = CheckResult(name, "restarted", problem, next(iter(pid.values()), None), {"pids": pid})
            record_event(s, result)
            log.warning("%s", result)
            results.append(result)
    return results


def assess(settings: Settings | None = None, now: float | None = None) -> dict[str, str]:
    """What needs a (re)start now and why, without acting: ``{name: reason}`` for every unhealthy
    local service of ``supervisor_services`` and for the producer and the stream when they are
    absent, dead, reconfigured or stale (the same decisions as the checks that act). Empty when
    all is well; only the services when one of them is due. This is what the supervisor's
    trigger runs in Airflow's triggerer."""
    s = settings or get_settings()
    due: dict[str, str] = {}
    for name in s.supervisor_services:
        problem = service_problem(s, name)
        if problem is not None:
            due[name] = problem
    if due:
        # the task checks producer and stream after the service anyway; their checks would only
        # wait for the dead broker here (the stream's lag query times out)
        return due
    checks = ((producer_spec(s), _producer_stale), (stream_spec(s), _stream_stale))
    for spec, stale in checks:
        record = read_record(s, spec.name)
        reason = decide.lifecycle(record, process.is_alive(record), spec.fingerprint)
        if reason == decide.OK and record is not None:
            why = stale(s, record, time.time() if now is None else now, quiet=True)
            if why == decide.OK:
                continue
            reason = f"stale: {why}"
        due[spec.name] = reason
    return due


def _ensure(
    settings: Settings, spec: LaunchSpec, stale: StaleCheck, now: Callable[[], float] = time.time
) -> CheckResult:
    with _locked(settings, spec.name):
        record = read_record(settings, spec.name)
        reason = decide.lifecycle(record, process.is_alive(record), spec.fingerprint)
        if reason == decide.OK and record is not None:
            why = stale(settings, record, now())
            if why == decide.OK:
                age = now() - record.started_epoch
                result = CheckResult(spec.name, "ok", f"running for {age:.0f} s, healthy", record.pid)
                log.info("%s", result)
                return result
            reason = f"stale: {why}"
        elif record is not None and reason.endswith(decide.DIED):
            tail = log_tail(settings, spec.name)
            if tail:
                log.warning("%s: last lines of %s:\n%s", spec.name, log_path(settings, spec.name), tail)
        action = "started" if record is None else "restarted"
        if record is not None:
            outcome = _stop_record(settings, record, graceful=not reason.endswith(decide.DIED))
            log.info("%s: old process %s (group %s) %s", spec.name, record.pid, record.pgid, outcome)
        new = _start(settings, spec)
        result = CheckResult(spec.name, action, reason, new.pid, {"fingerprint": spec.fingerprint, "log": new.log})
        record_event(settings, result)
        if action == "restarted":
            log.warning("%s", result)
        else:
            log.info("%s", result)
        return result


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


def ensure_producer(settings: Settings | None = None, source: str | None = None) -> CheckResult:
    """Start, keep or restart the producer (see module docstring); logs and returns the outcome."""
    s = settings or get_settings()
    result = _ensure(s, producer_spec(s, source), _producer_stale)
    for line in producer_problems(s):
        log.warning("producer reports: %s", line)
    return result


def ensure_stream(settings: Settings | None = None) -> CheckResult:
    """Start, keep or restart the Spark streaming job (see module docstring)."""
    s = settings or get_settings()
    return _ensure(s, stream_spec(s), _stream_stale)


def ensure_all(settings: Settings | None = None) -> list[CheckResult]:
    """The local services first, then the producer and the stream (one check each, acting as
    needed). A service that cannot be restarted raises at once (the producer waits for the broker
    and the stream would only fail again); a failed producer or stream check is raised after the
    other one was checked."""
    s = settings or get_settings()
    results = ensure_services(s)
    errors = []
    for check in (ensure_producer, ensure_stream):
        try:
            results.append(check(s))
        except ProcessError as exc:
            log.error("%s", exc)
            errors.append(str(exc))
    if errors:
        raise SupervisorError("; ".join(errors))
    return results


def stop(name: str, settings: Settings | None = None) -> CheckResult:
    """Stop one supervised process (SIGTERM to its group, SIGKILL after the stop timeout)."""
    s = settings or get_settings()
    with _locked(s, name):
        record = read_record(s, name)
        outcome = _stop_record(s, record) if record else "not running"
        record_path(s, name).unlink(missing_ok=True)
    result = CheckResult(name, "stopped", outcome, record.pid if record else None)
    log.info("%s", result)
    return result


def status(name: str, settings: Settings | None = None) -> CheckResult:
    """Report whether a supervised process runs, without acting."""
    s = settings or get_settings()
    record = read_record(s, name)
    if record is None:
        return CheckResult(name, "absent", "never started")
    if not process.is_alive(record):
        return CheckResult(name, "dead", "recorded process is not running", record.pid)
    return CheckResult(name, "running", f"since {record.started_at}", record.pid, record.to_json())


def wait_until_supervised(
    settings: Settings,
    timeout_s: float = 240.0,
    poll_s: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """For ``make run``: wait (bounded) until the supervisor DAG has started the producer and the
    stream, and the producer published or reported a problem. Returns lines to show the user;
    the live-API problem is spelled out with the offline option."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = {name: status(name, settings) for name in NAMES}
        problems = producer_problems(settings)
        published = last_publish_time(settings)
        both = all(state.action == "running" for state in states.values())
        if (both and (published or problems)) or time.monotonic() >= deadline:
            break
        sleep(poll_s)
    lines = []
    for name, state in states.items():
        if state.action == "running":
            lines.append(f"{name}: running (pid {state.pid}, log {log_path(settings, name)})")
        else:
            lines.append(
                f"{name}: NOT running after {timeout_s:.0f} s ({state.reason}) - check the btc_stream_supervisor "
                f"DAG in the Airflow UI and {log_path(settings, name)}"
            )
    if published:
        moment = datetime.fromtimestamp(published, UTC).isoformat(timespec="seconds")
        lines.append(f"producer: last publish to Kafka at {moment}")
    if problems:
        lines.append(f"producer ({settings.producer_source} source) reports a problem:")
        lines += [f"  {line}" for line in problems]
        if settings.producer_source == "live":
            lines.append(
                f"The live exchange APIs cannot be reached from here. Nothing is switched to simulated data: "
                f"stop with `make stop` and run `{OFFLINE_HINT}` to work offline."
            )
    return lines
