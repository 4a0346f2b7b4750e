"""History backfill job: hourly candles (Binance klines API, a candle file or the simulator) -> hourly_metrics.

Run by the ``btc_backfill`` DAG (SparkSubmitOperator) or by hand::

    # from the exchange (paginated GET /api/v3/klines, polite: weight budget, 429/418 backoff)
    .venv/bin/python spark_jobs/backfill_job.py --source binance \\
        --start 2024-05-01 --end 2024-06-01
    # from a file: Binance kline CSV (12 columns, ms or us times) or open_time_utc,open,high,... CSV/Parquet
    .venv/bin/python spark_jobs/backfill_job.py --source file \\
        --file ../shared/data/btc_usdt_1h_2017_2024h1.csv
    # simulated history (offline), ending at the simulator's start price (BTC_SIMULATE_START_PRICE)
    .venv/bin/python spark_jobs/backfill_job.py --source simulate \\
        --start 2026-01-01 --end 2026-02-20 --seed 7

Rows get ``source=backfill`` (``source=simulated`` for ``--source simulate``: random-walk candles
of ``btc_platform.ingest.simulated_history``, checked like any other); microstructure fields stay
null (see backfill_transforms). The
candles go into hourly_metrics with ONE MERGE on (symbol, hour_start): new hours are inserted;
an hour that already holds a stream-consolidated row covering at least
``BTC_HOURLY_MIN_STREAM_COVERAGE`` of its minutes is left alone unless ``--overwrite-stream`` (a
less complete stream hour takes the candle);
any other matched row is rewritten only when one of its values changed, so re-running the same
input rewrites nothing. The commit carries ``{"job": "backfill", "symbol", "start", "end", ...}``
as metadata (``--last-backfill`` of the data-quality job reads that range).

The whole input is validated first (malformed rows, missing or impossible prices - high < low,
a price <= 0 -, candles that are not hourly, repeated hours): any problem fails the job naming
the rows, and nothing is written. ``--start``/``--end`` must be on a full UTC hour.
Exit codes: 0 ok, 1 bad input / exchange failure / job failure, 2 configuration error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

from btc_platform.ingest.clients.binance import MAX_KLINES_LIMIT, BinanceClient
from btc_platform.ingest.http import ExchangeError
from btc_platform.ingest.schema import SchemaError
from btc_platform.lakehouse import datasets, gaps
from btc_platform.settings import Settings
from btc_platform.timerange import parse_utc, require_hour_aligned
from spark_jobs import backfill_transforms as bt
from spark_jobs import tables
from spark_jobs._cli import ConfigError, Work, add_common_options, job_main

log = logging.getLogger("spark_jobs.backfill_job")

APP_NAME = "btc-backfill"
KLINE_INTERVAL = "1h"
#: Where candles come from (``--source``); the ones needing --start and --end.
SOURCES = ("binance", "file", "simulate")
RANGED_SOURCES = ("binance", "simulate")

KEYS = datasets.TABLES[datasets.HOURLY_METRICS].keys
#: A matched row is rewritten only when a value other than ``produced_at`` changed.
CHANGED = datasets.changed_condition(datasets.column_names(datasets.HOURLY_METRICS_COLUMNS), KEYS)


@dataclass(frozen=True)
class BackfillStats:
    candles: int  # candles of the requested range
    inserted: int = 0  # hours that had no row for the symbol
    updated: int = 0  # rows rewritten because a value changed
    skipped_stream: int = 0  # candles not written because the stream already produced that hour

    @property
    def written(self) -> int:
        """Rows inserted or rewritten (0 when the same input is backfilled again)."""
        return self.inserted + self.updated


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backfill_job.py",
        description="Fill hourly_metrics with hourly candles from the Binance klines API or a candle file "
        "(source=backfill; spread/liquidity/volatility stay null).",
    )
    parser.add_argument(
        "--source",
        required=True,
        choices=SOURCES,
        help="binance: GET /api/v3/klines (needs --start and --end); file: --file; simulate: a random walk "
        "of hourly candles (needs --start and --end; rows get source=simulated).",
    )
    parser.add_argument(
        "--file",
        default=None,
        help="Candle file for --source file: local path, file:// or hdfs:// URI. Binance kline "
        "CSV (12 columns, open time in ms or us, with or without header) or a CSV/Parquet with "
        "open_time_utc,open,high,low,close,volume[,quote_volume,trades].",
    )
    parser.add_argument(
        "--start",
        default=None,
        help="Range start, ISO-8601 date or date-time on a full hour (UTC if no offset). Required for "
        "binance; for a file, rows before it are ignored.",
    )
    parser.add_argument("--end", default=None, help="Range end (exclusive, on a full hour), like --start.")
    parser.add_argument(
        "--symbol",
        default=None,
        help="Symbol the candles belong to (default: the first of BTC_BINANCE_SYMBOLS).",
    )
    parser.add_argument(
        "--price",
        type=float,
        default=None,
        help="simulate: close of the last simulated hour (default: BTC_SIMULATE_START_PRICE, where the "
        "simulated stream starts).",
    )
    parser.add_argument("--seed", type=int, default=None, help="simulate: random seed (the same candles again).")
    parser.add_argument(
        "--overwrite-stream",
        action="store_true",
        help="Also replace hours that already hold a stream-consolidated row (default: keep them).",
    )
    parser.add_argument(
        "--repair",
        default=None,
        help="Gap repair (with --source binance, instead of --start/--end/--symbol): SYMBOL/START/END[,...] "
        "ranges of missing or under-covered hours, as the btc_hourly_consolidation DAG finds them.",
    )
    return add_common_options(parser)


def file_uri(path: str) -> str:
    """A local path becomes an absolute file:// URI; file:// and hdfs:// URIs pass through."""
    if urlparse(path).scheme in ("file", "hdfs"):
        return path
    if "://" in path:
        raise ConfigError(f"--file: unsupported URI scheme in {path!r} (use a path, file:// or hdfs://)")
    return f"file://{os.path.abspath(path)}"


