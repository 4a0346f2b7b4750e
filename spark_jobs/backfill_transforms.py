"""Pure transforms of the history backfill: hourly candles -> hourly_metrics rows.

Inputs, all normalised by :func:`normalise_klines` / :func:`normalise_shared` to one candle
frame (``CANDLE_COLUMNS``):

* Binance klines, from the REST API (``GET /api/v3/klines`` rows, see :func:`klines_frame`) or a
  Binance kline CSV (data.binance.vision layout: 12 columns, no header or an ``open_time,...``
  header; open/close time in epoch milliseconds, or microseconds in 2025+ files);
* the "shared" candle layout ``open_time_utc,open,high,low,close,volume[,quote_volume,trades]``
  (ISO-8601 UTC open time, header line), as CSV or Parquet.

What a candle-derived hour carries (decided here, documented in docs/architecture.md):

* ``open/high/low/close`` (trade prices, not mid prices: candles have no quotes), ``volume``,
  ``quote_volume``, ``trade_count`` where the input has them (null otherwise, e.g. pre-2023
  rows of the shared file);
* ``coverage`` = 1.0: the exchange computed the candle over the whole hour;
* ``minutes_present`` = null: a candle does not say how many minutes had trades, so the count
  is not invented; ``tick_count`` null (no book-ticker messages were observed);
* ``spread_*``, ``liquidity_*``, ``volatility`` (needs minute returns), CoinGecko fields: null;
* ``source`` = ``backfill`` (``simulated`` for the simulator's candles).

Every input row must become a candle: malformed lines, unparseable times, missing prices,
impossible prices (high < low, or open/high/low/close <= 0 or NaN), candles that are not 1 hour
long or not hour aligned, and repeated hours fail the job with :class:`CandleInputError` naming
examples (nothing is dropped silently, nothing is written).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from functools import reduce
from operator import or_

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from btc_platform.lakehouse import datasets

HOUR_MS = 3_600_000
#: Open times at or above this are microseconds (Binance's 2025+ files), below: milliseconds.
MICROS_THRESHOLD = 10**14
CORRUPT = "_corrupt_record"
MAX_EXAMPLES = 3
#: How many impossible candles the error names (symbol, open time and prices each).
MAX_INVALID_LISTED = 10
PRICE_COLUMNS = ("open", "high", "low", "close")

KLINE_SCHEMA = T.StructType(
    [
        T.StructField("open_time", T.LongType()),
        T.StructField("open", T.DoubleType()),
        T.StructField("high", T.DoubleType()),
        T.StructField("low", T.DoubleType()),
        T.StructField("close", T.DoubleType()),
        T.StructField("volume", T.DoubleType()),
        T.StructField("close_time", T.LongType()),
        T.StructField("quote_volume", T.DoubleType()),
        T.StructField("trades", T.LongType()),
        T.StructField("taker_buy_base_volume", T.DoubleType()),
        T.StructField("taker_buy_quote_volume", T.DoubleType()),
        T.StructField("ignore", T.StringType()),
    ]
)

SHARED_COLUMNS = ("open_time_utc", "open", "high", "low", "close", "volume", "quote_volume", "trades")
_SHARED_TYPES = {"open_time_utc": T.StringType(), "trades": T.LongType()}

#: The normalised candle frame.
CANDLE_COLUMNS = (
    "hour_start",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_count",
    "interval_ms",
    "raw",
)


class CandleInputError(ValueError):
    """Candle input that cannot be backfilled as is; the message names examples."""


def kline_csv_schema() -> T.StructType:
    return T.StructType([*KLINE_SCHEMA.fields, T.StructField(CORRUPT, T.StringType())])


def shared_csv_schema(header: Iterable[str]) -> T.StructType:
    """Schema for the shared layout with the columns named in ``header`` (in file order)."""
    names = [h.strip() for h in header]
    unknown = [n for n in names if n not in SHARED_COLUMNS]
    missing = [n for n in SHARED_COLUMNS[:6] if n not in names]
    if unknown or missing:
        raise CandleInputError(
            f"candle header {','.join(names)!r}: expected {','.join(SHARED_COLUMNS[:6])}[,quote_volume,trades]"
            + (f"; unknown {unknown}" if unknown else "")
            + (f"; missing {missing}" if missing else "")
        )
    fields = [T.StructField(n, _SHARED_TYPES.get(n, T.DoubleType())) for n in names]
    return T.StructType([*fields, T.StructField(CORRUPT, T.StringType())])


def detect_layout(first_line: str) -> str:
    """``kline`` (no header), ``kline_header`` or ``shared`` from a file's first line."""
    first = first_line.strip().lstrip("\ufeff").split(",")[0].strip().strip('"')
    if first == "open_time_utc":
        return "shared"
    if first == "open_time":
        return "kline_header"
    if first.isdigit():
        return "kline"
    raise CandleInputError(
        f"unrecognised candle file: first line {first_line[:80]!r} is neither a Binance kline row, "
        "an 'open_time,...' header nor an 'open_time_utc,open,high,low,close,volume' header"
    )


