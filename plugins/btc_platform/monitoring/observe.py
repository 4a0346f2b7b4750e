"""What the monitor observes, gathered into one :class:`~btc_platform.monitoring.rules.Observation`
per tick (the rules and the Prometheus metrics read the same one).

Every tick (``BTC_MONITOR_INTERVAL_S``), cheap reads only: the supervisor's pid records and
event log, the producer's and the stream's status records, the Kafka end offsets (one consumer
kept open), the spool file's size, the data directory's free space. Every
``BTC_MONITOR_SLOW_INTERVAL_S``: each Delta table's last commit (delta-rs), the files of today's
raw_data partition, the newest data-quality results, and the platform's DAG runs of the last day
from Airflow's REST API (as the admin user of the local Airflow, whose generated password file
``btc-services`` uses too); between two slow reads the last values are reused. A read that fails
is logged (once per kind of failure until it works again) and its part of the observation stays
unknown, which the rules take as "cannot tell", never as "fine".
"""

from __future__ import annotations

import logging
import shutil
import time
from datetime import UTC, datetime
from typing import Any

from btc_platform.monitoring.rules import PROCESSES, DagRunObs, Observation, ProcessObs, QualityObs
from btc_platform.settings import Settings

log = logging.getLogger(__name__)

#: Tables whose last commit is exported (``btc_table_last_commit_age_seconds``).
TABLES = ("raw_data", "quarantine", "minute_metrics", "hourly_metrics", "data_quality", "predictions",
          "future_predictions", "prediction_metrics")  # fmt: skip
#: The stream's query that writes raw_data and quarantine (spark_jobs.stream_job.QUERY_INGEST).
INGEST_QUERY = "ingest"
DAG_PREFIX = "btc_"
DAY_S = 86400.0


