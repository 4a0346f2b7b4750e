"""Supervision of the two long-running processes: the producer and the Spark streaming job.

Airflow is not built for never-ending tasks, so the platform does not run them *inside* a task.
Instead the ``btc_stream_supervisor`` DAG runs every minute and calls :func:`ensure_producer`
and :func:`ensure_stream`. Each call is a short health check that

* starts the process when none is running (detached: own session / process group, so it
  outlives the Airflow task; stdout/stderr go to ``<data_dir>/logs/<name>.log``);
* restarts it when it died, when it went stale (producer: no publish for
  ``supervisor_producer_stale_s``; stream: no progress for ``supervisor_stream_stale_s``, or
  Kafka end offsets more than ``supervisor_max_lag_messages`` ahead of the stream's offsets),
  or when its configuration changed;
* never starts the same configuration twice: a pid record (pid, process start time, process
  group, config fingerprint) is kept under ``<data_dir>/supervisor/`` and every check holds an
  exclusive file lock while it looks at it and acts.

Every check returns a :class:`CheckResult` and logs one line with the action and its reason,
which is what the Airflow task log shows.

CLI (operators, ``make stop``)::

    python -m btc_platform.supervisor check [producer|stream|all]
    python -m btc_platform.supervisor status [producer|stream|all]
    python -m btc_platform.supervisor stop [producer|stream|all]
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from btc_platform.settings import ENV_PREFIX, PROJECT_ROOT, Settings, get_settings
from btc_platform.spark import spark_submit_args, spark_submit_binary

log = logging.getLogger(__name__)

PRODUCER = "producer"
STREAM = "stream"
NAMES = (PRODUCER, STREAM)

#: Text the producer logs when the live APIs cannot be reached; surfaced in the task log.
OFFLINE_HINT = "make run SOURCE=simulate"


class SupervisorError(RuntimeError):
    """The supervisor cannot do its job (lock held too long, process refuses to start...)."""


# ---------------------------------------------------------------------------------------------
# Launch specifications
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LaunchSpec:
    """What to run for one supervised process, and the fingerprint of that configuration."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    fingerprint: str


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


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as its ``BTC_*`` environment variable, so a child process sees the exact
    configuration of the supervisor (also what the configuration fingerprint is taken over)."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="json").items():
        key = f"{ENV_PREFIX}{name.upper()}"
        if isinstance(value, bool):
            env[key] = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            env[key] = ",".join(str(v) for v in value)
        elif isinstance(value, dict):
            env[key] = json.dumps(value, sort_keys=True)
        elif value is None:
            continue
        else:
            env[key] = str(value)
    return env


