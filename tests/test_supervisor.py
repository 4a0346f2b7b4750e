"""Supervision of the producer and the streaming job (btc_platform.ops.supervisor).

Unit part: the start / keep / restart decisions on a harmless real process (``sleep``), the
config fingerprint and lock (never two starts of one configuration), and the staleness checks
on status records in the exact formats the producer and the streaming job write.

The kill -9 of the real producer and streaming job, each brought back by these checks with every
message in raw_data exactly once, is tests/test_chaos.py (``producer_kill``, ``stream_kill``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import psutil
import pytest

from btc_platform.ops import process, supervisor
from btc_platform.ops.process import ProcessRecord
from btc_platform.ops.supervisor import decide, health, launch, table
from btc_platform.settings import load_settings
from btc_platform.status import write_status
from btc_platform.testing.polling import wait_until

log = logging.getLogger(__name__)


def _iso(seconds_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def _sleep_spec(settings, name="producer", seconds=300, tag="a") -> supervisor.LaunchSpec:
    argv = (sys.executable, "-c", f"import time; time.sleep({seconds})  # {tag}")
    return launch.spec(settings, name, argv)


def _never_stale(_settings, _record, _now):
    return decide.OK


def _gone_or_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _record(started_epoch: float, fingerprint: str = "f1", pid: int = 4242) -> ProcessRecord:
    """A pid record for the pure decisions (no process behind it)."""
    return ProcessRecord(
        name="producer", pid=pid, create_time=started_epoch, machine=process.machine_id(), argv=("x",),
        log="x.log", started_at="", started_epoch=started_epoch, extra={"fingerprint": fingerprint},
    )  # fmt: skip


def _sigkill(pid: int) -> float:
    """SIGKILL ``pid`` and wait until the kernel has ended it (zombie or gone); returns the kill time."""
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _gone_or_zombie(pid):
            return killed
        time.sleep(0.01)
    raise AssertionError(f"process {pid} survived SIGKILL")


@pytest.fixture
def sup_settings(tmp_path):
    settings = load_settings(data_dir=tmp_path / "data", supervisor_stop_timeout_s=5)
    yield settings
    for name in supervisor.NAMES:
        supervisor.stop(name, settings)


# ---------------------------------------------------------------------------------------------
# Decisions
# ---------------------------------------------------------------------------------------------
def test_start_keep_restart_on_death_and_on_config_change(sup_settings, caplog):
    caplog.set_level(logging.INFO, logger="btc_platform.ops.supervisor")
    spec = _sleep_spec(sup_settings)
    first = supervisor._ensure(sup_settings, spec, _never_stale)
    assert first.action == "started" and first.reason == "no supervised process yet"
    assert supervisor.status("producer", sup_settings).action == "running"
    assert os.getpgid(first.pid) == first.pid, "detached: leader of its own process group"

    again = supervisor._ensure(sup_settings, spec, _never_stale)
    assert (again.action, again.pid) == ("ok", first.pid)

    _sigkill(first.pid)
    revived = supervisor._ensure(sup_settings, spec, _never_stale)
    assert revived.action == "restarted"
    assert revived.reason == f"process {first.pid} is not running (died)"
    assert revived.pid != first.pid
    # why it died: the tail of its log is in the check's log (the Airflow task log)
    assert f"supervisor starts producer ({spec.fingerprint})" in caplog.text.split("last lines of")[1]
    assert (
        f"producer: restarted (pid {revived.pid}) - process {first.pid} is not running (died)" in caplog.text
    )

    changed = supervisor._ensure(sup_settings, _sleep_spec(sup_settings, tag="b"), _never_stale)
    assert changed.action == "restarted" and changed.reason.startswith("configuration changed")
    assert _gone_or_zombie(revived.pid)

    stopped = supervisor.stop("producer", sup_settings)
    assert stopped.reason.startswith(f"stopped (SIGTERM to {changed.pid}, ")
    assert supervisor.status("producer", sup_settings).action == "absent"


def test_same_configuration_is_never_started_twice(sup_settings):
    spec = _sleep_spec(sup_settings)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(supervisor._ensure(sup_settings, spec, _never_stale)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.action for r in results) == ["ok", "ok", "ok", "started"]
    assert len({r.pid for r in results}) == 1
    marker = spec.argv[-1]
    running = [p for p in os.listdir("/proc") if p.isdigit() and marker.encode() in _cmdline(int(p))]
    assert len(running) == 1


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def test_stale_process_is_restarted_with_the_reason(sup_settings):
    spec = _sleep_spec(sup_settings)
    first = supervisor._ensure(sup_settings, spec, _never_stale)
    result = supervisor._ensure(sup_settings, spec, lambda *_: "no publish for 99 s (limit 60 s)")
    assert result.action == "restarted"
    assert result.reason == "stale: no publish for 99 s (limit 60 s)"
    assert result.pid != first.pid
    # both starts are in the event log with their reasons (the dashboard shows them)
    events = supervisor.read_events(sup_settings)
    assert [(e["action"], e["pid"]) for e in events] == [("started", first.pid), ("restarted", result.pid)]
    assert events[-1]["reason"] == result.reason and events[-1]["name"] == spec.name


def test_producer_staleness_reads_the_producer_status(tmp_path):
    settings = load_settings(data_dir=tmp_path, supervisor_producer_stale_s=60)
    started = time.time() - 600
    record = _record(started)
    now = time.time()
    # no status yet: stale once the process is older than the limit
    assert supervisor._producer_stale(settings, record, now).startswith(
        "no publish since it started 600 s ago"
    )
    write_status(settings.producer_status_path, {"published": 5, "last_publish_at": _iso(10), "sources": {}})
    assert supervisor._producer_stale(settings, record, now) == decide.OK
    write_status(
        settings.producer_status_path,
        {"last_publish_at": _iso(200), "sources": {"binance": {"last_publish_at": _iso(100)}}},
    )
    assert supervisor._producer_stale(settings, record, now) == "no publish for 100 s (limit 60 s)"
    # a young process is given the limit before it is judged
    assert supervisor._producer_stale(settings, _record(now - 30), now) == decide.OK


def test_stream_staleness_uses_progress_and_kafka_lag(tmp_path, monkeypatch):
    settings = load_settings(
        data_dir=tmp_path, kafka_topic="t", supervisor_stream_stale_s=120, supervisor_max_lag_messages=1000
    )
    now = time.time()
    record = _record(now - 900)
    ends = {0: 5000, 1: 4000}
    monkeypatch.setattr(health, "kafka_end_offsets", lambda s, timeout_s=10.0: ends)
    status = {
        "updated_at": _iso(5),
        "end_offset": {"t": {"0": 4990, "1": 3995}},
        "queries": {"raw": {"timestamp": _iso(5), "batch_id": 7}},
    }
    write_status(settings.stream_status_path, status)
    assert supervisor.stream_offsets(settings) == {0: 4990, 1: 3995}
    assert supervisor.stream_lag(settings) == 15
    assert supervisor._stream_stale(settings, record, now) == decide.OK

    ends.update({0: 7000})  # 2010 + 5 behind > 1000
    assert (
        supervisor._stream_stale(settings, record, now) == "stream is 2015 messages behind Kafka (limit 1000)"
    )

    ends.update({0: 4995})  # 5 + 5 waiting but no progress for 300 s: stuck
    write_status(settings.stream_status_path, {**status, "updated_at": _iso(300), "queries": {}})
    assert supervisor._stream_stale(settings, record, now) == (
        "no streaming progress for 300 s (limit 120 s) with 10 messages waiting"
    )

    ends.update({0: 4990, 1: 3995})  # idle and caught up: quiet is fine
    assert supervisor._stream_stale(settings, record, now) == decide.OK


def test_producer_problems_are_echoed_from_the_log(sup_settings):
    path = supervisor.log_path(sup_settings, "producer")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "==== 2026-01-01T00:00:00.000Z supervisor starts producer (x)\n"
        "old: Binance API unreachable\n"
        "==== 2026-01-01T01:00:00.000Z supervisor starts producer (x)\n"
        "INFO polling\n"
        "ERROR live APIs unreachable (api.binance.com): run `make run SOURCE=simulate` to work offline\n"
    )
    assert supervisor.producer_problems(sup_settings) == [
        "ERROR live APIs unreachable (api.binance.com): run `make run SOURCE=simulate` to work offline"
    ]


def _supervisor_cli(settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BTC_DATA_DIR": str(settings.data_dir), "BTC_SUPERVISOR_STOP_TIMEOUT_S": "5"}
    return subprocess.run(
        [sys.executable, "-m", "btc_platform.ops.supervisor", *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def test_cli_status_of_a_never_started_process_says_so(sup_settings):
    proc = _supervisor_cli(sup_settings, "status")
    assert proc.returncode == 0, proc.stderr
    assert "producer: absent (pid None) - never started" in proc.stderr
    assert "stream: absent (pid None) - never started" in proc.stderr


def test_cli_stop_kills_the_recorded_process_group(sup_settings):
    """`stop` of a process recorded through btc_platform.ops.process ends it and its group."""
    record = table.start_process(sup_settings, _sleep_spec(sup_settings, "producer"))
    child = subprocess.Popen(["sleep", "300"], start_new_session=False)  # not in its group: left alone
    try:
        status = _supervisor_cli(sup_settings, "status", "producer")
        assert f"producer: running (pid {record.pid})" in status.stderr, status.stderr
        proc = _supervisor_cli(sup_settings, "stop", "producer")
        assert proc.returncode == 0, proc.stderr
        assert f"producer: stopped (pid {record.pid}) - stopped (SIGTERM to {record.pid}, " in proc.stderr
        assert process.group_members(record.pgid) == []
        assert not process.is_alive(record)
        assert not supervisor.record_path(sup_settings, "producer").exists()
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("args", [("restart",), ("status", "kafka"), ("check", "all", "--bogus")])
def test_cli_argument_errors_exit_2(sup_settings, args):
    proc = _supervisor_cli(sup_settings, *args)
    assert proc.returncode == 2
    assert "usage: python -m btc_platform.ops.supervisor" in proc.stderr


# ---------------------------------------------------------------------------------------------
# Pure decisions (btc_platform.ops.supervisor.decide): observations in, "ok" or a reason out
# ---------------------------------------------------------------------------------------------
def test_decide_lifecycle_start_death_and_config_change():
    now = 1_000_000.0
    assert decide.lifecycle(None, False, "f1") == "no supervised process yet"
    assert decide.lifecycle(_record(now, pid=17), False, "f1") == "process 17 is not running (died)"
    assert decide.lifecycle(_record(now, "f1"), True, "f2") == "configuration changed (f1 -> f2)"
    assert decide.lifecycle(_record(now, "f1"), True, "f1") == decide.OK


def test_decide_stale_producer():
    now = 1_000_000.0
    assert decide.producer(now - 600, now, None, 60) == "no publish since it started 600 s ago (limit 60 s)"
    assert decide.producer(now - 600, now, now - 700, 60).startswith("no publish since it started")
    assert decide.producer(now - 600, now, now - 100, 60) == "no publish for 100 s (limit 60 s)"
    assert decide.producer(now - 600, now, now - 10, 60) == decide.OK
    assert decide.producer(now - 30, now, None, 60) == decide.OK  # fresh start: grace


def test_decide_stream_lag_idle_and_grace():
    now, limit, max_lag = 1_000_000.0, 120, 1000
    started = now - 900
    # more than the lag limit behind Kafka: stale even with fresh progress
    assert decide.stream(started, now, now - 5, 2015, limit, max_lag) == (
        "stream is 2015 messages behind Kafka (limit 1000)"
    )
    # idle: no progress for long, but nothing waiting in Kafka -> healthy
    assert decide.stream(started, now, now - 600, 0, limit, max_lag) == decide.OK
    # quiet with messages waiting -> stuck
    assert decide.stream(started, now, now - 300, 10, limit, max_lag) == (
        "no streaming progress for 300 s (limit 120 s) with 10 messages waiting"
    )
    assert decide.stream(started, now, None, None, limit, max_lag) == (
        "no streaming progress since it started 900 s ago (limit 120 s)"
    )
    assert decide.stream(started, now, now - 5, 10, limit, max_lag) == decide.OK
    # a fresh job gets the stale limit to start up, whatever the lag
    assert decide.in_grace(now - 60, now, limit)
    assert decide.stream(now - 60, now, None, 50_000, limit, max_lag) == decide.OK
    # one that has made no progress since its start (the progress before it is its predecessor's)
    # is still starting for 2.5 stale limits, then it is stale
    assert decide.stream(now - 290, now, None, 10, limit, max_lag) == decide.OK
    assert decide.stream(now - 290, now, now - 500, 50_000, limit, max_lag) == decide.OK
    assert decide.stream(now - 301, now, now - 500, 10, limit, max_lag) == (
        "no streaming progress since it started 301 s ago (limit 120 s)"
    )
    # once it made progress, the stale limit applies again
    assert decide.stream(now - 200, now, now - 130, 10, limit, max_lag) == (
        "no streaming progress for 130 s (limit 120 s) with 10 messages waiting"
    )


def test_old_format_record_is_not_ours(sup_settings, caplog):
    """A pid record of the previous format cannot be verified: not running, never signalled."""
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        write_status(
            supervisor.record_path(sup_settings, "producer"),
            {"name": "producer", "pid": victim.pid, "pgid": victim.pid, "start_ticks": 1, "started_epoch": 0},
        )
        with caplog.at_level(logging.WARNING, logger="btc_platform.ops.process"):
            assert supervisor.status("producer", sup_settings).action == "absent"
        assert "cannot be verified" in caplog.text
        assert supervisor.stop("producer", sup_settings).reason == "not running"
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


# Real processes (kill -9 of the producer and of the stream job, each restarted by the supervisor,
# every message in raw_data exactly once): tests/test_chaos.py (producer_kill, stream_kill) in make
# test, bench/chaos.py in make chaos.


def test_wait_until_supervised_names_the_offline_option(sup_settings):
    """What `make run` prints when the producer runs but cannot reach the live APIs."""
    spec = _sleep_spec(sup_settings, "producer")
    supervisor._ensure(sup_settings, spec, _never_stale)
    supervisor._ensure(sup_settings, _sleep_spec(sup_settings, "stream"), _never_stale)
    with open(supervisor.log_path(sup_settings, "producer"), "a") as handle:
        handle.write(
            "ERROR Binance API is unreachable (ConnectionError). The live source needs internet access\n"
        )
    write_status(sup_settings.producer_status_path, {"last_publish_at": "2026-01-02T03:04:05.678Z"})
    lines = supervisor.wait_until_supervised(sup_settings, timeout_s=5, sleep=lambda _s: None)
    text = "\n".join(lines)
    assert "producer: last publish to Kafka at 2026-01-02T03:04:05+00:00" in text
    assert text.startswith("producer: running (pid ")
    assert "stream: running" in text
    assert "Binance API is unreachable" in text
    assert "make run SOURCE=simulate" in text and "Nothing is switched to simulated data" in text


def test_the_fingerprint_follows_explicit_settings_not_the_code_defaults(tmp_path):
    """A default edited in the code (old triggerer, new tasks) must not flip the fingerprint at
    every check; a value the user sets must."""
    base = load_settings(data_dir=tmp_path, producer_source="simulate")
    other_default = base.model_copy()
    object.__setattr__(other_default, "producer_status_interval_s", base.producer_status_interval_s + 7)
    assert "producer_status_interval_s" not in other_default.model_fields_set
    first, second = supervisor.producer_spec(base), supervisor.producer_spec(other_default)
    assert second.env["BTC_PRODUCER_STATUS_INTERVAL_S"] != first.env["BTC_PRODUCER_STATUS_INTERVAL_S"]
    assert second.fingerprint == first.fingerprint

    explicit = load_settings(data_dir=tmp_path, producer_source="simulate",
                             producer_status_interval_s=base.producer_status_interval_s + 7)  # fmt: skip
    assert supervisor.producer_spec(explicit).fingerprint != first.fingerprint
    moved = load_settings(data_dir=tmp_path / "elsewhere", producer_source="simulate")
    assert supervisor.producer_spec(moved).fingerprint != first.fingerprint


def test_wait_until_supervised_reports_what_did_not_start(sup_settings):
    lines = supervisor.wait_until_supervised(sup_settings, timeout_s=0.1, poll_s=0.05)
    assert lines[0].startswith("producer: NOT running after 0 s (never started)")
    assert lines[1].startswith("stream: NOT running")


def test_launch_specs_follow_the_settings(tmp_path):
    import zipfile

    local = load_settings(data_dir=tmp_path, producer_source="simulate", spark_master="local[2]")
    producer = supervisor.producer_spec(local)
    assert producer.argv[1:] == ("-m", "btc_platform.ingest.producer", "--source", "simulate")
    assert producer.env["BTC_DATA_DIR"] == str(tmp_path)
    assert supervisor.producer_spec(local, "live").fingerprint != producer.fingerprint

    stream = supervisor.stream_spec(local)
    assert stream.argv[0].endswith("spark-submit")
    assert stream.argv[stream.argv.index("--master") + 1] == "local[2]"
    assert stream.argv[-3:] == (
        str(supervisor.PROJECT_ROOT / "spark_jobs" / "stream_job.py"),
        "--master",
        "local[2]",
    )
    assert "--py-files" not in stream.argv  # local master: the driver imports the installed package
    # the stream's own driver memory and GC, not the batch jobs' defaults
    assert f"spark.driver.memory={local.stream_driver_memory}" in stream.argv
    assert any(a.startswith("spark.driver.extraJavaOptions=") and local.stream_driver_java_options in a
               for a in stream.argv)  # fmt: skip

    cluster = load_settings(data_dir=tmp_path, spark_master="spark://master:7077")
    spec = supervisor.stream_spec(cluster)
    assert spec.fingerprint != stream.fingerprint
    archive = spec.argv[spec.argv.index("--py-files") + 1]
    names = zipfile.ZipFile(archive).namelist()
    assert "btc_platform/ops/supervisor/__init__.py" in names and "btc_platform/ops/process.py" in names
    assert "spark_jobs/stream_transforms.py" in names


def test_records_from_another_machine_are_never_signalled(sup_settings):
    """A pid record left by another container/boot (shared data volume) must not kill local pids."""
    spec = _sleep_spec(sup_settings)
    first = supervisor._ensure(sup_settings, spec, _never_stale)
    record = supervisor.read_record(sup_settings, "producer")
    process.write_record(
        supervisor.record_path(sup_settings, "producer"), dataclasses.replace(record, machine="other-host/old-boot")
    )
    result = supervisor._ensure(sup_settings, spec, _never_stale)
    assert result.action == "restarted" and result.reason == f"process {first.pid} is not running (died)"
    assert not _gone_or_zombie(first.pid), "the local process with that pid was signalled"
    os.kill(first.pid, signal.SIGKILL)


def test_stream_stop_signals_the_python_driver_so_the_launcher_exits_with_it(sup_settings):
    """Under spark-submit the group leader is the JVM and the Python driver (stream_job.py) its
    child: SIGTERM goes to the driver (which stops its queries cleanly), the launcher follows."""
    code = (
        "import subprocess, sys; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', 'stream_job.py']); "
        "sys.exit(child.wait())"
    )
    spec = launch.spec(sup_settings, "stream", (sys.executable, "-c", code))
    started = supervisor._ensure(sup_settings, spec, _never_stale)
    driver = wait_until(
        lambda: [p for p in process.group_members(started.pid) if p != started.pid],
        10,
        "the child process",
    )[0]
    stopped = supervisor.stop("stream", sup_settings)
    assert stopped.reason.startswith(f"stopped (SIGTERM to {driver}, ")
    assert process.group_members(started.pid) == []


def test_producer_waiting_out_a_ban_or_the_broker_is_healthy(tmp_path, caplog):
    settings = load_settings(data_dir=tmp_path, supervisor_producer_stale_s=60)
    now = time.time()
    old = _record(now - 600)
    base = {"last_publish_at": _iso(300), "sources": {}}
    ban = {"binance": {"reason": "ip_ban", "until": _iso(-120)}}
    write_status(settings.producer_status_path, {**base, "updated_at": _iso(2), "waiting": ban})
    with caplog.at_level(logging.INFO):
        assert supervisor._producer_stale(settings, old, now) == decide.OK
    assert "no publish within 60 s but healthy, ok, waiting: binance ip_ban until" in caplog.text
    # a status record that is itself stale proves nothing (hung or dead producer)
    write_status(settings.producer_status_path, {**base, "updated_at": _iso(100), "waiting": ban})
    assert supervisor._producer_stale(settings, old, now) == "no publish for 300 s (limit 60 s)"
    # a ban that is over is no excuse
    over = {"binance": {"reason": "ip_ban", "until": _iso(5)}}
    write_status(settings.producer_status_path, {**base, "updated_at": _iso(2), "waiting": over})
    assert supervisor._producer_stale(settings, old, now) == "no publish for 300 s (limit 60 s)"
    # the broker down: waiting since a time
    kafka = {"kafka": {"reason": "broker_unreachable", "since": _iso(200)}}
    write_status(settings.producer_status_path, {**base, "updated_at": _iso(1), "waiting": kafka})
    assert supervisor._producer_stale(settings, old, now) == decide.OK
    assert decide.producer(now - 600, now, now - 100, 60, "binance ip_ban") == "ok, waiting: binance ip_ban"
