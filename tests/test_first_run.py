"""The first start of an installation: simulated hourly history (``btc_platform.ingest.simulated_history``
through the backfill job's ``--source simulate``), the decision of btc_backfill's one scheduled run
(``orchestration.backfill_plan``: an empty hourly_metrics gets history, anything else nothing), and
the live mode's last days of klines from the exchange (the local server serving the klines format).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from btc_platform.ingest.simulated_history import HOUR_MS, simulated_klines
from btc_platform.lakehouse import datasets
from btc_platform.ops.orchestration import NothingToBackfill, backfill_plan, first_run_params
from btc_platform.settings import load_settings
from btc_platform.timerange import parse_utc

NOW = datetime(2026, 3, 10, 14, 37, 12, tzinfo=UTC)
HOUR = datetime(2026, 3, 10, 14, tzinfo=UTC)  # the current hour at NOW: history ends where it starts


# ---- simulated candles ---------------------------------------------------------------------------
def test_simulated_klines_are_a_gapless_walk_ending_at_the_price_and_repeat_with_a_seed():
    start = HOUR - timedelta(hours=1200)
    rows = simulated_klines(start, HOUR, 30000.0, seed=7)
    assert len(rows) == 1200
    # every hour of [start, end), one after the other: no gap invented, none repeated
    assert [r[0] for r in rows] == [int(start.timestamp() * 1000) + i * HOUR_MS for i in range(1200)]
    assert all(r[6] == r[0] + HOUR_MS - 1 for r in rows)  # closed 1 h candles, as the exchange's
    assert rows[-1][4] == "30000.00"  # the last hour closes where the simulated stream starts
    for before, after in zip(rows, rows[1:], strict=False):
        assert after[1] == before[4]  # each hour opens at the previous close
    for r in rows:
        o, h, lo, c, v = (float(x) for x in r[1:6])
        assert 0 < lo <= min(o, c) and max(o, c) <= h and v > 0
    closes = pd.Series([float(r[4]) for r in rows])
    returns = (closes / closes.shift()).dropna().apply(lambda x: x - 1)
    assert 0.002 < returns.std() < 0.012  # an hourly BTC-like walk, not a flat line
    assert simulated_klines(start, HOUR, 30000.0, seed=7) == rows
    assert simulated_klines(start, HOUR, 30000.0, seed=8) != rows
    # another price: the same path shape ends there instead
    other = simulated_klines(start, HOUR, 45000.0, seed=7)
    assert other[-1][4] == "45000.00" and float(other[0][1]) == pytest.approx(float(rows[0][1]) * 1.5, rel=1e-4)


def test_simulated_klines_parse_as_exchange_klines():
    from btc_platform.ingest.normalize import parse_kline

    for row in simulated_klines(HOUR - timedelta(hours=3), HOUR, 100.0, seed=1):
        kline = parse_kline(row)
        assert kline.close_time_ms - kline.open_time_ms == HOUR_MS - 1


@pytest.mark.parametrize(
    ("start", "end", "price", "message"),
    [
        (HOUR, HOUR, 1.0, "must be after start"),
        (HOUR - timedelta(minutes=30), HOUR, 1.0, "on a full hour"),
        (HOUR - timedelta(hours=2), HOUR, 0.0, "must be > 0"),
        (datetime(2026, 1, 1), datetime(2026, 1, 2), 1.0, "naive"),  # noqa: DTZ001 - the naive input refused
    ],
)
def test_simulated_klines_refuse_bad_ranges(start, end, price, message):
    with pytest.raises(ValueError, match=message):
        simulated_klines(start, end, price)


# ---- the first start's decision --------------------------------------------------------------------
def test_an_empty_table_gets_simulated_history_in_simulate_mode(tmp_path):
    settings = load_settings(data_dir=tmp_path, producer_source="simulate", first_run_simulate_hours=1200)
    params = first_run_params(settings, 0, NOW)
    assert params == {"source": "simulate", "start": (HOUR - timedelta(hours=1200)).isoformat(),
                      "end": HOUR.isoformat(), "overwrite_stream": False}  # fmt: skip
    # btc_backfill's scheduled (@once) run: the table does not even exist yet
    assert backfill_plan({"source": "binance"}, "scheduled", settings, NOW) == [
        "--source", "simulate", "--start", "2026-01-19T14:00:00+00:00", "--end", "2026-03-10T14:00:00+00:00"]


def test_an_empty_table_gets_the_last_days_of_klines_in_live_mode(tmp_path):
    from models.config import RetrainParams
    from models.features import hours_needed

    settings = load_settings(data_dir=tmp_path, producer_source="live")
    params = first_run_params(settings, 0, NOW)
    assert (params["source"], params["start"], params["end"]) == (
        "binance", (HOUR - timedelta(days=settings.first_run_backfill_days)).isoformat(), HOUR.isoformat())
    # enough for the retrain's defaults: the first start trains and evaluates an LSTM (the forecast
    # view's skill table has rows), it does not wait weeks for the stream to add the rest
    defaults = RetrainParams()
    assert settings.first_run_backfill_days * 24 >= hours_needed(defaults.config, defaults.test_hours)


def test_a_table_with_rows_gets_nothing(tmp_path):
    from btc_platform.lakehouse import lake
    from btc_platform.testing.dashboard_testdata import hourly_metrics

    settings = load_settings(data_dir=tmp_path, producer_source="simulate")
    with pytest.raises(NothingToBackfill, match="already holds 3 row"):
        first_run_params(settings, 3, NOW)
    hourly_metrics(settings, pd.Timestamp(NOW), hours=5, gap=(0, 0))
    assert len(lake.read_table(datasets.HOURLY_METRICS, settings)) == 5
    with pytest.raises(NothingToBackfill, match="already holds 5 row"):
        backfill_plan({}, "scheduled", settings, NOW)


def test_the_setting_off_or_a_replay_source_gets_nothing(tmp_path):
    off = load_settings(data_dir=tmp_path, producer_source="simulate", first_run_backfill=False)
    with pytest.raises(NothingToBackfill, match="BTC_FIRST_RUN_BACKFILL is off"):
        first_run_params(off, 0, NOW)
    with pytest.raises(NothingToBackfill, match="replay"):
        first_run_params(load_settings(data_dir=tmp_path, producer_source="replay"), 0, NOW)


def test_a_manual_run_uses_its_params_whatever_the_table(tmp_path):
    settings = load_settings(data_dir=tmp_path, producer_source="simulate", first_run_backfill=False)
    params = {"source": "simulate", "start": "2026-01-01", "end": "2026-01-02", "overwrite_stream": False}
    assert backfill_plan(params, "manual", settings, NOW) == [
        "--source", "simulate", "--start", "2026-01-01", "--end", "2026-01-02"]
    with pytest.raises(ValueError, match="source=simulate needs start"):
        backfill_plan({"source": "simulate", "end": "2026-01-02"}, "DagRunType.MANUAL", settings, NOW)


# ---- the backfill job on those plans (Spark, Delta) ----------------------------------------------------
def _run_planned(spark, settings, argv: list[str], **kwargs):
    """The backfill job's run() with the arguments btc_backfill would pass it."""
    from spark_jobs import backfill_job

    args = backfill_job.build_parser().parse_args(argv)
    return backfill_job.run(spark, settings, source=args.source, file=args.file, start=parse_utc(args.start),
                            end=parse_utc(args.end), price=args.price, seed=args.seed, **kwargs)  # fmt: skip


