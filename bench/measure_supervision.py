"""Cost of supervision on a running platform (``make run SOURCE=simulate``), and how fast a
killed producer comes back.

Not a ``bench_*`` module (``make bench`` does not run it): it needs the platform up. It measures

* CPU seconds of Airflow (``airflow standalone`` and every process of its session: scheduler,
  dag-processor, triggerer, API server and the task processes they start; the producer and
  the stream run in their own sessions and are not counted) over ``--window`` seconds, per hour;
* the ``btc_stream_supervisor`` DAG runs and task tries that started in the window, per day;
* with ``--kill-producer``: SIGKILL of the supervised producer, then the seconds until a new
  producer process runs and until it has published;
* with ``--kill-kafka``: SIGKILL of the local broker, then the seconds until a new one is
  healthy, and whether the producer was kept meanwhile;
* with ``--kill-scheduler`` (first): SIGKILL of the Airflow scheduler, then the seconds until a
  new one runs (the supervisor's trigger starts it) and the API reports it healthy;
* with ``--count`` (last): Airflow and the producer stopped, the stream drained, accepted vs
  raw_data by ``message_id`` (lost, duplicated);
* with ``--memory``: the RSS of every process of this platform instance (the ones ``btc-services``
  marked, and their children), per component: each Airflow component apart (with the task
  processes and executor workers under the one that started them), the supervised producer and
  stream (Spark driver) apart from Airflow, Kafka, HDFS; then the total. RSS counts the pages
  forked processes share once per process, as ``ps`` does.

Usage (settings from the ``BTC_*`` environment, as ``make run``)::

    python bench/measure_supervision.py --window 300 --kill-producer [--kill-kafka]
    python bench/measure_supervision.py --memory --window 0
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

from btc_platform.testing.faults import kill_schedulers, wait_scheduler_back

log = logging.getLogger("measure_supervision")
DAG_ID = "btc_stream_supervisor"


COMPONENTS = ("scheduler", "triggerer", "dag-processor", "api-server")


def _component(proc: psutil.Process) -> str:
    """The Airflow component a process belongs to (its own or an ancestor's sub-command)."""
    while proc is not None:
        try:
            argv = proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return "other"
        for name in COMPONENTS:
            if name in argv[1:3] or any(arg.endswith(f"airflow {name}") for arg in argv):
                return name
        proc = proc.parent()
    return "standalone"


def airflow_cpu_seconds(root_pid: int) -> dict[str, float]:
    """CPU seconds (user + system, with reaped children) per Airflow component of ``root_pid``
    and the live processes of its session below it: every process that ever ran there is counted
    once (a reaped one in its parent's children times; task processes are the scheduler's
    executor's children)."""
    root = psutil.Process(root_pid)
    session = os.getsid(root_pid)
    total: dict[str, float] = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            if os.getsid(proc.pid) != session:
                continue  # detached (producer, stream): not Airflow's cost
            times = proc.cpu_times()
            name = "standalone" if proc.pid == root_pid else _component(proc)
        except (psutil.NoSuchProcess, ProcessLookupError):
            continue
        total[name] = total.get(name, 0.0) + times.user + times.system + times.children_user + times.children_system
    return total


def _memory_component(proc: psutil.Process, marked: str) -> str:
    """What a process of the platform is, for the memory table: the supervised stream (its
    spark-submit and driver JVM) and producer apart from the Airflow task that started them."""
    argv = " ".join(proc.cmdline())
    if "stream_job.py" in argv:
        return "stream (Spark driver)"
    if "btc_platform.ingest.producer" in argv or "btc-producer" in argv:
        return "producer"
    if marked == "airflow":
        if argv.startswith("airflow api_server"):  # the API server retitles itself
            return "airflow api-server"
        return f"airflow {_component(proc)}"
    return marked


def memory_by_component(settings) -> dict[str, tuple[int, float]]:
    """(processes, RSS MiB) per component of every process of this platform instance: the
    processes ``btc-services`` marked, the supervised producer and stream, and their descendants
    (a process that retitles itself, like Airflow's API server and executor workers, loses the
    environment that marks it)."""
    from btc_platform.ops import process
    from btc_platform.ops.services import COMPONENT_ENV, marked_processes
    from btc_platform.ops.supervisor import NAMES, read_record

    # the supervised producer and stream by their pid records: the ones ``make run`` starts
    # before Airflow carry no marker
    supervised = [r.pid for r in (read_record(settings, name) for name in NAMES) if process.is_alive(r)]
    found: dict[int, tuple[psutil.Process, str]] = {}
    for pid in [*marked_processes(settings), *supervised]:
        try:
            proc = psutil.Process(pid)
            marked = proc.environ().get(COMPONENT_ENV, "?")
            for member in [proc, *proc.children(recursive=True)]:
                found.setdefault(member.pid, (member, marked))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    totals: dict[str, tuple[int, float]] = {}
    for proc, marked in found.values():
        try:
            name = _memory_component(proc, marked)
            rss = proc.memory_info().rss / 2**20
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        count, total = totals.get(name, (0, 0.0))
        totals[name] = (count + 1, total + rss)
    return totals


def log_memory(settings) -> float:
    """Log the RSS table; returns the total in MiB."""
    totals = memory_by_component(settings)
    for name, (count, rss) in sorted(totals.items(), key=lambda item: -item[1][1]):
        log.info("  %-28s %3d process(es) %8.0f MiB", name, count, rss)
    total = sum(rss for _, rss in totals.values())
    log.info("RSS of the platform: %.0f MiB (%.2f GiB) in %d processes", total, total / 1024,
             sum(count for count, _ in totals.values()))  # fmt: skip
    return total


def count_runs(db_path: str, since: datetime) -> tuple[int, int]:
    """(DAG runs, task instance tries) of the supervisor DAG that started after ``since``."""
    stamp = since.strftime("%Y-%m-%d %H:%M:%S")
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        runs = conn.execute(
            "SELECT count(*) FROM dag_run WHERE dag_id = ? AND start_date >= ?", (DAG_ID, stamp)
        ).fetchone()[0]
        tries = conn.execute(
            "SELECT count(*) FROM task_instance_history WHERE dag_id = ? AND start_date >= ?", (DAG_ID, stamp)
        ).fetchone()[0]
        tries += conn.execute(
            "SELECT count(*) FROM task_instance WHERE dag_id = ? AND start_date >= ?", (DAG_ID, stamp)
        ).fetchone()[0]
    return runs, tries


def kill_producer(settings, timeout_s: float = 240.0) -> tuple[float, float | None]:
    """SIGKILL the supervised producer; seconds until a new one runs and until it published."""
    from btc_platform.ops import supervisor
    from btc_platform.ops.process import is_alive

    old = supervisor.read_record(settings, supervisor.PRODUCER)
    if old is None or not is_alive(old):
        raise SystemExit("no running supervised producer to kill")
    os.kill(old.pid, signal.SIGKILL)
    killed = time.time()
    log.info("SIGKILL producer pid %d", old.pid)
    running = published = None
    while time.time() - killed < timeout_s and published is None:
        new = supervisor.read_record(settings, supervisor.PRODUCER)
        if running is None and new is not None and new.pid != old.pid and is_alive(new):
            running = time.time() - killed
            log.info("new producer pid %d running after %.1f s", new.pid, running)
        last = supervisor.last_publish_time(settings)
        if running is not None and last is not None and last > killed + running:
            published = time.time() - killed
            log.info("new producer published after %.1f s", published)
        time.sleep(0.5)
    if running is None:
        raise SystemExit(f"no new producer within {timeout_s:.0f} s")
    return running, published


def kill_kafka(settings, timeout_s: float = 240.0) -> float:
    """SIGKILL the local broker; seconds until a new broker answers its health check. Logs
    whether the producer was restarted meanwhile (it should wait for the broker instead)."""
    from btc_platform.ops import supervisor
    from btc_platform.ops.services import kafka_health
    from btc_platform.ops.services.base import read_pid

    old = read_pid(settings, "kafka")
    producer = supervisor.read_record(settings, supervisor.PRODUCER)
    if old is None:
        raise SystemExit("no running local Kafka to kill")
    os.kill(old.pid, signal.SIGKILL)
    killed = time.time()
    log.info("SIGKILL kafka pid %d", old.pid)
    while time.time() - killed < timeout_s:
        new = read_pid(settings, "kafka")
        if new is not None and new.pid != old.pid and kafka_health(settings) is None:
            back = time.time() - killed
            log.info("new kafka pid %d healthy after %.1f s", new.pid, back)
            after = supervisor.read_record(settings, supervisor.PRODUCER)
            log.info("producer %s meanwhile", "kept (same pid)" if after and producer and after.pid == producer.pid
                     else "RESTARTED")  # fmt: skip
            return back
        time.sleep(0.5)
    raise SystemExit(f"kafka not back within {timeout_s:.0f} s")


def kill_scheduler(settings, timeout_s: float = 300.0) -> tuple[float, float]:
    """SIGKILL every Airflow scheduler process of this platform; seconds until a new scheduler
    process runs and until the API reports it healthy (:func:`wait_scheduler_back`)."""
    old, killed = kill_schedulers(settings)
    running, healthy = wait_scheduler_back(settings, old, killed, timeout_s)
    if healthy is None:
        raise SystemExit(f"scheduler not back within {timeout_s:.0f} s (running after {running})")
    return running, healthy


def count_after_stop(settings, timeout_s: float = 300.0) -> tuple[int, int, int, int]:
    """Stop Airflow (no more supervision), the producer gracefully, let the stream drain Kafka,
    stop it; then (accepted, in raw_data, lost, duplicated) by message_id against the producer's
    log of accepted ids (``BTC_PRODUCER_ACCEPTED_LOG``)."""
    from collections import Counter

    from deltalake import DeltaTable

    from btc_platform.ops import services, supervisor

    if not settings.producer_accepted_log:
        raise SystemExit("--count needs BTC_PRODUCER_ACCEPTED_LOG set when the platform was started")
    services.stop("airflow", settings)  # its sweep also stops what the supervise task started
    supervisor.stop(supervisor.PRODUCER, settings)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if supervisor.status(supervisor.STREAM, settings).action != "running":
            supervisor.ensure_stream(settings)  # the drain needs a running stream (started again if swept)
        try:
            if supervisor.stream_lag(settings) == 0:
                time.sleep(6.0)  # the last batch's files are committed after its progress
                break
        except Exception as exc:  # noqa: BLE001 - ask again
            log.info("lag unknown (%s)", exc)
        time.sleep(2.0)
    supervisor.stop(supervisor.STREAM, settings)
    lines = Path(settings.producer_accepted_log).read_text().split()
    accepted = {line for line in lines if line and line != "-"}
    raw = Counter(DeltaTable(f"{settings.storage_root}/raw_data").to_pyarrow_table(
        columns=["message_id"]).column("message_id").to_pylist())  # fmt: skip
    in_raw = sum(1 for mid in accepted if mid in raw)
    duplicated = sum(n - 1 for n in raw.values() if n > 1)
    log.info("accepted %d, in raw_data %d, lost %d, duplicated %d, raw_data ids never accepted %d",
             len(accepted), in_raw, len(accepted) - in_raw, duplicated, len(set(raw) - accepted))  # fmt: skip
    return len(accepted), in_raw, len(accepted) - in_raw, duplicated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=float, default=300.0, help="seconds of CPU measurement (0: none)")
    parser.add_argument("--kill-producer", action="store_true", help="then SIGKILL the producer and time its return")
    parser.add_argument("--kill-kafka", action="store_true", help="then SIGKILL the local broker and time its return")
    parser.add_argument("--kill-scheduler", action="store_true",
                        help="first SIGKILL the Airflow scheduler and time its return (then --kill-producer times "
                        "supervision acting again)")
    parser.add_argument("--count", action="store_true",
                        help="at the end stop Airflow and the producer, drain the stream and count accepted vs "
                        "raw_data by message_id (needs BTC_PRODUCER_ACCEPTED_LOG at the start)")
    parser.add_argument("--memory", action="store_true", help="first log the RSS of the platform per component")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from btc_platform.ops.airflow_env import airflow_home
    from btc_platform.ops.services.base import read_pid
    from btc_platform.settings import get_settings

    settings = get_settings()
    record = read_pid(settings, "airflow")
    if record is None:
        raise SystemExit("Airflow of this platform is not running (make run SOURCE=simulate)")
    db_path = str(airflow_home(settings) / "airflow.db")
    if args.memory:
        log_memory(settings)
    if args.kill_scheduler:
        running, healthy = kill_scheduler(settings)
        log.info("scheduler after SIGKILL: running again %.1f s, healthy %.1f s", running, healthy)
    if args.window > 0:
        started = datetime.now(UTC)
        parts0 = airflow_cpu_seconds(record.pid)
        time.sleep(args.window)
        parts1 = airflow_cpu_seconds(record.pid)
        runs, tries = count_runs(db_path, started)
        cpu0, cpu1 = sum(parts0.values()), sum(parts1.values())
        per_hour = (cpu1 - cpu0) / args.window * 3600
        for name in sorted(parts1):
            used = parts1[name] - parts0.get(name, 0.0)
            log.info("  %-14s %6.1f CPU s in the window (%4.0f per hour)", name, used, used / args.window * 3600)
        day = 86400 / args.window
        log.info(
            "window %.0f s: Airflow CPU %.1f s (%.0f CPU s per hour); %s: %d DAG runs, %d task tries "
            "(%.0f runs and %.0f task tries per day)",
            args.window, cpu1 - cpu0, per_hour, DAG_ID, runs, tries, runs * day, tries * day,
        )  # fmt: skip
    if args.kill_producer:
        running, published = kill_producer(settings)
        log.info("producer after SIGKILL: running again %.1f s, publishing %s", running,
                 f"{published:.1f} s" if published is not None else "not within the timeout")  # fmt: skip
    if args.kill_kafka:
        kill_kafka(settings)
    if args.count:
        _, _, lost, duplicated = count_after_stop(settings)
        return 1 if lost or duplicated else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
