"""The platform's metrics in Prometheus exposition format (``prometheus-client``).

:class:`PlatformCollector` holds the monitor's latest observation and renders it on every
scrape (a scrape reads no file and asks no service: it costs the same however often Prometheus
comes). The names, all prefixed ``btc_``:

* processes: ``process_up``, ``process_start_time_seconds``, ``supervisor_restarts_last_hour``
  (label ``process``: producer, stream);
* producer (its status record): ``producer_messages_total{outcome}`` (accepted, published,
  failed, rejected, retried, spooled), ``producer_in_flight_messages``,
  ``producer_upstream_last_success_age_seconds{upstream}``,
  ``producer_http_errors_total{upstream,kind}``, ``producer_spool_bytes``;
* stream (its status record): ``stream_batch_duration_seconds{query}``,
  ``stream_input_rows_per_second{query}``, ``stream_processed_rows_per_second{query}``,
  ``stream_watermark_delay_seconds{query}``, ``stream_records_total{outcome}`` (valid,
  quarantined: since the job started), ``stream_last_rows_age_seconds``,
  ``kafka_lag_messages{partition}``;
* tables: ``table_last_commit_age_seconds{table}``, ``raw_data_today_files``;
* Airflow and checks: ``dag_run_failed{dag_id}`` (newest finished run failed),
  ``consolidation_late_hours``, ``data_quality_failed_checks``;
* the monitor: ``data_dir_free_ratio``, ``alert_open{rule,key}``,
  ``alert_outbox_messages{channel}``, ``alert_undelivered_recent``,
  ``monitor_last_observation_timestamp_seconds``.

Counters come from the processes' own running totals, so they restart from zero with the
process (Prometheus' ``rate``/``increase`` handle that).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from btc_platform.monitoring import rules
from btc_platform.monitoring.observe import epoch
from btc_platform.monitoring.rules import Observation

PRODUCER_COUNTERS = ("accepted", "published", "failed", "rejected", "retried", "spooled")


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


class PlatformCollector:
    """A prometheus-client collector of the latest observation (:meth:`update` from the loop)."""

    def __init__(self, consolidation_delay_s: float = 1200.0):
        self._lock = threading.Lock()
        self._snapshot: tuple[Observation, dict[str, Any], dict[str, Any]] | None = None
        self.consolidation_delay_s = consolidation_delay_s

    def update(self, obs: Observation, details: dict[str, Any], alerts: dict[str, Any]) -> None:
        with self._lock:
            self._snapshot = (obs, details, alerts)

    def describe(self) -> list:
        return []  # dynamic: no registration-time collect

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            snapshot = self._snapshot
        if snapshot is None:
            return
        obs, details, alerts = snapshot
        now = obs.at

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"btc_{name}", doc, labels=list(labels))

        up = gauge("process_up", "1 when the supervised process runs", ("process",))
        started = gauge("process_start_time_seconds", "Start time of the supervised process", ("process",))
        restarts = gauge("supervisor_restarts_last_hour", "Restarts by the supervisor in the last hour", ("process",))
        for name in rules.PROCESSES:
            proc = obs.processes.get(name)
            up.add_metric([name], 1.0 if proc is not None and proc.alive else 0.0)
            if proc is not None and proc.started_at is not None:
                started.add_metric([name], proc.started_at)
            restarts.add_metric([name], float(sum(1 for t in obs.restarts.get(name, []) if now - t <= rules.HOUR_S)))
        yield from (up, started, restarts)

        producer = details.get("producer") or {}
        messages = CounterMetricFamily("btc_producer_messages", "Producer messages by outcome since it started",
                                       labels=["outcome"])  # fmt: skip
        for outcome in PRODUCER_COUNTERS:
            value = _number(producer.get(outcome))
            if value is not None:
                messages.add_metric([outcome], value)
        yield messages
        in_flight = _number(producer.get("in_flight"))
        if in_flight is not None:
            family = gauge("producer_in_flight_messages", "Messages handed to Kafka, not yet confirmed")
            family.add_metric([], in_flight)
            yield family
        ages = gauge("producer_upstream_last_success_age_seconds", "Seconds since the upstream's last good poll",
                     ("upstream",))  # fmt: skip
        for upstream, entry in sorted((producer.get("sources") or {}).items()):
            moment = epoch((entry or {}).get("last_poll_ok_at"))
            if moment is not None:
                ages.add_metric([upstream], now - moment)
        yield ages
        errors = CounterMetricFamily("btc_producer_http_errors", "Failed HTTP attempts by upstream and kind",
                                     labels=["upstream", "kind"])  # fmt: skip
        for upstream, kinds in sorted((producer.get("http_errors") or {}).items()):
            for kind, count in sorted((kinds or {}).items()):
                if _number(count) is not None:
                    errors.add_metric([upstream, kind], float(count))
        yield errors
        if obs.spool_bytes is not None:
            family = gauge("producer_spool_bytes", "Size of the producer's spool of undelivered messages")
            family.add_metric([], float(obs.spool_bytes))
            yield family

        yield from self._stream(obs, details, gauge)
        yield from self._tables(obs, details, gauge)
        yield from self._alerts(obs, alerts, gauge)

    def _stream(self, obs: Observation, details: dict[str, Any], gauge) -> Iterator:
        from prometheus_client.core import CounterMetricFamily

        now = obs.at
        queries = (details.get("stream") or {}).get("queries") or {}
        duration = gauge("stream_batch_duration_seconds", "Duration of the query's last micro-batch", ("query",))
        rate_in = gauge("stream_input_rows_per_second", "Input rate of the query's last micro-batch", ("query",))
        rate_done = gauge("stream_processed_rows_per_second", "Processing rate of the last micro-batch", ("query",))
        delay = gauge("stream_watermark_delay_seconds", "Seconds between now and the query's watermark", ("query",))
        for name, query in sorted(queries.items()):
            for family, value in ((duration, _number(query.get("batch_duration_ms"))),
                                  (rate_in, _number(query.get("input_rows_per_s"))),
                                  (rate_done, _number(query.get("processed_rows_per_s")))):  # fmt: skip
                if value is not None:
                    family.add_metric([name], value / 1000.0 if family is duration else value)
            mark = epoch(query.get("watermark"))
            if mark is not None and mark > 0:
                delay.add_metric([name], now - mark)
        yield from (duration, rate_in, rate_done, delay)
        if obs.ingest_totals is not None:
            records = CounterMetricFamily("btc_stream_records", "Records the stream read, by outcome, since it started",
                                          labels=["outcome"])  # fmt: skip
            records.add_metric(["valid"], float(obs.ingest_totals[1]))
            records.add_metric(["quarantined"], float(obs.ingest_totals[2]))
            yield records
        if obs.last_rows_at is not None:
            family = gauge("stream_last_rows_age_seconds", "Seconds since the stream last wrote raw_data rows")
            family.add_metric([], now - obs.last_rows_at)
            yield family
        lag = gauge("kafka_lag_messages", "Messages in Kafka the stream has not processed", ("partition",))
        for part, value in sorted((details.get("lag_by_partition") or {}).items()):
            lag.add_metric([str(part)], float(value))
        yield lag

    def _tables(self, obs: Observation, details: dict[str, Any], gauge) -> Iterator:
        now = obs.at
        ages = gauge("table_last_commit_age_seconds", "Seconds since the table's last commit", ("table",))
        for table, moment in sorted((details.get("tables") or {}).items()):
            ages.add_metric([table], now - moment)
        yield ages
        if details.get("today_files") is not None:
            family = gauge("raw_data_today_files", "Data files in today's (UTC) raw_data partition")
            family.add_metric([], float(details["today_files"]))
            yield family
        if obs.dag_runs is not None:
            failed = gauge("dag_run_failed", "1 while the DAG's newest finished run failed", ("dag_id",))
            for finding in rules.dag_failed(obs.dag_runs, now):
                failed.add_metric([finding.key.split(":", 1)[1]], 1.0 if finding.firing else 0.0)
            yield failed
            if obs.first_hour is not None:
                late = gauge("consolidation_late_hours", "Hours of the last day not consolidated in time")
                late.add_metric([], float(len(rules.late_hours(obs.dag_runs, obs.first_hour, now,
                                                               self.consolidation_delay_s))))  # fmt: skip
                yield late
        if obs.quality is not None:
            family = gauge("data_quality_failed_checks", "Error-severity checks failed for the newest checked hour")
            family.add_metric([], float(len(obs.quality.failed)))
            yield family

    def _alerts(self, obs: Observation, alerts: dict[str, Any], gauge) -> Iterator:
        if obs.disk_free_ratio is not None:
            family = gauge("data_dir_free_ratio", "Free share of the data directory's file system")
            family.add_metric([], obs.disk_free_ratio)
            yield family
        opened = gauge("alert_open", "1 per open alert incident", ("rule", "key"))
        for key, incident in sorted((alerts.get("open") or {}).items()):
            opened.add_metric([str(incident.get("rule")), key], 1.0)
        yield opened
        outbox = gauge("alert_outbox_messages", "Alert messages waiting for delivery", ("channel",))
        for channel, count in sorted((alerts.get("outbox") or {}).items()):
            outbox.add_metric([channel], float(count))
        yield outbox
        undelivered = gauge("alert_undelivered_recent", "Alert messages given up on (kept for the dashboard)")
        undelivered.add_metric([], float(alerts.get("undelivered") or 0))
        yield undelivered
        last = gauge("monitor_last_observation_timestamp_seconds", "When the monitor last observed the platform")
        last.add_metric([], obs.at)
        yield last