def _hourly(settings) -> pd.DataFrame:
    from btc_platform.lakehouse import lake

    frame = lake.read_table(datasets.HOURLY_METRICS, settings)
    frame["hour_start"] = pd.to_datetime(frame["hour_start"], utc=True)
    return frame.sort_values("hour_start").reset_index(drop=True)


@pytest.mark.spark
def test_simulated_first_run_history_in_hourly_metrics(spark, tmp_path):
    settings = load_settings(storage_root=f"file://{tmp_path}/bitcoin", data_dir=tmp_path / "data",
                             producer_source="simulate", first_run_simulate_hours=48,
                             simulate_start_price=61000.0)  # fmt: skip
    argv = [*backfill_plan({}, "scheduled", settings, NOW), "--seed", "3"]
    stats = _run_planned(spark, settings, argv, now=lambda: NOW)
    assert (stats.candles, stats.inserted, stats.updated) == (48, 48, 0)
    hourly = _hourly(settings)
    times = list(hourly["hour_start"])
    assert list(times) == [HOUR - timedelta(hours=48 - i) for i in range(48)]
    assert set(hourly["source"]) == {datasets.HOURLY_SOURCE_SIMULATED}
    assert hourly["close"].iloc[-1] == 61000.0  # joins the simulated stream's first price
    assert (hourly["open"].iloc[1:].to_numpy() == hourly["close"].iloc[:-1].to_numpy()).all()
    assert hourly["spread_mean"].isna().all() and (hourly["coverage"] == 1.0).all()
    # the same seed again: the same candles, nothing rewritten
    again = _run_planned(spark, settings, argv, now=lambda: NOW)
    assert (again.candles, again.written) == (48, 0)
    # and now the table holds rows: the scheduled run has nothing to do
    with pytest.raises(NothingToBackfill, match="already holds 48 row"):
        backfill_plan({}, "scheduled", settings, NOW)


