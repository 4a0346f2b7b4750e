"""History backfill: klines API (local server in Binance's exact format; pagination, 429), both CSV
layouts, one idempotent MERGE into the hourly_metrics Delta table, stream hours protected unless
asked, bad input (impossible prices included) rejected with a reason and nothing written, ranges
on full hours only."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from btc_platform.lakehouse import datasets
from btc_platform.settings import load_settings
from btc_platform.testing.exchange_server import KLINES, ExchangeServer, FakeClock, Reply, fixture

pytestmark = pytest.mark.spark

RUN_AT = datetime(2024, 7, 1, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path):
    return load_settings(storage_root=f"file://{tmp_path}/bitcoin", data_dir=tmp_path / "data",
                         binance_symbols="BTCUSDT")


@pytest.fixture
def server():
    srv = ExchangeServer().start()
    yield srv
    srv.stop()


def read_hourly(spark, settings) -> dict[tuple[str, datetime], dict]:
    df = spark.read.format("delta").load(settings.path(datasets.HOURLY_METRICS))
    rows = {}
    for r in df.collect():
        key = (r["symbol"], r["hour_start"].replace(tzinfo=UTC))
        assert key not in rows, f"duplicate hourly row {key}"
        rows[key] = r.asDict()
    return rows


def last_commit(spark, settings) -> dict:
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, settings.path(datasets.HOURLY_METRICS)).history(1).first().asDict()


def ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def test_backfill_from_klines_api_paginates_and_waits_on_429(spark, tmp_path, server):
    from btc_platform.ingest.clients.binance import BinanceClient
    from spark_jobs import backfill_job

    klines = fixture("binance_klines_BTCUSDT_1h.json")  # 5 real hourly klines from 2023-05-01 00:00
    settings = load_settings(storage_root=f"file://{tmp_path}/bitcoin", data_dir=tmp_path / "data",
                             binance_base_url=server.url)
    clock = FakeClock(start=1_700_000_000.0)
    client = BinanceClient.from_settings(settings, clock=clock, sleep=clock.sleep)
    server.script(KLINES, Reply(429, headers={"Retry-After": "3"}))
    start = datetime.fromtimestamp(klines[0][0] / 1000, UTC)
    end = start + timedelta(hours=5)
    # "now" is inside the last kline: that candle is still open and must not be written
    now = datetime.fromtimestamp((klines[-1][0] + 1_000_000) / 1000, UTC)
    stats = backfill_job.run(spark, settings, source="binance", start=start, end=end, symbol="BTCUSDT",
                             client=client, now=lambda: now, produced_at=RUN_AT, page_limit=2)

    assert (stats.candles, stats.written, stats.skipped_stream) == (4, 4, 0)
    calls = server.requests_to(KLINES)
    # one 429, then pages of 2: [k0, k1], [k2, k3], [k4]
    assert [c.query["startTime"] for c in calls] == [str(ms(start)), str(ms(start)), str(klines[1][0] + 1),
                                                      str(klines[3][0] + 1)]
    assert {c.query["endTime"] for c in calls} == {str(ms(end) - 1)}
    assert {c.query["limit"] for c in calls} == {"2"} and {c.query["interval"] for c in calls} == {"1h"}
    assert 3.0 in clock.waits  # Retry-After honoured

    rows = read_hourly(spark, settings)
    assert sorted(h for _, h in rows) == [start + timedelta(hours=i) for i in range(4)]
    first = rows[("BTCUSDT", start)]
    k = klines[0]
    assert (first["open"], first["high"], first["low"], first["close"]) == tuple(float(v) for v in k[1:5])
    assert first["volume"] == float(k[5]) and first["quote_volume"] == float(k[7]) and first["trade_count"] == k[8]
    assert first["coverage"] == 1.0 and first["source"] == "backfill"
    for field in ("spread_mean", "spread_max", "spread_pct_mean", "spread_pct_max", "liquidity_base_mean",
                  "liquidity_quote_mean", "volatility", "tick_count", "minutes_present", "market_cap"):
        assert first[field] is None, field
    assert (first["date"], first["hour"]) == ("2023-05-01", 0)


KLINE_CSV = (
    # Binance kline CSV, no header: ms open/close times ...
    "1704067200000,42283.58,42554.57,42261.02,42475.23,1271.68108,1704070799999,53957248.973789,47134,"
    "682.57581,28957416.819645,0\n"
    "1704070800000,42475.23,42775.00,42431.65,42613.56,1196.37856,1704074399999,50984708.758112,44152,"
    "630.32292,26864115.352094,0\n"
    # ... and a 2025+ row in microseconds
    "1735689600000000,93576.00,94509.42,93489.03,94401.14,1416.47498,1735693199999999,133202578.6003447,"
    "167648,782.10816,73573624.2651958,0\n"
)

SHARED_CSV = (
    "open_time_utc,open,high,low,close,volume,quote_volume,trades\n"
    "2017-08-17T04:00:00Z,4261.48,4313.62,4261.32,4308.83,47.181009,,\n"
    "2023-01-01T00:00:00Z,16541.77,16545.7,16508.39,16529.67,4364.8357,72146113.0,104100\n"
)


def test_backfill_from_kline_csv_ms_and_us(spark, settings, tmp_path):
    from spark_jobs import backfill_job

    path = tmp_path / "BTCUSDT-1h.csv"
    path.write_text(KLINE_CSV)
    stats = backfill_job.run(spark, settings, source="file", file=str(path), produced_at=RUN_AT)
    assert stats.written == 3
    rows = read_hourly(spark, settings)
    jan1 = datetime(2024, 1, 1, tzinfo=UTC)
    assert set(rows) == {("BTCUSDT", jan1), ("BTCUSDT", jan1 + timedelta(hours=1)),
                         ("BTCUSDT", datetime(2025, 1, 1, tzinfo=UTC))}
    r = rows[("BTCUSDT", jan1 + timedelta(hours=1))]
    assert (r["open"], r["high"], r["low"], r["close"], r["volume"]) == (42475.23, 42775.0, 42431.65, 42613.56,
                                                                          1196.37856)
    assert (r["quote_volume"], r["trade_count"], r["date"], r["hour"]) == (50984708.758112, 44152, "2024-01-01", 1)
    us = rows[("BTCUSDT", datetime(2025, 1, 1, tzinfo=UTC))]
    assert (us["open"], us["close"], us["trade_count"]) == (93576.0, 94401.14, 167648)


def test_backfill_from_shared_layout_csv_with_range(spark, settings, tmp_path):
    from spark_jobs import backfill_job

    path = tmp_path / "btc_usdt_1h.csv"
    path.write_text(SHARED_CSV)
    stats = backfill_job.run(spark, settings, source="file", file=f"file://{path}", produced_at=RUN_AT)
    assert stats.written == 2
    rows = read_hourly(spark, settings)
    old = rows[("BTCUSDT", datetime(2017, 8, 17, 4, tzinfo=UTC))]
    assert (old["open"], old["high"], old["low"], old["close"], old["volume"]) == (4261.48, 4313.62, 4261.32,
                                                                                  4308.83, 47.181009)
    assert old["quote_volume"] is None and old["trade_count"] is None  # absent in the file: null, not 0
    new = rows[("BTCUSDT", datetime(2023, 1, 1, tzinfo=UTC))]
    assert (new["quote_volume"], new["trade_count"]) == (72146113.0, 104100)
    # a range keeps only the candles inside it
    other = load_settings(storage_root=f"file://{tmp_path}/other", data_dir=tmp_path / "data")
    stats = backfill_job.run(spark, other, source="file", file=str(path), start=datetime(2020, 1, 1, tzinfo=UTC),
                             produced_at=RUN_AT)
    assert stats.written == 1
    assert list(read_hourly(spark, other)) == [("BTCUSDT", datetime(2023, 1, 1, tzinfo=UTC))]


def _hourly_row(symbol: str, hour_start: datetime, source: str, price: float) -> dict:
    row = {name: None for name in datasets.column_names(datasets.HOURLY_METRICS_COLUMNS)}
    row.update(symbol=symbol, hour_start=hour_start, open=price, high=price + 1, low=price - 1, close=price,
               spread_mean=0.5, tick_count=100, minutes_present=58, coverage=58 / 60, source=source,
               produced_at=RUN_AT, date=hour_start.strftime("%Y-%m-%d"), hour=hour_start.hour)
    return row


def test_same_input_twice_is_identical(spark, settings, tmp_path):
    """The second MERGE of the same candles updates no row and rewrites no file, whatever its
    produced_at: with nothing left to change Delta makes no commit at all."""
    from spark_jobs import backfill_job

    path = tmp_path / "klines.csv"
    path.write_text(KLINE_CSV)
    stats = backfill_job.run(spark, settings, source="file", file=str(path), produced_at=RUN_AT)
    assert (stats.candles, stats.inserted, stats.updated) == (3, 3, 0)
    first, commit = read_hourly(spark, settings), last_commit(spark, settings)
    assert commit["operation"] == "MERGE" and commit["operationMetrics"]["numTargetRowsInserted"] == "3"
    metadata = json.loads(commit["userMetadata"])
    assert (metadata["job"], metadata["symbol"]) == ("backfill", "BTCUSDT")
    assert (metadata["start"], metadata["end"]) == ("2024-01-01T00:00:00+00:00", "2025-01-01T01:00:00+00:00")

    stats = backfill_job.run(spark, settings, source="file", file=str(path),
                             produced_at=RUN_AT + timedelta(days=1))
    assert (stats.candles, stats.inserted, stats.updated, stats.skipped_stream) == (3, 0, 0, 0)
    assert read_hourly(spark, settings) == first  # produced_at included
    assert last_commit(spark, settings)["version"] == commit["version"]  # no update, no rewritten file


def test_changed_candle_updates_only_its_hour(spark, settings, tmp_path):
    from spark_jobs import backfill_job

    path = tmp_path / "klines.csv"
    path.write_text(KLINE_CSV)
    backfill_job.run(spark, settings, source="file", file=str(path), produced_at=RUN_AT)
    before = read_hourly(spark, settings)
    path.write_text(KLINE_CSV.replace("42613.56", "42600.00"))  # the close of 2024-01-01 01:00
    later = RUN_AT + timedelta(days=1)
    stats = backfill_job.run(spark, settings, source="file", file=str(path), produced_at=later)
    assert (stats.inserted, stats.updated) == (0, 1)
    metrics = last_commit(spark, settings)["operationMetrics"]
    assert (metrics["numSourceRows"], metrics["numTargetRowsUpdated"], metrics["numTargetRowsInserted"]) == (
        "1", "1", "0")  # the unchanged candles were left out of the MERGE
    after = read_hourly(spark, settings)
    changed = ("BTCUSDT", datetime(2024, 1, 1, 1, tzinfo=UTC))
    assert after[changed]["close"] == 42600.0 and after[changed]["produced_at"].replace(tzinfo=UTC) == later
    assert {k: v for k, v in after.items() if k != changed} == {k: v for k, v in before.items() if k != changed}


def test_stream_hours_are_kept_unless_overwrite_stream(spark, settings, tmp_path):
    from spark_jobs import backfill_job, tables

    jan1 = datetime(2024, 1, 1, tzinfo=UTC)
    existing = [
        _hourly_row("BTCUSDT", jan1, "stream", 1.0),  # the stream produced hour 0
        _hourly_row("ETHUSDT", jan1 + timedelta(hours=1), "stream", 2.0),  # another symbol in hour 1
    ]
    tables.append_rows(spark, settings, datasets.HOURLY_METRICS,
                       spark.createDataFrame(existing, schema=datasets.struct_type(datasets.HOURLY_METRICS_COLUMNS)))
    path = tmp_path / "klines.csv"
    path.write_text(KLINE_CSV)
    stats = backfill_job.run(spark, settings, source="file", file=str(path), end=jan1 + timedelta(hours=2),
                             produced_at=RUN_AT)
    assert (stats.candles, stats.written, stats.skipped_stream) == (2, 1, 1)
    rows = read_hourly(spark, settings)
    kept = rows[("BTCUSDT", jan1)]
    assert (kept["spread_mean"], kept["tick_count"], kept["minutes_present"]) == (0.5, 100, 58)
    assert rows[("BTCUSDT", jan1)]["source"] == "stream" and rows[("BTCUSDT", jan1)]["open"] == 1.0
    assert rows[("BTCUSDT", jan1 + timedelta(hours=1))]["source"] == "backfill"
    assert rows[("ETHUSDT", jan1 + timedelta(hours=1))]["open"] == 2.0  # other symbol of the hour kept
    assert len(rows) == 3

    # re-running is idempotent: nothing rewritten, the stream hour still kept
    stats = backfill_job.run(spark, settings, source="file", file=str(path), end=jan1 + timedelta(hours=2),
                             produced_at=RUN_AT + timedelta(hours=1))
    assert (stats.written, stats.skipped_stream) == (0, 1)
    assert read_hourly(spark, settings) == rows

    stats = backfill_job.run(spark, settings, source="file", file=str(path), end=jan1 + timedelta(hours=2),
                             overwrite_stream=True, produced_at=RUN_AT)
    assert (stats.inserted, stats.updated, stats.skipped_stream) == (0, 1, 0)  # hour 1 was already equal
    rows = read_hourly(spark, settings)
    assert rows[("BTCUSDT", jan1)]["source"] == "backfill" and rows[("BTCUSDT", jan1)]["open"] == 42283.58
    assert rows[("BTCUSDT", jan1)]["spread_mean"] is None and rows[("BTCUSDT", jan1)]["tick_count"] is None
    assert rows[("ETHUSDT", jan1 + timedelta(hours=1))]["source"] == "stream"
    assert len(rows) == 3


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (SHARED_CSV + "2023-01-01T01:00:00Z,16529.67,oops,16508.0,16530.0,100.0,,\n",
         r"1 row\(s\) with malformed line or unparseable open time, e\.g\. \['2023-01-01T01:00:00Z,16529\.67,oops"),
        (SHARED_CSV + "2023-01-01T01:30:00Z,16529.67,16540.0,16508.0,16530.0,100.0,,\n",
         r"1 row\(s\) with open time not on a full UTC hour"),
        (SHARED_CSV + "2023-01-01T00:00:00Z,16541.77,16545.7,16508.39,16529.67,4364.8357,72146113.0,104100\n",
         r"1 repeated hour\(s\) \(the same open time twice\), e\.g\. \[2023-01-01T00:00Z\]"),
        ("1704067200000,42283.58,42554.57,42261.02,42475.23,1271.68,1704067259999,5.3e7,471,682.5,2.8e7,0\n",
         r"1 row\(s\) with candle not 1 hour long"),
        ("open_time_utc,open,high,low,close\n2023-01-01T00:00:00Z,1,2,0.5,1.5\n", r"missing \['volume'\]"),
        ("hello,world\n", r"unrecognised candle file"),
        (SHARED_CSV + "2023-01-01T01:00:00Z,16529.67,16500.0,16508.0,16530.0,100.0,,\n",
         r"1 candle\(s\) with high < low or a price <= 0: BTCUSDT@2023-01-01T01:00Z \(open 16529\.67, high 16500\.0, "
         r"low 16508\.0, close 16530\.0\)$"),
        (SHARED_CSV + "2023-01-01T02:00:00Z,0,16540.0,16508.0,16530.0,100.0,,\n"
         "2023-01-01T01:00:00Z,16529.67,16540.0,-1,16530.0,100.0,,\n",
         r"2 candle\(s\) with high < low or a price <= 0: BTCUSDT@2023-01-01T01:00Z \(.*low -1\.0.*\), "
         r"BTCUSDT@2023-01-01T02:00Z \(open 0\.0,"),
        (SHARED_CSV + "2023-01-01T01:00:00Z,NaN,16540.0,16508.0,16530.0,100.0,,\n",
         r"1 candle\(s\) with high < low or a price <= 0: BTCUSDT@2023-01-01T01:00Z \(open nan,"),
    ],
)
def test_bad_candle_files_fail_with_a_reason(spark, settings, tmp_path, content, expected):
    from spark_jobs import backfill_job
    from spark_jobs.backfill_transforms import CandleInputError

    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(CandleInputError, match=expected):
        backfill_job.run(spark, settings, source="file", file=str(path), produced_at=RUN_AT)
    assert not (tmp_path / "bitcoin" / datasets.HOURLY_METRICS).exists()  # nothing half-written


def test_impossible_candles_named_first_ten(spark, settings, tmp_path):
    from spark_jobs import backfill_job
    from spark_jobs.backfill_transforms import CandleInputError

    lines = [f"2023-02-01T{h:02d}:00:00Z,100.0,90.0,95.0,96.0,1.0,," for h in range(12)]  # high < low
    path = tmp_path / "bad.csv"
    path.write_text(SHARED_CSV + "\n".join(reversed(lines)) + "\n")
    with pytest.raises(CandleInputError) as info:
        backfill_job.run(spark, settings, source="file", file=str(path), symbol="ethusdt", produced_at=RUN_AT)
    message = str(info.value)
    assert "12 candle(s) with high < low or a price <= 0: ETHUSDT@2023-02-01T00:00Z (open 100.0, high 90.0" in message
    assert "ETHUSDT@2023-02-01T09:00Z" in message and "T10:00Z" not in message and message.endswith("(+2 more)")


def test_bad_candle_exits_1_naming_it_and_leaves_the_table(spark, settings, tmp_path, monkeypatch, caplog):
    from spark_jobs import backfill_job
    from spark_jobs._cli import EXIT_FAILED

    good = tmp_path / "good.csv"
    good.write_text(SHARED_CSV)
    backfill_job.run(spark, settings, source="file", file=str(good), produced_at=RUN_AT)
    before, version = read_hourly(spark, settings), last_commit(spark, settings)["version"]
    bad = tmp_path / "bad.csv"
    # a changed good candle and a new one, next to the impossible one: none of them may be written
    bad.write_text(SHARED_CSV.replace("16529.67", "16520.0") + "2023-01-01T01:00:00Z,1.0,2.0,0.0,1.5,3.0,,\n"
                   "2023-01-01T02:00:00Z,16529.67,16540.0,16508.0,16530.0,100.0,,\n")
    monkeypatch.setattr(spark, "stop", lambda: None)  # main() stops its session: not the shared one
    with caplog.at_level(logging.ERROR, logger="spark_jobs.backfill_job"):
        code = backfill_job.main(["--source", "file", "--file", str(bad), "--storage-root", settings.storage_root])
    assert code == EXIT_FAILED
    assert "1 candle(s) with high < low or a price <= 0: BTCUSDT@2023-01-01T01:00Z (open 1.0, high 2.0, low 0.0" \
        in caplog.text
    assert last_commit(spark, settings)["version"] == version
    assert read_hourly(spark, settings) == before


def test_range_not_on_the_hour_exits_2_and_writes_nothing(spark, settings, tmp_path, caplog):
    from btc_platform.timerange import RangeError
    from spark_jobs import backfill_job
    from spark_jobs._cli import EXIT_CONFIG

    path = tmp_path / "btc_usdt_1h.csv"
    path.write_text(SHARED_CSV)
    for bounds, reason in ((["--start", "2023-01-01T00:30:00Z"], "--start must be on a full hour (UTC), got "
                            "2023-01-01T00:30:00+00:00"),
                           (["--end", "2023-01-01T01:00:01Z"], "--end must be on a full hour"),
                           (["--start", "2023-01-01T00:00:00+05:30"],  # 2022-12-31T18:30Z
                            "--start must be on a full hour (UTC), got 2022-12-31T18:30:00+00:00")):  # fmt: skip
        argv = ["--source", "file", "--file", str(path), *bounds, "--storage-root", settings.storage_root]
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="spark_jobs.backfill_job"):
            assert backfill_job.main(argv) == EXIT_CONFIG, bounds
        assert f"backfill_job cannot start: {reason}" in caplog.text
    with pytest.raises(RangeError, match="--start must be on a full hour"):
        backfill_job.run(spark, settings, source="file", file=str(path),
                         start=datetime(2023, 1, 1, 0, 30, tzinfo=UTC))
    assert not (tmp_path / "bitcoin").exists()


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--source", "binance", "--start", "2024-01-01"], "--source binance needs --start and --end"),
        (["--source", "file"], "--source file needs --file"),
        (["--source", "file", "--file", "x.csv", "--start", "2024-02-01", "--end", "2024-01-01"],
         "--start 2024-02-01T00:00:00+00:00 must be before --end 2024-01-01T00:00:00+00:00"),
        (["--source", "binance", "--start", "yesterday", "--end", "2024-01-01"],
         "not an ISO-8601 date or date-time: 'yesterday'"),
        (["--source", "binance", "--start", "2024-01-01T10:15:00Z", "--end", "2024-01-02"],
         "--start must be on a full hour"),
        (["--source", "file", "--file", "s3://bucket/candles.csv"], "--file: unsupported URI scheme"),
        (["--source", "file", "--file", "/nonexistent/candles.csv"],
         "--file: no such file or directory: /nonexistent/candles.csv (the path of an hourly candle CSV"),
        (["--source", "file", "--file", "file:///nonexistent/candles"], "--file: no such file or directory: "
         "/nonexistent/candles"),
    ],
)
def test_cli_config_errors_exit_2_naming_the_reason_and_write_nothing(tmp_path, argv, reason, caplog):
    from spark_jobs import backfill_job
    from spark_jobs._cli import EXIT_CONFIG

    with caplog.at_level(logging.ERROR, logger="spark_jobs.backfill_job"):
        code = backfill_job.main([*argv, "--storage-root", f"file://{tmp_path}/b"])
    assert code == EXIT_CONFIG
    assert f"backfill_job cannot start: {reason}" in caplog.text
    assert not (tmp_path / "b").exists()
