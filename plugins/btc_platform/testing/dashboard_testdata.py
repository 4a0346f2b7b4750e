"""Small Delta tables, registry files and status records for the dashboard's tests and benchmark,
written the way the platform writes them (``btc_platform.lakehouse.lake.write_table`` with the layouts of
``btc_platform.lakehouse.datasets``), with times relative to ``now`` so the dashboard's default ranges see them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from btc_platform.lakehouse import datasets, lake, lineage
from btc_platform.settings import Settings
from btc_platform.status import LAST_PUBLISH_KEY, write_status

SYMBOL = "BTCUSDT"
MODEL = "20260101T000000-test"
OLD_MODEL = "20251231T000000-test"
#: The Airflow task instances the seeded hourly_metrics and the stream restart claim to come from.
BACKFILL_TASK = {"dag_id": "btc_backfill", "run_id": "manual__2026-01-01T00:00:00+00:00", "task_id": "backfill",
                 "try_number": 2}
SUPERVISOR_TASK = {"dag_id": "btc_stream_supervisor", "run_id": "scheduled__2026-01-01T00:01:00+00:00",
                   "task_id": "ensure_stream", "try_number": 1}
#: The mapped retrain task instance (the symbol's map index) the seeded forecasts claim to come from.
RETRAIN_TASK = {"dag_id": "btc_retrain", "run_id": "scheduled__2026-01-01T00:05:00+00:00",
                "task_id": "forecast.predict_next_24h", "try_number": 1, "map_index": 0}


@contextmanager
def airflow_task_env(task: dict) -> Iterator[None]:
    """The environment Airflow's task runner gives a task instance (``AIRFLOW_CTX_*``), for the block."""
    saved = {var: os.environ.get(var) for var in lineage.ENV.values()}
    for name, var in lineage.ENV.items():
        if name in task:
            os.environ[var] = str(task[name])
        else:
            os.environ.pop(var, None)
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


@dataclass
class Seeded:
    """What was written (the tests compare the page against the endpoints, these are for sizes)."""

    now: pd.Timestamp
    minutes: int = 0
    hours: int = 0
    gap_hours: list[pd.Timestamp] = field(default_factory=list)
    quarantined: int = 0
    tables: list[str] = field(default_factory=list)


def _now(now: datetime | None) -> pd.Timestamp:
    ts = pd.Timestamp(now or datetime.now(UTC))
    return ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)


def minute_metrics(settings: Settings, now: pd.Timestamp, minutes: int, seed: int = 1) -> int:
    rng = np.random.default_rng(seed)
    end = now.floor("min")
    starts = pd.date_range(end=end - timedelta(minutes=1), periods=minutes, freq="min", tz=UTC)
    mid = 60000 + np.cumsum(rng.normal(0, 5, minutes))
    spread = np.abs(rng.normal(0.5, 0.1, minutes))
    frame = pd.DataFrame({name: pd.Series([None] * minutes, dtype="float64")
                          for name, kind in datasets.MINUTE_METRICS_COLUMNS if kind == datasets.DOUBLE})
    frame = frame.assign(
        symbol=SYMBOL, window_start=starts, window_end=starts + timedelta(minutes=1),
        mid_open=mid - 1, mid_high=mid + 2, mid_low=mid - 2, mid_close=mid,
        spread_mean=spread, spread_max=spread * 1.5, spread_pct_mean=spread / mid * 100,
        spread_pct_max=spread * 1.5 / mid * 100, liquidity_base_mean=rng.uniform(1, 5, minutes),
        liquidity_quote_mean=rng.uniform(1, 5, minutes) * mid, volatility=rng.uniform(1e-5, 1e-4, minutes),
        mid_range=np.full(minutes, 4.0), tick_count=rng.integers(30, 60, minutes),
        volume=rng.uniform(1, 20, minutes), trade_count=rng.integers(100, 900, minutes),
        message_count=rng.integers(60, 120, minutes),
        date=starts.strftime("%Y-%m-%d"), hour=starts.hour.astype("int32"),
    )
    frame["quote_volume"] = frame["volume"] * mid
    columns = datasets.column_names(datasets.MINUTE_METRICS_COLUMNS)
    lake.write_table(datasets.MINUTE_METRICS, frame[columns], settings,
                     schema=lake.arrow_schema(datasets.MINUTE_METRICS_COLUMNS))
    return minutes


