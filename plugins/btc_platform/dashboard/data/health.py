"""The pipeline view: producer and stream state, supervised processes and their restarts, alerts,
Kafka lag, quarantine, data quality, and per table the commit and Airflow task that produced its data."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from btc_platform.dashboard.data.tables import PRODUCERS, TABLES, age_s, iso, read, utc_now, utc_timestamp
from btc_platform.lakehouse import datasets, lake
from btc_platform.lakehouse.quality import INGEST_COMPLETE
from btc_platform.settings import Settings

log = logging.getLogger(__name__)


#: Supervised processes and their logs (the supervisor writes a ``==== <time> ...`` line per start).
PROCESSES = ("producer", "stream")
_START_LINE = re.compile(r"^==== (\S+) (?:supervisor starts|starting) ")
QUARANTINE_SAMPLE = 5
SAMPLE_TEXT_CHARS = 300



def producer_state(settings: Settings, now: datetime) -> dict:
    from btc_platform.status import LAST_PUBLISH_KEY, read_status

    record = read_status(settings.producer_status_path)
    if record is None:
        return {"reason": f"no producer status record yet ({settings.producer_status_path})"}
    out = {k: v for k, v in record.items() if not isinstance(v, dict | list)}
    out["last_publish_age_s"] = age_s(record.get(LAST_PUBLISH_KEY), now)
    out["sources"] = record.get("sources") if isinstance(record.get("sources"), dict) else {}
    out["reason"] = None
    return out


def stream_state(settings: Settings, now: datetime) -> dict:
    from btc_platform.status import read_status

    record = read_status(settings.stream_status_path)
    if record is None:
        return {"queries": [], "reason": f"no stream status record yet ({settings.stream_status_path})"}
    keep = ("state", "batch_id", "timestamp", "input_rows", "input_rows_per_s", "processed_rows_per_s",
            "batch_duration_ms", "watermark", "valid_total", "quarantined_total", "input_rows_total",
            "stored_total", "duplicates_total", "dropped_late_total")
    queries = [{"name": name, **{k: q.get(k) for k in keep}, "age_s": age_s(q.get("timestamp"), now)}
               for name, q in (record.get("queries") or {}).items()]
    return {"started_at": record.get("started_at"), "updated_at": record.get("updated_at"),
            "updated_age_s": age_s(record.get("updated_at"), now), "queries": queries, "reason": None}


def process_starts(settings: Settings, name: str, limit: int = 20) -> list[str]:
    """Start times of a supervised process (the ``====`` lines of its log), newest last."""
    path = settings.logs_dir / f"{name}.log"
    if not path.is_file():
        return []
    starts = []
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("==== "):
                match = _START_LINE.match(line)
                if match:
                    starts.append(match.group(1))
    return starts[-limit:]


def processes(settings: Settings) -> list[dict]:
    """Each supervised process: running or not, its starts (log headers), its restarts."""
    from btc_platform.ops import supervisor

    out = []
    for name in PROCESSES:
        state = supervisor.status(name, settings)
        starts = process_starts(settings, name)
        out.append({"name": name, "state": state.action, "detail": state.reason, "pid": state.pid,
                    "starts": starts, "restarts": max(0, len(starts) - 1)})
    return out


def supervisor_events(settings: Settings, limit: int = 20) -> list[dict]:
    """The supervisor's latest starts and restarts with their reasons, newest first."""
    from btc_platform.ops import supervisor

    return supervisor.read_events(settings, limit)[::-1]


#: Seconds a Kafka lag is reused by the answers that show it: asking Kafka for its end offsets
#: opens a client each time (a tenth of a second or more), and the lag moves little in between.
KAFKA_LAG_TTL_S = 5.0
_kafka_lags: dict[tuple, tuple[float, dict]] = {}


def kafka_lag(settings: Settings) -> dict:
    """Messages in Kafka the stream has not read yet (asks Kafka only when the stream reported
    offsets, at most once per :data:`KAFKA_LAG_TTL_S` per topic)."""
    import time

    from btc_platform.ops.supervisor.health import stream_lag, stream_offsets

    key = (settings.kafka_bootstrap_servers, settings.kafka_topic, str(settings.stream_status_path))
    hit = _kafka_lags.get(key)
    if hit is not None and time.monotonic() - hit[0] < KAFKA_LAG_TTL_S:
        return hit[1]
    if stream_offsets(settings) is None:
        return {"messages": None, "reason": "the stream has not reported Kafka offsets yet"}
    try:
        answer = {"messages": stream_lag(settings), "reason": None}
    except Exception as exc:  # noqa: BLE001 - Kafka down is a state to show, not a page error
        log.warning("dashboard: Kafka lag unknown: %s: %s", type(exc).__name__, exc)
        return {"messages": None, "reason": f"Kafka lag unknown: {type(exc).__name__}: {exc}"}
    _kafka_lags[key] = (time.monotonic(), answer)
    return answer