def _fingerprint(argv: tuple[str, ...], btc_env: Mapping[str, str]) -> str:
    payload = json.dumps({"argv": list(argv), "env": dict(sorted(btc_env.items()))}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _child_env(settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
    btc_env = settings_env(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(btc_env)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYSPARK_PYTHON"] = env.get("PYSPARK_PYTHON", sys.executable)
    env["PYSPARK_DRIVER_PYTHON"] = env.get("PYSPARK_DRIVER_PYTHON", sys.executable)
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")]).rstrip(os.pathsep)
    return env, btc_env


def producer_spec(settings: Settings, source: str | None = None) -> LaunchSpec:
    """``python -m btc_platform.producer --source <source>`` (source defaults to the setting)."""
    source = source or settings.producer_source
    argv = (sys.executable, "-m", "btc_platform.producer", "--source", source)
    env, btc_env = _child_env(settings)
    return LaunchSpec(PRODUCER, argv, env, _fingerprint(argv, btc_env))


def stream_spec(settings: Settings) -> LaunchSpec:
    """``spark-submit [options] spark_jobs/stream_job.py`` against the configured master."""
    argv = (
        spark_submit_binary(),
        *spark_submit_args(settings, "btc-stream", driver_memory=settings.stream_driver_memory,
                           driver_java_options=settings.stream_driver_java_options),  # fmt: skip
        str(PROJECT_ROOT / "spark_jobs" / "stream_job.py"),
        "--master", settings.spark_master,
    )  # fmt: skip
    env, btc_env = _child_env(settings)
    return LaunchSpec(STREAM, argv, env, _fingerprint(argv, btc_env))


# ---------------------------------------------------------------------------------------------
# Process bookkeeping
# ---------------------------------------------------------------------------------------------
def state_dir(settings: Settings) -> Path:
    return settings.data_dir / "supervisor"


def record_path(settings: Settings, name: str) -> Path:
    return state_dir(settings) / f"{name}.pid.json"


def log_path(settings: Settings, name: str) -> Path:
    return settings.logs_dir / f"{name}.log"


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks) of ``pid`` from /proc, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as exc:
        if exc.errno in (errno.ESRCH, errno.ENOENT):
            return None
        raise
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    rest = text[text.rindex(")") + 2 :].split()
    return rest[0], int(rest[2]), int(rest[19])


def _reap(pid: int) -> None:
    """Collect a zombie child of ours (only when this process started it)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def machine_id() -> str:
    """Host name + kernel boot id: pids and process groups only mean something on the same
    machine (container) since the same boot. Records from elsewhere are never signalled."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "unknown-boot"
    return f"{os.uname().nodename}/{boot}"


def _same_machine(record: Mapping[str, Any]) -> bool:
    return record.get("machine", machine_id()) == machine_id()


def process_alive(record: Mapping[str, Any] | None) -> bool:
    """True when the recorded process still runs (same pid *and* start time, not a zombie)."""
    if not record or not _same_machine(record):
        return False
    pid = int(record["pid"])
    stat = _proc_stat(pid)
    if stat is None or stat[2] != int(record["start_ticks"]):
        return False
    if stat[0] in ("Z", "X"):
        _reap(pid)
        return False
    return True


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        members = _group_members(pgid)
        for pid in members:
            _reap(pid)
        if not _group_members(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _graceful_target(pgid: int, marker: str | None) -> int | None:
    """The member of the group that should get SIGTERM: the process whose command line contains
    ``marker`` (the Python driver under spark-submit, which stops its queries cleanly and lets
    the JVM exit), else the group leader."""
    members = _group_members(pgid)
    if marker:
        for pid in sorted(members, reverse=True):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if marker.encode() in cmdline and b"java" not in cmdline.split(b" ", 1)[0]:
                return pid
    return pgid if pgid in members else (members[0] if members else None)


def terminate_group(pgid: int, timeout_s: float, marker: str | None = None) -> str:
    """SIGTERM the process (see ``_graceful_target``), wait up to ``timeout_s`` for the whole
    group to exit, then SIGKILL what is left of the group."""
    target = _graceful_target(pgid, marker)
    if target is None:
        return "already gone"
    try:
        os.kill(target, signal.SIGTERM)
    except ProcessLookupError:
        pass
    started = time.monotonic()
    if _wait_group_gone(pgid, timeout_s):
        return f"stopped (SIGTERM to {target}, {time.monotonic() - started:.1f} s)"
    log.warning("process group %s still alive %.0f s after SIGTERM to %s: SIGKILL", pgid, timeout_s, target)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return "stopped (SIGTERM)"
    if not _wait_group_gone(pgid, 10.0):
        raise SupervisorError(f"process group {pgid} survives SIGKILL: {_group_members(pgid)}")
    return "killed (SIGKILL)"


@contextmanager
def _locked(settings: Settings, name: str, timeout_s: float = 120.0) -> Iterator[None]:
    """Exclusive lock per supervised process, so two checks never act at the same time."""
    path = state_dir(settings) / f"{name}.lock"
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


def read_record(settings: Settings, name: str) -> dict[str, Any] | None:
    from btc_platform.status import read_status

    return read_status(record_path(settings, name))


def _start(settings: Settings, spec: LaunchSpec) -> dict[str, Any]:
    from btc_platform.status import utc_now_iso, write_status

    logfile = log_path(settings, spec.name)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as out:
        out.write(f"\n==== {utc_now_iso()} supervisor starts {spec.name} ({spec.fingerprint})\n".encode())
        out.flush()
        proc = subprocess.Popen(  # noqa: S603 - argv built from settings, no shell
            list(spec.argv),
            cwd=str(PROJECT_ROOT),
            env=dict(spec.env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    stat = _proc_stat(proc.pid)
    if stat is None:
        code = proc.poll()
        raise SupervisorError(f"{spec.name} exited immediately (code {code}); see {logfile}")
    record = {
        "name": spec.name,
        "pid": proc.pid,
        "pgid": stat[1],
        "start_ticks": stat[2],
        "fingerprint": spec.fingerprint,
        "argv": list(spec.argv),
        "started_at": utc_now_iso(),
        "started_epoch": time.time(),
        "log": str(logfile),
        "machine": machine_id(),
    }
    write_status(record_path(settings, spec.name), record)
    # the Popen object is dropped on purpose: the child is detached (own session) and is
    # reaped by init once this process exits, or here by _reap() when a check sees it dead
    return record


def _stop_record(settings: Settings, record: Mapping[str, Any] | None, graceful: bool = True) -> str:
    if not record:
        return "not running"
    if not _same_machine(record):
        return f"recorded on {record.get('machine')} (another host or boot): nothing to signal here"
    marker = "stream_job.py" if record.get("name") == STREAM else None
    timeout = settings.supervisor_stop_timeout_s if graceful else 0.0  # leader dead: kill leftovers now
    return terminate_group(int(record["pgid"]), timeout, marker)


# ---------------------------------------------------------------------------------------------
# Health signals
# ---------------------------------------------------------------------------------------------
def _parse_time(value: Any) -> float | None:
    """Epoch seconds from an ISO-8601 string (``Z`` or offset) or a number (s or ms)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value) / 1000.0 if value > 1e11 else float(value)
    text = str(value).replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _latest(record: Any, keys: tuple[str, ...]) -> float | None:
    """Newest time found under any of ``keys`` anywhere in a (nested) status record."""
    best: float | None = None
    if isinstance(record, dict):
        for key, value in record.items():
            if key in keys and not isinstance(value, (dict, list)):
                moment = _parse_time(value)
            else:
                moment = _latest(value, keys)
            if moment is not None and (best is None or moment > best):
                best = moment
    elif isinstance(record, list):
        for item in record:
            moment = _latest(item, keys)
            if moment is not None and (best is None or moment > best):
                best = moment
    return best


PUBLISH_TIME_KEYS = ("last_publish_time", "last_publish", "last_published_at", "last_publish_at")
PROGRESS_TIME_KEYS = ("timestamp", "last_progress_time", "last_batch_time", "updated_at")


def last_publish_time(settings: Settings) -> float | None:
    """Epoch seconds of the producer's last successful publish (from its status file)."""
    from btc_platform.status import read_status

    return _latest(read_status(settings.producer_status_path), PUBLISH_TIME_KEYS)


def last_stream_progress(settings: Settings) -> float | None:
    """Epoch seconds of the streaming job's last batch progress (from its status file)."""
    from btc_platform.status import read_status

    return _latest(read_status(settings.stream_status_path), PROGRESS_TIME_KEYS)


def stream_offsets(settings: Settings) -> dict[int, int] | None:
    """Per-partition Kafka offsets the stream has processed up to (end offsets of its last
    batch, as Spark reports them: ``{"<topic>": {"<partition>": offset}}``), or None."""
    from btc_platform.status import read_status

    record = read_status(settings.stream_status_path)
    found: dict[int, int] = {}

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("end_offset", "endOffset", "end_offsets", "endOffsets"):
                    value = json.loads(value) if isinstance(value, str) else value
                    if isinstance(value, dict) and isinstance(value.get(settings.kafka_topic), dict):
                        for part, offset in value[settings.kafka_topic].items():
                            found[int(part)] = max(found.get(int(part), -1), int(offset))
                        continue
                visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(record)
    return found or None


def kafka_end_offsets(settings: Settings, timeout_s: float = 10.0) -> dict[int, int]:
    """High watermarks of every partition of the topic (real broker query via confluent_kafka)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": "btc-supervisor-lag-check",
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(settings.kafka_topic, timeout=timeout_s)
        topic = metadata.topics.get(settings.kafka_topic)
        if topic is None or topic.error is not None:
            raise SupervisorError(f"topic {settings.kafka_topic!r} not available: {topic and topic.error}")
        return {
            part: consumer.get_watermark_offsets(
                TopicPartition(settings.kafka_topic, part), timeout=timeout_s
            )[1]
            for part in sorted(topic.partitions)
        }
    finally:
        consumer.close()


def stream_lag(settings: Settings) -> int | None:
    """Messages in Kafka the stream has not processed yet, or None when unknown."""
    processed = stream_offsets(settings)
    if processed is None:
        return None
    ends = kafka_end_offsets(settings)
    return sum(max(0, end - processed.get(part, 0)) for part, end in ends.items())


def log_tail(settings: Settings, name: str, lines: int = 8) -> str:
    """The last lines of a supervised process's log (to show why it died)."""
    try:
        with open(log_path(settings, name), "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16 * 1024))
            return "\n".join(handle.read().decode("utf-8", "replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def producer_problems(settings: Settings, max_lines: int = 200) -> list[str]:
    """Recent producer log lines that say the live APIs are unreachable (to echo them)."""
    path = log_path(settings, PRODUCER)
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            lines = handle.read().decode("utf-8", "replace").splitlines()[-max_lines:]
    except FileNotFoundError:
        return []
    # only lines after the last (re)start of the producer
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("==== ") and "supervisor starts" in lines[index]:
            lines = lines[index + 1 :]
            break
    return [line for line in lines if "unreachable" in line.lower() or OFFLINE_HINT in line][-3:]


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------
StaleCheck = Callable[[Settings, Mapping[str, Any], float], str | None]


def _producer_stale(settings: Settings, record: Mapping[str, Any], now: float) -> str | None:
    limit = settings.supervisor_producer_stale_s
    started = float(record["started_epoch"])
    last = last_publish_time(settings)
    reference = max(started, last or 0.0)
    if now - reference <= limit:
        return None
    if last is None or last < started:
        return f"no publish since it started {now - started:.0f} s ago (limit {limit:.0f} s)"
    return f"no publish for {now - last:.0f} s (limit {limit:.0f} s)"


def _stream_stale(settings: Settings, record: Mapping[str, Any], now: float) -> str | None:
    limit = settings.supervisor_stream_stale_s
    started = float(record["started_epoch"])
    if now - started <= limit:
        return None  # a fresh job gets the stale limit to start up and catch up
    last = last_stream_progress(settings)
    quiet_s = now - max(started, last or 0.0)
    try:
        lag = stream_lag(settings)
    except Exception as exc:  # noqa: BLE001 - a broker hiccup must not restart a healthy stream
        log.warning("stream: lag check failed (%s: %s)", type(exc).__name__, exc)
        lag = None
    if lag is not None:
        log.info("stream: %d messages behind Kafka, last progress %.0f s ago", lag, quiet_s)
    if lag is not None and lag > settings.supervisor_max_lag_messages:
        return f"stream is {lag} messages behind Kafka (limit {settings.supervisor_max_lag_messages})"
    if quiet_s > limit:
        if lag == 0:
            return None  # idle: nothing new in Kafka, so no progress is expected
        if last is None or last < started:
            return f"no streaming progress since it started {quiet_s:.0f} s ago (limit {limit:.0f} s)"
        return f"no streaming progress for {quiet_s:.0f} s (limit {limit:.0f} s) with {lag} messages waiting"
    return None


def _ensure(
    settings: Settings, spec: LaunchSpec, stale: StaleCheck, now: Callable[[], float] = time.time
) -> CheckResult:
    with _locked(settings, spec.name):
        record = read_record(settings, spec.name)
        if record is None:
            reason = "no supervised process yet"
        elif not process_alive(record):
            reason = f"process {record['pid']} is not running (died)"
            tail = log_tail(settings, spec.name)
            if tail:
                log.warning("%s: last lines of %s:\n%s", spec.name, log_path(settings, spec.name), tail)
        elif record.get("fingerprint") != spec.fingerprint:
            reason = f"configuration changed ({record.get('fingerprint')} -> {spec.fingerprint})"
        else:
            why = stale(settings, record, now())
            if why is None:
                age = now() - float(record["started_epoch"])
                result = CheckResult(spec.name, "ok", f"running for {age:.0f} s, healthy", record["pid"])
                log.info("%s", result)
                return result
            reason = f"stale: {why}"
        action = "started" if record is None else "restarted"
        if record is not None:
            outcome = _stop_record(settings, record, graceful=not reason.endswith("(died)"))
            log.info("%s: old process %s (group %s) %s", spec.name, record["pid"], record["pgid"], outcome)
        new = _start(settings, spec)
        result = CheckResult(
            spec.name, action, reason, new["pid"], {"fingerprint": spec.fingerprint, "log": new["log"]}
        )
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


def stop(name: str, settings: Settings | None = None) -> CheckResult:
    """Stop one supervised process (SIGTERM to its group, SIGKILL after the stop timeout)."""
    s = settings or get_settings()
    with _locked(s, name):
        record = read_record(s, name)
        outcome = _stop_record(s, record) if record else "not running"
        record_path(s, name).unlink(missing_ok=True)
    result = CheckResult(name, "stopped", outcome, record["pid"] if record else None)
    log.info("%s", result)
    return result


def status(name: str, settings: Settings | None = None) -> CheckResult:
    """Report whether a supervised process runs, without acting."""
    s = settings or get_settings()
    record = read_record(s, name)
    if record is None:
        return CheckResult(name, "absent", "never started")
    if not process_alive(record):
        return CheckResult(name, "dead", "recorded process is not running", record["pid"])
    return CheckResult(name, "running", f"since {record['started_at']}", record["pid"], dict(record))


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


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m btc_platform.supervisor",
        description="Check (start/restart), report or stop the supervised producer and streaming job. "
        "Configuration comes from the BTC_* environment (see .env.example).",
    )
    parser.add_argument("command", choices=("check", "status", "stop"), help="what to do")
    parser.add_argument(
        "target", nargs="?", default="all", choices=(*NAMES, "all"), help="which process (default: all)"
    )
    parser.add_argument("--source", help="producer source for `check` (default: BTC_PRODUCER_SOURCE)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = get_settings()
    except ValueError as exc:
        parser.exit(2, f"supervisor: {exc}\n")
    names = NAMES if args.target == "all" else (args.target,)
    for name in names:
        if args.command == "check":
            ensure_producer(settings, args.source) if name == PRODUCER else ensure_stream(settings)
        elif args.command == "stop":
            stop(name, settings)
        else:
            log.info("%s", status(name, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
