"""Supervision in Airflow's triggerer: the health assessment the trigger runs, its watch loop
and events, the local services (Kafka) checked and restarted, and a restart through that path.

The processes are real (``sleep`` stand-ins recorded with the real launch fingerprints, a real
Kafka broker for the integration test). The watch loop (what the trigger's ``run()`` yields) is
driven with asyncio as the triggerer drives it, and ``handle`` is what the resumed task runs;
both are Airflow-free. The Airflow classes themselves (trigger serialisation, events, the
operator's defer) are checked in a subprocess with its own AIRFLOW_HOME, like every Airflow
test here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta

import psutil
import pytest

from btc_platform.ops import supervisor
from btc_platform.ops.supervisor import launch, table
from btc_platform.ops.supervisor.watch import handle, run_end, watch
from btc_platform.settings import get_settings, load_settings
from btc_platform.testing.polling import free_ports, wait_until


def _stand_in(settings, name: str) -> supervisor.CheckResult:
    """Start a ``sleep`` recorded as ``name`` with the fingerprint of the real launch, so the
    lifecycle decision sees the configured process running."""
    real = launch.producer_spec(settings) if name == supervisor.PRODUCER else launch.stream_spec(settings)
    argv = (sys.executable, "-c", "import time; time.sleep(600)")
    spec = supervisor.LaunchSpec(name, argv, real.env, real.fingerprint)
    record = table.start_process(settings, spec)
    return supervisor.CheckResult(name, "started", "stand-in", record.pid)


def _dead(pid: int) -> bool:
    """The process has exited (gone, or a zombie its parent has not reaped yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def env_settings(tmp_path, monkeypatch):
    """Settings from the environment (as the triggerer reads them), in a temporary data dir."""
    monkeypatch.setenv("BTC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BTC_SUPERVISOR_STOP_TIMEOUT_S", "5")
    (kafka_port,) = free_ports(1)
    monkeypatch.setenv("BTC_KAFKA_PORT", str(kafka_port))  # nothing listens there
    get_settings.cache_clear()
    settings = get_settings()
    yield settings
    for name in supervisor.NAMES:
        supervisor.stop(name, settings)
    get_settings.cache_clear()


WATCH_LOG = logging.getLogger("tests.watch")


def _events(end_at: str, interval_s: float, timeout_s: float = 30.0) -> list[dict]:
    """Every payload the watch loop yields (it yields one, then ends)."""

    async def collect():
        return [payload async for payload in watch(end_at, interval_s, WATCH_LOG)]

    return asyncio.run(asyncio.wait_for(collect(), timeout_s))


def _soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


# ---------------------------------------------------------------------------------------------
# the health assessment (what the trigger runs)
# ---------------------------------------------------------------------------------------------
def test_assess_names_absent_dead_stale_and_reconfigured_processes(env_settings):
    s = env_settings
    assert supervisor.assess(s) == {
        "producer": "no supervised process yet",
        "stream": "no supervised process yet",
    }
    producer = _stand_in(s, supervisor.PRODUCER)
    _stand_in(s, supervisor.STREAM)
    assert supervisor.assess(s) == {}, "running, configured, within their start-up grace"

    os.kill(producer.pid, signal.SIGKILL)
    wait_until(lambda: _dead(producer.pid), 10, f"the killed producer {producer.pid} to be gone", interval_s=0.02)
    assert supervisor.assess(s) == {"producer": f"process {producer.pid} is not running (died)"}
    supervisor.stop(supervisor.PRODUCER, s)
    _stand_in(s, supervisor.PRODUCER)

    # 10 minutes later: neither published nor progressed (the stream's lag is unknown: no Kafka)
    later = time.time() + 600
    due = supervisor.assess(s, now=later)
    assert due["producer"].startswith("stale: no publish since it started 6")
    assert due["stream"].startswith("stale: no streaming progress since it started 6")

    changed = load_settings(data_dir=s.data_dir, supervisor_stop_timeout_s=5, producer_flush_timeout_s=7)
    due = supervisor.assess(changed)
    assert due["producer"].startswith("configuration changed (")
    assert due["stream"].startswith("configuration changed (")


def test_assess_keeps_a_producer_backing_off_from_exchange_failures_and_says_why(env_settings, caplog):
    """Alive and retrying 5xx / truncated / garbage answers: not stale (restarting would only call
    the failing exchange again); a producer whose status stopped (hung) or that stopped trying is."""
    from btc_platform.status import write_status

    s = env_settings
    _stand_in(s, supervisor.PRODUCER)
    _stand_in(s, supervisor.STREAM)
    later = time.time() + 600  # 10 minutes without a publish

    def at(seconds_before_later: float) -> str:
        return datetime.fromtimestamp(later - seconds_before_later, UTC).isoformat()

    failing = {"reason": "exchange_failing", "until": None, "kind": "http_5xx", "failures": 41,
               "since": at(500), "last_failure": at(3), "next_attempt": at(-4), "detail": "HTTP 503"}  # fmt: skip
    write_status(s.producer_status_path, {"updated_at": at(2), "last_publish_at": at(520),
                                          "waiting": {"binance": failing}})  # fmt: skip
    with caplog.at_level(logging.DEBUG, logger="btc_platform.ops.supervisor"):
        assert "producer" not in supervisor.assess(s, now=later)
        first = [r for r in caplog.records if "but healthy" in r.getMessage()]
        assert [r.levelno for r in first] == [logging.INFO]
        assert first[0].getMessage() == (
            "producer: no publish within 60 s but healthy, ok, waiting: binance failing: 41 failed attempts "
            f"(http_5xx: HTTP 503) since {at(500)}, backing off, next attempt at {at(-4)} (4 s)"
        )
        caplog.clear()
        assert "producer" not in supervisor.assess(s, now=later + 1)  # the next check: same cause, not repeated
        assert [r.levelno for r in caplog.records if "but healthy" in r.getMessage()] == [logging.DEBUG]
        # the kind changed: logged again
        caplog.clear()
        write_status(s.producer_status_path, {"updated_at": at(2), "last_publish_at": at(520),
                                              "waiting": {"binance": {**failing, "kind": "truncated"}}})  # fmt: skip
        assert "producer" not in supervisor.assess(s, now=later)
        assert [r.levelno for r in caplog.records if "but healthy" in r.getMessage()] == [logging.INFO]

    # hung: the status record itself is 2 minutes old
    write_status(s.producer_status_path, {"updated_at": at(120), "last_publish_at": at(520),
                                          "waiting": {"binance": failing}})  # fmt: skip
    assert supervisor.assess(s, now=later)["producer"] == "stale: no publish for 520 s (limit 60 s)"
    # alive but no longer trying (last failure and next attempt long past)
    stopped = {**failing, "last_failure": at(300), "next_attempt": at(290)}
    write_status(s.producer_status_path, {"updated_at": at(2), "last_publish_at": at(520),
                                          "waiting": {"binance": stopped}})  # fmt: skip
    assert supervisor.assess(s, now=later)["producer"] == "stale: no publish for 520 s (limit 60 s)"


def test_assess_and_ensure_services_report_a_dead_kafka_that_cannot_be_restarted(env_settings, caplog):
    s = load_settings(data_dir=env_settings.data_dir, kafka_port=env_settings.kafka_port,
                      supervisor_services="kafka")  # fmt: skip
    assert s.supervisor_services == ("kafka",)
    _stand_in(s, supervisor.PRODUCER)
    _stand_in(s, supervisor.STREAM)
    assert supervisor.assess(s) == {"kafka": "not running"}
    # the port is taken by something that is not our broker: a restart cannot succeed, and the
    # check fails with the reason (the Airflow try goes red, its retries check again)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", s.kafka_port))
        squatter.listen()
        with pytest.raises(supervisor.SupervisorError) as failed:
            supervisor.ensure_all(s)
    message = str(failed.value)
    assert message.startswith("kafka is down (not running) and could not be restarted: port ")
    assert "BTC_KAFKA_PORT" in message
    assert "kafka: unhealthy (not running): restarting it" in caplog.text


def test_a_check_that_cannot_restart_fails_and_paces_the_next_run(env_settings, monkeypatch, caplog):
    """The resumed task's check fails with the reason (the run goes red) and remembers it; the
    next run sees the recent failure (it watches before acting); a good check forgets it."""
    from btc_platform.ops.supervisor import watch as watch_module

    monkeypatch.setenv("BTC_SUPERVISOR_SERVICES", "kafka")
    get_settings.cache_clear()
    s = get_settings()
    _stand_in(s, supervisor.PRODUCER)
    _stand_in(s, supervisor.STREAM)
    assert watch_module.recent_failure(s) is None
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", s.kafka_port))
        squatter.listen()
        with caplog.at_level(logging.ERROR, logger="tests.watch"), pytest.raises(supervisor.SupervisorError):
            handle({"due": {"kafka": "not running"}, "found_at": "T"}, WATCH_LOG)
    assert "supervision cannot do its job, this run fails (the next one checks again): kafka is down" in caplog.text
    failed = watch_module.recent_failure(s)
    assert failed["reason"].startswith("kafka is down (not running) and could not be restarted: port ")
    assert time.time() - failed["at"] < 60
    assert watch_module.recent_failure(s, now=failed["at"] + watch_module.FAILURE_PACING_S + 1) is None

    monkeypatch.setenv("BTC_SUPERVISOR_SERVICES", "")  # nothing left that cannot be restarted
    get_settings.cache_clear()
    assert handle({"due": {}, "found_at": "T"}, WATCH_LOG) is True
    assert watch_module.recent_failure(get_settings()) is None


def test_a_dead_airflow_scheduler_is_found_by_its_marker_and_command_line(env_settings):
    """``airflow standalone`` never restarts its scheduler; the trigger's ensure_scheduler starts
    one only when no scheduler process of this platform instance lives."""
    from btc_platform.ops.services import airflow as airflow_service
    from btc_platform.ops.services import base

    s = env_settings
    assert airflow_service.scheduler_pids(s) == []
    # a stand-in with the command line of standalone's child (`.../airflow scheduler`), marked as ours
    fake_bin = s.data_dir / "bin" / "airflow"
    fake_bin.parent.mkdir(parents=True, exist_ok=True)
    fake_bin.write_text("import time\ntime.sleep(600)\n")
    record = base.spawn(s, "airflow-scheduler", [sys.executable, str(fake_bin), "scheduler"], base.base_env(),
                        s.data_dir)  # fmt: skip
    other = base.spawn(s, "airflow-triggerer", [sys.executable, str(fake_bin), "triggerer"], base.base_env(),
                       s.data_dir)  # fmt: skip
    try:
        assert airflow_service.scheduler_pids(s) == [record.pid]
        assert airflow_service.ensure_scheduler(s) is None, "one runs: nothing started"
    finally:
        base.terminate(s, "airflow-scheduler", 5)
        base.terminate(s, "airflow-triggerer", 5)
    assert airflow_service.scheduler_pids(s) == [], "killed: a restart is due"
    assert load_settings().supervisor_airflow_scheduler is False  # only `btc-services run` turns it on
    assert other.pid not in airflow_service.scheduler_pids(s)


def test_hdfs_is_assessed_when_it_is_the_storage(env_settings):
    s = load_settings(data_dir=env_settings.data_dir, supervisor_services="kafka,hdfs",
                      kafka_port=env_settings.kafka_port)  # fmt: skip
    assert supervisor.assess(s) == {"kafka": "not running", "hdfs": "not running"}


def test_a_running_service_is_restarted_only_when_its_problem_lasts(env_settings, monkeypatch):
    answers = iter(["metadata request failed: timed out", None])
    monkeypatch.setattr(supervisor, "service_problem", lambda s, name: next(answers))
    waits = []
    assert supervisor._lasting_problem(env_settings, "kafka", sleep=waits.append) is None
    assert waits == [supervisor.SERVICE_RECHECK_S], "asked again once, then it answered"

    lasting = iter(["metadata request failed: timed out"] * 3)
    monkeypatch.setattr(supervisor, "service_problem", lambda s, name: next(lasting))
    waits.clear()
    assert supervisor._lasting_problem(env_settings, "kafka", sleep=waits.append).startswith("metadata request")
    assert len(waits) == supervisor.SERVICE_RECHECKS

    dead = iter(["not running"])
    monkeypatch.setattr(supervisor, "service_problem", lambda s, name: next(dead))
    waits.clear()
    assert supervisor._lasting_problem(env_settings, "kafka", sleep=waits.append) == "not running"
    assert waits == [], "a dead process is restarted at once"


def test_the_local_platform_supervises_the_services_it_runs():
    from btc_platform.ops.lifecycle import supervised_services

    assert supervised_services(load_settings()) == ("kafka", "monitor")
    assert supervised_services(load_settings(storage_root="hdfs://127.0.0.1:8020/bitcoin")) == ("kafka", "hdfs", "monitor")


def test_supervised_services_setting_is_validated():
    assert load_settings(supervisor_services="kafka, hdfs").supervisor_services == ("kafka", "hdfs")
    assert load_settings().supervisor_services == ()
    with pytest.raises(ValueError, match="supervised services must be kafka, hdfs and/or monitor, got zookeeper"):
        load_settings(supervisor_services="kafka,zookeeper")


# ---------------------------------------------------------------------------------------------
# the trigger
# ---------------------------------------------------------------------------------------------
def test_watch_fires_with_the_reasons_when_something_is_due(env_settings):
    _stand_in(env_settings, supervisor.STREAM)
    events = _events(_soon(60), 0.05)
    assert len(events) == 1
    assert events[0]["due"] == {"producer": "no supervised process yet"}
    assert events[0]["checks"] == 1


def test_watch_stays_quiet_while_healthy_and_ends_with_the_run(env_settings):
    _stand_in(env_settings, supervisor.PRODUCER)
    _stand_in(env_settings, supervisor.STREAM)
    started = time.monotonic()
    events = _events(_soon(1.0), 0.1)
    assert [e.get("ended") for e in events] == [True]
    assert events[0]["checks"] >= 5, "it kept checking until the end"
    assert time.monotonic() - started >= 0.9


def test_watch_survives_a_failing_check(env_settings, monkeypatch, caplog):
    calls = []

    def flaky(settings):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("status file unreadable")
        return {"producer": "stale: no publish for 99 s (limit 60 s)"}

    monkeypatch.setattr(supervisor, "assess", flaky)
    with caplog.at_level(logging.WARNING, logger="tests.watch"):
        events = _events(_soon(60), 0.05)
    assert events == [{"due": {"producer": "stale: no publish for 99 s (limit 60 s)"},
                       "found_at": events[0]["found_at"], "checks": 1}]  # fmt: skip
    assert "health check failed (OSError: status file unreadable)" in caplog.text


def test_handle_ends_the_run_or_checks_and_watches_again(env_settings, caplog):
    with caplog.at_level(logging.INFO, logger="tests.watch"):
        assert handle({"ended": True, "checks": 4320}, WATCH_LOG) is False
    assert "supervision run over (4320 checks in the triggerer)" in caplog.text
    _stand_in(env_settings, supervisor.PRODUCER)
    _stand_in(env_settings, supervisor.STREAM)
    with caplog.at_level(logging.INFO):
        again = handle({"due": {"stream": "stale: no streaming progress for 200 s"}, "found_at": "T"}, WATCH_LOG)
    assert again is True
    assert "trigger found at T: stream needs a (re)start: stale: no streaming progress for 200 s" in caplog.text
    assert "producer: ok (pid" in caplog.text and "stream: ok (pid" in caplog.text


AIRFLOW_CHECK = textwrap.dedent(
    """
    import asyncio, importlib, json, sys
    from airflow.sdk.exceptions import TaskDeferred
    from btc_platform.ops.supervisor.trigger import SupervisionTrigger, SupervisorOperator

    end_at = sys.argv[1]
    classpath, kwargs = SupervisionTrigger(end_at=end_at, interval_s=0.05).serialize()
    module, _, name = classpath.rpartition(".")
    trigger = getattr(importlib.import_module(module), name)(**kwargs)  # as the triggerer rebuilds it

    async def first():
        async for event in trigger.run():
            return event

    event = asyncio.run(first())
    operator = SupervisorOperator(task_id="supervise", interval_s=20, run_days=1)
    ended = operator.resume({}, event={"ended": True, "checks": 1})
    # a run that starts right after a failed one watches first: it defers without acting
    from btc_platform.ops import supervisor
    from btc_platform.settings import get_settings
    from btc_platform.status import write_status
    from btc_platform.ops.supervisor.watch import _failure_path
    import time
    write_status(_failure_path(get_settings()), {"at": time.time() - 5, "reason": "kafka is down"})
    try:
        operator.execute({})
    except TaskDeferred as deferred:
        paced = {"method": deferred.method_name, "producer": supervisor.status("producer").action}
    try:
        operator._defer(end_at)
    except TaskDeferred as deferred:
        again = {"method": deferred.method_name, "kwargs": deferred.kwargs,
                 "trigger": list(deferred.trigger.serialize())}
    print("CHECK " + json.dumps({"classpath": classpath, "kwargs": kwargs, "rebuilt": list(trigger.serialize()),
                                 "event": type(event).__name__, "payload": event.payload, "ended": ended,
                                 "deferred": again, "paced": paced}))
    """
)


def test_airflow_trigger_and_operator_in_their_own_airflow_home(tmp_path):
    from btc_platform.ops.airflow_env import airflow_env

    settings = load_settings(data_dir=tmp_path / "data")
    env = {**os.environ, **airflow_env(settings)}
    end_at = _soon(3600)
    proc = subprocess.run([sys.executable, "-c", AIRFLOW_CHECK, end_at], env=env, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("CHECK "))
    result = json.loads(line.removeprefix("CHECK "))
    assert result["classpath"] == "btc_platform.ops.supervisor.trigger.SupervisionTrigger"
    assert result["rebuilt"] == [result["classpath"], result["kwargs"]]
    assert result["kwargs"]["end_at"] == end_at and result["kwargs"]["interval_s"] == 0.05
    # an empty data dir: nothing runs yet, the trigger's event says so
    assert result["event"] == "TriggerEvent"
    assert result["payload"]["due"] == {"producer": "no supervised process yet", "stream": "no supervised process yet"}
    assert result["ended"] is None, "the run is over: no new deferral"
    deferred = result["deferred"]
    assert deferred["method"] == "resume" and deferred["kwargs"] == {"end_at": end_at}
    assert deferred["trigger"] == [result["classpath"], {"end_at": end_at, "interval_s": 20.0, "report_every_s": 3600.0}]
    assert result["paced"] == {"method": "resume", "producer": "absent"}, "deferred without starting anything"


def test_run_end_is_a_day_after_the_run_started_and_never_in_the_past():
    start = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    assert run_end(start, 1.0, now=start + timedelta(hours=5)) == start + timedelta(days=1)
    late = start + timedelta(days=2)
    assert run_end(start, 1.0, now=late) == late


# ---------------------------------------------------------------------------------------------
# a dead broker restarted through the new path (integration: a real Kafka)
# ---------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_killed_kafka_is_found_by_the_trigger_and_restarted_by_the_resumed_task(env_settings, monkeypatch, caplog):
    from btc_platform.ops import services

    broker, controller = free_ports(2)
    for key, value in {"KAFKA_PORT": broker, "KAFKA_CONTROLLER_PORT": controller, "KAFKA_HEAP": "256m",
                       "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker}", "SUPERVISOR_SERVICES": "kafka"}.items():
        monkeypatch.setenv(f"BTC_{key}", str(value))
    get_settings.cache_clear()
    settings = get_settings()
    try:
        services.start_kafka(settings)
        _stand_in(settings, supervisor.PRODUCER)  # healthy stand-ins: only the broker is due
        _stand_in(settings, supervisor.STREAM)
        first = services.base.read_pid(settings, "kafka")
        os.kill(first.pid, signal.SIGKILL)
        killed = time.monotonic()

        # triggerer side: the trigger's watch loop finds the dead broker and fires
        events = _events(_soon(120), 0.5)
        assert events[0]["due"] == {"kafka": "not running"}
        found_s = time.monotonic() - killed

        # worker side: the resumed task handles the event: restarts the broker (reason in its
        # log), checks producer and stream, and watches again
        with caplog.at_level(logging.INFO):
            again = handle(events[0], WATCH_LOG)
        back_s = time.monotonic() - killed
        assert again is True
        assert services.kafka_health(settings) is None
        second = services.base.read_pid(settings, "kafka")
        assert second.pid != first.pid
        assert "kafka needs a (re)start: not running" in caplog.text
        assert f"kafka: restarted (pid {second.pid}) - not running" in caplog.text
        assert "producer: ok" in caplog.text and "stream: ok" in caplog.text
        assert [(e["name"], e["action"]) for e in supervisor.read_events(settings)][-1] == ("kafka", "restarted")
        logging.getLogger(__name__).info("kafka found dead after %.1f s, healthy again after %.1f s", found_s, back_s)
    finally:
        services.stop("kafka", settings)
