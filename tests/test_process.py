"""btc_platform.ops.process on real (harmless) processes: detached start with a log header, the pid
record and process identity (pid reuse, zombies, other machines), bounded waits, stopping a
process group with escalation to SIGKILL, and the environment-marker sweep."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from btc_platform.ops import process
from btc_platform.ops.process import FirstSignal, ProcessError, ProcessRecord
from btc_platform.status import write_status

SLEEP = "import time; time.sleep(300)"


def _start(tmp_path: Path, code: str = SLEEP, name: str = "sleeper", env: dict[str, str] | None = None) -> ProcessRecord:
    return process.start(
        name,
        [sys.executable, "-c", code],
        log_file=tmp_path / "logs" / f"{name}.log",
        record_file=tmp_path / "run" / f"{name}.pid.json",
        env=env or dict(os.environ),
        cwd=tmp_path,
    )


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_file(path: Path, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} was not written"
        time.sleep(0.05)
    return path.read_text()


@pytest.fixture
def started(tmp_path):
    records: list[ProcessRecord] = []

    def start(*args, **kwargs) -> ProcessRecord:
        record = _start(tmp_path, *args, **kwargs)
        records.append(record)
        return record

    yield start
    for record in records:
        process.stop_group(record.pgid, 0.0)
        process.reap(record.pid)


def test_start_is_detached_with_a_log_header_and_a_record(tmp_path, started):
    record = started("import sys, time; print('hello from the child', flush=True); time.sleep(300)")
    assert os.getpgid(record.pid) == record.pid and os.getsid(record.pid) == record.pid
    assert record.pgid == record.pid and record.machine == process.machine_id()
    text = _wait_file(tmp_path / "logs" / "sleeper.log")
    deadline = time.monotonic() + 30
    while "hello from the child" not in text:
        assert time.monotonic() < deadline
        time.sleep(0.05)
        text = (tmp_path / "logs" / "sleeper.log").read_text()
    header, output = text.strip().splitlines()[:2]
    assert header.startswith("==== ") and header.endswith("Z starting sleeper")
    assert output == "hello from the child"
    stored = json.loads((tmp_path / "run" / "sleeper.pid.json").read_text())
    assert stored["format"] == process.RECORD_FORMAT and stored["pid"] == record.pid
    assert process.read_record(tmp_path / "run" / "sleeper.pid.json") == record
    assert process.is_alive(record)


def test_a_reused_pid_is_not_our_process_and_is_never_signalled(started):
    record = started()
    reused = dataclasses.replace(record, create_time=record.create_time - 100)  # same pid, other process
    assert not process.is_alive(reused)
    assert process.stop(reused, 0.0) == f"pid {record.pid} now belongs to another process: nothing to signal"
    assert process.is_alive(record)


def test_another_machines_record_is_never_signalled(started):
    record = started()
    elsewhere = dataclasses.replace(record, machine="other-host/other-boot")
    assert not process.is_alive(elsewhere)
    assert process.stop(elsewhere, 0.0).startswith("recorded on other-host/other-boot")
    assert process.is_alive(record)


def test_an_exited_child_is_reaped_and_not_alive(started):
    record = started("import sys; sys.exit(0)")
    deadline = time.monotonic() + 30
    while process.is_alive(record):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(psutil.NoSuchProcess):
        psutil.Process(record.pid).status()  # reaped: no zombie left behind


@pytest.mark.parametrize(
    "content",
    [
        {"pid": 1, "start_ticks": "123", "command": "java -Xms1g"},  # the services' old format
        {"name": "producer", "pid": 1, "pgid": 1, "start_ticks": 5, "machine": "h/b"},  # the supervisor's old one
        {"format": process.RECORD_FORMAT, "pid": 1},  # incomplete
    ],
)
def test_records_that_cannot_be_verified_are_not_ours(tmp_path, caplog, content):
    path = tmp_path / "old.pid"
    write_status(path, content)
    with caplog.at_level(logging.WARNING, logger="btc_platform.ops.process"):
        assert process.read_record(path) is None
    assert "cannot be verified" in caplog.text and "treated as not running" in caplog.text


def test_an_unreadable_record_is_not_ours(tmp_path, caplog):
    path = tmp_path / "bad.pid"
    path.write_text("12345 garbage")
    with caplog.at_level(logging.WARNING, logger="btc_platform.ops.process"):
        assert process.read_record(path) is None
    assert "unreadable pid record" in caplog.text
    assert process.read_record(tmp_path / "missing.pid") is None


def test_wait_until_healthy_fails_fast_with_the_log_tail(started):
    record = started("import sys; print('boom: bad config', flush=True); sys.exit(3)")
    begun = time.monotonic()
    with pytest.raises(ProcessError, match="(?s)sleeper exited while waiting for health.*boom: bad config"):
        process.wait_until_healthy(record, lambda: "not yet", timeout_s=60, what="health")
    assert time.monotonic() - begun < 30


def test_wait_until_healthy_is_bounded_and_returns_when_healthy(started):
    record = started()
    with pytest.raises(ProcessError, match=r"sleeper: health not reached within 0 s \(still starting\)"):
        process.wait_until_healthy(record, lambda: "still starting", timeout_s=0.3, what="health", poll_s=0.05)
    answers = iter(["warming up", None])
    assert process.wait_until_healthy(record, lambda: next(answers), timeout_s=10, what="health", poll_s=0.01) < 5


def test_stop_group_kills_a_child_that_ignores_sigterm(tmp_path, started):
    pid_file = tmp_path / "child.pid"
    # the child writes its pid once its handler is installed (renamed into place: read whole or not at all)
    ignore = (
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"open({str(pid_file)!r} + '.tmp', 'w').write(str(os.getpid())); "
        f"os.rename({str(pid_file)!r} + '.tmp', {str(pid_file)!r}); time.sleep(300)"
    )
    code = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {ignore!r}])\n"
        "time.sleep(300)\n"
    )
    record = started(code)
    child = int(_wait_file(pid_file))
    assert sorted(process.group_members(record.pgid)) == sorted([record.pid, child])
    begun = time.monotonic()
    assert process.stop(record, 1.0) == "killed (SIGKILL)"
    assert time.monotonic() - begun < 15
    assert _gone(child) and not process.is_alive(record)
    assert process.group_members(record.pgid) == []
    assert process.stop(record, 1.0) == "already gone"


def test_first_signal_goes_to_the_marked_member_only(tmp_path, started):
    """SIGTERM to the member whose command line holds the marker; its parent exits with it."""
    code = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', 'driver.py'])\n"
        "sys.exit(child.wait())\n"
    )
    record = started(code)
    deadline = time.monotonic() + 30
    while len(process.group_members(record.pgid)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    driver = max(p for p in process.group_members(record.pgid) if p != record.pid)
    outcome = process.stop(record, 10.0, FirstSignal(signal.SIGTERM, "driver.py"))
    assert outcome.startswith(f"stopped (SIGTERM to {driver}, ")


def test_marked_processes_are_found_and_stopped(tmp_path, started):
    marker = {"BTC_TEST_MARKER": uuid.uuid4().hex}
    record = started(env={**os.environ, **marker})
    other = started(name="unmarked")
    assert process.marked_processes(marker) == [record.pid]
    assert process.stop_marked(marker, 5.0) == [record.pid]
    assert not process.is_alive(record) and process.is_alive(other)
    assert process.marked_processes(marker) == []
