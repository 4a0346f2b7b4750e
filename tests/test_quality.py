"""Data-quality checks: each check fails on purpose-built bad data with the expected message; the
results land in the data_quality Delta table, one row per (symbol, hour, check), and a re-run
replaces them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from btc_platform.lakehouse import datasets
from btc_platform.lakehouse import quality as q
from btc_platform.settings import load_settings

pytestmark = pytest.mark.spark

T0 = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
END = T0 + timedelta(hours=3)
CHECKED_AT = datetime(2024, 1, 1, 4, 0, tzinfo=UTC)
SPAN = "in [2024-01-01T00:00Z, 2024-01-01T03:00Z)"


def hour_row(hour: int, symbol: str = "BTCUSDT", **values) -> dict:
    """A valid stream hourly_metrics row at T0 + hour; ``values`` override fields."""
    start = T0 + timedelta(hours=hour)
    row = {name: None for name in datasets.column_names(datasets.HOURLY_METRICS_COLUMNS)}
    row.update(symbol=symbol, hour_start=start, open=100.0, high=110.0, low=95.0, close=105.0, spread_mean=0.5,
               spread_max=1.0, spread_pct_mean=0.005, spread_pct_max=0.01, tick_count=600, minutes_present=60,
               coverage=1.0, source="stream", produced_at=CHECKED_AT, date=start.strftime("%Y-%m-%d"),
               hour=start.hour, volume=12.5, quote_volume=1300.0, trade_count=900, volume_minutes=60)
    row.update(values)
    return row


@pytest.fixture
def settings(tmp_path):
    return load_settings(storage_root=f"file://{tmp_path}/bitcoin", data_dir=tmp_path / "data",
                         binance_symbols="BTCUSDT", dq_min_coverage=0.8)


def write(spark, settings, rows):
    from spark_jobs import tables

    df = spark.createDataFrame(rows, schema=datasets.struct_type(datasets.HOURLY_METRICS_COLUMNS))
    tables.append_rows(spark, settings, datasets.HOURLY_METRICS, df)


def check(spark, settings, rows):
    from spark_jobs import quality_job

    write(spark, settings, rows)
    return quality_job.run(spark, settings, T0, END, checked_at=CHECKED_AT)


def by_name(results):
    return {r.check: r for r in results}


def report(spark, settings) -> dict[tuple[str, int, str], dict]:
    """data_quality rows by (symbol, hour offset from T0, check); fails on a repeated key."""
    out = {}
    for r in spark.read.format("delta").load(settings.path(datasets.DATA_QUALITY)).collect():
        hour = int((r["hour_start"].replace(tzinfo=UTC) - T0).total_seconds()) // 3600
        key = (r["symbol"], hour, r["check"])
        assert key not in out, f"repeated data_quality row {key}"
        out[key] = r.asDict()
    return out


def test_clean_range_passes_and_reports_every_check(spark, settings):
    results = check(spark, settings, [hour_row(h) for h in range(3)])
    assert [r.check for r in results] == list(q.CHECKS)
    assert all(r.passed and r.rows_checked == 3 for r in results)
    rep = report(spark, settings)
    assert set(rep) == {("BTCUSDT", h, c) for h in range(3) for c in q.CHECKS}
    assert {r["status"] for r in rep.values()} == {"pass"}
    assert {r["detail"] for r in rep.values()} == {None}
    gap = rep[("BTCUSDT", 2, "hour_gap")]
    assert (gap["severity"], gap["checked_at"].replace(tzinfo=UTC)) == ("warning", CHECKED_AT)
    assert (gap["range_start"].replace(tzinfo=UTC), gap["range_end"].replace(tzinfo=UTC)) == (T0, END)


@pytest.mark.parametrize(
    ("check_name", "bad", "expected"),
    [
        ("high_below_low", {"high": 90.0, "low": 95.0}, "high_below_low (error): high < low at BTCUSDT@2024-01-01T01:00Z"),
        ("non_positive_price", {"low": 0.0},
         "non_positive_price (error): open/high/low/close not positive or missing at BTCUSDT@2024-01-01T01:00Z"),
        ("non_positive_price", {"close": None},
         "non_positive_price (error): open/high/low/close not positive or missing at BTCUSDT@2024-01-01T01:00Z"),
        ("negative_spread", {"spread_max": -0.01},
         "negative_spread (error): negative spread at BTCUSDT@2024-01-01T01:00Z"),
    ],
)
def test_error_checks_fail_the_run_naming_hour_and_check(spark, settings, check_name, bad, expected):
    rows = [hour_row(0), hour_row(1, **bad), hour_row(2)]
    with pytest.raises(q.DataQualityError) as info:
        check(spark, settings, rows)
    assert f"{expected} {SPAN}" in str(info.value)
    assert [r.check for r in info.value.results] == [check_name]
    rep = report(spark, settings)  # the results are recorded before failing
    failed = {key for key, r in rep.items() if r["status"] == "fail"}
    assert failed == {("BTCUSDT", 1, check_name)}
    assert (rep[("BTCUSDT", 1, check_name)]["severity"], rep[("BTCUSDT", 1, check_name)]["detail"]) == (
        "error", q.CHECKS[check_name][1])
    assert len(rep) == 3 * len(q.CHECKS)


def test_duplicate_symbol_hour_is_an_error(spark, settings):
    rows = [hour_row(0), hour_row(1), hour_row(1, source="backfill", coverage=1.0), hour_row(2)]
    with pytest.raises(q.DataQualityError, match=r"duplicate_symbol_hour \(error\): more than one row for the "
                       r"same \(symbol, hour\) at BTCUSDT@2024-01-01T01:00Z"):
        check(spark, settings, rows)


def test_warnings_are_logged_and_do_not_fail(spark, settings, caplog):
    # hour 1: 30 minutes present (coverage 0.5 < 0.8) with 29 klines; hour 2: no row at all (gap)
    rows = [hour_row(0), hour_row(1, minutes_present=30, coverage=0.5, volume_minutes=29)]
    with caplog.at_level(logging.WARNING, logger="btc_platform.lakehouse.quality"):
        results = by_name(check(spark, settings, rows))
    assert results["coverage_below_threshold"].failed == ("BTCUSDT@2024-01-01T01:00Z",)
    assert results["hour_gap"].failed == ("BTCUSDT@2024-01-01T02:00Z",)
    assert results["volume_incomplete"].failed == ("BTCUSDT@2024-01-01T01:00Z",)
    assert all(results[name].passed for name in ("high_below_low", "non_positive_price", "negative_spread",
                                                  "duplicate_symbol_hour"))
    text = caplog.text
    assert "coverage_below_threshold (warning): coverage below 0.8 at BTCUSDT@2024-01-01T01:00Z" in text
    assert "hour_gap (warning): no row for the hour (gap in the hour sequence) at BTCUSDT@2024-01-01T02:00Z" in text


def test_gap_for_expected_symbol_without_any_row_and_empty_store(spark, settings):
    from spark_jobs import quality_job

    # nothing written at all: every hour of every expected symbol is a gap (warning, no failure)
    results = by_name(quality_job.run(spark, settings, T0, END, symbols=["BTCUSDT", "ETHUSDT"],
                                      checked_at=CHECKED_AT))
    gap = results["hour_gap"]
    assert gap.failed_count == 6
    assert gap.failed[:2] == ("BTCUSDT@2024-01-01T00:00Z", "ETHUSDT@2024-01-01T00:00Z")
    assert results["coverage_below_threshold"].rows_checked == 0
    # an hour without a row only has its failed gap result: the row checks had nothing to look at
    rep = report(spark, settings)
    assert set(rep) == {(s, h, "hour_gap") for s in ("BTCUSDT", "ETHUSDT") for h in range(3)}
    assert {r["status"] for r in rep.values()} == {"fail"}


def test_rerun_replaces_the_results_of_the_range(spark, settings):
    from delta.tables import DeltaTable

    from spark_jobs import quality_job

    rows = [hour_row(0), hour_row(1, coverage=0.5), hour_row(2)]
    check(spark, settings, rows)
    assert report(spark, settings)[("BTCUSDT", 1, "coverage_below_threshold")]["status"] == "fail"
    # the hour is fixed (e.g. re-consolidated after late minutes), then the range is checked again
    DeltaTable.forPath(spark, settings.path(datasets.HOURLY_METRICS)).update(
        "hour_start = timestamp'2024-01-01 01:00:00'", {"coverage": "1.0"}
    )
    later = CHECKED_AT + timedelta(hours=1)
    quality_job.run(spark, settings, T0, END, checked_at=later)
    rep = report(spark, settings)  # no repeated (symbol, hour, check)
    assert len(rep) == 3 * len(q.CHECKS)
    assert {r["status"] for r in rep.values()} == {"pass"}
    assert {r["checked_at"].replace(tzinfo=UTC) for r in rep.values()} == {later}

    # a range overlapping the first one replaces the hours they share and adds the others
    quality_job.run(spark, settings, T0 + timedelta(hours=2), END + timedelta(hours=1), checked_at=later)
    rep = report(spark, settings)
    assert len(rep) == 3 * len(q.CHECKS) + 1  # + the gap of hour 3
    assert rep[("BTCUSDT", 3, "hour_gap")]["status"] == "fail"
    assert rep[("BTCUSDT", 2, "hour_gap")]["range_start"].replace(tzinfo=UTC) == T0 + timedelta(hours=2)
    assert rep[("BTCUSDT", 0, "hour_gap")]["range_start"].replace(tzinfo=UTC) == T0


def test_last_backfill_range_and_cli_errors(spark, settings, tmp_path, monkeypatch, caplog):
    from spark_jobs import backfill_job, quality_job
    from spark_jobs._cli import EXIT_CONFIG, EXIT_OK

    root = ["--storage-root", settings.storage_root]
    for argv, reason in (
        (["--start", "2024-01-01T00:00:00Z"], "--start and --end are required (or --last-backfill)"),
        (["--last-backfill", "--start", "2024-01-01T00:00:00Z"], "--last-backfill takes no --start/--end"),
        (["--start", "2024-01-01T00:10:00Z", "--end", "2024-01-01T02:00:00Z"], "--start must be on a full hour"),
        (["--start", "2024-01-01T00:00:00Z", "--end", "2024-01-01T02:00:00Z", "--min-coverage", "1.5"],
         "--min-coverage must be within 0..1, got 1.5"),
    ):
        caplog.clear()
        assert quality_job.main([*argv, *root]) == EXIT_CONFIG
        assert f"quality_job cannot start: {reason}" in caplog.text

    monkeypatch.setattr(spark, "stop", lambda: None)  # main() stops its session: not the shared one
    caplog.clear()
    assert quality_job.main(["--last-backfill", *root]) == EXIT_CONFIG  # no backfill yet
    assert "quality_job cannot start: --last-backfill: no backfill among the recent commits of" in caplog.text
    assert not (tmp_path / "bitcoin" / datasets.DATA_QUALITY).exists()
    candles = tmp_path / "candles.csv"
    candles.write_text("open_time_utc,open,high,low,close,volume\n"
                       "2024-01-01T01:00:00Z,100.0,110.0,95.0,105.0,1.0\n"
                       "2024-01-01T02:00:00Z,105.0,110.0,95.0,100.0,1.0\n")
    backfill_job.run(spark, settings, source="file", file=str(candles), produced_at=CHECKED_AT)
    assert quality_job.last_backfill_range(spark, settings) == (T0 + timedelta(hours=1), END)
    assert quality_job.main(["--last-backfill", *root]) == EXIT_OK
    rep = report(spark, settings)
    assert {h for _, h, _ in rep} == {1, 2} and {r["status"] for r in rep.values()} == {"pass"}


def test_backfill_rows_pass_coverage(spark, settings):
    rows = [hour_row(h, source="backfill", spread_mean=None, spread_max=None, spread_pct_mean=None,
                     spread_pct_max=None, tick_count=None, minutes_present=None, coverage=1.0) for h in range(3)]
    results = check(spark, settings, rows)
    assert [r.check for r in results] == list(q.CHECKS)  # every check ran, on the 3 rows
    assert all(r.passed and r.rows_checked == 3 for r in results)


def test_raise_on_errors_is_pure():
    bad = q.make_result(q.HIGH_BELOW_LOW, T0, END, 3, [("BTCUSDT", T0 + timedelta(hours=2))])
    warn = q.make_result(q.HOUR_GAP, T0, END, 3, [("BTCUSDT", T0)])
    q.raise_on_errors([warn])  # warnings never raise
    with pytest.raises(q.DataQualityError, match="high_below_low .* at BTCUSDT@2024-01-01T02:00Z"):
        q.raise_on_errors([warn, bad])