def hourly_metrics(settings: Settings, now: pd.Timestamp, hours: int, gap: tuple[int, int] = (10, 3),
                   seed: int = 2) -> tuple[int, list[pd.Timestamp]]:
    """``hours`` hours up to the current one, the first half backfilled, the rest from the stream,
    with ``gap`` = (hours before now, length) left out. Returns rows written and the missing hours."""
    rng = np.random.default_rng(seed)
    starts = pd.date_range(end=now.floor("h") - timedelta(hours=1), periods=hours, freq="h", tz=UTC)
    back, length = gap
    missing = list(starts[-back:-back + length]) if length else []
    starts = starts[~starts.isin(missing)]
    n = len(starts)
    close = 60000 + np.cumsum(rng.normal(0, 50, n))
    open_ = close + rng.normal(0, 30, n)
    backfill = np.arange(n) < n // 2
    frame = pd.DataFrame({name: pd.Series([None] * n, dtype="float64")
                          for name, kind in datasets.HOURLY_METRICS_COLUMNS if kind == datasets.DOUBLE})
    frame = frame.assign(
        symbol=SYMBOL, hour_start=starts, open=open_, close=close,
        high=np.maximum(open_, close) + 20, low=np.minimum(open_, close) - 20,
        coverage=np.where(backfill, 1.0, rng.uniform(0.7, 1.0, n)),
        volume=np.where(backfill, rng.uniform(100, 900, n), np.nan),
        source=np.where(backfill, datasets.HOURLY_SOURCE_BACKFILL, datasets.HOURLY_SOURCE_STREAM),
        produced_at=pd.Timestamp(now), date=starts.strftime("%Y-%m-%d"), hour=starts.hour.astype("int32"),
    )
    for name, kind in datasets.HOURLY_METRICS_COLUMNS:
        if kind in (datasets.LONG, datasets.INT) and name not in ("hour",):
            frame[name] = pd.array([None] * n, dtype="Int64" if kind == datasets.LONG else "Int32")
    columns = datasets.column_names(datasets.HOURLY_METRICS_COLUMNS)
    lake.write_table(datasets.HOURLY_METRICS, frame[columns], settings,
                     schema=lake.arrow_schema(datasets.HOURLY_METRICS_COLUMNS))
    return n, missing


def raw_tick(settings: Settings, now: pd.Timestamp, age_s: float = 5.0) -> None:
    at = now - timedelta(seconds=age_s)
    frame = pd.DataFrame({
        "message_id": ["m1"], "message_type": ["book_ticker"], "source": ["simulated"], "symbol": [SYMBOL],
        "event_time": [at], "ingest_time": [at + timedelta(milliseconds=40)], "bid_price": [60000.0],
        "ask_price": [60000.5], "mid_price": [60000.25], "spread": [0.5], "spread_pct": [0.5 / 60000.25 * 100],
        "date": [at.strftime("%Y-%m-%d")],
    })
    lake.write_table(datasets.RAW_DATA, frame, settings)


def forecasts(settings: Settings, now: pd.Timestamp, horizon: int = 24, past_issues: int = 3) -> None:
    """The served forecast from the last full hour, and ``past_issues`` earlier daily issues whose
    targets lie in the past (forecast vs actual)."""
    rows = []
    origin_now = now.floor("h") - timedelta(hours=1)
    origins = [origin_now - timedelta(hours=24 * k) for k in range(past_issues, 0, -1)] + [origin_now]
    for origin in origins:
        steps = np.arange(1, horizon + 1)
        predicted = 60000 + 10 * steps
        rows.append(pd.DataFrame({
            "symbol": SYMBOL, "model_version": MODEL, "issue_time": origin + timedelta(minutes=65),
            "origin_hour_start": origin, "last_close": 60000.0, "horizon": steps.astype("int32"),
            "target_hour_start": origin + pd.to_timedelta(steps, unit="h"), "predicted_close": predicted,
            "lower": predicted - 100 - 5 * steps, "upper": predicted + 100 + 5 * steps, "interval_level": 0.8,
            "data_table_version": pd.array([3] * horizon, dtype="Int64"), "date": f"{origin:%Y-%m-%d}",
            "hour": np.full(horizon, origin.hour, dtype=np.int32),
        }))
    lake.write_table(datasets.FUTURE_PREDICTIONS, pd.concat(rows, ignore_index=True), settings)


