"""Detached processes of the platform: start, identify, check, wait for, stop (on psutil).

One module for everything the local services (``btc_platform.ops.services``: Kafka, HDFS, Airflow)
and the supervisor (``btc_platform.ops.supervisor``: producer, streaming job) do with processes:

* :func:`start` runs a command detached (own session, so its own process group whose id is its
  pid), stdout and stderr appended to a log file after a ``==== <UTC time> starting <name>``
  header line, and writes a :class:`ProcessRecord` (JSON) next to it.
* A record identifies *our* process: pid + psutil create time + :func:`machine_id` (host name
  and kernel boot id). :func:`is_alive` is false for a zombie (ours are reaped), for a pid that
  was reused by another process and for a record written on another machine or boot; such a
  record is never signalled.
* :func:`wait_until_healthy` polls a health check, bounded, fails fast when the process dies and
  raises :class:`ProcessError` with the log tail.
* :func:`stop` / :func:`stop_group` stop a process group: optionally a first signal to one member
  (SIGINT to the leader for ``airflow standalone``, SIGTERM to the Python driver under
  spark-submit, found by a command-line marker), a bounded wait, then SIGKILL to the group; an
  error if it survives.
* :func:`marked_processes` / :func:`stop_marked` find and stop processes by environment markers.
* :func:`log_tail` reads the end of a log.

A record that cannot be verified (missing, corrupt, or in the format of an older version) is
treated as "not ours / not running": :func:`read_record` logs why and returns None.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from btc_platform.status import StatusError, read_status, utc_now_iso, write_status

log = logging.getLogger(__name__)

#: Version tag of the pid-record JSON written by :func:`write_record`.
RECORD_FORMAT = 1
#: How far two create times of the same process may differ. psutil derives the create time from
#: the kernel's boot time, which can move by a second after clock adjustments; a pid is not
#: reused within a second, so this never mistakes another process for ours.
CREATE_TIME_TOLERANCE_S = 1.0
#: SIGKILL is final: how long to wait for the kernel to end the group after it.
KILL_WAIT_S = 10.0
POLL_S = 0.2

#: Popen objects of processes this interpreter started: polled (so reaped) by the alive checks,
#: so a stopped child never lingers as a zombie of a long-lived caller (test session, task).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class ProcessError(RuntimeError):
    """A process could not be started, did not become healthy, or survived SIGKILL."""


class RecordError(ValueError):
    """A pid record cannot be read as one written by :func:`write_record`."""


def machine_id() -> str:
    """Host name + kernel boot id: pids and process groups only mean something on the same
    machine (container) since the same boot. Records from elsewhere are never signalled."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError as exc:
        log.debug("no kernel boot id (%s): machine id without it", exc)
        boot = "unknown-boot"
    return f"{socket.gethostname()}/{boot}"


