"""Fault-injection suite (``make chaos``): faults against a small real platform, with the loss and
duplicate counts by ``message_id``.

The platform under test is the real one, small: a Kafka broker (KRaft) on free ports, the
producer (simulate source at a fixed rate: ``--symbols`` book tickers a second plus 24 h tickers,
market messages and klines; the live source against the local fake exchange server for the
exchange scenario) and the Spark streaming job writing Delta tables, both started and restarted
by the platform's own supervision every ``--check-interval`` seconds: the calls the
``btc_stream_supervisor`` DAG makes, ``btc_platform.ops.supervisor.ensure_services`` for the Kafka
broker (and HDFS when it is the storage), then ``ensure_producer`` and ``ensure_stream``. A
killed broker, NameNode or DataNode is held down for ``--down`` s (the outage the producer's
spool and the stream must ride out), then supervision finds it down and restarts it; the table
says what recovered each scenario.

Scenarios run one after another on the same platform (each for ``--pre`` s steady, the fault,
until data flows again, ``--post`` s steady), then the producer is stopped gracefully, the
stream drains Kafka and the counts are taken:

* accepted: distinct message_ids the producer accepted during the scenario (the producer's own
  log of accepted ids, ``BTC_PRODUCER_ACCEPTED_LOG``; an id belongs to the scenario in which it
  was first accepted);
* in raw_data: how many of them are in ``raw_data`` (read with delta-rs); lost = accepted - in
  raw_data; duplicated = raw_data rows beyond one per id; extra = raw_data ids the producer
  never accepted (must be 0: a bad record of a burst must go to quarantine, not raw_data);
* recovery s: from the fault (or, for a lasting fault, its end) to the first raw_data row whose
  ``ingest_time`` is later.

Storage: ``file://`` on a size-limited tmpfs mounted for the run (``mount -t tmpfs -o size=...``,
needs root), so the disk-full scenario can fill it; without root the scenario is reported as not
run. The HDFS scenarios run on a second platform with the storage root on a local HDFS. The
scenarios beyond the stream's watermark delay (a late re-send, the producer down 5 minutes, the
stream down 10 minutes while the partitions fill at different rates, kill -9 of everything at
once) and the full spool are in ``bench/chaos_integrity.py``.

Time to alert: the platform's monitor runs beside each platform (``bench/chaos_alerts.py``: its
alert webhook posts to a receiver in the suite); per scenario the table gives the seconds from
the fault to the first alert (with its incident key) and to the resolution of every incident the
scenario opened. A process death must be told within 60 s, staleness within 3 minutes.

The Airflow scenario (``scheduler_kill``) runs on a third platform that the suite does not
supervise: a real Airflow started as ``btc-services run`` starts it (``services.start_airflow``:
``airflow standalone``, its local executor, own port and AIRFLOW_HOME, the DAGs unpaused; the
supervisor checking every ``--check-interval`` s and restarting a dead scheduler,
``BTC_SUPERVISOR_AIRFLOW_SCHEDULER``), whose ``btc_stream_supervisor`` DAG starts and restarts
the producer and the stream. The scheduler is killed, then the producer while no scheduler
runs; the row gives the seconds until a scheduler runs again and is healthy, and until data
flows again. Airflow is stopped before the drain (and at the end in any case).

Run: ``make chaos`` (full; its duration is in docs/fault-injection.md) or ``python -m bench.chaos --only producer_kill,burst
--pre 10 --post 10``. Exit status 1 when a scenario lost or duplicated messages or failed.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import chaos_alerts
from bench.chaos_integrity import SCENARIOS as INTEGRITY_SCENARIOS
from bench.chaos_integrity import ScenarioError

log = logging.getLogger("chaos")

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "AVAXUSDT",
           "DOTUSDT", "LINKUSDT")  # fmt: skip
FILE_SCENARIOS = ("producer_kill", "stream_kill", "broker_kill", "burst", "exchange_faults", "disk_full",
                  "resend_late", "producer_down", "stream_down", "crash_all", "spool_full")  # fmt: skip
HDFS_SCENARIOS = ("namenode_kill", "datanode_kill")
AIRFLOW_SCENARIOS = ("scheduler_kill",)
TMPFS_SIZE = "512m"


@dataclass
class Result:
    scenario: str
    accepted: int = 0
    in_raw: int = 0
    lost: int = 0
    duplicated: int = 0
    extra: int = 0
    recovery_s: float | None = None
    recovered_by: str = ""
    note: str = ""
    ok: bool = True
    start_line: int = 0
    end_line: int = 0
    side_start: int = 0  # the side publisher's ids (platform.side_ids) published during the scenario
    side_end: int = 0
    alerts: chaos_alerts.Told | None = None  # None: no monitor ran


@dataclass
class Options:
    pre_s: float = 15.0
    post_s: float = 30.0
    check_interval_s: float = 10.0
    broker_down_s: float = 45.0
    disk_full_s: float = 45.0
    fault_phase_s: float = 25.0
    burst: int = 200
    symbols: int = 10
    recovery_timeout_s: float = 300.0
    warmup_timeout_s: float = 300.0
    partitions: int = 4  # of the topic (stream_down fills each at its own rate)
    resend: int = 200  # records resend_late re-sends
    resend_age_s: float = 60.0  # ... at least this old (the stream's watermark delay is 30 s)
    producer_down_s: float = 300.0
    stream_down_s: float = 600.0
    side_rate: float = 20.0  # stream_down: partition p takes side_rate * (p + 1) ** 2 msg/s
    crash_down_s: float = 60.0
    spool_max_mb: float = 0.25  # spool_full: the producer's spool bound (BTC_PRODUCER_SPOOL_MAX_MB)
    spool_full_down_s: float = 180.0  # ... and the broker's outage at least (the staleness alert needs 120 s)
    monitor: bool = True  # run the platform's monitor and report time to alert
    alert_settle_s: float = 60.0  # after a scenario, wait this long at most for its incidents to resolve


@dataclass
class Platform:
    """The small real platform one group of scenarios runs on."""

    workdir: Path
    kafka: object  # Settings of the broker's own instance (its data dir, ports)
    storage_root: str
    options: Options
    hdfs: object | None = None  # Settings of the HDFS instance when the storage root is on it
    source: str = "simulate"
    overrides: dict = field(default_factory=dict)
    settings: object = None
    events: list[tuple[float, str]] = field(default_factory=list)
    suspended: dict[str, float] = field(default_factory=dict)
    exchange: object = None  # the fake exchange server (btc_platform.testing.exchange_server)
    mount: Path | None = None  # the size-limited file system under the storage root
    burst: tuple[int, int] | None = None  # (bad records Kafka took, quarantine rows before)
    airflow: bool = False  # supervised by a real Airflow's btc_stream_supervisor DAG, not by ``check``
    side_ids: list[str] = field(default_factory=list)  # valid messages the suite published itself
    alert_receiver: chaos_alerts.Receiver | None = None  # the monitor's webhook, when it runs
    fault_at: float | None = None  # when the fault began, if not when the scenario was called

    def __post_init__(self):
        self.build_settings()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._check_lock = threading.Lock()

    @property
    def accepted_log(self) -> Path:
        return self.workdir / "accepted.ids"

    def build_settings(self, **changes) -> None:
        from btc_platform.settings import load_settings

        self.overrides.update(changes)
        hdfs = {}
        if self.hdfs is not None:
            hdfs = {name: getattr(self.hdfs, name) for name in (
                "hdfs_namenode_port", "hdfs_namenode_http_port", "hdfs_datanode_port", "hdfs_datanode_http_port",
                "hdfs_datanode_ipc_port")}  # fmt: skip
        self.settings = load_settings(
            data_dir=self.workdir / "data",
            kafka_port=self.kafka.kafka_port,
            kafka_controller_port=self.kafka.kafka_controller_port,
            kafka_bootstrap_servers=self.kafka.kafka_bootstrap_servers,
            kafka_topic=f"chaos-{self.workdir.name}",
            storage_root=self.storage_root,
            producer_source=self.source,
            binance_symbols=",".join(SYMBOLS[: self.options.symbols]),
            producer_accepted_log=str(self.accepted_log),
            producer_status_interval_s=1.0,
            first_run_backfill=False,  # no history backfill competing with the faults measured
            stream_driver_memory="1g",
            kafka_partitions=self.options.partitions,
            **hdfs,
            **self.overrides,
        )

    # ---- supervision ---------------------------------------------------------------------
    def check(self) -> None:
        """One supervision round, as the supervisor DAG's task does it: the services
        (``ensure_services``, each with its own instance's settings), then producer and stream."""
        from btc_platform.ops import supervisor

        with self._check_lock:
            for name, service_settings in (("kafka", self.kafka), ("hdfs", self.hdfs)):
                if service_settings is None or self.suspended.get(name, 0) > time.time():
                    continue
                for result in supervisor.ensure_services(service_settings):
                    if result.action != "ok":
                        self.events.append((time.time(), f"supervisor {result.action} {name}: {result.reason}"))
            for name, ensure in (("producer", lambda: supervisor.ensure_producer(self.settings, self.source)),
                                 ("stream", lambda: supervisor.ensure_stream(self.settings))):  # fmt: skip
                if self.suspended.get(name, 0) > time.time():  # held down by a scenario
                    continue
                result = ensure()
                if result.action in ("started", "restarted"):
                    self.events.append((time.time(), f"supervisor {result.action} {name}: {result.reason}"))

    def _loop(self) -> None:
        while not self._stop.wait(self.options.check_interval_s):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - a failed round is logged and recorded; the next one retries
                log.exception("supervision round failed")
                self.events.append((time.time(), f"supervision round failed: {type(exc).__name__}: {exc}"))

    def start(self) -> None:
        from btc_platform.ops import services

        services.ensure_topic(self.settings, self.settings.kafka_topic, self.settings.kafka_partitions)
        if self.airflow:
            self.start_airflow()
            return
        self.check()
        self._thread = threading.Thread(target=self._loop, name="chaos-supervision", daemon=True)
        self._thread.start()

    def start_airflow(self) -> None:
        """Start Airflow as ``btc-services run`` does (``services.start_airflow``: ``airflow
        standalone`` with the DAGs unpaused, its local executor, the pools) and wait, as it does,
        until the ``btc_stream_supervisor`` DAG has started the producer and the stream."""
        from btc_platform.ops import services
        from btc_platform.ops.supervisor import wait_until_supervised

        started = time.time()
        services.start_airflow(self.settings)
        for line in wait_until_supervised(self.settings):
            log.info("  %s", line)
        self.events.append((time.time(), f"Airflow up, supervisor DAG started producer and stream in "
                                         f"{time.time() - started:.0f} s"))  # fmt: skip

    def stop_supervision(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=600)
        if self.airflow:  # Airflow first: its supervisor would restart what is stopped next
            from btc_platform.ops import services

            services.stop("airflow", self.settings)

    def dag_events_since(self, since: float) -> list[str]:
        """Starts and restarts the supervisor DAG's task did (the event log's entries with an
        Airflow task instance) since ``since``."""
        from btc_platform.ops import supervisor

        done = []
        for event in supervisor.read_events(self.settings, limit=supervisor.MAX_EVENTS):
            at = datetime.fromisoformat(str(event.get("time", "")).replace("Z", "+00:00"))
            if event.get("airflow") and at.replace(tzinfo=at.tzinfo or UTC).timestamp() >= since:
                done.append(f"supervisor DAG {event.get('action')} {event.get('name')}: {event.get('reason')}")
        return done

    def events_since(self, since: float) -> list[str]:
        return [text for at, text in self.events if at >= since]

    # ---- tables --------------------------------------------------------------------------
    def raw_ids(self) -> Counter:
        table = self._read("raw_data", ["message_id"])
        return Counter(table.column("message_id").to_pylist()) if table is not None else Counter()

    def latest_ingest(self) -> float | None:
        table = self._read("raw_data", ["ingest_time"])
        if table is None or table.num_rows == 0:
            return None
        import pyarrow.compute as pc

        latest = pc.max(table.column("ingest_time")).as_py()
        return latest.replace(tzinfo=latest.tzinfo or UTC).timestamp()

    def quarantined(self) -> int:
        table = self._read("quarantine", ["reason"])
        return 0 if table is None else table.num_rows

    def _read(self, name: str, columns: list[str]):
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        uri = f"{self.settings.storage_root}/{name}"
        try:
            return DeltaTable(uri).to_pyarrow_table(columns=columns)
        except TableNotFoundError:
            return None

    def wait_for_data_after(self, moment: float, timeout_s: float) -> float | None:
        """Seconds from ``moment`` until raw_data holds a row ingested after it (None: timed out)."""
        from deltalake.exceptions import DeltaError

        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                latest = self.latest_ingest()
            except (OSError, DeltaError) as exc:  # e.g. HDFS down: keep waiting, say so
                log.info("raw_data not readable yet (%s: %s)", type(exc).__name__, exc)
                latest = None
            if latest is not None and latest > moment:
                return time.time() - moment
            time.sleep(1.0)
        return None

    def accepted_lines(self) -> int:
        if not self.accepted_log.exists():
            return 0
        with self.accepted_log.open("rb") as handle:
            return sum(1 for _ in handle)

    # ---- end -----------------------------------------------------------------------------
    def drain(self, timeout_s: float = 300.0) -> str:
        """Stop the producer gracefully, let the stream process every message in Kafka, stop it."""
        from btc_platform.ops import supervisor

        self.stop_supervision()
        supervisor.stop("producer", self.settings)
        deadline = time.time() + timeout_s
        lag = None
        while time.time() < deadline:
            if supervisor.status("stream", self.settings).action != "running":
                supervisor.ensure_stream(self.settings)  # the drain needs a running stream
            try:
                lag = supervisor.stream_lag(self.settings)
            except Exception as exc:  # noqa: BLE001 - a broker hiccup during the drain: ask again
                log.info("lag unknown (%s)", exc)
                lag = None
            if lag == 0:
                time.sleep(3 * 2.0)  # the last batch's commit is in the status before its files are read
                break
            time.sleep(2.0)
        supervisor.stop("stream", self.settings)
        return "drained" if lag == 0 else f"stream still {lag} messages behind Kafka after {timeout_s:.0f} s"


# ---------------------------------------------------------------------------------------------
# scenarios: each injects its fault and returns (moment data must flow after, how it recovered,
# note); ``run_scenario`` does the waiting and the counting
# ---------------------------------------------------------------------------------------------
def kill_producer(platform: Platform) -> tuple[float, str, str]:
    from btc_platform.ops import supervisor

    record = supervisor.read_record(platform.settings, "producer")
    os.kill(record.pid, signal.SIGKILL)
    return time.time(), "supervisor check (ensure_producer: died)", f"kill -9 producer pid {record.pid}"


def kill_stream(platform: Platform) -> tuple[float, str, str]:
    from btc_platform.ops import supervisor

    record = supervisor.read_record(platform.settings, "stream")
    os.killpg(record.pgid, signal.SIGKILL)  # spark-submit, its driver JVM and Python
    return time.time(), "supervisor check (ensure_stream: died)", f"kill -9 stream group {record.pgid}"


def kill_service_process(platform: Platform, service: str, process_name: str, down_s: float,
                         service_settings) -> tuple[float, str, str]:  # fmt: skip
    from btc_platform.ops import services

    pid = services.running_pid(service_settings, process_name)
    platform.suspended[service] = time.time() + down_s
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    time.sleep(down_s)
    return killed, f"supervisor ensure_services (held down {down_s:.0f} s) + checks", \
        f"kill -9 {process_name} pid {pid}, down {down_s:.0f} s"


def kill_broker(platform: Platform) -> tuple[float, str, str]:
    return kill_service_process(platform, "kafka", "kafka", platform.options.broker_down_s, platform.kafka)


def kill_namenode(platform: Platform) -> tuple[float, str, str]:
    return kill_service_process(platform, "hdfs", "hdfs-namenode", platform.options.broker_down_s, platform.hdfs)


def kill_datanode(platform: Platform) -> tuple[float, str, str]:
    return kill_service_process(platform, "hdfs", "hdfs-datanode", platform.options.broker_down_s, platform.hdfs)


def kill_scheduler(platform: Platform) -> tuple[float, str, str]:
    """kill -9 of the Airflow scheduler, then, while none runs, of the producer: the trigger in
    the triggerer must start a scheduler (``services.airflow.ensure_scheduler``) and the resumed
    supervise task restart the producer."""
    from btc_platform.testing.faults import kill_schedulers, wait_scheduler_back

    if not platform.airflow:
        raise ChaosError("scheduler_kill needs the Airflow group (a platform supervised by the DAG)")
    old, killed = kill_schedulers(platform.settings)
    moment, _, producer_note = kill_producer(platform)
    running, healthy = wait_scheduler_back(platform.settings, old, killed, platform.options.recovery_timeout_s)
    if running is None or healthy is None:
        raise ChaosError(f"kill -9 scheduler pid(s) {old}, {producer_note}: no healthy scheduler within "
                         f"{platform.options.recovery_timeout_s:.0f} s (running after {running})")  # fmt: skip
    return moment, (f"trigger's ensure_scheduler (scheduler running {running:.1f} s, healthy {healthy:.1f} s) "
                    "+ supervisor DAG's resumed task (ensure_producer: died)"), \
        f"kill -9 scheduler pid(s) {old}, then {producer_note} {moment - killed:.1f} s later"


def burst_records(count: int) -> list[bytes]:
    """Malformed and oversized records (none of them valid): ~1/4 each of not JSON, an unknown
    schema version, a book ticker with ask below bid, and ~600 KB records (garbage bytes; a
    book ticker whose price has 300,000 digits)."""
    from btc_platform.testing.stream_testdata import book, tamper

    records = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            records.append(f"not json, chaos burst {i}".encode())
        elif kind == 1:
            records.append(json.dumps({"schema_version": 99, "chaos_burst": i}).encode())
        elif kind == 2:
            records.append(tamper(book(i, "40000.5", "40001.5"), ask_price=1.0))
        elif i % 8 == 3:
            records.append(bytes(range(256)) * 2400)  # 600 KB of garbage
        else:
            records.append(tamper(book(i, "40000.5", "40001.5"), bid_price="4" + "0" * 300_000))
    return records


def inject_burst(platform: Platform) -> tuple[float, str, str]:
    from confluent_kafka import Producer

    records = burst_records(platform.options.burst)
    before = platform.quarantined()
    producer = Producer({"bootstrap.servers": platform.settings.kafka_bootstrap_servers, "acks": "all",
                         "enable.idempotence": True, "message.max.bytes": 2_000_000})  # fmt: skip
    errors: list[str] = []
    for index, value in enumerate(records):
        producer.produce(platform.settings.kafka_topic, value, f"BURST{index % 3}".encode(),
                         on_delivery=lambda err, _msg: errors.append(str(err)) if err else None)  # fmt: skip
        producer.poll(0)
    left = producer.flush(60)
    moment = time.time()
    platform.burst = (len(records) - len(errors) - left, before)
    sizes = sorted(len(r) for r in records)
    return moment, "nothing to restart", (f"{len(records)} bad records ({sizes[-1] // 1024} KB largest), "
                                          f"{len(errors) + left} refused by Kafka")


def exchange_faults(platform: Platform) -> tuple[float, str, str]:
    """Switch the producer to the live source against the fake exchange server, then let the
    server answer 500, truncated bodies, garbage, 429 and 418 for ``fault_phase_s`` each."""
    from btc_platform.testing.exchange_server import Reply

    server = platform.exchange
    platform.source = "live"
    switched = time.time()
    platform.check()  # reconfigured: the supervisor restarts the producer on the live source
    if platform.wait_for_data_after(switched, platform.options.recovery_timeout_s) is None:
        raise ChaosError("the live source against the fake exchange delivered nothing")
    phase = platform.options.fault_phase_s
    phases = [
        ("HTTP 500", Reply(status=500)),
        ("truncated bodies", Reply(fault="truncated")),
        ("garbage (not JSON)", Reply(body="<html>502 Bad Gateway</html>")),
        ("HTTP 429 Retry-After 10", Reply(status=429, headers={"Retry-After": "10"})),
        ("HTTP 418 Retry-After 20", Reply(status=418, headers={"Retry-After": "20"})),
    ]
    for what, reply in phases:
        log.info("exchange answers %s for %.0f s", what, phase)
        server.fail_for(reply, phase)
        time.sleep(phase)
    return time.time(), "producer retries/waits (no restart)", \
        f"{len(phases)} x {phase:.0f} s: " + ", ".join(w for w, _ in phases)


def fill_disk(platform: Platform) -> tuple[float, str, str]:
    mount = platform.mount
    filler = mount / "chaos-filler"
    written = 0
    chunk = b"\0" * (1 << 20)
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(chunk)
                handle.flush()
                written += len(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    log.info("storage root full (%d MiB filler); holding %.0f s", written >> 20, platform.options.disk_full_s)
    time.sleep(platform.options.disk_full_s)
    filler.unlink()
    return time.time(), "supervisor check (ensure_stream) after the space was freed", \
        f"tmpfs {TMPFS_SIZE} filled ({written >> 20} MiB) for {platform.options.disk_full_s:.0f} s, then freed"


SCENARIOS: dict[str, Callable[[Platform], tuple[float, str, str]]] = {
    "producer_kill": kill_producer,
    "stream_kill": kill_stream,
    "broker_kill": kill_broker,
    "burst": inject_burst,
    "exchange_faults": exchange_faults,
    "disk_full": fill_disk,
    "namenode_kill": kill_namenode,
    "datanode_kill": kill_datanode,
    "scheduler_kill": kill_scheduler,
    **INTEGRITY_SCENARIOS,
}


class ChaosError(ScenarioError):
    """The suite itself could not do what a scenario needs (named in the table)."""


def parts(name: str) -> list[str]:
    """The faults of a scenario: ``a+b`` injects a and b at the same moment (one row)."""
    return name.split("+")


def inject(platform: Platform, name: str) -> tuple[float, str, str]:
    """Inject the scenario's faults one right after the other; data must flow after the last
    one's moment."""
    done = [SCENARIOS[part](platform) for part in parts(name)]
    return max(d[0] for d in done), " + ".join(d[1] for d in done), "; ".join(d[2] for d in done)


def run_scenario(platform: Platform, name: str) -> Result:
    options = platform.options
    result = Result(name, start_line=platform.accepted_lines(), side_start=len(platform.side_ids))
    began = time.time()
    log.info("=== scenario %s: %.0f s steady first ===", name, options.pre_s)
    time.sleep(options.pre_s)
    platform.fault_at = None
    called = time.time()
    try:
        moment, result.recovered_by, result.note = inject(platform, name)
    except ScenarioError as exc:
        result.ok, result.note = False, str(exc)
        result.end_line, result.side_end = platform.accepted_lines(), len(platform.side_ids)
        return result
    fault_at = platform.fault_at or called
    recovery = platform.wait_for_data_after(moment, options.recovery_timeout_s)
    result.recovery_s = None if recovery is None else round(recovery, 1)
    if recovery is None:
        result.ok = False
        result.note += f"; no data within {options.recovery_timeout_s:.0f} s"
    events = platform.events_since(began) + (platform.dag_events_since(began) if platform.airflow else [])
    if events:
        result.note += "; " + "; ".join(events)
    log.info("=== scenario %s: data again after %s s; %.0f s steady ===", name, result.recovery_s, options.post_s)
    time.sleep(options.post_s)
    result.end_line, result.side_end = platform.accepted_lines(), len(platform.side_ids)
    if platform.alert_receiver is not None:
        alerts_told(platform, result, name, fault_at)
    return result


def alerts_told(platform: Platform, result: Result, name: str, fault_at: float) -> None:
    """The scenario's alerts (waiting up to ``alert_settle_s`` for its open incidents to resolve);
    a scenario of :data:`chaos_alerts.EXPECTED` without its alert in time is not ok."""
    receiver = platform.alert_receiver
    deadline = time.time() + platform.options.alert_settle_s
    told = chaos_alerts.told(receiver.since(fault_at), fault_at)
    # restarts:* stays open until the restarts age out of its hour: not waited for
    while any(not k.startswith("restarts:") for k in told.still_open) and time.time() < deadline:
        time.sleep(2.0)
        told = chaos_alerts.told(receiver.since(fault_at), fault_at)
    result.alerts = told
    result.note += f"; {told.note}"
    short = chaos_alerts.judge(parts(name), receiver.since(fault_at), fault_at)
    if short is not None:
        result.ok = False
        result.note += f"; {short}"


def count(platform: Platform, results: list[Result]) -> None:
    """Fill accepted / in raw_data / lost / duplicated per scenario from the final tables."""
    lines = platform.accepted_log.read_bytes().split(b"\n") if platform.accepted_log.exists() else []
    raw = platform.raw_ids()
    first_seen: dict[str, int] = {}
    for number, line in enumerate(lines):
        if line and line != b"-":
            first_seen.setdefault(line.decode(), number)
    accepted_all = set(first_seen) | set(platform.side_ids)
    extra = len(set(raw) - accepted_all)
    if results:  # the warm-up counts with the first scenario, the drain with the last
        results[0].start_line, results[-1].end_line = 0, len(lines)
    for result in results:
        ids = {mid for mid, number in first_seen.items() if result.start_line <= number < result.end_line}
        ids |= set(platform.side_ids[result.side_start:result.side_end])
        result.accepted = len(ids)
        result.in_raw = sum(1 for mid in ids if mid in raw)
        result.lost = result.accepted - result.in_raw
        result.duplicated = sum(raw[mid] - 1 for mid in ids if raw.get(mid, 0) > 1)
        if result.lost or result.duplicated:
            result.ok = False
    if results:
        results[-1].extra = extra  # ids nobody accepted: reported once per platform
        if extra:
            results[-1].ok = False
    if platform.burst is not None:
        delivered, before = platform.burst
        quarantined = platform.quarantined() - before
        for result in results:
            if "burst" in parts(result.scenario):
                result.note += f"; quarantined {quarantined} of {delivered}"
                result.ok = result.ok and quarantined == delivered


# ---------------------------------------------------------------------------------------------
# set-up
# ---------------------------------------------------------------------------------------------
def free_ports(count_: int) -> list[int]:
    from btc_platform.testing.polling import free_ports as free

    return free(count_)


def start_kafka(workdir: Path):
    from btc_platform.ops import services
    from btc_platform.settings import load_settings

    port, controller = free_ports(2)
    settings = load_settings(data_dir=workdir / "kafka", kafka_port=port, kafka_controller_port=controller,
                             kafka_bootstrap_servers=f"127.0.0.1:{port}", supervisor_services="kafka")  # fmt: skip
    services.start_kafka(settings)
    return settings


def start_hdfs(workdir: Path):
    from btc_platform.ops import services
    from btc_platform.settings import load_settings

    rpc, http, dn, dn_http, dn_ipc = free_ports(5)
    settings = load_settings(data_dir=workdir / "hdfs", hdfs_namenode_port=rpc, hdfs_namenode_http_port=http,
                             hdfs_datanode_port=dn, hdfs_datanode_http_port=dn_http,
                             hdfs_datanode_ipc_port=dn_ipc, supervisor_services="hdfs")  # fmt: skip
    services.start_hdfs(settings)
    return settings


def mount_tmpfs(path: Path) -> str | None:
    """Mount a size-limited tmpfs at ``path``; None when done, else why it cannot be."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "not run: mounting a size-limited file system needs root here (mount -t tmpfs)"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        return f"not run: mount -t tmpfs failed: {done.stderr.strip()}"
    return None


def umount(path: Path) -> None:
    done = subprocess.run(["umount", str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        log.error("umount %s failed: %s", path, done.stderr.strip())


def run_group(workdir: Path, kafka, names: list[str], options: Options, *, hdfs=None,
              airflow: bool = False) -> list[Result]:  # fmt: skip
    """Start a platform, run ``names`` in order, drain and count. ``airflow``: supervised by a
    real Airflow (own port and AIRFLOW_HOME under ``workdir``) whose ``btc_stream_supervisor``
    DAG checks every ``check_interval_s`` and restarts a dead scheduler, as ``btc-services run``
    sets it, instead of the suite's own checks."""
    from btc_platform.testing.exchange_server import ExchangeServer

    results: list[Result] = []
    mount = workdir / "storage"
    not_run: dict[str, str] = {}
    mounted = False
    if hdfs is not None:
        storage_root = f"{hdfs.hdfs_uri}/chaos-{workdir.name}"
    else:
        if "disk_full" in names:
            why = mount_tmpfs(mount)
            mounted = why is None
            if why is not None:
                not_run["disk_full"] = why
        storage_root = f"file://{mount}/bitcoin"
    server = ExchangeServer().start()
    server.live_times = True
    overrides = {"binance_base_url": server.url, "coingecko_base_url": server.url}
    if airflow:
        (port,) = free_ports(1)
        overrides.update(airflow_port=port, supervisor_interval_s=options.check_interval_s,
                         supervisor_airflow_scheduler=True)  # fmt: skip
    platform = Platform(workdir, kafka, storage_root, options, hdfs=hdfs, exchange=server, mount=mount,
                        overrides=overrides, airflow=airflow)  # fmt: skip
    try:
        if options.monitor:
            platform.alert_receiver = chaos_alerts.Receiver()
            chaos_alerts.start_monitor(platform, platform.alert_receiver)
        platform.start()
        warm = platform.wait_for_data_after(0.0, options.warmup_timeout_s)
        if warm is None:
            raise ChaosError(f"no data in raw_data {options.warmup_timeout_s:.0f} s after the start")
        log.info("platform up: data flowing")
        for name in names:
            if name in not_run:
                results.append(Result(name, note=not_run[name], ok=True, recovered_by="-"))
                continue
            results.append(run_scenario(platform, name))
            if name == "exchange_faults":  # back to the simulator for what follows
                platform.source = "simulate"
                platform.check()
        drained = platform.drain()
        if drained != "drained":
            for result in results:
                result.ok = False
            results[-1].note += f"; {drained}"
        counted = [r for r in results if r.scenario not in not_run]
        count(platform, counted)
    finally:
        platform.stop_supervision()
        from btc_platform.ops import supervisor

        for name in ("producer", "stream"):
            supervisor.stop(name, platform.settings)
        if platform.alert_receiver is not None:
            chaos_alerts.stop_monitor(platform)
            platform.alert_receiver.stop()
        server.stop()
        if mounted:
            umount(mount)
    return results


def table(results: list[Result]) -> str:
    header = ("scenario", "accepted", "in raw_data", "lost", "duplicated", "extra", "recovery s", "time to alert",
              "alert resolved after", "recovered by", "ok", "what happened")  # fmt: skip
    rows = [header]
    for r in results:
        counted = r.recovered_by != "-"
        told = r.alerts
        alert = "-" if told is None else ("none" if told.first_s is None else f"{told.first_s:.1f} s {told.first_key}")
        resolved = "-" if told is None or told.first_s is None else (
            f"{told.resolved_s:.1f} s" if told.resolved_s is not None else "open: " + ",".join(told.still_open))
        rows.append((r.scenario, *(str(v) if counted else "-" for v in (r.accepted, r.in_raw, r.lost, r.duplicated,
                                                                         r.extra)),
                     "-" if r.recovery_s is None else f"{r.recovery_s:.1f}", alert, resolved, r.recovered_by or "-",
                     ("yes" if r.ok else "NO") if counted else "-", r.note))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return "\n".join(lines)


def run(names: list[str], options: Options, workdir: Path | None = None) -> list[Result]:
    """Run the named scenarios (file-storage ones on one platform, HDFS ones on another, the
    Airflow ones on a third, supervised by Airflow)."""
    from btc_platform.ops import services
    from btc_platform.ops.process import ProcessError

    owned = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="btc-chaos-")) if owned else workdir
    results: list[Result] = []
    kafka = start_kafka(workdir)
    try:
        file_names = [n for n in names if set(parts(n)) <= set(FILE_SCENARIOS)]
        # with disk_full the storage is a small tmpfs: the long integrity scenarios (stream_down's
        # backlog) would fill it, so they get a platform of their own on the ordinary disk
        apart = [n for n in file_names if set(parts(n)) <= set(INTEGRITY_SCENARIOS)] \
            if any("disk_full" in parts(n) for n in file_names) else []
        file_names = [n for n in file_names if n not in apart]
        if file_names:
            results += run_group(workdir / "file", kafka, file_names, options)
        if apart:
            results += run_group(workdir / "integrity", kafka, apart, options)
        hdfs_names = [n for n in names if set(parts(n)) <= set(HDFS_SCENARIOS)]
        if hdfs_names:
            hdfs = start_hdfs(workdir)
            try:
                results += run_group(workdir / "hdfs", kafka, hdfs_names, options, hdfs=hdfs)
            finally:
                services.stop("hdfs", hdfs)
        airflow_names = [n for n in names if set(parts(n)) <= set(AIRFLOW_SCENARIOS)]
        if airflow_names:
            try:
                results += run_group(workdir / "airflow", kafka, airflow_names, options, airflow=True)
            except (ProcessError, ChaosError) as exc:  # Airflow or the DAG's first starts failed: say so
                log.exception("the Airflow group failed")
                results += [Result(n, ok=False, note=f"{type(exc).__name__}: {exc}") for n in airflow_names]
    finally:
        services.stop("kafka", kafka)
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    every = [*FILE_SCENARIOS, *HDFS_SCENARIOS, *AIRFLOW_SCENARIOS]
    parser.add_argument("--only", default="", help=f"comma-separated scenarios of: {', '.join(every)}; "
                        "a+b injects a and b at the same moment (one row; both of the file or of the HDFS group)")
    defaults = Options()
    parser.add_argument("--pre", type=float, default=defaults.pre_s, help="steady seconds before each fault")
    parser.add_argument("--post", type=float, default=defaults.post_s, help="steady seconds after recovery")
    parser.add_argument("--check-interval", type=float, default=defaults.check_interval_s,
                        help="seconds between supervision checks (the suite's own; the Airflow group's DAG "
                        "gets it as BTC_SUPERVISOR_INTERVAL_S, whose default is 20)")
    parser.add_argument("--down", type=float, default=defaults.broker_down_s,
                        help="how long a killed broker / NameNode / DataNode stays down")
    parser.add_argument("--phase", type=float, default=defaults.fault_phase_s,
                        help="seconds of each exchange fault (500, truncated, garbage, 429, 418)")
    parser.add_argument("--disk-full", type=float, default=defaults.disk_full_s,
                        help="how long the storage root stays full")
    parser.add_argument("--symbols", type=int, default=defaults.symbols,
                        help=f"simulated symbols, one book ticker each a second (at most {len(SYMBOLS)})")
    parser.add_argument("--no-monitor", action="store_true", help="without the monitor (no time to alert)")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temporary dir, removed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = [n.strip() for n in args.only.split(",") if n.strip()] or every
    unknown = sorted({part for n in names for part in parts(n)} - set(every))
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {every}")
    options = Options(pre_s=args.pre, post_s=args.post, check_interval_s=args.check_interval,
                      broker_down_s=args.down, fault_phase_s=args.phase, disk_full_s=args.disk_full,
                      symbols=min(args.symbols, len(SYMBOLS)), monitor=not args.no_monitor)  # fmt: skip
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results = run(names, options, args.workdir)
    sys.stdout.write(f"\nfault-injection suite, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
                     f"{options.symbols} simulated symbols, supervision check every {options.check_interval_s:.0f} s, "
                     f"{time.monotonic() - started:.0f} s in all\n{table(results)}\n")  # fmt: skip
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
