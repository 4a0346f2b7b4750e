"""Hourly consolidation: values against hand-computed expectations, idempotency, late minutes."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from btc_platform.lakehouse import datasets
from btc_platform.settings import load_settings

pytestmark = pytest.mark.spark

T0 = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
RUN_AT = datetime(2024, 1, 1, 6, 0, tzinfo=UTC)


def minute(symbol: str, at: datetime, *, o=None, h=None, lo=None, c=None, spread=None, spread_max=None,
           pct=None, pct_max=None, liq=None, liq_q=None, ticks=0, cap=None, cg_vol=None, cg_pct=None,
           vol=None, qvol=None, trades=None) -> dict:
    """A minute_metrics row (MINUTE_METRICS_COLUMNS), unspecified fields null."""
    row = {name: None for name in datasets.column_names(datasets.MINUTE_METRICS_COLUMNS)}
    row.update(
        symbol=symbol, window_start=at, window_end=at + timedelta(minutes=1), mid_open=o, mid_high=h,
        mid_low=lo, mid_close=c, spread_mean=spread, spread_max=spread_max, spread_pct_mean=pct,
        spread_pct_max=pct_max, liquidity_base_mean=liq, liquidity_quote_mean=liq_q, tick_count=ticks,
        market_cap=cap, cg_volume_24h=cg_vol, cg_price_change_pct_24h=cg_pct,
        date=at.strftime("%Y-%m-%d"), hour=at.hour, volume=vol, quote_volume=qvol, trade_count=trades,
    )
    return row


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def base_minutes() -> list[dict]:
    return [
        minute("BTCUSDT", at(0), o=100.0, h=102.0, lo=99.0, c=101.0, spread=1.0, spread_max=2.0, pct=0.01,
               pct_max=0.02, liq=10.0, liq_q=1000.0, ticks=2, cap=5e11, cg_vol=1e10, cg_pct=1.0,
               vol=1.5, qvol=150.0, trades=30),
        minute("BTCUSDT", at(1), o=101.0, h=104.0, lo=100.0, c=103.0, spread=3.0, spread_max=5.0, pct=0.03,
               pct_max=0.05, liq=20.0, liq_q=2000.0, ticks=1, vol=0.25, qvol=26.0, trades=4),
        minute("BTCUSDT", at(2), o=103.0, h=103.0, lo=98.0, c=99.0, spread=0.5, spread_max=0.5, pct=0.005,
               pct_max=0.005, liq=30.0, liq_q=3000.0, ticks=1, cap=6e11, cg_pct=2.0),
        # minute 3 missing: the return 2 -> 4 is not a 1-minute return
        minute("BTCUSDT", at(4), o=99.0, h=100.0, lo=97.0, c=98.0, spread=2.0, spread_max=3.0, pct=0.02,
               pct_max=0.03, liq=40.0, liq_q=4000.0, ticks=4),
        # a minute with only a CoinGecko message: no price, but the latest market fields
        minute("BTCUSDT", at(5), ticks=0, cap=7e11, cg_vol=2e10),
        minute("BTCUSDT", at(60), o=98.0, h=99.0, lo=97.0, c=98.5, spread=1.0, spread_max=1.0, pct=0.01,
               pct_max=0.01, liq=5.0, liq_q=500.0, ticks=3),
        minute("ETHUSDT", at(30), o=2000.0, h=2001.0, lo=1999.0, c=2000.5, spread=0.1, spread_max=0.2,
               pct=0.0001, pct_max=0.0002, liq=50.0, liq_q=1e5, ticks=7),
        # outside [T0, T0 + 2h): must not be consolidated
        minute("BTCUSDT", at(-1), o=1.0, h=1.0, lo=1.0, c=1.0, spread=9.0, spread_max=9.0, pct=0.9,
               pct_max=0.9, liq=1.0, liq_q=1.0, ticks=9),
    ]


def write_minutes(spark, settings, rows: list[dict]) -> None:
    from spark_jobs import tables

    df = spark.createDataFrame(rows, schema=datasets.struct_type(datasets.MINUTE_METRICS_COLUMNS))
    tables.append_rows(spark, settings, datasets.MINUTE_METRICS, df)


def complete_hour(symbol: str, hour: datetime, minutes=range(60), price: float = 100.0) -> list[dict]:
    """Minute rows of ``hour`` (the given minutes), each one tick at ``price`` + its minute."""
    return [minute(symbol, hour + timedelta(minutes=m), o=price + m, h=price + m + 1, lo=price + m - 1,
                   c=price + m, spread=1.0, spread_max=1.0, ticks=1) for m in minutes]  # fmt: skip


def read_hourly(spark, settings) -> dict[tuple[str, datetime], dict]:
    df = spark.read.format("delta").load(settings.path(datasets.HOURLY_METRICS))
    rows = {}
    for r in df.collect():
        key = (r["symbol"], r["hour_start"].replace(tzinfo=UTC))
        assert key not in rows, f"duplicate hourly row {key}"
        rows[key] = r.asDict()
    return rows


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings(storage_root=f"file://{tmp_path}/bitcoin", data_dir=tmp_path / "data")


def test_consolidated_values_match_hand_computed(spark, settings):
    from spark_jobs import consolidate_job

    write_minutes(spark, settings, base_minutes())
    written = consolidate_job.run(spark, settings, T0, T0 + timedelta(hours=2), produced_at=RUN_AT)
    assert written == 3
    rows = read_hourly(spark, settings)
    assert set(rows) == {("BTCUSDT", T0), ("BTCUSDT", T0 + timedelta(hours=1)), ("ETHUSDT", T0)}

    btc = rows[("BTCUSDT", T0)]
    assert (btc["open"], btc["high"], btc["low"], btc["close"]) == (100.0, 104.0, 97.0, 98.0)
    # tick-weighted: (1*2 + 3*1 + 0.5*1 + 2*4) / 8, not the plain mean 1.625
    assert btc["spread_mean"] == pytest.approx(13.5 / 8)
    assert btc["spread_max"] == 5.0
    assert btc["spread_pct_mean"] == pytest.approx(0.135 / 8)
    assert btc["spread_pct_max"] == 0.05
    assert btc["liquidity_base_mean"] == pytest.approx(230 / 8)
    assert btc["liquidity_quote_mean"] == pytest.approx(23000 / 8)
    r1, r2 = math.log(103 / 101), math.log(99 / 103)  # minute 4 has no adjacent previous minute
    assert btc["volatility"] == pytest.approx(abs(r1 - r2) / math.sqrt(2))
    assert btc["tick_count"] == 8
    assert btc["minutes_present"] == 4
    assert btc["coverage"] == pytest.approx(4 / 60)
    assert btc["market_cap"] == 7e11  # latest non-null (the price-less minute 5)
    assert btc["cg_volume_24h"] == 2e10
    assert btc["cg_price_change_pct_24h"] == 2.0  # latest non-null is minute 2
    # the minutes' 1m klines summed (minutes 0 and 1 had one); 2 of 60 minutes: incomplete
    assert (btc["volume"], btc["quote_volume"], btc["trade_count"], btc["volume_minutes"]) == (1.75, 176.0, 34, 2)
    assert btc["source"] == "stream"
    assert btc["produced_at"].replace(tzinfo=UTC) == RUN_AT
    assert (btc["date"], btc["hour"]) == ("2024-01-01", 0)

    btc1 = rows[("BTCUSDT", T0 + timedelta(hours=1))]
    assert (btc1["open"], btc1["close"], btc1["minutes_present"], btc1["tick_count"]) == (98.0, 98.5, 1, 3)
    assert btc1["volatility"] is None  # one minute: no return
    assert btc1["market_cap"] is None  # no CoinGecko data that hour: null, not carried over
    assert (btc1["volume"], btc1["trade_count"], btc1["volume_minutes"]) == (None, None, None)  # no kline: unknown
    assert (btc1["date"], btc1["hour"]) == ("2024-01-01", 1)
    eth = rows[("ETHUSDT", T0)]
    assert (eth["open"], eth["high"], eth["low"], eth["close"], eth["tick_count"]) == (2000.0, 2001.0, 1999.0,
                                                                                      2000.5, 7)
    # the minute before the range was not consolidated: no 2023-12-31 23:00 row
    assert ("BTCUSDT", T0 - timedelta(hours=1)) not in rows


def test_same_hour_twice_is_identical(spark, settings):
    """Same minutes twice -> the same table, produced_at included: the second MERGE updates no row
    and rewrites no file (with nothing left to change, Delta makes no commit)."""
    from delta.tables import DeltaTable

    from spark_jobs import consolidate_job

    write_minutes(spark, settings, base_minutes())
    assert consolidate_job.run(spark, settings, T0, T0 + timedelta(hours=1), produced_at=RUN_AT) == 2
    first = read_hourly(spark, settings)
    table = DeltaTable.forPath(spark, settings.path(datasets.HOURLY_METRICS))
    version = table.history(1).first()["version"]
    later = RUN_AT + timedelta(hours=1)
    assert consolidate_job.run(spark, settings, T0, T0 + timedelta(hours=1), produced_at=later) == 0
    second = read_hourly(spark, settings)
    assert second == first
    assert len(second) == 2  # BTCUSDT and ETHUSDT of hour 0 only
    history = table.history(1).first()
    assert history["operation"] == "MERGE" and history["version"] == version


def test_late_minute_then_rerun_updates_only_that_hour(spark, settings):
    from spark_jobs import consolidate_job

    write_minutes(spark, settings, base_minutes())
    consolidate_job.run(spark, settings, T0, T0 + timedelta(hours=2), produced_at=RUN_AT)
    before = read_hourly(spark, settings)
    late = minute("BTCUSDT", at(3), o=99.0, h=99.5, lo=96.0, c=99.2, spread=4.0, spread_max=6.0, pct=0.04,
                  pct_max=0.06, liq=1.0, liq_q=100.0, ticks=2)
    write_minutes(spark, settings, [late])
    rerun_at = RUN_AT + timedelta(hours=1)
    consolidate_job.run(spark, settings, T0, T0 + timedelta(hours=1), produced_at=rerun_at)
    after = read_hourly(spark, settings)

    btc = after[("BTCUSDT", T0)]
    assert btc["minutes_present"] == 5 and btc["tick_count"] == 10
    assert btc["low"] == 96.0
    assert btc["spread_mean"] == pytest.approx((13.5 + 8.0) / 10)
    assert btc["spread_max"] == 6.0
    returns = [math.log(103 / 101), math.log(99 / 103), math.log(99.2 / 99), math.log(98 / 99.2)]
    mean = sum(returns) / 4
    assert btc["volatility"] == pytest.approx(math.sqrt(sum((r - mean) ** 2 for r in returns) / 3))
    assert btc["produced_at"].replace(tzinfo=UTC) == rerun_at
    # hour 1 was not re-run: untouched
    assert after[("BTCUSDT", T0 + timedelta(hours=1))] == before[("BTCUSDT", T0 + timedelta(hours=1))]
    assert len(after) == len(before) == 3


def test_complete_stream_hour_replaces_backfill_row_and_keeps_other_symbols(spark, settings):
    from spark_jobs import consolidate_job, tables

    backfill = []
    for symbol in ("BTCUSDT", "LTCUSDT"):
        row = {name: None for name in datasets.column_names(datasets.HOURLY_METRICS_COLUMNS)}
        row.update(symbol=symbol, hour_start=T0, open=1.0, high=2.0, low=0.5, close=1.5, coverage=1.0,
                   volume=10.0, source="backfill", produced_at=RUN_AT, date="2024-01-01", hour=0)
        backfill.append(row)
    tables.append_rows(
        spark, settings, datasets.HOURLY_METRICS,
        spark.createDataFrame(backfill, schema=datasets.struct_type(datasets.HOURLY_METRICS_COLUMNS)),
    )  # fmt: skip
    write_minutes(spark, settings, complete_hour("BTCUSDT", T0))
    consolidate_job.run(spark, settings, T0, T0 + timedelta(hours=1), produced_at=RUN_AT)
    rows = read_hourly(spark, settings)
    assert rows[("BTCUSDT", T0)]["source"] == "stream"
    assert rows[("BTCUSDT", T0)]["open"] == 100.0
    assert rows[("LTCUSDT", T0)]["source"] == "backfill"  # not produced by the stream: kept
    assert rows[("LTCUSDT", T0)]["volume"] == 10.0
    assert set(rows) == {("BTCUSDT", T0), ("LTCUSDT", T0)}

    # a partial stream hour (5 of 60 minutes) of LTCUSDT leaves its complete candle in place
    write_minutes(spark, settings, complete_hour("LTCUSDT", T0, range(5)))
    consolidate_job.run(spark, settings, T0, T0 + timedelta(hours=1), produced_at=RUN_AT)
    assert read_hourly(spark, settings)[("LTCUSDT", T0)] == rows[("LTCUSDT", T0)]


def test_hour_without_minutes_writes_nothing(spark, settings):
    from spark_jobs import consolidate_job

    write_minutes(spark, settings, base_minutes())
    assert consolidate_job.run(spark, settings, T0 + timedelta(hours=5), T0 + timedelta(hours=6)) == 0
    assert read_hourly(spark, settings) == {}


def test_late_minute_changes_its_hour_on_the_next_run(spark, settings):
    """Hour 0 consolidated, then a minute of hour 0 arrives late: the run of hour 1 re-merges hour 0."""
    from spark_jobs import consolidate_job

    write_minutes(spark, settings, base_minutes())
    consolidate_job.run(spark, settings, T0, T0 + timedelta(hours=1), produced_at=RUN_AT)
    before = read_hourly(spark, settings)[("BTCUSDT", T0)]
    assert before["minutes_present"] == 4 and before["close"] == 98.0

    write_minutes(spark, settings, [minute("BTCUSDT", at(59), o=98.0, h=98.0, lo=95.0, c=95.5, spread=1.0,
                                           spread_max=1.0, pct=0.01, pct_max=0.01, liq=1.0, liq_q=100.0, ticks=2)])
    late_at = RUN_AT + timedelta(hours=1)
    consolidate_job.run(spark, settings, T0 + timedelta(hours=1), T0 + timedelta(hours=2), produced_at=late_at)
    rows = read_hourly(spark, settings)
    after = rows[("BTCUSDT", T0)]
    assert after["minutes_present"] == 5 and after["close"] == 95.5 and after["low"] == 95.0
    assert after["produced_at"].replace(tzinfo=UTC) == late_at
    assert rows[("ETHUSDT", T0)]["produced_at"].replace(tzinfo=UTC) == RUN_AT  # unchanged hour untouched
    assert rows[("BTCUSDT", T0 + timedelta(hours=1))]["close"] == 98.5


@pytest.mark.parametrize(
    ("start", "end", "reason"),
    [
        ("2024-01-01T00:30:00Z", "2024-01-01T02:00:00Z",
         "--start must be on a full hour (UTC), got 2024-01-01T00:30:00+00:00"),
        ("2024-01-01T02:00:00Z", "2024-01-01T01:00:00Z",
         "--start 2024-01-01T02:00:00+00:00 must be before --end 2024-01-01T01:00:00+00:00"),
        ("2024-01-01", "soon", "not an ISO-8601 date or date-time: 'soon'"),
    ],
)
def test_cli_rejects_a_bad_range_naming_it_and_writes_nothing(spark, settings, start, end, reason, caplog):
    from spark_jobs import consolidate_job
    from spark_jobs._cli import EXIT_CONFIG

    write_minutes(spark, settings, base_minutes())
    with caplog.at_level(logging.ERROR, logger="spark_jobs.consolidate_job"):
        code = consolidate_job.main(["--start", start, "--end", end, "--storage-root", settings.storage_root])
    assert code == EXIT_CONFIG
    assert f"consolidate_job cannot start: {reason}" in caplog.text
    assert not Path(settings.path(datasets.HOURLY_METRICS).removeprefix("file://")).exists()


def test_tables_written_before_the_volume_columns_get_them_and_consolidate(spark, settings):
    """A minute_metrics table created with the schema-1 layout (no volume columns) gets them when a
    job ensures it; its old rows read null and consolidate with null volumes."""
    from spark_jobs import consolidate_job, tables

    old_columns = tuple(c for c in datasets.MINUTE_METRICS_COLUMNS if c[0] not in ("volume", "quote_volume",
                                                                                   "trade_count"))
    old_rows = [{k: v for k, v in row.items() if k in dict(old_columns)} for row in base_minutes()[:2]]
    df = spark.createDataFrame(old_rows, schema=datasets.struct_type(old_columns))
    df.write.format("delta").save(tables.table_uri(settings, datasets.MINUTE_METRICS))
    added = tables.add_missing_columns(spark, tables.table_uri(settings, datasets.MINUTE_METRICS),
                                       datasets.struct_type(datasets.MINUTE_METRICS_COLUMNS))
    assert added == ["volume", "quote_volume", "trade_count"]
    write_minutes(spark, settings, [minute("BTCUSDT", at(2), o=1.0, h=1.0, lo=1.0, c=1.0, ticks=1, vol=2.0,
                                           qvol=2.0, trades=3)])
    consolidate_job.run(spark, settings, T0, T0 + timedelta(hours=1), produced_at=RUN_AT)
    btc = read_hourly(spark, settings)[("BTCUSDT", T0)]
    assert (btc["volume"], btc["trade_count"], btc["volume_minutes"], btc["minutes_present"]) == (2.0, 3, 1, 3)
