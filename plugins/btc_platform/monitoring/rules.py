"""Alert rules as pure functions of observations.

Each rule takes what the monitor observed (``btc_platform.monitoring.observe``) and returns a
:class:`Finding` per incident key: firing with what is wrong, or not firing with how things are
now (the text of the "resolved" message). ``None`` means the rule cannot tell this time (the
Airflow API did not answer, no sample old enough yet): an open incident then stays open, a
closed one stays closed. Opening, closing, deduplicating and sending is
``btc_platform.monitoring.state``'s job, so every rule is unit-testable with plain values,
like the supervisor's ``decide`` module.

Windowed rules (Kafka lag growing, quarantine rate, spool not empty) read a :class:`History`
of earlier observations that :func:`remember` keeps (the monitor persists it with its state).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from btc_platform.ops.supervisor.decide import STREAM_START_GRACE
from btc_platform.settings import Settings

PROCESSES = ("producer", "stream")
#: DAGs that run for a long time by design (a healthy run of the supervisor lasts a day): a
#: failed run is over once the next run has been running for :data:`RUNNING_SETTLES_S`.
LONG_RUNNING_DAGS = frozenset({"btc_stream_supervisor"})
RUNNING_SETTLES_S = 600.0
#: How far back the consolidation rule looks for hours without a successful run.
CONSOLIDATION_LOOKBACK_S = 24 * 3600.0
HOUR_S = 3600.0


@dataclass(frozen=True)
class Finding:
    """One rule's verdict on one incident key (``rule`` or ``rule:subject``)."""

    rule: str
    key: str
    firing: bool
    summary: str


@dataclass(frozen=True)
class ProcessObs:
    """A supervised process: ``alive`` None when it has no pid record (never started, or
    stopped on purpose: ``make stop`` removes the record)."""

    alive: bool | None
    pid: int | None = None
    started_at: float | None = None


@dataclass(frozen=True)
class DagRunObs:
    """One Airflow DAG run (times in epoch seconds; ``interval_start`` None for runs without one)."""

    dag_id: str
    run_id: str
    state: str
    run_after: float
    interval_start: float | None = None
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class QualityObs:
    """The newest data-quality results: the hour checked and the error-severity checks that failed."""

    hour_start: float
    failed: tuple[str, ...]


@dataclass
class Observation:
    """What the monitor saw at ``at``. ``None`` fields were not observed (unknown)."""

    at: float
    monitor_started_at: float
    processes: dict[str, ProcessObs] = field(default_factory=dict)
    restarts: dict[str, list[float]] = field(default_factory=dict)
    deaths: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # restarts of a dead process: (when, why)
    last_rows_at: float | None = None
    lag: int | None = None
    ingest_totals: tuple[str, int, int] | None = None  # (stream job started_at, valid, quarantined)
    spool_bytes: int | None = None
    disk_free_ratio: float | None = None
    dag_runs: list[DagRunObs] | None = None
    first_hour: float | None = None  # first hour the consolidation DAG is scheduled for
    quality: QualityObs | None = None
    forecast_commit_at: float | None = None
    forecast_table: bool = False