def _raw(columns: Iterable[str]) -> Column:
    return F.coalesce(F.col(CORRUPT), F.concat_ws(",", *[F.col(c).cast("string") for c in columns]))


def normalise_klines(df: DataFrame) -> DataFrame:
    """Kline rows (``KLINE_SCHEMA`` [+ ``_corrupt_record``]) -> ``CANDLE_COLUMNS``.

    Open/close times in microseconds (>= 1e14) are recognised per row.
    """
    if CORRUPT not in df.columns:
        df = df.withColumn(CORRUPT, F.lit(None).cast("string"))
    micros = F.col("open_time") >= F.lit(MICROS_THRESHOLD)
    hour_start = F.when(micros, F.timestamp_micros("open_time")).otherwise(F.timestamp_millis("open_time"))
    interval = F.when(micros, F.floor((F.col("close_time") - F.col("open_time") + 1) / 1000)).otherwise(
        F.col("close_time") - F.col("open_time") + 1
    )
    return df.select(
        F.when(F.col(CORRUPT).isNull(), hour_start).alias("hour_start"),
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        F.col("trades").alias("trade_count"),
        interval.cast("long").alias("interval_ms"),
        _raw(["open_time", "open", "high", "low", "close", "volume", "close_time"]).alias("raw"),
    )


def normalise_shared(df: DataFrame) -> DataFrame:
    """Shared-layout rows (``open_time_utc`` ISO string or timestamp, ...) -> ``CANDLE_COLUMNS``."""
    if CORRUPT not in df.columns:
        df = df.withColumn(CORRUPT, F.lit(None).cast("string"))
    for optional, kind in (("quote_volume", "double"), ("trades", "long")):
        if optional not in df.columns:
            df = df.withColumn(optional, F.lit(None).cast(kind))
    open_time = F.col("open_time_utc")
    if isinstance(df.schema["open_time_utc"].dataType, T.StringType):
        open_time = F.try_to_timestamp(F.trim(open_time), F.lit("yyyy-MM-dd'T'HH:mm:ss[.SSS]XXX"))
    return df.select(
        F.when(F.col(CORRUPT).isNull(), open_time.cast("timestamp")).alias("hour_start"),
        *[
            F.col(c).cast("double").alias(c)
            for c in ("open", "high", "low", "close", "volume", "quote_volume")
        ],
        F.col("trades").cast("long").alias("trade_count"),
        F.lit(None).cast("long").alias("interval_ms"),
        _raw(["open_time_utc", "open", "high", "low", "close", "volume"]).alias("raw"),
    )


def klines_frame(spark: SparkSession, rows: list[list]) -> DataFrame:
    """A Spark frame (``KLINE_SCHEMA``) of raw API kline arrays (12 values, numbers as strings)."""
    from btc_platform.ingest.normalize import parse_kline

    parsed = []
    for row in rows:
        k = parse_kline(row)  # SchemaError on a malformed row
        parsed.append(
            (
                k.open_time_ms,
                float(k.open),
                float(k.high),
                float(k.low),
                float(k.close),
                float(k.volume),
                k.close_time_ms,
                float(k.quote_volume),
                k.trades,
                float(k.taker_buy_base_volume),
                float(k.taker_buy_quote_volume),
                str(row[11]),
            )
        )
    return spark.createDataFrame(parsed, schema=KLINE_SCHEMA)


def in_range(candles: DataFrame, start: datetime | None, end: datetime | None) -> DataFrame:
    if start is not None:
        candles = candles.where(F.col("hour_start") >= F.lit(start))
    if end is not None:
        candles = candles.where(F.col("hour_start") < F.lit(end))
    return candles


def invalid_price() -> Column:
    """A candle whose prices cannot be true: high < low, or a price <= 0 or NaN (missing prices
    are reported on their own)."""
    prices = [F.col(c) for c in PRICE_COLUMNS]
    return (F.col("high") < F.col("low")) | reduce(or_, [(p <= 0) | F.isnan(p) for p in prices])


def problems(candles: DataFrame) -> DataFrame:
    """One row describing the candles: counts and examples of each problem, and the hour range."""
    bad_time = F.col("hour_start").isNull()
    missing_price = ~bad_time & reduce(or_, [F.col(c).isNull() for c in PRICE_COLUMNS])
    unaligned = ~bad_time & (F.col("hour_start") != F.date_trunc("hour", F.col("hour_start")))
    wrong_interval = F.col("interval_ms").isNotNull() & (F.col("interval_ms") != F.lit(HOUR_MS))
    invalid = ~bad_time & ~missing_price & invalid_price()

    def examples(cond: Column) -> Column:
        return F.slice(F.array_sort(F.collect_list(F.when(cond, F.col("raw")))), 1, MAX_EXAMPLES)

    # the earliest impossible candles by open time, with their prices
    invalid_candle = F.struct(F.unix_seconds("hour_start").alias("s"), *[F.col(c) for c in PRICE_COLUMNS])
    return candles.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count_distinct("hour_start").alias("distinct_hours"),
        F.unix_seconds(F.min("hour_start")).alias("first_hour_s"),  # epoch seconds: no local-time
        F.unix_seconds(F.max("hour_start")).alias("last_hour_s"),  # conversion on collect
        F.count(F.when(bad_time, 1)).alias("bad_time"),
        examples(bad_time).alias("bad_time_examples"),
        F.count(F.when(missing_price, 1)).alias("missing_price"),
        examples(missing_price).alias("missing_price_examples"),
        F.count(F.when(invalid, 1)).alias("invalid_price"),
        F.slice(F.array_sort(F.collect_list(F.when(invalid, invalid_candle))), 1, MAX_INVALID_LISTED).alias(
            "invalid_price_examples"
        ),
        F.count(F.when(unaligned, 1)).alias("unaligned"),
        examples(unaligned).alias("unaligned_examples"),
        F.count(F.when(wrong_interval, 1)).alias("wrong_interval"),
        examples(wrong_interval).alias("wrong_interval_examples"),
    )


