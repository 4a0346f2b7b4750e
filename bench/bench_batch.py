"""Batch benchmark: hourly consolidation of 30 days of minute metrics, and the 60k-candle backfill.

Both run on the Delta tables (minute_metrics -> MERGE into hourly_metrics, candles -> MERGE into
hourly_metrics).

Figures (logged as a table):

* consolidation of 30 days x 1 symbol (43,200 minute rows, 720 hours): one range run (target
  <= 30 s), the same range again (nothing changed), and hour-by-hour runs of one hour each
  (target <= 15 s a run; a sample of ``--hourly-runs`` hours, mean/median and the 720-run
  total extrapolated from them; ``--hourly-runs 720`` does them all). The minute rows are
  derived from ``$BTC_BENCH_DATA_DIR/btc_usdt_1m_2023-03_2023-05.csv`` (2023-04-01 ..
  2023-05-01; mid OHLC = the 1-minute candle's OHLC, constant synthetic spread/liquidity and
  60 ticks a minute: benchmark input, never written to the platform's storage), or generated as
  a random walk when the file is absent.
* backfill of ``$BTC_BENCH_DATA_DIR/btc_usdt_1h_2017_2024h1.csv`` (60,108 candles) into an
  empty hourly_metrics table (target <= 20 s), the same file again (a MERGE that changes nothing), and reading the table back.
  Skipped with a message when the file is absent.

Everything is written under a temporary directory that is deleted at the end; the 1-minute
load average (the machine is shared) is logged with the table.

    .venv/bin/python bench/bench_batch.py [--hourly-runs 24] [--skip-backfill]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("bench.batch")

MINUTES_FILE = "btc_usdt_1m_2023-03_2023-05.csv"
HOURLY_FILE = "btc_usdt_1h_2017_2024h1.csv"
START = datetime(2023, 4, 1, tzinfo=UTC)
DAYS = 30
CONSOLIDATION_TARGET_S = 30.0
HOUR_TARGET_S = 15.0
BACKFILL_TARGET_S = 20.0
FIRST_CANDLE = datetime(2017, 8, 17, 4, tzinfo=UTC)
FILE_HOURS = 60_108


def data_dir() -> Path:
    return Path(os.environ.get("BTC_BENCH_DATA_DIR", ROOT.parent / "shared" / "data"))


def minute_rows(start: datetime, days: int) -> tuple[list[tuple], str]:
    """(rows in MINUTE_METRICS_COLUMNS order, where they came from)."""
    import pandas as pd

    end = start + timedelta(days=days)
    path = data_dir() / MINUTES_FILE
    if path.is_file():
        frame = pd.read_csv(path)
        frame["t"] = pd.to_datetime(frame["open_time_utc"], utc=True)
        frame = frame[(frame["t"] >= pd.Timestamp(start)) & (frame["t"] < pd.Timestamp(end))]
        bars = [(t.to_pydatetime(), o, h, lo, c) for t, o, h, lo, c in
                zip(frame["t"], frame["open"], frame["high"], frame["low"], frame["close"], strict=True)]
        origin = f"{path.name} ({len(bars)} minutes)"
    else:
        rng, price, bars = random.Random(42), 28000.0, []
        for i in range(days * 1440):
            o = price
            price *= math.exp(rng.gauss(0, 0.0008))
            bars.append((start + timedelta(minutes=i), o, max(o, price) * 1.0002, min(o, price) * 0.9998, price))
        origin = f"random walk ({len(bars)} minutes; {path} not found)"
    rows = []
    for t, o, h, lo, c in bars:
        mid = (o + c) / 2
        rows.append((
            "BTCUSDT", t, t + timedelta(minutes=1), float(o), float(h), float(lo), float(c),
            0.01, 0.02, 0.01 / mid * 100, 0.02 / mid * 100, 3.0, 2.5, 5.5, 5.5 * mid, None, float(h) - float(lo),
            60, None, None, None, None, None, None, t.strftime("%Y-%m-%d"), t.hour,
        ))
    return rows, origin


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def verdict(seconds: float, target: float) -> str:
    return f"target {target:.0f} s: {'OK' if seconds <= target else 'over'}"


def bench_consolidation(spark, tmp: Path, hourly_runs: int) -> list[tuple[str, str, str]]:
    from btc_platform.lakehouse import datasets
    from btc_platform.settings import load_settings
    from spark_jobs import consolidate_job, tables

    rows, origin = minute_rows(START, DAYS)
    figures = [("minute rows", f"{len(rows):,}", origin)]
    settings = load_settings(storage_root=f"file://{tmp}/consolidation", data_dir=tmp / "data")
    df = spark.createDataFrame(rows, schema=datasets.struct_type(datasets.MINUTE_METRICS_COLUMNS))
    seconds, _ = timed(tables.append_rows, spark, settings, datasets.MINUTE_METRICS, df)
    figures.append(("setup: append to minute_metrics (Delta)", f"{seconds:.1f} s", "not part of the job"))

    # one hour at a time first, as the hourly DAG runs (each a new hour for hourly_metrics)
    hours = [START + timedelta(hours=h) for h in range(DAYS * 24)]
    sample = hours if hourly_runs >= len(hours) else random.Random(7).sample(hours, hourly_runs)
    durations = []
    for hour in sorted(sample):
        seconds, _ = timed(consolidate_job.run, spark, settings, hour, hour + timedelta(hours=1))
        durations.append(seconds)
    total = statistics.mean(durations) * len(hours)
    figures.append(("consolidation, one hour: per run", f"{statistics.median(durations):.2f} s median",
                    f"mean {statistics.mean(durations):.2f} s, max {max(durations):.2f} s over {len(durations)} "
                    f"runs; {verdict(max(durations), HOUR_TARGET_S)} (max)"))
    kind = "measured" if len(durations) == len(hours) else "extrapolated"
    figures.append(("consolidation, hour by hour: 720 runs", f"{total:.0f} s", kind))

    end = START + timedelta(days=DAYS)
    seconds, written = timed(consolidate_job.run, spark, settings, START, end)
    figures.append(("consolidation, one range run (720 h)", f"{seconds:.1f} s",
                    f"{written} hourly rows written ({len(durations)} were there already); "
                    f"{verdict(seconds, CONSOLIDATION_TARGET_S)}"))
    seconds, written = timed(consolidate_job.run, spark, settings, START, end)
    figures.append(("consolidation, same range again", f"{seconds:.1f} s", f"{written} rows changed"))
    return figures


def bench_backfill(spark, tmp: Path, days: int = 0) -> list[tuple[str, str, str]]:
    from btc_platform.lakehouse import datasets
    from btc_platform.settings import load_settings
    from spark_jobs import backfill_job

    path = data_dir() / HOURLY_FILE
    if not path.is_file():
        log.warning("backfill benchmark skipped: %s not found (set BTC_BENCH_DATA_DIR)", path)
        return [("backfill", "skipped", f"{path} not found")]
    settings = load_settings(storage_root=f"file://{tmp}/backfill", data_dir=tmp / "data")
    end = FIRST_CANDLE + timedelta(days=days) if days else None
    seconds, stats = timed(backfill_job.run, spark, settings, source="file", file=str(path), end=end)
    if days:
        per_hour = seconds / max(stats.written, 1)
        figures = [(f"backfill first {days} days into an empty table", f"{seconds:.1f} s",
                    f"{stats.written:,} hours ({per_hour * 1000:.1f} ms/hour; whole file validated)")]
    else:
        figures = [("backfill 60k candles into an empty table", f"{seconds:.1f} s",
                    f"{stats.written:,} hours, one MERGE; {verdict(seconds, BACKFILL_TARGET_S)}")]
    seconds, stats = timed(backfill_job.run, spark, settings, source="file", file=str(path), end=end)
    figures.append(("backfill, same file again", f"{seconds:.1f} s", f"{stats.written:,} rows changed"))
    log.info("%s", figures)

    hourly_uri = settings.path(datasets.HOURLY_METRICS)
    seconds, count = timed(lambda: spark.read.format("delta").load(hourly_uri).count())
    files = len(list(Path(hourly_uri.removeprefix("file://")).glob("*.parquet")))
    figures.append(("read back all of hourly_metrics", f"{seconds:.1f} s", f"{count:,} rows in {files} file(s)"))
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hourly-runs", type=int, default=24,
                        help="How many hours to consolidate one by one (720 = all; default 24).")
    parser.add_argument("--skip-backfill", action="store_true", help="Only the consolidation figures.")
    parser.add_argument("--skip-consolidation", action="store_true", help="Only the backfill figures.")
    parser.add_argument("--backfill-days", type=int, default=0,
                        help="Backfill only the first N days of the file (default 0: all of it).")
    args = parser.parse_args(argv if argv is not None else [])
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("spark_jobs", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from btc_platform.lakehouse.spark_session import build_session
    from btc_platform.settings import load_settings

    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    load_before = os.getloadavg()[0]
    spark = build_session("bench-batch", load_settings(data_dir=tmp / "data"), master="local[2]",
                          extra_conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2"})
    figures: list[tuple[str, str, str]] = []
    try:
        if not args.skip_consolidation:
            figures += bench_consolidation(spark, tmp, args.hourly_runs)
            log.info("consolidation figures: %s", figures)
        if not args.skip_backfill:
            figures += bench_backfill(spark, tmp, args.backfill_days)
    finally:
        spark.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()[0]
    width = max(len(name) for name, _, _ in figures)
    lines = [f"{'figure'.ljust(width)}  {'value':>16}  notes", "-" * (width + 40)]
    lines += [f"{name.ljust(width)}  {value:>16}  {notes}" for name, value, notes in figures]
    lines.append(f"(2 cores shared with other work: 1-min load average {load_before:.1f} at the start, "
                 f"{load:.1f} at the end)")
    log.info("batch benchmark:\n%s", "\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