@pytest.mark.spark
def test_live_first_run_backfills_the_last_days_of_klines(spark, tmp_path):
    from btc_platform.ingest.clients.binance import BinanceClient
    from btc_platform.testing.exchange_server import KLINES, ExchangeServer, FakeClock

    server = ExchangeServer().start()
    try:
        # the exchange has the last 3 days of hourly klines, the current hour's still open
        server.klines = simulated_klines(HOUR - timedelta(days=3), HOUR + timedelta(hours=1), 70000.0, seed=5)
        settings = load_settings(storage_root=f"file://{tmp_path}/bitcoin", data_dir=tmp_path / "data",
                                 producer_source="live", first_run_backfill_days=2, binance_base_url=server.url)
        argv = backfill_plan({}, "scheduled", settings, NOW)
        assert argv[:2] == ["--source", "binance"]
        clock = FakeClock(start=NOW.timestamp())
        client = BinanceClient.from_settings(settings, clock=clock, sleep=clock.sleep)
        stats = _run_planned(spark, settings, argv, client=client, now=lambda: NOW, page_limit=30)
        calls = server.requests_to(KLINES)
    finally:
        server.stop()
    assert (stats.candles, stats.inserted) == (48, 48)
    start_ms = int((HOUR - timedelta(days=2)).timestamp() * 1000)
    assert calls[0].query["startTime"] == str(start_ms) and calls[0].query["interval"] == "1h"
    assert {c.query["endTime"] for c in calls} == {str(int(HOUR.timestamp() * 1000) - 1)}
    assert len(calls) == 2  # 48 klines in pages of 30
    hourly = _hourly(settings)
    times = list(hourly["hour_start"])
    assert list(times) == [HOUR - timedelta(hours=48 - i) for i in range(48)]
    assert set(hourly["source"]) == {datasets.HOURLY_SOURCE_BACKFILL}
    served = {r[0]: float(r[4]) for r in server.klines}
    assert hourly["close"].tolist() == [served[int(t.timestamp() * 1000)] for t in times]


def test_the_first_start_backfill_waits_for_the_stream_first_minute_bounded(tmp_path):
    from btc_platform.lakehouse import lake
    from btc_platform.ops.orchestration import FIRST_RUN_STREAM_WAIT_S, first_run_may_start

    settings = load_settings(data_dir=tmp_path, producer_source="simulate")
    started = NOW - timedelta(seconds=20)
    assert first_run_may_start(settings, "manual", started, NOW) == (True, "a manual run")
    ready, why = first_run_may_start(settings, "scheduled", started, NOW)
    assert not ready and "waiting for the stream's first minute (20 of at most 300 s)" in why
    late = NOW + timedelta(seconds=FIRST_RUN_STREAM_WAIT_S)
    assert first_run_may_start(settings, "scheduled", started, late)[0] is True
    lake.write_table(datasets.MINUTE_METRICS, pd.DataFrame({"symbol": ["BTCUSDT"], "window_start": [NOW]}), settings)
    assert first_run_may_start(settings, "scheduled", started, NOW) == (True, "the stream wrote its first minute")