@dataclass
class History:
    """Earlier observations the windowed rules need (kept JSON-serialisable)."""

    lag: list[tuple[float, int]] = field(default_factory=list)
    counts: list[tuple[float, str, int, int]] = field(default_factory=list)
    spool_since: float | None = None
    at: float | None = None  # the last observation's time
    down: list[str] = field(default_factory=list)  # processes that observation saw down
    #: deaths the supervisor repaired between the last two observations, unseen by the monitor
    missed_deaths: dict[str, list[tuple[float, str]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"lag": self.lag, "counts": self.counts, "spool_since": self.spool_since, "at": self.at,
                "down": self.down, "missed_deaths": self.missed_deaths}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> History:
        data = data or {}
        return cls(lag=[(float(t), int(v)) for t, v in data.get("lag") or []],
                   counts=[(float(t), str(s), int(v), int(q)) for t, s, v, q in data.get("counts") or []],
                   spool_since=data.get("spool_since"), at=data.get("at"), down=list(data.get("down") or []),
                   missed_deaths={name: [(float(t), str(why)) for t, why in deaths]
                                  for name, deaths in (data.get("missed_deaths") or {}).items()})  # fmt: skip


@dataclass(frozen=True)
class RuleConfig:
    startup_grace_s: float = 300.0
    max_restarts_per_hour: int = 3
    raw_stale_s: float = 120.0
    lag_window_s: float = 300.0
    lag_min_messages: int = 1000
    consolidation_delay_s: float = 1200.0
    quarantine_ratio: float = 0.01
    quarantine_window_s: float = 600.0
    quarantine_min_records: int = 100
    forecast_stale_s: float = 7200.0
    disk_free_ratio: float = 0.10
    spool_s: float = 300.0

    @classmethod
    def from_settings(cls, s: Settings) -> RuleConfig:
        return cls(
            startup_grace_s=s.alert_startup_grace_s,
            max_restarts_per_hour=s.alert_max_restarts_per_hour,
            raw_stale_s=s.alert_raw_stale_s,
            lag_window_s=s.alert_lag_window_s,
            lag_min_messages=s.alert_lag_min_messages,
            consolidation_delay_s=s.alert_consolidation_delay_s,
            quarantine_ratio=s.alert_quarantine_ratio,
            quarantine_window_s=s.alert_quarantine_window_s,
            quarantine_min_records=s.alert_quarantine_min_records,
            forecast_stale_s=s.alert_forecast_stale_s,
            disk_free_ratio=s.alert_disk_free_ratio,
            spool_s=s.alert_spool_s,
        )


def iso(epoch: float | None) -> str:
    return "never" if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


# ---- the rules ---------------------------------------------------------------------------------
def process_down(name: str, proc: ProcessObs, now: float, monitor_started_at: float, grace_s: float,
                 missed: Sequence[tuple[float, str]] = ()) -> Finding:  # fmt: skip
    """Down: its recorded process is gone, or it was never started ``grace_s`` after the monitor.
    Also a death the monitor did not see (``missed``: the supervisor restarted the dead process
    between two observations, :attr:`History.missed_deaths`): firing on that one observation,
    so the death is told once and its repair once, like one seen down."""
    key = f"process_down:{name}"
    if proc.alive is False:
        return Finding("process_down", key, True, f"{name} is down: process {proc.pid} is not running")
    if proc.alive and missed:
        at, why = missed[-1]
        return Finding("process_down", key, True,
                       f"{name} died ({why}); the supervisor restarted it at {iso(at)} (pid {proc.pid})")  # fmt: skip
    if proc.alive is None and now - monitor_started_at > grace_s:
        return Finding("process_down", key, True,
                       f"{name} is not running: no supervised process for {now - monitor_started_at:.0f} s")  # fmt: skip
    state = f"running (pid {proc.pid}, started {iso(proc.started_at)})" if proc.alive else "not started yet"
    return Finding("process_down", key, False, f"{name} is {state}")


def restarts(name: str, times: Sequence[float], now: float, limit: int) -> Finding:
    """Restarted more than ``limit`` times in the last hour."""
    recent = sorted(t for t in times if now - t <= HOUR_S)
    count = len(recent)
    if count > limit:
        return Finding("restarts", f"restarts:{name}", True,
                       f"{name} was restarted {count} times in the last hour (limit {limit}), last at "
                       f"{iso(recent[-1])}")  # fmt: skip
    return Finding("restarts", f"restarts:{name}", False, f"{name}: {count} restart(s) in the last hour")


def raw_stale(producer: ProcessObs, stream: ProcessObs, last_rows_at: float | None, now: float,
              limit_s: float) -> Finding | None:  # fmt: skip
    """No new raw_data row for ``limit_s`` while the producer runs. A (re)started producer or
    stream gets ``limit_s`` before it counts as stale (a stream with no row since its start
    :data:`STREAM_START_GRACE` times that, the supervisor's own start grace): until then the rule
    cannot tell (None), so a restart neither raises nor resolves the incident; only new rows
    resolve it. A dead stream is ``process_down``'s incident."""
    if producer.alive is not True:
        return Finding("raw_stale", "raw_stale", False, "the producer is not running (its own alert says so)")
    if stream.alive is not True:
        return None
    if last_rows_at is not None and now - last_rows_at <= limit_s:
        return Finding("raw_stale", "raw_stale", False, f"raw_data gets rows again (last at {iso(last_rows_at)})")
    started = max(producer.started_at or 0.0, stream.started_at or 0.0)
    quiet = now - max(last_rows_at or 0.0, started)
    limit = limit_s
    if stream.started_at is not None and (last_rows_at is None or last_rows_at < stream.started_at):
        limit = limit_s * STREAM_START_GRACE  # no row since it (re)started: still starting, as the supervisor counts it
    if quiet <= limit:
        return None
    return Finding("raw_stale", "raw_stale", True,
                   f"raw_data got no new row for {quiet:.0f} s (limit {limit:.0f} s) while the producer runs; "
                   f"last row at {iso(last_rows_at)}, stream (re)started at {iso(stream.started_at)}")  # fmt: skip


def lag_growing(samples: Sequence[tuple[float, int]], now: float, window_s: float, min_lag: int) -> Finding | None:
    """Kafka lag rose over the window and never fell below ``min_lag`` in it."""
    if not samples:
        return None
    last = samples[-1][1]
    if last < min_lag:
        return Finding("lag_growing", "lag_growing", False, f"Kafka lag is {last} messages (below {min_lag})")
    before = [v for t, v in samples if t <= now - window_s]
    if not before:
        return None  # not observed for a whole window yet
    start = before[-1]
    inside = [v for t, v in samples if t > now - window_s]
    if last > start and min([start, *inside]) >= min_lag:
        return Finding("lag_growing", "lag_growing", True,
                       f"Kafka lag grows: {start} -> {last} messages over {window_s:.0f} s")  # fmt: skip
    return Finding("lag_growing", "lag_growing", False,
                   f"Kafka lag is {last} messages, {start} {window_s:.0f} s ago: not growing")  # fmt: skip


def _hour_label(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:00")


def late_hours(runs: Sequence[DagRunObs], first_hour: float, now: float, delay_s: float,
               dag_id: str = "btc_hourly_consolidation") -> list[str]:  # fmt: skip
    """Hours (of the last day, from the DAG's first scheduled hour) without a successful
    consolidation run ``delay_s`` after their end, each with its run's state."""
    by_hour: dict[float, str] = {}
    for run in runs:
        if run.dag_id == dag_id and run.interval_start is not None:
            state = by_hour.get(run.interval_start)
            by_hour[run.interval_start] = "success" if "success" in (state, run.state) else run.state
    hour = max(first_hour, math.floor((now - CONSOLIDATION_LOOKBACK_S) / HOUR_S) * HOUR_S)
    hour = math.ceil(hour / HOUR_S) * HOUR_S
    late = []
    while hour + HOUR_S + delay_s <= now:
        if by_hour.get(hour) != "success":
            late.append(f"{_hour_label(hour)} ({by_hour.get(hour, 'no run')})")
        hour += HOUR_S
    return late


def consolidation(runs: Sequence[DagRunObs] | None, first_hour: float | None, now: float,
                  delay_s: float) -> Finding | None:  # fmt: skip
    """Firing while :func:`late_hours` finds an hour not consolidated ``delay_s`` after its end."""
    if runs is None or first_hour is None:
        return None
    late = late_hours(runs, first_hour, now, delay_s)
    if late:
        return Finding("consolidation_late", "consolidation_late", True,
                       f"{len(late)} hour(s) not consolidated {delay_s / 60:.0f} min after their end: "
                       f"{', '.join(late[-6:])}")  # fmt: skip
    return Finding("consolidation_late", "consolidation_late", False, "every hour due is consolidated")


def dag_failed(runs: Sequence[DagRunObs] | None, now: float) -> list[Finding]:
    """Per platform DAG: firing while its newest finished run failed (a later success ends it; for
    :data:`LONG_RUNNING_DAGS` also a later run running for :data:`RUNNING_SETTLES_S`)."""
    if runs is None:
        return []
    out = []
    for dag_id in sorted({r.dag_id for r in runs}):
        mine = sorted((r for r in runs if r.dag_id == dag_id), key=lambda r: (r.run_after, r.start or 0.0))
        finished = [r for r in mine if r.state in ("success", "failed")]
        if not finished:
            continue
        last = finished[-1]
        key = f"dag_failed:{dag_id}"
        if last.state == "success":
            out.append(Finding("dag_failed", key, False, f"{dag_id}: run {last.run_id} succeeded at {iso(last.end)}"))
            continue
        settled = [r for r in mine if r.state == "running" and dag_id in LONG_RUNNING_DAGS and r.start is not None
                   and r.start >= (last.end or 0.0) and now - r.start >= RUNNING_SETTLES_S]  # fmt: skip
        if settled:
            out.append(Finding("dag_failed", key, False,
                               f"{dag_id}: run {settled[-1].run_id} runs since {iso(settled[-1].start)}"))  # fmt: skip
        else:
            out.append(Finding("dag_failed", key, True, f"{dag_id}: run {last.run_id} failed at {iso(last.end)}"))
    return out


def data_quality(quality: QualityObs | None) -> Finding | None:
    """The newest checked hour has failed error-severity checks."""
    if quality is None:
        return None
    hour = _hour_label(quality.hour_start)
    if quality.failed:
        return Finding("data_quality", "data_quality", True,
                       f"data-quality checks failed for hour {hour}: {', '.join(quality.failed)}")  # fmt: skip
    return Finding("data_quality", "data_quality", False, f"data-quality checks of hour {hour} passed")


def quarantine_rate(counts: Sequence[tuple[float, str, int, int]], now: float, window_s: float, ratio: float,
                    min_records: int) -> Finding | None:  # fmt: skip
    """Share of quarantined records among those the stream read in the window (running totals
    per stream job; a restarted job counts from zero)."""
    if not counts or counts[0][0] > now - window_s:
        return None  # not observed for a whole window yet
    base = [c for c in counts if c[0] <= now - window_s][-1]
    valid = quarantined = 0
    previous = base
    for sample in (c for c in counts if c[0] > now - window_s):
        same_job = sample[1] == previous[1]
        valid += sample[2] - (previous[2] if same_job else 0)
        quarantined += sample[3] - (previous[3] if same_job else 0)
        previous = sample
    total = valid + quarantined
    if total < min_records:
        return Finding("quarantine_rate", "quarantine_rate", False,
                       f"{total} records in {window_s:.0f} s (fewer than {min_records}): rate not judged")  # fmt: skip
    share = quarantined / total
    if share > ratio:
        return Finding("quarantine_rate", "quarantine_rate", True,
                       f"{share:.1%} of {total} records quarantined in {window_s / 60:.0f} min (limit {ratio:.1%})")  # fmt: skip
    return Finding("quarantine_rate", "quarantine_rate", False,
                   f"{share:.2%} of {total} records quarantined in {window_s / 60:.0f} min")  # fmt: skip


def forecast_stale(table_exists: bool, last_commit_at: float | None, now: float, limit_s: float) -> Finding | None:
    """future_predictions got no commit for ``limit_s`` (no table yet: no forecast to refresh)."""
    if not table_exists or last_commit_at is None:
        return None
    age = now - last_commit_at
    if age > limit_s:
        return Finding("forecast_stale", "forecast_stale", True,
                       f"the forecast was not refreshed for {age / 3600:.1f} h (last at {iso(last_commit_at)})")  # fmt: skip
    return Finding("forecast_stale", "forecast_stale", False, f"the forecast was refreshed at {iso(last_commit_at)}")


def disk_free(free_ratio: float | None, limit: float, where: str = "the data directory") -> Finding | None:
    if free_ratio is None:
        return None
    if free_ratio < limit:
        return Finding("disk_free", "disk_free", True, f"{free_ratio:.1%} free on {where} (limit {limit:.0%})")
    return Finding("disk_free", "disk_free", False, f"{free_ratio:.1%} free on {where}")


def spool(spool_since: float | None, spool_bytes: int | None, now: float, limit_s: float) -> Finding | None:
    """The producer's spool (messages Kafka did not take) is not empty for ``limit_s``."""
    if spool_bytes is None:
        return None
    if spool_since is not None and now - spool_since > limit_s:
        return Finding("spool", "spool", True,
                       f"the producer's spool holds {spool_bytes} bytes of undelivered messages since "
                       f"{iso(spool_since)}")  # fmt: skip
    return Finding("spool", "spool", False, "the producer's spool is empty" if not spool_bytes
                   else f"the producer's spool holds {spool_bytes} bytes since {iso(spool_since)}")  # fmt: skip


# ---- history and evaluation ---------------------------------------------------------------------
def remember(history: History, obs: Observation, cfg: RuleConfig) -> History:
    """The history with ``obs`` added, trimmed to what the windows need (one sample older)."""

    def trim(samples: list, window_s: float) -> list:
        older = [i for i, s in enumerate(samples) if s[0] <= obs.at - window_s]
        return samples[older[-1]:] if older else samples

    lag = history.lag + ([(obs.at, obs.lag)] if obs.lag is not None else [])
    counts = history.counts
    if obs.ingest_totals is not None:
        started, valid, quarantined = obs.ingest_totals
        counts = [*counts, (obs.at, started, valid, quarantined)]
    if obs.spool_bytes is None:
        since = history.spool_since
    else:
        since = None if obs.spool_bytes == 0 else (history.spool_since or obs.at)
    after = obs.monitor_started_at if history.at is None else history.at
    missed = {name: [(t, why) for t, why in deaths if after < t <= obs.at]
              for name, deaths in obs.deaths.items() if name not in history.down}  # fmt: skip
    return History(lag=trim(lag, cfg.lag_window_s), counts=trim(counts, cfg.quarantine_window_s), spool_since=since,
                   at=obs.at, down=sorted(name for name, p in obs.processes.items() if p.alive is False),
                   missed_deaths={name: deaths for name, deaths in missed.items() if deaths})  # fmt: skip


def evaluate(obs: Observation, history: History, cfg: RuleConfig) -> list[Finding]:
    """Every rule on one observation (with the history that already includes it)."""
    now = obs.at
    found: list[Finding | None] = []
    for name in PROCESSES:
        proc = obs.processes.get(name, ProcessObs(None))
        found.append(process_down(name, proc, now, obs.monitor_started_at, cfg.startup_grace_s,
                                  history.missed_deaths.get(name, ())))  # fmt: skip
        found.append(restarts(name, obs.restarts.get(name, []), now, cfg.max_restarts_per_hour))
    found.append(raw_stale(obs.processes.get("producer", ProcessObs(None)), obs.processes.get("stream", ProcessObs(None)),
                           obs.last_rows_at, now, cfg.raw_stale_s))  # fmt: skip
    found.append(lag_growing(history.lag, now, cfg.lag_window_s, cfg.lag_min_messages))
    found.append(consolidation(obs.dag_runs, obs.first_hour, now, cfg.consolidation_delay_s))
    found.extend(dag_failed(obs.dag_runs, now))
    found.append(data_quality(obs.quality))
    found.append(quarantine_rate(history.counts, now, cfg.quarantine_window_s, cfg.quarantine_ratio,
                                 cfg.quarantine_min_records))  # fmt: skip
    found.append(forecast_stale(obs.forecast_table, obs.forecast_commit_at, now, cfg.forecast_stale_s))
    found.append(disk_free(obs.disk_free_ratio, cfg.disk_free_ratio))
    found.append(spool(history.spool_since, obs.spool_bytes, now, cfg.spool_s))
    return [f for f in found if f is not None]