def epoch(value: Any) -> float | None:
    """Epoch seconds of a datetime read from a table or an ISO-8601 text (``Z`` or offset; naive =
    UTC), None when empty or unreadable."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


class Observer:
    """Gathers observations; keeps a Kafka consumer, an Airflow token and the slow reads."""

    def __init__(self, settings: Settings, started_at: float | None = None):
        self.settings = settings
        self.started_at = time.time() if started_at is None else started_at
        self._consumer = None
        self._token: str | None = None
        self._slow: dict[str, Any] = {}
        self._next_slow = 0.0
        self._failing: dict[str, str] = {}

    # ---- failure logging: once per kind until it works again ------------------------------------
    def _failed(self, what: str, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if self._failing.get(what) != text:
            log.warning("monitor: %s unknown (%s)", what, text)
        self._failing[what] = text

    def _ok(self, what: str) -> None:
        if self._failing.pop(what, None) is not None:
            log.info("monitor: %s readable again", what)

    def _read(self, what: str, read, default=None):
        try:
            value = read()
        except Exception as exc:  # noqa: BLE001 - an unreadable source is an unknown observation, logged
            self._failed(what, exc)
            return default
        self._ok(what)
        return value

    # ---- fast reads --------------------------------------------------------------------------------
    def _processes(self) -> dict[str, ProcessObs]:
        from btc_platform.ops import process, supervisor

        out = {}
        for name in PROCESSES:
            record = supervisor.read_record(self.settings, name)
            alive = None if record is None else process.is_alive(record)
            out[name] = ProcessObs(alive, record.pid if record else None, record.started_epoch if record else None)
        return out

    def _restarts(self) -> tuple[dict[str, list[float]], dict[str, list[tuple[float, str]]]]:
        """The supervisor's restarts per process, and those of them that followed a death."""
        from btc_platform.ops import supervisor
        from btc_platform.ops.supervisor.decide import DIED

        out: dict[str, list[float]] = {name: [] for name in PROCESSES}
        deaths: dict[str, list[tuple[float, str]]] = {name: [] for name in PROCESSES}
        for event in supervisor.read_events(self.settings, limit=supervisor.MAX_EVENTS):
            moment = epoch(event.get("time"))
            if event.get("action") == "restarted" and event.get("name") in out and moment is not None:
                out[event["name"]].append(moment)
                if str(event.get("reason", "")).endswith(DIED):
                    deaths[event["name"]].append((moment, str(event["reason"])))
        return out, deaths

    def _lag(self) -> dict[int, int] | None:
        """Messages per partition the stream has not processed (None before it reported offsets)."""
        from confluent_kafka import Consumer, TopicPartition

        from btc_platform.ops.supervisor.health import stream_offsets

        processed = stream_offsets(self.settings)
        if processed is None:
            return None
        s = self.settings
        if self._consumer is None:
            self._consumer = Consumer({"bootstrap.servers": s.kafka_bootstrap_servers,
                                       "group.id": "btc-monitor-lag", "enable.auto.commit": False})  # fmt: skip
        try:
            topic = self._consumer.list_topics(s.kafka_topic, timeout=5.0).topics.get(s.kafka_topic)
            if topic is None or topic.error is not None:
                raise RuntimeError(f"topic {s.kafka_topic!r} not available: {topic and topic.error}")
            ends = {p: self._consumer.get_watermark_offsets(TopicPartition(s.kafka_topic, p), timeout=5.0)[1]
                    for p in sorted(topic.partitions)}  # fmt: skip
        except Exception:
            self.close()  # a new consumer next time
            raise
        return {p: max(0, end - processed.get(p, 0)) for p, end in ends.items()}

    def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            consumer.close()

    # ---- slow reads ---------------------------------------------------------------------------------
    def _airflow_runs(self, now: float) -> list[DagRunObs]:
        import json

        import requests

        from btc_platform.ops.airflow_env import api_url, password_file

        base = api_url(self.settings)
        for attempt in (1, 2):
            if self._token is None:
                password = json.loads(password_file(self.settings).read_text())["admin"]
                answer = requests.post(f"{base}/auth/token", json={"username": "admin", "password": password},
                                       timeout=(3, 10))  # fmt: skip
                answer.raise_for_status()
                self._token = answer.json()["access_token"]
            since = datetime.fromtimestamp(now - DAY_S - 3600, UTC).isoformat()
            answer = requests.get(f"{base}/api/v2/dags/~/dagRuns", timeout=(3, 20),
                                  headers={"Authorization": f"Bearer {self._token}"},
                                  params={"dag_id_prefix_pattern": DAG_PREFIX, "run_after_gte": since,
                                          "order_by": "-run_after", "limit": 500})  # fmt: skip
            if answer.status_code in (401, 403) and attempt == 1:
                self._token = None  # expired: a new token, once
                continue
            answer.raise_for_status()
            break
        return [DagRunObs(dag_id=r["dag_id"], run_id=r["dag_run_id"], state=str(r.get("state")),
                          run_after=epoch(r.get("run_after")) or 0.0, interval_start=epoch(r.get("data_interval_start")),
                          start=epoch(r.get("start_date")), end=epoch(r.get("end_date")))
                for r in answer.json().get("dag_runs", []) if str(r.get("dag_id", "")).startswith(DAG_PREFIX)]  # fmt: skip

    def _quality(self, now: float) -> QualityObs | None:
        """The newest hour's last run of checks, from the results of the last day (a few hundred
        rows, read as Arrow and turned into Python lists: the monitor loads no pandas)."""
        from deltalake import QueryBuilder

        from btc_platform.lakehouse import datasets, lake

        columns = ["hour_start", "check", "status", "severity", "checked_at"]
        try:
            table = lake.open_table(datasets.DATA_QUALITY, self.settings)
        except lake.TableNotFoundError:
            return None
        sql = lake.select_sql(columns, [("hour_start", ">=", datetime.fromtimestamp(now - DAY_S, UTC))])
        result = QueryBuilder().register("t", table).execute(sql).read_all()
        rows = list(zip(*(result.column(c).to_pylist() for c in columns), strict=True))
        if not rows:
            return None
        hour = max(r[0] for r in rows)
        newest = [r for r in rows if r[0] == hour]
        last_run = max(r[4] for r in newest)  # the last run of that hour's checks
        failed = {r[1] for r in newest if r[4] == last_run and r[2] == "fail" and r[3] == "error"}
        return QualityObs(epoch(hour), tuple(sorted(failed)))

    def _tables(self) -> dict[str, float]:
        from btc_platform.lakehouse import lake

        out = {}
        for name in TABLES:
            try:
                entry = lake.open_table(name, self.settings).history(1)
            except lake.TableNotFoundError:
                continue
            if entry and entry[0].get("timestamp"):
                out[name] = entry[0]["timestamp"] / 1000.0
        return out

    def _today_files(self, now: float) -> int:
        from btc_platform.lakehouse import datasets
        from btc_platform.lakehouse.storage import join, open_storage

        day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        uri = join(self.settings.path(datasets.RAW_DATA), f"date={day}")
        storage = open_storage(uri, self.settings)
        if not storage.isdir(uri):
            return 0
        return sum(1 for f in storage.walk_files(uri) if f.endswith(".parquet"))

    def _read_slow(self, now: float) -> None:
        from btc_platform.ops.orchestration import schedule_start

        runs = self._read("Airflow DAG runs", lambda: self._airflow_runs(now))
        tables = self._read("table commits", self._tables, {})
        self._slow = {
            "dag_runs": runs,
            "first_hour": schedule_start(self.settings).timestamp(),
            "quality": self._read("data-quality results", lambda: self._quality(now)),
            "tables": tables,
            "forecast_table": "future_predictions" in tables,
            "today_files": self._read("today's raw_data files", lambda: self._today_files(now)),
        }

    # ---- one observation -------------------------------------------------------------------------
    def observe(self, now: float | None = None) -> tuple[Observation, dict[str, Any]]:
        """The observation for the rules, and the details the metrics export besides."""
        from btc_platform.status import read_status

        s = self.settings
        now = time.time() if now is None else now
        if now >= self._next_slow:
            self._read_slow(now)
            self._next_slow = now + s.monitor_slow_interval_s
        producer = self._read("producer status", lambda: read_status(s.producer_status_path)) or {}
        stream = self._read("stream status", lambda: read_status(s.stream_status_path)) or {}
        ingest = (stream.get("queries") or {}).get(INGEST_QUERY) or {}
        lag = self._read("Kafka lag", self._lag)
        spool = self._read("spool", lambda: s.producer_spool_path.stat().st_size if s.producer_spool_path.exists()
                           else 0)  # fmt: skip
        disk = self._read("disk space", lambda: shutil.disk_usage(s.data_dir))
        restarts, deaths = self._read("supervisor events", self._restarts, ({}, {}))
        totals = None
        if ingest.get("valid_total") is not None:
            totals = (str(stream.get("started_at")), int(ingest.get("valid_total") or 0),
                      int(ingest.get("quarantined_total") or 0))  # fmt: skip
        obs = Observation(
            at=now,
            monitor_started_at=self.started_at,
            processes=self._read("process records", self._processes, {}),
            restarts=restarts,
            deaths=deaths,
            last_rows_at=epoch(ingest.get("last_rows_at")),
            lag=None if lag is None else sum(lag.values()),
            ingest_totals=totals,
            spool_bytes=spool,
            disk_free_ratio=None if disk is None else disk.free / disk.total,
            dag_runs=self._slow.get("dag_runs"),
            first_hour=self._slow.get("first_hour"),
            quality=self._slow.get("quality"),
            forecast_commit_at=(self._slow.get("tables") or {}).get("future_predictions"),
            forecast_table=bool(self._slow.get("forecast_table")),
        )
        details = {"producer": producer, "stream": stream, "lag_by_partition": lag or {},
                   "tables": self._slow.get("tables") or {}, "today_files": self._slow.get("today_files")}  # fmt: skip
        return obs, details
