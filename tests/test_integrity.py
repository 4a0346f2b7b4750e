"""Spark-free pieces of the integrity guarantees: gap ranges, commit-conflict retries, the
stream's status counts, the id_time ranges of the raw_data lookup, ``make clean-data``'s guard."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from btc_platform.lakehouse import conflicts, datasets, gaps
from btc_platform.ops import clean_data
from btc_platform.settings import load_settings
from spark_jobs import stream_status

H0 = datetime(2024, 1, 1, tzinfo=UTC)


def hour(n: int) -> datetime:
    return H0 + timedelta(hours=n)


def test_repair_ranges_cover_missing_and_thin_hours_newest_first_within_the_budget():
    stream, candle = datasets.HOURLY_SOURCE_STREAM, datasets.HOURLY_SOURCE_BACKFILL
    rows = [
        ("BTCUSDT", hour(0), 1.0, stream),
        ("BTCUSDT", hour(1), 0.5, stream),  # thin: repaired
        ("BTCUSDT", hour(2), 1.0, candle),
        ("BTCUSDT", hour(3), 0.96, stream),  # complete enough
        # hours 4, 5 missing
        ("BTCUSDT", hour(6), None, stream),  # unknown coverage counts as thin
        ("ETHUSDT", hour(0), 1.0, candle),
    ]
    got = gaps.repair_ranges(rows, ["BTCUSDT", "ETHUSDT"], hour(0), hour(7), 0.95, max_ranges=10)
    assert got == [
        ("BTCUSDT", hour(4), hour(7)),
        ("ETHUSDT", hour(1), hour(7)),
        ("BTCUSDT", hour(1), hour(2)),
    ]
    assert gaps.repair_ranges(rows, ["BTCUSDT", "ETHUSDT"], hour(0), hour(7), 0.95, max_ranges=1) == got[:1]


def test_repair_ranges_split_at_one_klines_page():
    got = gaps.repair_ranges([], ["BTCUSDT"], hour(0), hour(1500), 0.95, max_ranges=5)
    assert got == [("BTCUSDT", hour(1000), hour(1500)), ("BTCUSDT", hour(0), hour(1000))]


def test_repair_argument_round_trip_and_errors():
    ranges = [("BTCUSDT", hour(4), hour(7)), ("ETHUSDT", hour(1), hour(2))]
    assert gaps.parse_ranges(gaps.format_ranges(ranges)) == ranges
    with pytest.raises(gaps.GapRangeError, match="SYMBOL/START/END"):
        gaps.parse_ranges("BTCUSDT/2024-01-01T00:00:00Z")
    with pytest.raises(gaps.GapRangeError, match="ends before"):
        gaps.parse_ranges("BTCUSDT/2024-01-01T05:00:00Z/2024-01-01T01:00:00Z")


class ConcurrentAppendException(Exception):
    """Named like Delta's: what ``conflicts`` recognises (pyspark need not be imported)."""


def test_a_commit_conflict_is_retried_with_backoff_then_named():
    calls, waits = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConcurrentAppendException("Files were added to the table by a concurrent update")
        return "committed"

    assert conflicts.retry_on_conflict(flaky, "MERGE into t", sleep=waits.append) == "committed"
    assert len(calls) == 3 and len(waits) == 2 and waits[1] > waits[0]

    def always():
        raise ConcurrentAppendException("again")

    with pytest.raises(conflicts.CommitConflictError, match="MERGE into t: commit conflict after 3 tries"):
        conflicts.retry_on_conflict(always, "MERGE into t", attempts=3, sleep=waits.append)

    def broken():
        calls.append(1)
        raise ValueError("not a conflict")

    calls.clear()
    with pytest.raises(ValueError):
        conflicts.retry_on_conflict(broken, "x", sleep=waits.append)
    assert len(calls) == 1


def test_status_record_counts_stored_rows_and_left_out_copies():
    record = stream_status.with_batch_counts({"query": "ingest", "valid": 10, "quarantined": 1}, {"stored": 7})
    assert (record["stored"], record["duplicates"]) == (7, 3)
    assert "duplicates" not in stream_status.with_batch_counts({"valid": 10}, {})


def test_rows_count_as_written_when_their_batch_ended():
    # a 200 s catch-up batch started at 12:00:00: its rows were readable at 12:03:20, not before
    record = {"timestamp": "2026-01-01T12:00:00.000Z", "batch_duration_ms": 200_000}
    assert stream_status.batch_end(record) == "2026-01-01T12:03:20+00:00"
    assert stream_status.batch_end({"timestamp": None}) is None