def registry(settings: Settings, now: pd.Timestamp) -> None:
    from btc_platform.lakehouse.model_registry import CONFIG, CURRENT, DECISION, METRICS, RegistryFiles

    root = RegistryFiles(settings, SYMBOL).root.removeprefix("file://")
    per_horizon = [{"horizon": h, "model_rmse": 100.0 + h, "persistence_rmse": 110.0 + h, "drift_rmse": 112.0 + h,
                    "model_skill": 1 - (100.0 + h) / (110.0 + h), "interval_coverage": 0.8} for h in range(1, 25)]
    metrics = {"n_windows": 120, "horizon": 24, "per_horizon": per_horizon,
               "overall": {"horizon": "all", "model_rmse": 112.0, "persistence_rmse": 122.0, "drift_rmse": 124.0,
                           "model_skill": 0.08, "interval_coverage": 0.79}}
    decisions = {
        OLD_MODEL: {"version": OLD_MODEL, "status": "rejected", "reason": "did not beat persistence",
                    "forced": False, "policy": "beat_current_and_persistence", "decided_at": "2025-12-31T01:00:00+00:00"},
        MODEL: {"version": MODEL, "status": "promoted", "reason": "beats persistence", "forced": False,
                "policy": "beat_current_and_persistence", "decided_at": "2026-01-01T01:00:00+00:00"},
    }
    for version, decision in decisions.items():
        folder = f"{root}/{version}"
        os.makedirs(folder, exist_ok=True)
        for name, doc in ((DECISION, decision), (METRICS, metrics), (CONFIG, {})):
            with open(f"{folder}/{name}", "w", encoding="utf-8") as handle:
                json.dump(doc, handle)
    with open(f"{root}/{CURRENT}", "w", encoding="utf-8") as handle:
        json.dump({"version": MODEL, "previous": None, "promoted_at": "2026-01-01T01:00:00+00:00",
                   "forced": False, "reason": "beats persistence"}, handle)
    record = {"model_version": [MODEL, OLD_MODEL], "symbol": [SYMBOL, SYMBOL],
              "trained_at": ["2026-01-01T00:30:00+00:00", "2025-12-31T00:30:00+00:00"],
              "model_rmse": [112.0, 130.0], "persistence_rmse": [122.0, 125.0], "drift_rmse": [124.0, 126.0],
              "model_skill": [0.08, -0.04], "skill_h1": [0.1, -0.02], "skill_h24": [0.05, -0.06],
              "interval_coverage": [0.79, 0.75], "decision": ["promoted", "rejected"],
              "decision_reason": ["beats persistence", "did not beat persistence"], "forced": [False, False]}
    lake.write_table(datasets.PREDICTION_METRICS, pd.DataFrame(record), settings)


def quarantine(settings: Settings, now: pd.Timestamp, per_hour: tuple[int, ...] = (3, 0, 2, 5)) -> int:
    rows = []
    reasons = ("unparseable_json", "missing_field:bid_price", "ask_below_bid")
    for back, count in enumerate(per_hour):
        for i in range(count):
            at = now.floor("h") - timedelta(hours=back) + timedelta(minutes=5 + i)
            rows.append({"value": b"{bad", "value_text": "{bad " + "x" * 400, "key": SYMBOL,
                         "kafka_topic": "cryptoTopic", "kafka_partition": 0, "kafka_offset": 1000 * back + i,
                         "kafka_timestamp": at, "reason": reasons[(back + i) % 3], "quarantined_at": at,
                         "quarantine_key": f"cryptoTopic/0/{1000 * back + i}", "date": f"{at:%Y-%m-%d}"})
    lake.write_table(datasets.QUARANTINE, pd.DataFrame(rows), settings)
    return len(rows)


RESTART_REASON = "stale: no stream progress for 130 s (limit 120 s)"


def status_records(settings: Settings, now: pd.Timestamp) -> None:
    from btc_platform.ops import supervisor

    supervisor.record_event(settings, supervisor.CheckResult("stream", "started", "no pid record", 4242))
    with airflow_task_env(SUPERVISOR_TASK):
        supervisor.record_event(settings, supervisor.CheckResult("stream", "restarted", RESTART_REASON, 4343))
    iso = (now - timedelta(seconds=3)).isoformat()
    write_status(settings.producer_status_path, {"pid": 1, "source_mode": "simulate", "state": "running",
                                                 "published": 1234, "failed": 0, LAST_PUBLISH_KEY: iso})
    write_status(settings.stream_status_path, {
        "job": "stream", "started_at": (now - timedelta(hours=1)).isoformat(), "updated_at": iso, "end_offset": None,
        "queries": {"ingest": {"state": "running", "batch_id": 41, "timestamp": iso, "input_rows": 20,
                               "input_rows_per_s": 10.0, "processed_rows_per_s": 400.0, "batch_duration_ms": 50,
                               "watermark": iso}},
    })


def seed_all(settings: Settings, now: datetime | None = None, minutes: int = 90, hours: int = 72) -> Seeded:
    """Every table the dashboard reads except data_quality (its view shows why it is empty)."""
    ts = _now(now)
    out = Seeded(now=ts)
    out.minutes = minute_metrics(settings, ts, minutes)
    with airflow_task_env(BACKFILL_TASK):  # as if written by that task (the other tables: outside Airflow)
        out.hours, out.gap_hours = hourly_metrics(settings, ts, hours)
    raw_tick(settings, ts)
    with airflow_task_env(RETRAIN_TASK):
        forecasts(settings, ts)
    registry(settings, ts)
    out.quarantined = quarantine(settings, ts)
    status_records(settings, ts)
    out.tables = lake.existing_tables(settings)
    return out
