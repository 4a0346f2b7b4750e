"""Restart decisions of the supervisor, as pure functions of observations.

Each function takes what was observed (the pid record, whether it runs, the time now, the last
publish or progress time, the Kafka lag, the configuration fingerprint) and returns :data:`OK`
or the reason to (re)start, so every decision is unit-testable without processes or Kafka.
Gathering the observations is ``btc_platform.ops.supervisor.health``'s job; acting on the answer
is ``btc_platform.ops.supervisor``'s.
"""

from __future__ import annotations

from btc_platform.ops.process import ProcessRecord

#: The process may keep running.
OK = "ok"
#: Suffix of the reason for a process that is gone (its leftovers are killed without grace).
DIED = "(died)"


def lifecycle(record: ProcessRecord | None, alive: bool, fingerprint: str) -> str:
    """Whether a (re)start is due regardless of health: none yet, dead, or reconfigured."""
    if record is None:
        return "no supervised process yet"
    if not alive:
        return f"process {record.pid} is not running {DIED}"
    recorded = record.extra.get("fingerprint")
    if recorded != fingerprint:
        return f"configuration changed ({recorded} -> {fingerprint})"
    return OK


#: A stream that has made no progress since it started is still starting (JVM, Spark session,
#: first batch) for this many stale limits: on a loaded machine its start takes longer than the
#: stale limit, and a restart then only starts it over, again and again.
STREAM_START_GRACE = 2.5


def in_grace(started_epoch: float, now: float, limit_s: float) -> bool:
    """A fresh process gets the stale limit to start up (and the stream to catch up)."""
    return now - started_epoch <= limit_s


def quiet_seconds(started_epoch: float, now: float, last: float | None) -> float:
    """Seconds since the last sign of work (publish / progress), or since the start."""
    return now - max(started_epoch, last or 0.0)


#: Prefix of the OK-with-a-reason answer for a producer that waits for an upstream or the broker.
WAITING = "ok, waiting:"


def producer(
    started_epoch: float, now: float, last_publish: float | None, limit_s: float, waiting: str | None = None
) -> str:
    """The producer is stale when it has not published for ``limit_s`` (counted from its start
    if it never published since), unless its fresh status says it is ``waiting`` (an exchange's
    ban or 429 pause, the broker unreachable): restarting it would not help, and a new process
    calling mid-ban lengthens the ban. Then the answer is ``"ok, waiting: <why>"`` (healthy)."""
    if quiet_seconds(started_epoch, now, last_publish) <= limit_s:
        return OK
    if waiting:
        return f"{WAITING} {waiting}"
    if last_publish is None or last_publish < started_epoch:
        return f"no publish since it started {now - started_epoch:.0f} s ago (limit {limit_s:.0f} s)"
    return f"no publish for {now - last_publish:.0f} s (limit {limit_s:.0f} s)"


def stream(
    started_epoch: float,
    now: float,
    last_progress: float | None,
    lag: int | None,
    limit_s: float,
    max_lag: int,
) -> str:
    """The stream is stale when it is more than ``max_lag`` messages behind Kafka, or when it made
    no progress for ``limit_s`` while Kafka holds data it has not read (``lag`` None: unknown).
    An idle stream (lag 0) is healthy however quiet it is. One that has made no progress since it
    started is still starting for :data:`STREAM_START_GRACE` stale limits."""
    if in_grace(started_epoch, now, limit_s):
        return OK
    starting = last_progress is None or last_progress < started_epoch
    if starting and in_grace(started_epoch, now, STREAM_START_GRACE * limit_s):
        return OK
    if lag is not None and lag > max_lag:
        return f"stream is {lag} messages behind Kafka (limit {max_lag})"
    quiet_s = quiet_seconds(started_epoch, now, last_progress)
    if quiet_s <= limit_s or lag == 0:
        return OK
    if last_progress is None or last_progress < started_epoch:
        return f"no streaming progress since it started {quiet_s:.0f} s ago (limit {limit_s:.0f} s)"
    return f"no streaming progress for {quiet_s:.0f} s (limit {limit_s:.0f} s) with {lag} messages waiting"