def quarantine(settings: Settings, days: float, now: datetime) -> dict:
    """Quarantined records of the last ``days``: counts per hour and reason code, and a sample."""
    import pandas as pd

    start = utc_timestamp(now) - timedelta(days=days)
    got = read(datasets.QUARANTINE, settings, required=("reason", "quarantined_at"),
               optional=("value_text", "kafka_topic", "kafka_partition", "kafka_offset"),
               filters=[("quarantined_at", ">=", start)], order_by='"quarantined_at"',
               empty_reason=f"no record was quarantined since {iso(start)}")
    out: dict[str, Any] = {"from": iso(start), "total": 0, "hours": [], "series": {}, "by_reason": {},
                           "sample": [], "reason": got.reason}
    if got.empty:
        return out
    frame = got.frame
    frame["code"] = frame["reason"].astype(str).str.split(":", n=1).str[0]
    frame["hour"] = pd.to_datetime(frame["quarantined_at"], utc=True).dt.floor("h")
    counts = frame.groupby(["hour", "code"]).size().unstack("code", fill_value=0).sort_index()
    out["total"] = len(frame)
    out["hours"] = [iso(h) for h in counts.index]
    out["series"] = {str(code): [int(v) for v in counts[code]] for code in counts.columns}
    out["by_reason"] = {str(k): int(v) for k, v in frame["reason"].value_counts().head(20).items()}
    sample = frame.tail(QUARANTINE_SAMPLE).iloc[::-1]
    for record in sample.to_dict("records"):
        text = record.get("value_text")
        out["sample"].append({
            "quarantined_at": iso(record["quarantined_at"]),
            "reason": record["reason"],
            "value_text": None if text is None else str(text)[:SAMPLE_TEXT_CHARS],
            "kafka": "/".join(str(record[k]) for k in ("kafka_topic", "kafka_partition", "kafka_offset")
                              if record.get(k) is not None) or None,
        })
    return out


def data_quality(settings: Settings, days: float, now: datetime) -> dict:
    """data_quality results of the hours of the last ``days``: per hour the checks run and failed."""
    start = utc_timestamp(now).floor("h") - timedelta(days=days)
    got = read(datasets.DATA_QUALITY, settings, required=("hour_start", "check", "status"),
               optional=("symbol", "severity", "detail", "checked_at"),
               filters=[("hour_start", ">=", start)], order_by='"hour_start"',
               empty_reason=f"no data-quality result for the hours since {iso(start)}")
    out: dict[str, Any] = {"from": iso(start), "hours": [], "checks": [], "errors": [], "warnings": [],
                           "failures": [], "audit": None, "reason": got.reason}
    if got.empty:
        return out
    frame = got.frame
    out["audit"] = ingest_audit(frame)
    failed = frame["status"] == "fail"
    severity = frame["severity"] if "severity" in frame.columns else None
    grouped = frame.assign(failed=failed,
                           error=failed & (severity == "error") if severity is not None else failed,
                           warning=failed & (severity == "warning") if severity is not None else False)
    per_hour = grouped.groupby("hour_start").agg(checks=("check", "size"), errors=("error", "sum"),
                                                 warnings=("warning", "sum")).sort_index()
    out["hours"] = [iso(h) for h in per_hour.index]
    out["checks"] = [int(v) for v in per_hour["checks"]]
    out["errors"] = [int(v) for v in per_hour["errors"]]
    out["warnings"] = [int(v) for v in per_hour["warnings"]]
    fails = frame[failed].sort_values("hour_start", ascending=False).head(50)
    keep = [c for c in ("symbol", "hour_start", "check", "severity", "detail") if c in fails.columns]
    out["failures"] = [{k: (iso(v) if k == "hour_start" else v) for k, v in r.items()}
                       for r in fails[keep].to_dict("records")]
    return out


def ingest_audit(frame) -> dict | None:
    """The hourly ingest audit (``ingest_complete`` rows): the newest hour it checked, how many
    of the range's (symbol, hour) pairs it failed and the newest failure's detail; None if it never ran."""
    rows = frame[frame["check"] == INGEST_COMPLETE]
    if rows.empty:
        return None
    failed = rows[rows["status"] == "fail"].sort_values("hour_start")
    last = failed.iloc[-1] if len(failed) else None
    return {"last_hour": iso(rows["hour_start"].max()), "checked": int(len(rows)), "failed": int(len(failed)),
            "last_failure": None if last is None else {"hour_start": iso(last["hour_start"]),
                                                       "detail": last.get("detail")}}


#: Commits that change no data (compaction, clean-up, table properties): a table's data was
#: produced by the newest commit of another operation.
MAINTENANCE_OPERATIONS = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES",
                                    "UNSET TBLPROPERTIES", "ADD COLUMNS", "CHANGE COLUMN"})