def read_candle_file(spark, uri: str):
    """Normalised candles (``backfill_transforms.CANDLE_COLUMNS``) of a candle file."""
    if uri.rstrip("/").endswith((".parquet", ".pq")):
        df = spark.read.parquet(uri)
        if "open_time_utc" in df.columns:
            return bt.normalise_shared(df)
        if "open_time" in df.columns:
            return bt.normalise_klines(
                df.select(*[f.name for f in bt.KLINE_SCHEMA.fields if f.name in df.columns])
            )
        raise bt.CandleInputError(f"{uri}: Parquet without open_time_utc or open_time column ({df.columns})")
    first = spark.read.text(uri).first()
    if first is None:
        raise bt.CandleInputError(f"{uri}: empty file")
    layout = bt.detect_layout(first["value"])
    reader = spark.read.option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", bt.CORRUPT)
    if layout == "shared":
        header = first["value"].strip().lstrip("\ufeff").split(",")
        return bt.normalise_shared(
            reader.option("header", True).schema(bt.shared_csv_schema(header)).csv(uri)
        )
    return bt.normalise_klines(
        reader.option("header", layout == "kline_header").schema(bt.kline_csv_schema()).csv(uri)
    )


def fetch_klines(
    spark,
    settings: Settings,
    symbol: str,
    start: datetime,
    end: datetime,
    *,
    client=None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    page_limit: int | None = None,
):
    """Closed 1 h klines of [start, end) from the API, as normalised candles (None if there are none)."""
    client = client or BinanceClient.from_settings(settings)
    start_ms = int(start.timestamp() * 1000)
    end_ms = int(end.timestamp() * 1000) - 1  # the API's endTime is inclusive
    rows = list(
        client.iter_klines(symbol, KLINE_INTERVAL, start_ms, end_ms, limit=page_limit or MAX_KLINES_LIMIT)
    )
    now_ms = int(now().timestamp() * 1000)
    closed = [r for r in rows if int(r[6]) < now_ms]
    if len(closed) < len(rows):
        log.info(
            "left out %d kline(s) still open at %s (not complete hours)",
            len(rows) - len(closed),
            now().isoformat(),
        )
    log.info(
        "fetched %d closed %s kline(s) of %s for [%s, %s)",
        len(closed),
        KLINE_INTERVAL,
        symbol,
        start.isoformat(),
        end.isoformat(),
    )
    if not closed:
        return None
    return bt.normalise_klines(bt.klines_frame(spark, closed))