def format_candle(symbol: str, candle) -> str:
    """``BTCUSDT@2024-01-01T05:00Z (open 1.0, high 0.5, low 2.0, close 1.0)`` of an example row."""
    when = datetime.fromtimestamp(candle["s"], UTC).strftime("%Y-%m-%dT%H:%MZ")
    prices = ", ".join(f"{c} {candle[c]!r}" for c in PRICE_COLUMNS)
    return f"{symbol}@{when} ({prices})"


def raise_on_problems(summary, source: str, repeated: list[datetime] | None = None, symbol: str = "") -> None:
    """``CandleInputError`` naming every kind of problem found by :func:`problems`.

    ``repeated``: examples of repeated hours (:func:`duplicate_hours`), named in the message;
    ``symbol``: the symbol the candles are for, named with each impossible candle.
    """
    messages = []
    labels = {
        "bad_time": "malformed line or unparseable open time",
        "missing_price": "missing open/high/low/close",
        "unaligned": "open time not on a full UTC hour (not an hourly candle file?)",
        "wrong_interval": "candle not 1 hour long (close_time - open_time)",
    }
    for key, label in labels.items():
        if summary[key]:
            messages.append(f"{summary[key]} row(s) with {label}, e.g. {summary[key + '_examples']}")
    if summary["invalid_price"]:
        listed = ", ".join(format_candle(symbol, c) for c in summary["invalid_price_examples"])
        more = summary["invalid_price"] - len(summary["invalid_price_examples"])
        messages.append(
            f"{summary['invalid_price']} candle(s) with high < low or a price <= 0: {listed}"
            + (f" (+{more} more)" if more > 0 else "")
        )
    valid_hours = summary["rows"] - summary["bad_time"]
    if not messages and summary["distinct_hours"] != valid_hours:
        examples = ", ".join(f"{h:%Y-%m-%dT%H:%M}Z" for h in repeated or [])
        messages.append(
            f"{valid_hours - summary['distinct_hours']} repeated hour(s) (the same open time twice), e.g. [{examples}]"
        )
    if messages:
        raise CandleInputError(f"{source}: " + "; ".join(messages))


def duplicate_hours(candles: DataFrame, limit: int = MAX_EXAMPLES) -> list[datetime]:
    rows = candles.groupBy("hour_start").count().where(F.col("count") > 1).orderBy("hour_start").limit(limit)
    return [
        datetime.fromtimestamp(r["s"], UTC)
        for r in rows.select(F.unix_seconds("hour_start").alias("s")).collect()
    ]


def candles_to_hourly(
    candles: DataFrame, symbol: str, produced_at: datetime, source: str = datasets.HOURLY_SOURCE_BACKFILL
) -> DataFrame:
    """Validated candles -> hourly_metrics rows (``datasets.HOURLY_METRICS_COLUMNS``), with ``source``
    (backfill; simulated for simulated history)."""
    out = candles.select(
        F.lit(symbol).alias("symbol"),
        "hour_start",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        "trade_count",
    ).withColumns(
        {
            "coverage": F.lit(1.0),
            "source": F.lit(source),
            "produced_at": F.lit(produced_at),
            "date": F.date_format("hour_start", "yyyy-MM-dd"),
            "hour": F.hour("hour_start"),
        }
    )
    columns = []
    for name, kind in datasets.HOURLY_METRICS_COLUMNS:
        value = F.col(name) if name in out.columns else F.lit(None)  # microstructure: null, never invented
        columns.append(value.cast(kind).alias(name))
    return out.select(*columns)


def stream_hours(incoming: DataFrame, existing: DataFrame, min_coverage: float = 0.0) -> DataFrame:
    """The (symbol, hour_start) pairs of ``incoming`` that ``existing`` holds from the stream with a
    coverage of at least ``min_coverage`` (the hours a candle leaves alone)."""
    complete = F.col("coverage") >= F.lit(min_coverage)
    stream = existing.where((F.col("source") == datasets.HOURLY_SOURCE_STREAM) & complete).select("symbol", "hour_start")
    return incoming.select("symbol", "hour_start").join(stream, ["symbol", "hour_start"], "left_semi")