# ---------------------------------------------------------------------------------------------
# pid records
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessRecord:
    """What identifies one started process (the JSON pid record)."""

    name: str
    pid: int
    create_time: float
    machine: str
    argv: tuple[str, ...]
    log: str
    started_at: str
    started_epoch: float
    #: caller's own fields (e.g. the supervisor's configuration fingerprint)
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def pgid(self) -> int:
        """Process group of the record: started in its own session, the process leads it."""
        return self.pid

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "name": self.name,
            "pid": self.pid,
            "pgid": self.pgid,
            "create_time": self.create_time,
            "machine": self.machine,
            "argv": list(self.argv),
            "log": self.log,
            "started_at": self.started_at,
            "started_epoch": self.started_epoch,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        if data.get("format") != RECORD_FORMAT:
            raise RecordError(
                f"record format {data.get('format')!r}, expected {RECORD_FORMAT} (written by an older version?)"
            )
        try:
            return cls(
                name=str(data["name"]),
                pid=int(data["pid"]),
                create_time=float(data["create_time"]),
                machine=str(data["machine"]),
                argv=tuple(str(a) for a in data["argv"]),
                log=str(data["log"]),
                started_at=str(data["started_at"]),
                started_epoch=float(data["started_epoch"]),
                extra={str(k): str(v) for k, v in dict(data.get("extra") or {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"incomplete record ({type(exc).__name__}: {exc})") from exc


def write_record(path: Path, record: ProcessRecord) -> None:
    """Atomically (re)write the JSON pid record at ``path``."""
    write_status(path, record.to_json())


def read_record(path: Path) -> ProcessRecord | None:
    """The record at ``path``; None when there is none or it cannot be verified (logged)."""
    try:
        data = read_status(path)
    except (StatusError, UnicodeDecodeError) as exc:
        log.warning("ignoring unreadable pid record %s (%s): treated as not running", path, exc)
        return None
    if data is None:
        return None
    try:
        return ProcessRecord.from_json(data)
    except RecordError as exc:
        log.warning("ignoring pid record %s that cannot be verified (%s): treated as not running", path, exc)
        return None


# ---------------------------------------------------------------------------------------------
# start / alive / wait
# ---------------------------------------------------------------------------------------------
def start(
    name: str,
    argv: Sequence[str],
    *,
    log_file: Path,
    record_file: Path,
    env: Mapping[str, str],
    cwd: Path,
    header: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> ProcessRecord:
    """Start ``argv`` detached (own session and process group), stdout+stderr appended to
    ``log_file`` after the line ``==== <UTC time> <header>`` (default ``starting <name>``), and
    write its record to ``record_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    started_at = utc_now_iso()
    with open(log_file, "ab") as out:
        out.write(f"\n==== {started_at} {header or f'starting {name}'}\n".encode())
        out.flush()
        child = subprocess.Popen(  # noqa: S603 - argv built by the caller from settings, no shell
            list(argv),
            cwd=str(cwd),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[child.pid] = child
    try:
        # a child that already exited is a zombie until reaped: its create time is still readable
        create_time = psutil.Process(child.pid).create_time()
    except psutil.NoSuchProcess as exc:
        raise ProcessError(
            f"{name} exited immediately (code {child.poll()}); last log lines ({log_file}):\n"
            f"{log_tail(log_file) or '(no log)'}"
        ) from exc
    record = ProcessRecord(
        name=name,
        pid=child.pid,
        create_time=create_time,
        machine=machine_id(),
        argv=tuple(argv),
        log=str(log_file),
        started_at=started_at,
        started_epoch=time.time(),
        extra=dict(extra or {}),
    )
    write_record(record_file, record)
    return record


def reap(pid: int) -> None:
    """Collect ``pid`` if it is an exited child of this process (no-op otherwise)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return  # not our child: its own parent (or init) reaps it


def _same_process(record: ProcessRecord) -> bool | None:
    """True: the pid is (still) the recorded process, zombie or not; False: the pid now belongs
    to another process; None: no process has that pid."""
    try:
        create_time = psutil.Process(record.pid).create_time()
    except psutil.NoSuchProcess:
        return None
    return abs(create_time - record.create_time) <= CREATE_TIME_TOLERANCE_S


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def is_alive(record: ProcessRecord | None) -> bool:
    """True when the recorded process runs on this machine: same pid *and* create time, not a
    zombie (a zombie child of ours is reaped)."""
    if record is None or record.machine != machine_id():
        return False
    if _same_process(record) is not True:
        return False
    if _is_zombie(record.pid):
        reap(record.pid)
        return False
    return True


def log_tail(path: Path, lines: int = 25, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a log (read from its last ``max_bytes``); "" if there is none."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - max_bytes))
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_until_healthy(
    record: ProcessRecord,
    check: Callable[[], str | None],
    timeout_s: float,
    what: str,
    poll_s: float = 0.25,
) -> float:
    """Poll ``check`` (None when healthy, else the reason) until healthy; raise
    :class:`ProcessError` with the log tail as soon as the process exits, or after ``timeout_s``.
    Returns the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout_s
    reason: str | None = "not checked yet"
    while True:
        if not is_alive(record):
            raise ProcessError(
                f"{record.name} exited while waiting for {what}; last log lines ({record.log}):\n"
                f"{log_tail(Path(record.log)) or '(no log)'}"
            )
        previous, reason = reason, check()
        if reason is None:
            return time.monotonic() - started
        if reason != previous:
            log.info("%s: waiting for %s: %s", record.name, what, reason)
        if time.monotonic() >= deadline:
            raise ProcessError(
                f"{record.name}: {what} not reached within {timeout_s:.0f} s ({reason}); last log lines "
                f"({record.log}):\n{log_tail(Path(record.log)) or '(no log)'}"
            )
        time.sleep(poll_s)


# ---------------------------------------------------------------------------------------------
# process groups and stopping
# ---------------------------------------------------------------------------------------------
def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) members of process group ``pgid``; zombie children of ours are reaped."""
    members = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) != pgid:
                continue
        except ProcessLookupError:
            continue
        if _is_zombie(pid):
            reap(pid)
        else:
            members.append(pid)
    return members


@dataclass(frozen=True)
class FirstSignal:
    """A signal for one member of the group before the group gets SIGTERM / SIGKILL: the member
    whose command line contains ``marker`` (not a ``java`` process), else the group leader."""

    signal: signal.Signals
    marker: str | None = None


def _first_target(pgid: int, members: Sequence[int], marker: str | None) -> int | None:
    if marker:
        for pid in sorted(members, reverse=True):
            try:
                cmdline = psutil.Process(pid).cmdline()
            except (psutil.NoSuchProcess, psutil.AccessDenied) as exc:
                log.debug("cannot read the command line of %s (%s)", pid, type(exc).__name__)
                continue
            if cmdline and "java" not in Path(cmdline[0]).name and any(marker in arg for arg in cmdline):
                return pid
    return pgid if pgid in members else None


def _send(pid: int, sig: signal.Signals, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        log.debug("%s %s already gone before %s", "group" if group else "process", pid, sig.name)


def _wait_gone(remaining: Callable[[], list[int]], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while remaining():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def _escalate(
    label: str,
    steps: Sequence[tuple[str, Callable[[], None], float]],
    remaining: Callable[[], list[int]],
    kill: Callable[[], None],
) -> str:
    """Run the (description, send, wait) steps until nothing remains, then SIGKILL."""
    started = time.monotonic()
    for description, send, wait_s in steps:
        send()
        if _wait_gone(remaining, wait_s):
            return f"stopped ({description}, {time.monotonic() - started:.1f} s)"
        log.warning("%s still alive %.0f s after %s", label, wait_s, description)
    log.warning("%s: sending SIGKILL", label)
    kill()
    if not _wait_gone(remaining, KILL_WAIT_S):
        raise ProcessError(f"{label} survives SIGKILL: {remaining()}")
    return "killed (SIGKILL)"


def stop_group(
    pgid: int, timeout_s: float, first: FirstSignal | None = None, term_after_first_s: float = 0.0
) -> str:
    """Stop process group ``pgid``: ``first`` to one member (then, if ``term_after_first_s``,
    SIGTERM to the group) or else SIGTERM to the group; wait ``timeout_s`` for the whole group
    to exit, then SIGKILL the group. Returns what happened; :class:`ProcessError` if it survives."""
    members = group_members(pgid)
    if not members:
        return "already gone"
    group_term = (f"SIGTERM to group {pgid}", lambda: _send(pgid, signal.SIGTERM, group=True))
    steps: list[tuple[str, Callable[[], None], float]] = []
    target = _first_target(pgid, members, first.marker) if first else None
    if first is not None and target is not None:
        steps.append((f"{first.signal.name} to {target}", lambda: _send(target, first.signal, group=False), timeout_s))
        if term_after_first_s > 0:
            steps.append((*group_term, term_after_first_s))
    else:
        steps.append((*group_term, timeout_s))
    return _escalate(
        f"process group {pgid}", steps, lambda: group_members(pgid), lambda: _send(pgid, signal.SIGKILL, group=True)
    )


def stop(
    record: ProcessRecord, timeout_s: float, first: FirstSignal | None = None, term_after_first_s: float = 0.0
) -> str:
    """Stop the process group of ``record`` (see :func:`stop_group`) unless the record is from
    another machine or boot, or its pid now belongs to another process: then nothing is signalled."""
    if record.machine != machine_id():
        return f"recorded on {record.machine} (another host or boot): nothing to signal here"
    if _same_process(record) is False:
        # a pid is not reused while it names a live process group: ours is empty
        return f"pid {record.pid} now belongs to another process: nothing to signal"
    outcome = stop_group(record.pgid, timeout_s, first, term_after_first_s)
    reap(record.pid)
    return outcome


# ---------------------------------------------------------------------------------------------
# environment markers
# ---------------------------------------------------------------------------------------------
def marked_processes(markers: Mapping[str, str]) -> list[int]:
    """Live pids whose environment holds every ``markers`` entry, except this process and its
    ancestors."""
    me = psutil.Process()
    skip = {me.pid, *(p.pid for p in me.parents())}
    found = []
    for proc in psutil.process_iter():
        if proc.pid in skip:
            continue
        try:
            environ = proc.environ()
            zombie = proc.status() == psutil.STATUS_ZOMBIE
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # gone meanwhile, or another user's process (not ours by definition)
        if not zombie and all(environ.get(key) == value for key, value in markers.items()):
            found.append(proc.pid)
    return sorted(found)


def stop_marked(markers: Mapping[str, str], timeout_s: float) -> list[int]:
    """SIGTERM the process group of every process carrying ``markers`` (the process itself when
    it shares our group), wait ``timeout_s``, then SIGKILL. Returns the pids that were found."""
    pids = marked_processes(markers)
    if not pids:
        return []
    own_group = os.getpgrp()

    def send(sig: signal.Signals) -> Callable[[], None]:
        def run() -> None:
            for pid in marked_processes(markers):
                try:
                    pgid = os.getpgid(pid)
                except ProcessLookupError:
                    continue
                _send(pgid, sig, group=True) if pgid != own_group else _send(pid, sig, group=False)

        return run

    _escalate(
        f"processes marked {dict(markers)}",
        [("SIGTERM to their groups", send(signal.SIGTERM), timeout_s)],
        lambda: marked_processes(markers),
        send(signal.SIGKILL),
    )
    for pid in pids:
        reap(pid)
    return pids