def simulate_candles(spark, start: datetime, end: datetime, price: float, seed: int | None):
    """Normalised candles of a simulated random walk over [start, end) ending at ``price``."""
    from btc_platform.ingest.simulated_history import simulated_klines
    from spark_jobs import backfill_transforms as bt

    rows = simulated_klines(start, end, price, seed)
    log.info("simulated %d hourly candle(s) for [%s, %s), last close %.2f (seed %s)", len(rows),
             start.isoformat(), end.isoformat(), price, seed)  # fmt: skip
    return bt.normalise_klines(bt.klines_frame(spark, rows))


def update_condition(overwrite_stream: bool, min_coverage: float = 0.95) -> str:
    """When a matched hourly row takes the candle's values (see the module docstring)."""
    return CHANGED if overwrite_stream else f"{datasets.candle_replaces(min_coverage)} AND ({CHANGED})"


def run(
    spark,
    settings: Settings,
    *,
    source: str,
    file: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    symbol: str | None = None,
    overwrite_stream: bool = False,
    produced_at: datetime | None = None,
    price: float | None = None,
    seed: int | None = None,
    client=None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    page_limit: int | None = None,
) -> BackfillStats:
    """Backfill one symbol's candles; ``client``/``now``/``page_limit`` are injectable for tests.

    Raises ``RangeError`` (start/end not on a full hour), ``ConfigError``, ``CandleInputError``
    (bad input: nothing written), ``ExchangeError``/``SchemaError`` (klines API).
    """
    require_hour_aligned(start, end)
    symbol = (symbol or settings.binance_symbols[0]).upper()
    produced_at = produced_at or now()
    hourly_source = datasets.HOURLY_SOURCE_BACKFILL
    if source in RANGED_SOURCES and (start is None or end is None):
        raise ConfigError(f"--source {source} needs --start and --end")
    if source == "binance":
        candles, what = (
            fetch_klines(spark, settings, symbol, start, end, client=client, now=now, page_limit=page_limit),
            "klines API",
        )
        if candles is None:
            return BackfillStats(0)
    elif source == "file":
        if not file:
            raise ConfigError("--source file needs --file")
        what = file_uri(file)
        candles = read_candle_file(spark, what)
    elif source == "simulate":
        what, hourly_source = "the simulator", datasets.HOURLY_SOURCE_SIMULATED
        candles = simulate_candles(spark, start, end, settings.simulate_start_price if price is None else price, seed)
    else:
        raise ConfigError(f"unknown --source {source!r}")

    candles = candles.cache()
    try:
        summary = bt.problems(candles).first()
        repeated = None
        if summary["distinct_hours"] != summary["rows"] - summary["bad_time"]:
            repeated = bt.duplicate_hours(candles)
        bt.raise_on_problems(summary, what, repeated, symbol)
        if summary["rows"] == 0:
            log.warning("%s: no candles", what)
            return BackfillStats(0)
        first = datetime.fromtimestamp(summary["first_hour_s"], UTC)
        last = datetime.fromtimestamp(summary["last_hour_s"], UTC)
        first, last = (
            max(first, start) if start else first,
            min(last, end - timedelta(hours=1)) if end else last,
        )
        # computed once as a plain RDD plan: MERGE reads its source twice
        incoming = bt.candles_to_hourly(
            bt.in_range(candles, start, end), symbol, produced_at, source=hourly_source
        ).localCheckpoint(eager=True)
        in_range = incoming.count()
        if in_range == 0:
            log.warning("%s: no candle in [%s, %s)", what, start, end)
            return BackfillStats(0)
        hourly_uri = tables.ensure_table(
            spark, settings, datasets.HOURLY_METRICS, datasets.struct_type(datasets.HOURLY_METRICS_COLUMNS)
        )
        skipped = 0
        if not overwrite_stream:
            existing = tables.read_range(spark, hourly_uri, "hour_start", first, last + timedelta(hours=1))
            skipped = bt.stream_hours(incoming, existing, settings.hourly_min_stream_coverage).count()
        metadata = {"job": "backfill", "symbol": symbol, "start": first.isoformat(),
                    "end": (last + timedelta(hours=1)).isoformat(), "input": what,
                    "overwrite_stream": overwrite_stream}  # fmt: skip
        with tables.commit_metadata(spark, metadata):
            counts = tables.merge_rows(
                spark, hourly_uri, incoming, KEYS, update_when=update_condition(overwrite_stream, settings.hourly_min_stream_coverage)
            )
        stats = BackfillStats(
            candles=in_range,
            inserted=counts.get("num_inserted_rows", 0),
            updated=counts.get("num_updated_rows", 0),
            skipped_stream=skipped,
        )
        if skipped:
            log.info("kept %d hour(s) already consolidated from the stream (use --overwrite-stream to replace "
                     "them)", skipped)  # fmt: skip
        log.info("backfilled %d candle(s) of %s from %s (%s .. %s) into %s: %d new, %d changed, %d unchanged, "
                 "%d stream hour(s) kept", in_range, symbol, what, f"{first:%Y-%m-%dT%H:%M}Z",
                 f"{last:%Y-%m-%dT%H:%M}Z", hourly_uri, stats.inserted, stats.updated,
                 in_range - stats.written - skipped, skipped)  # fmt: skip
        return stats
    finally:
        candles.unpersist()