def test_id_time_ranges_merge_close_spans_and_keep_far_ones_apart():
    t = H0
    spans = [(t + timedelta(seconds=70), t + timedelta(seconds=90)), (t, t + timedelta(seconds=30)),
             (t + timedelta(days=3), t + timedelta(days=3, seconds=1))]  # fmt: skip
    from spark_jobs.stream_transforms import id_time_ranges

    assert id_time_ranges(spans) == [(t, t + timedelta(seconds=90)), (t + timedelta(days=3), t + timedelta(days=3, seconds=1))]
    assert id_time_ranges([]) == []


def test_clean_data_refuses_while_messages_are_undelivered(tmp_path):
    settings = load_settings(data_dir=tmp_path / "data")
    journal = settings.producer_journal_path
    journal.parent.mkdir(parents=True)
    journal.write_text(json.dumps({"message_id": "a"}) + "\n" + json.dumps({"message_id": "b"}) + "\n")
    journal.with_name(journal.name + ".delivered").write_text("a\n")
    assert clean_data.undelivered(settings) == {journal: 1}
    assert clean_data.clean(settings) == clean_data.EXIT_REFUSED
    assert journal.exists()
    journal.with_name(journal.name + ".delivered").write_text("a\nb\n")
    settings.producer_spool_path.write_text('{"message_id": "c"}\n')
    assert clean_data.clean(settings) == clean_data.EXIT_REFUSED
    assert clean_data.clean(settings, force=True) == clean_data.EXIT_OK
    assert not settings.data_dir.exists()
    assert clean_data.clean(settings) == clean_data.EXIT_OK  # nothing left: nothing to refuse


def test_clean_data_never_deletes_the_project_or_home(tmp_path):
    from btc_platform.settings import PROJECT_ROOT, SettingsError

    with pytest.raises(SettingsError, match="not a data directory"):
        clean_data.clean(load_settings(data_dir=PROJECT_ROOT))


def test_dashboard_shows_the_latest_audit_and_its_failures():
    import pandas as pd

    from btc_platform.dashboard.data import health

    frame = pd.DataFrame({
        "hour_start": pd.to_datetime(["2024-01-01T00:00Z", "2024-01-01T01:00Z", "2024-01-01T01:00Z", "2024-01-01T02:00Z"]),
        "symbol": ["BTCUSDT", "BTCUSDT", "ETHUSDT", "BTCUSDT"],
        "check": ["ingest_complete", "ingest_complete", "ingest_complete", "coverage_below_threshold"],
        "status": ["pass", "fail", "pass", "fail"],
        "detail": [None, "kafka: 10 record(s), 10 message(s), 0 bad; raw_data: 1 missing", None, "coverage"],
    })  # fmt: skip
    audit = health.ingest_audit(frame)
    assert (audit["checked"], audit["failed"]) == (3, 1)
    assert audit["last_hour"].startswith("2024-01-01T01:00")
    assert audit["last_failure"]["detail"].endswith("1 missing")
    assert health.ingest_audit(frame[frame["check"] != "ingest_complete"]) is None


def test_status_record_totals_of_queries_with_and_without_writer_counts(tmp_path):
    """The ingest query's batches carry the writer's counts, minute_metrics' do not: both keep
    their running totals (a missing count is 0) and the status file is written for each."""
    from types import SimpleNamespace

    from btc_platform.status import read_status
    from spark_jobs.stream_sinks import BatchCounts

    counts = BatchCounts()
    listener = stream_status.make_listener(tmp_path / "stream.json", "btc-stream", ("ingest",),
                                           batch_counts={"ingest": counts})  # fmt: skip

    def progress(query: str, batch_id: int, dropped_late: int = 0):
        doc = {"name": query, "id": f"id-{query}", "batchId": batch_id, "numInputRows": 10,
               "stateOperators": [{"numRowsDroppedByWatermark": dropped_late}], "sources": []}  # fmt: skip
        return SimpleNamespace(progress=SimpleNamespace(json=json.dumps(doc), id=f"id-{query}"))

    counts.add(0, records=10, quarantined=1, stored=7)
    listener.onQueryProgress(progress("ingest", 0))
    listener.onQueryProgress(progress("minute_metrics", 0, dropped_late=2))
    listener.onQueryProgress(progress("minute_metrics", 1, dropped_late=1))
    queries = read_status(tmp_path / "stream.json")["queries"]
    ingest, minutes = queries["ingest"], queries["minute_metrics"]
    assert (ingest["valid_total"], ingest["quarantined_total"], ingest["stored_total"], ingest["duplicates_total"]) == (
        9, 1, 7, 2)
    assert (minutes["dropped_late_total"], minutes["stored_total"], minutes["input_rows_total"]) == (3, 0, 20)
