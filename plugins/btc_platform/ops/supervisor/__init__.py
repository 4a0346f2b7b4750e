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
deferrable operator around them), ``table`` (the process table: pid records, locks, start/stop
of one process, status, the event log), ``cli`` (the command line); this module runs the checks
(ensure / assess / wait_until_supervised) on them.

CLI (operators, ``make stop``)::

    python -m btc_platform.ops.supervisor check [producer|stream|all]
    python -m btc_platform.ops.supervisor status [producer|stream|all]
    python -m btc_platform.ops.supervisor stop [producer|stream|all]
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

from btc_platform.ops import process, services
from btc_platform.ops.process import ProcessError, ProcessRecord
from btc_platform.ops.supervisor import decide
from btc_platform.ops.supervisor.health import (
    OFFLINE_HINT,
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
    LaunchSpec,
    fingerprint,
    log_path,
    producer_spec,
    record_path,
    settings_env,
    state_dir,
    stream_spec,
)
from btc_platform.ops.supervisor.table import (
    MAX_EVENTS,
    CheckResult,
    events_path,
    locked,
    log_tail,
    read_events,
    read_record,
    record_event,
    service_lock,
    start_process,
    status,
    stop,
    stop_process,
)
from btc_platform.settings import PROJECT_ROOT, Settings, get_settings

__all__ = [
    "MAX_EVENTS",
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
    "events_path",
    "fingerprint",
    "kafka_end_offsets",
    "last_publish_time",
    "last_stream_progress",
    "log_path",
    "log_tail",
    "producer_problems",
    "producer_spec",
    "read_events",
    "read_record",
    "record_event",
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
        with locked(s, name):
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
    with locked(settings, spec.name):
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
            outcome = stop_process(settings, record, graceful=not reason.endswith(decide.DIED))
            log.info("%s: old process %s (group %s) %s", spec.name, record.pid, record.pgid, outcome)
        new = start_process(settings, spec)
        result = CheckResult(spec.name, action, reason, new.pid, {"fingerprint": spec.fingerprint, "log": new.log})
        record_event(settings, result)
        if action == "restarted":
            log.warning("%s", result)
        else:
            log.info("%s", result)
        return result


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