#: The tables the streaming job writes. It is a process that ``make run`` starts and the
#: supervisor keeps running, not an Airflow task: its commits name no task instance.
STREAM_TABLES = frozenset({datasets.RAW_DATA, datasets.QUARANTINE, datasets.MINUTE_METRICS})
STREAM_WRITER = ("written by the streaming job, a process the supervisor keeps running (not an Airflow task): "
                 "its starts are in the table of starts and restarts, its log is logs/stream.log of the data directory")
#: Commits of a table searched (newest first) for the one that produced its data.
HISTORY_COMMITS = 25


def _commit(entry: dict) -> dict:
    from datetime import datetime as dt

    from btc_platform.lakehouse import lineage

    stamp = entry.get("timestamp")
    task = lineage.from_commit(entry)
    out: dict[str, Any] = {
        "version": entry.get("version"),
        "operation": entry.get("operation"),
        "committed_at": iso(dt.fromtimestamp(stamp / 1000, UTC)) if stamp else None,
        "airflow": task,
    }
    if task:  # relative to the dashboard's page (<base>/btc/): the Airflow UI's own routes
        out["task_log"] = "../" + lineage.ui_path(task)
        out["run"] = "../" + lineage.run_path(task)
    return out


def dataset_runs(settings: Settings) -> list[dict]:
    """Per table: its version, its last commit and the commit that produced its data (the newest
    that is not maintenance) with the Airflow task instance that made it (``btc_platform.lakehouse.lineage``:
    recorded in the commit) and links to that DAG run and task log; the DAGs that write it."""
    out = []
    for name, dags in PRODUCERS.items():
        entry: dict[str, Any] = {"table": name, "dags": list(dags), "dag_runs": [f"../dags/{d}/runs" for d in dags]}
        try:
            with TABLES.latest(name, settings) as table:
                version = int(table.version())
                history = table.history(HISTORY_COMMITS)
        except lake.TableNotFoundError:
            entry.update(version=None, last_commit=None, produced_by=None, reason="does not exist yet")
            out.append(entry)
            continue
        commits = [_commit(c) for c in history]
        commits.sort(key=lambda c: -1 if c["version"] is None else c["version"], reverse=True)
        data_commits = [c for c in commits if c["operation"] not in MAINTENANCE_OPERATIONS]
        produced = data_commits[0] if data_commits else None
        entry.update(version=version, last_commit=commits[0] if commits else None,
                     produced_by=produced, reason=None)
        if produced is None:
            entry["reason"] = f"none of the last {HISTORY_COMMITS} commits wrote data (maintenance only)"
        elif produced["airflow"] is None and name in STREAM_TABLES:
            entry["reason"] = STREAM_WRITER
        elif produced["airflow"] is None:
            entry["reason"] = ("the commit names no Airflow task: written outside Airflow (by hand, a test) "
                               "or by an older version of the platform")
        out.append(entry)
    return out


def _restart_links(events: list[dict]) -> list[dict]:
    from btc_platform.lakehouse import lineage

    for event in events:
        task = lineage.task_of(event.get(lineage.KEY))
        event["airflow"] = task
        event["task_log"] = "../" + lineage.ui_path(task) if task else None
    return events


def alerts(settings: Settings, limit: int = 20) -> dict:
    """The monitor's open incidents and the last resolved ones (``btc_platform.monitoring``), newest first."""
    from btc_platform.monitoring import state as alert_state

    current = alert_state.load(settings)

    def row(incident: dict) -> dict:
        return {"key": incident.get("key"), "summary": incident.get("summary"), "resolution": incident.get("resolution"),
                "opened_at": iso(_utc(incident.get("opened_at"))), "resolved_at": iso(_utc(incident.get("resolved_at")))}

    opened = sorted(current.open.values(), key=lambda i: i.get("opened_at") or 0, reverse=True)
    return {"open": [row(i) for i in opened], "recent": [row(i) for i in current.recent[:limit]],
            "undelivered": len(current.undelivered),
            "reason": None if opened or current.recent else "no alert so far (or the monitor has not run yet)"}


def _utc(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(float(epoch), UTC)


def pipeline(settings: Settings, days: float, now: datetime | None = None) -> dict:
    """Producer and stream state, alerts, restarts, Kafka lag, quarantine, data quality, the tables' DAGs."""
    now = now or utc_now()
    return {
        "days": days,
        "to": iso(now),
        "producer": producer_state(settings, now),
        "stream": stream_state(settings, now),
        "processes": processes(settings),
        "alerts": alerts(settings),
        "restarts": _restart_links(supervisor_events(settings)),
        "kafka_lag": kafka_lag(settings),
        "quarantine": quarantine(settings, days, now),
        "data_quality": data_quality(settings, days, now),
        "datasets": dataset_runs(settings),
    }