def prepare(args: argparse.Namespace, settings: Settings) -> Work:
    """The backfill the options ask for (``ConfigError``/``RangeError`` when they do not fit)."""
    start = parse_utc(args.start) if args.start else None
    end = parse_utc(args.end) if args.end else None
    require_hour_aligned(start, end)
    try:
        ranges = gaps.parse_ranges(args.repair) if args.repair is not None else None
    except gaps.GapRangeError as exc:
        raise ConfigError(str(exc)) from exc
    if ranges is not None:
        if args.source != "binance" or start or end or args.symbol:
            raise ConfigError("--repair goes with --source binance and without --start/--end/--symbol")
        return Work(lambda spark: repair(spark, settings, ranges), what="gap repair",
                    expected=(bt.CandleInputError, ExchangeError, SchemaError))  # fmt: skip
    if args.source in RANGED_SOURCES and (start is None or end is None):
        raise ConfigError(f"--source {args.source} needs --start and --end")
    if args.price is not None and not args.price > 0:
        raise ConfigError(f"--price must be > 0, got {args.price}")
    if args.source == "file" and not args.file:
        raise ConfigError("--source file needs --file")
    if args.file:
        uri = urlparse(file_uri(args.file))
        if uri.scheme == "file" and not os.path.exists(uri.path):
            raise ConfigError(f"--file: no such file or directory: {uri.path} (the path of an hourly candle CSV or "
                              "Parquet file, or a directory of them)")  # fmt: skip
    return Work(
        lambda spark: run(spark, settings, source=args.source, file=args.file, start=start, end=end,
                          symbol=args.symbol, overwrite_stream=args.overwrite_stream, price=args.price,
                          seed=args.seed),
        what="backfill",
        expected=(bt.CandleInputError, ExchangeError, SchemaError),
    )  # fmt: skip


def repair(spark, settings: Settings, ranges, **kwargs) -> list[BackfillStats]:
    """Backfill each ``(symbol, start, end)`` range of missing or under-covered hours from the
    klines API (``btc_platform.lakehouse.gaps``); the MERGE keeps complete stream hours."""
    results = []
    for symbol, start, end in ranges:
        log.info("gap repair: %s [%s, %s)", symbol, start.isoformat(), end.isoformat())
        results.append(run(spark, settings, source="binance", start=start, end=end, symbol=symbol, **kwargs))
    return results


def main(argv: list[str] | None = None) -> int:
    return job_main("backfill_job", build_parser(), argv, prepare, app_name=APP_NAME, log=log)


if __name__ == "__main__":
    sys.exit(main())
