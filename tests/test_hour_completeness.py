"""Complete hours: which row hourly_metrics keeps for each order of events between the stream's
consolidation, a backfill and the gap repair (``BTC_HOURLY_MIN_STREAM_COVERAGE``, default 0.95),
and rows that came too late for the stream's minute windows, windowed by the consolidation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from btc_platform.lakehouse import datasets, gaps
from btc_platform.settings import load_settings
from btc_platform.testing.exchange_server import ExchangeServer, fixture
from tests.test_consolidate import complete_hour, read_hourly, write_minutes

pytestmark = pytest.mark.spark

RUN_AT = datetime(2024, 6, 1, tzinfo=UTC)
KLINES = fixture("binance_klines_BTCUSDT_1h.json")  # 5 real hourly klines from 2023-05-01 00:00
H0 = datetime.fromtimestamp(KLINES[0][0] / 1000, UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def server():
    running = ExchangeServer().start()
    yield running
    running.stop()


@pytest.fixture
def settings(tmp_path, server):
    return load_settings(storage_root=f"file://{tmp_path}/bitcoin", data_dir=tmp_path / "data",
                         binance_base_url=server.url, binance_symbols="BTCUSDT", gap_repair_lookback_hours=2)  # fmt: skip


def repair(spark, settings, now: datetime):
    """What the hourly DAG does in live mode: find the gaps, backfill them from the klines API."""
    from btc_platform.ingest.clients.binance import BinanceClient
    from spark_jobs import backfill_job

    ranges = gaps.find_gaps(settings, now)
    client = BinanceClient.from_settings(settings)
    backfill_job.repair(spark, settings, ranges, client=client, now=lambda: now, produced_at=RUN_AT)
    return ranges


def consolidate(spark, settings, hour: datetime) -> None:
    from spark_jobs import consolidate_job

    consolidate_job.run(spark, settings, hour, hour + HOUR, produced_at=RUN_AT)


def test_backfill_then_stream_a_partial_stream_hour_leaves_the_candle(spark, settings, tmp_path):
    """A candle first; a 5-minute stream hour does not replace it, a complete one (58 of 60) does."""
    now = H0 + 2 * HOUR
    assert repair(spark, settings, now) == [("BTCUSDT", H0, H0 + 2 * HOUR)]  # nothing yet: both hours
    candle = read_hourly(spark, settings)[("BTCUSDT", H0)]
    assert candle["source"] == "backfill" and candle["open"] == float(KLINES[0][1])

    write_minutes(spark, settings, complete_hour("BTCUSDT", H0, range(5)))
    consolidate(spark, settings, H0)
    assert read_hourly(spark, settings)[("BTCUSDT", H0)] == candle

    write_minutes(spark, settings, complete_hour("BTCUSDT", H0 + HOUR, range(58)))
    consolidate(spark, settings, H0 + HOUR)
    row = read_hourly(spark, settings)[("BTCUSDT", H0 + HOUR)]
    assert (row["source"], row["minutes_present"], row["open"]) == ("stream", 58, 100.0)
    assert repair(spark, settings, now) == []  # nothing left to repair


def test_stream_then_backfill_the_candle_replaces_only_a_thin_stream_hour(spark, settings):
    write_minutes(spark, settings, complete_hour("BTCUSDT", H0, range(30)))  # thin
    write_minutes(spark, settings, complete_hour("BTCUSDT", H0 + HOUR, range(60)))  # complete
    consolidate(spark, settings, H0)
    consolidate(spark, settings, H0 + HOUR)
    assert repair(spark, settings, H0 + 2 * HOUR) == [("BTCUSDT", H0, H0 + HOUR)]
    rows = read_hourly(spark, settings)
    assert rows[("BTCUSDT", H0)]["source"] == "backfill" and rows[("BTCUSDT", H0)]["coverage"] == 1.0
    assert rows[("BTCUSDT", H0 + HOUR)]["source"] == "stream"  # kept
    assert rows[("BTCUSDT", H0 + HOUR)]["minutes_present"] == 60

    # a plain backfill over both hours keeps the complete stream hour as well
    from spark_jobs import backfill_job

    stats = backfill_job.run(spark, settings, source="binance", start=H0, end=H0 + 2 * HOUR, symbol="BTCUSDT",
                             now=lambda: H0 + 3 * HOUR, produced_at=RUN_AT)  # fmt: skip
    assert stats.skipped_stream == 1
    assert read_hourly(spark, settings) == rows


def test_late_minutes_after_a_repair_replace_the_candle_only_when_they_complete_the_hour(spark, settings):
    write_minutes(spark, settings, complete_hour("BTCUSDT", H0, range(10)))
    consolidate(spark, settings, H0)
    repair(spark, settings, H0 + 2 * HOUR)
    assert read_hourly(spark, settings)[("BTCUSDT", H0)]["source"] == "backfill"

    # late minutes (they reach minute_metrics after the hour was consolidated and repaired): 40 of
    # 60 present, still thin: the next hour's run re-merges hour 0 and leaves the candle
    write_minutes(spark, settings, complete_hour("BTCUSDT", H0, range(10, 40)))
    write_minutes(spark, settings, complete_hour("BTCUSDT", H0 + HOUR, range(60)))
    consolidate(spark, settings, H0 + HOUR)
    assert read_hourly(spark, settings)[("BTCUSDT", H0)]["source"] == "backfill"

    # the rest of the hour arrives: 60 of 60, the stream hour replaces the candle
    write_minutes(spark, settings, complete_hour("BTCUSDT", H0, range(40, 60)))
    consolidate(spark, settings, H0 + 2 * HOUR)
    row = read_hourly(spark, settings)[("BTCUSDT", H0)]
    assert (row["source"], row["minutes_present"], row["open"], row["close"]) == ("stream", 60, 100.0, 159.0)


def test_rows_too_late_for_the_stream_windows_are_windowed_by_the_consolidation(spark, settings):
    """raw_data holds 3 book tickers of minute 00:01 but the stream's minute row counted 1 (2 came
    after its watermark): the consolidation recomputes that minute from raw_data, uses it for the
    hour and MERGEs it into minute_metrics; a minute whose row holds all its rows stays as it is."""
    from btc_platform.ingest import schema
    from btc_platform.testing.stream_testdata import KAFKA_DDL, kafka_rows
    from spark_jobs import stream_transforms as st
    from spark_jobs import tables

    def book(second: int, bid: str):
        at = H0 + timedelta(seconds=second)
        msg = schema.make_message(message_type="book_ticker", source="simulated", symbol="BTCUSDT", event_time=at,
                                  ingest_time=at, bid_price=bid, ask_price="1000", bid_qty="1", ask_qty="1")  # fmt: skip
        return schema.encode(msg)

    values = [book(5, "100"), book(65, "200"), book(70, "300"), book(75, "400")]
    kafka = spark.createDataFrame(kafka_rows(values, start_offset=0, arrival=0.0), KAFKA_DDL)
    raw = st.raw_data_output(st.with_record_metrics(st.valid_records(st.parse_messages(kafka))))
    tables.append_rows(spark, settings, datasets.RAW_DATA, raw)
    stream_minutes = st.minute_metrics(raw.where("bid_price IN (100, 200)"))  # what the stream windowed in time
    tables.append_rows(spark, settings, datasets.MINUTE_METRICS, stream_minutes)

    consolidate(spark, settings, H0)
    row = read_hourly(spark, settings)[("BTCUSDT", H0)]
    assert row["tick_count"] == 4 and row["minutes_present"] == 2
    assert row["close"] == (400 + 1000) / 2  # the latest tick, one of the late ones
    minutes = {r["window_start"].minute: r for r in tables.read_table(spark, settings.path(datasets.MINUTE_METRICS)).collect()}
    assert {m: (r["tick_count"], r["message_count"]) for m, r in minutes.items()} == {0: (1, 1), 1: (3, 3)}
