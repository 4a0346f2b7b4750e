"""Table layout under the storage root: names, partitioning, keys and the columns each job writes.

This is the contract between the streaming job (writes raw_data, minute_metrics, quarantine),
the consolidation/backfill jobs (read minute_metrics, MERGE into hourly_metrics, write
data_quality) and the models (read hourly_metrics, write models/, predictions...). Every dataset
is a Delta Lake table in its own directory under the storage root (``file://`` locally,
``hdfs://`` on a cluster); :data:`TABLES` says how each is laid out. Column lists are plain data
so that importing this module never imports Spark.

Partitioning follows one rule: a table is partitioned only when each partition holds a lot of
data over its life. raw_data (every message) is partitioned by ``date`` of the event time, so a
closed day is compacted into a few files by the maintenance DAG; everything else is small
(hourly_metrics is ~9,000 rows a year per symbol) and is one unpartitioned table whose small
files OPTIMIZE compacts. ``date``/``hour`` stay as plain columns where they were, for filters.

pyspark is imported only by :func:`struct_type`: DAG files import this module at parse time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# ---- dataset directories (relative to the storage root) ----------------------------------
RAW_DATA = "raw_data"
MINUTE_METRICS = "minute_metrics"
QUARANTINE = "quarantine"
HOURLY_METRICS = "hourly_metrics"
DATA_QUALITY = "data_quality"
PREDICTIONS = "predictions"
FUTURE_PREDICTIONS = "future_predictions"
PREDICTION_METRICS = "prediction_metrics"
FORECAST_ACTUALS = "forecast_actuals"
MODELS = "models"
CHECKPOINT_RAW = "checkpoints/raw"
CHECKPOINT_METRICS = "checkpoints/metrics"
#: Checkpoint of the separate quarantine query of the earlier layout (only checked for, see
#: stream_sinks.check_checkpoint_layout).
CHECKPOINT_QUARANTINE = "checkpoints/quarantine"

#: ``date`` = "YYYY-MM-DD" (string) and ``hour`` = 0..23 (int) of the event time in UTC: columns
#: of raw_data, minute_metrics and hourly_metrics; raw_data is partitioned by ``date``.
PARTITION_COLUMNS = ("date", "hour")

STRING, LONG, DOUBLE, TIMESTAMP, INT = "string", "long", "double", "timestamp", "int"

#: minute_metrics: one row per symbol per 1-minute event-time window, written once when the
#: watermark passes the window end. Prices are mid prices ((bid+ask)/2) of book_ticker
#: messages; CoinGecko and 24 h ticker fields are the latest seen in the window (null if none).
MINUTE_METRICS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("symbol", STRING),
    ("window_start", TIMESTAMP),
    ("window_end", TIMESTAMP),
    ("mid_open", DOUBLE),
    ("mid_high", DOUBLE),
    ("mid_low", DOUBLE),
    ("mid_close", DOUBLE),
    ("spread_mean", DOUBLE),
    ("spread_max", DOUBLE),
    ("spread_pct_mean", DOUBLE),
    ("spread_pct_max", DOUBLE),
    ("bid_liquidity_mean", DOUBLE),  # bid_qty, base currency
    ("ask_liquidity_mean", DOUBLE),  # ask_qty, base currency
    ("liquidity_base_mean", DOUBLE),  # bid_qty + ask_qty
    ("liquidity_quote_mean", DOUBLE),  # bid_qty*bid_price + ask_qty*ask_price
    ("volatility", DOUBLE),  # stddev of mid-price log returns inside the window (null if < 2 returns)
    ("mid_range", DOUBLE),  # mid_high - mid_low
    ("tick_count", LONG),  # book_ticker messages in the window
    ("volume_24h", DOUBLE),  # latest Binance 24 h base volume
    ("quote_volume_24h", DOUBLE),  # latest Binance 24 h quote volume
    ("price_change_pct_24h", DOUBLE),  # latest Binance 24 h change %
    ("market_cap", DOUBLE),  # latest CoinGecko market cap (USD)
    ("cg_volume_24h", DOUBLE),  # latest CoinGecko 24 h volume (USD)
    ("cg_price_change_pct_24h", DOUBLE),  # latest CoinGecko 24 h change %
    ("date", STRING),
    ("hour", INT),
    # added with message schema 2 (existing tables get them through tables.ensure_table)
    ("volume", DOUBLE),  # base volume traded in the minute (its closed 1m kline; null if none arrived)
    ("quote_volume", DOUBLE),  # quote volume of the minute's kline
    ("trade_count", LONG),  # trades of the minute's kline
    # messages of every type the window took (consolidation compares it with raw_data to find
    # rows that came too late for the stream's window and windows them from raw_data); null in
    # rows written before it was added
    ("message_count", LONG),
)

#: hourly_metrics: one row per symbol per hour (``hour_start``), in partition date=/hour=.
#: ``source`` is ``stream`` (consolidated from minute_metrics) or ``backfill`` (from candles;
#: microstructure fields spread/liquidity/tick_count are null there, never invented).
HOURLY_METRICS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("symbol", STRING),
    ("hour_start", TIMESTAMP),
    ("open", DOUBLE),
    ("high", DOUBLE),
    ("low", DOUBLE),
    ("close", DOUBLE),
    ("spread_mean", DOUBLE),
    ("spread_max", DOUBLE),
    ("spread_pct_mean", DOUBLE),
    ("spread_pct_max", DOUBLE),
    ("liquidity_base_mean", DOUBLE),
    ("liquidity_quote_mean", DOUBLE),
    ("volatility", DOUBLE),  # realized volatility: stddev of minute log returns of close
    ("tick_count", LONG),
    ("minutes_present", INT),  # minutes with a mid price (null for a backfilled candle: unknown)
    ("coverage", DOUBLE),  # minutes_present / 60 (1.0 for a backfilled candle)
    ("volume", DOUBLE),  # base volume: the candle's, or for a stream hour the sum of its minutes' 1m klines
    ("quote_volume", DOUBLE),  # quote volume, likewise
    ("trade_count", LONG),  # trades, likewise
    ("market_cap", DOUBLE),
    ("cg_volume_24h", DOUBLE),
    ("cg_price_change_pct_24h", DOUBLE),
    ("source", STRING),  # stream | backfill | simulated
    ("produced_at", TIMESTAMP),
    ("date", STRING),
    ("hour", INT),
    # added with message schema 2: minutes whose closed 1m kline the stream received (volume is
    # complete at 60); null for a backfilled candle (its volume is the whole hour's)
    ("volume_minutes", INT),
)

HOURLY_SOURCE_STREAM = "stream"
HOURLY_SOURCE_BACKFILL = "backfill"
#: Candles of the simulator (``btc_backfill`` with source=simulate, the offline first run).
HOURLY_SOURCE_SIMULATED = "simulated"

#: data_quality: the outcome of each data-quality check (``btc_platform.lakehouse.quality.CHECKS``) for
#: each symbol and hour it looked at, one row per (symbol, hour_start, check); the run that
#: checked the hour last replaces the row. An hour without a hourly_metrics row only has its
#: failed ``hour_gap`` row (the row checks have nothing to look at).
DATA_QUALITY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("symbol", STRING),
    ("hour_start", TIMESTAMP),
    ("check", STRING),
    ("severity", STRING),  # error | warning
    ("status", STRING),  # pass | fail
    ("detail", STRING),  # what the failure means (e.g. "high < low"); null when passed
    ("range_start", TIMESTAMP),  # the range [range_start, range_end) the run checked
    ("range_end", TIMESTAMP),
    ("checked_at", TIMESTAMP),
)


def struct_type(columns: Sequence[tuple[str, str]]):
    """Spark ``StructType`` for one of the column lists above (imports pyspark lazily)."""
    from pyspark.sql import types as T

    mapping = {
        STRING: T.StringType(),
        LONG: T.LongType(),
        DOUBLE: T.DoubleType(),
        TIMESTAMP: T.TimestampType(),
        INT: T.IntegerType(),
    }
    return T.StructType([T.StructField(name, mapping[kind], True) for name, kind in columns])


def column_names(columns: Sequence[tuple[str, str]]) -> list[str]:
    return [name for name, _ in columns]


def changed_condition(
    columns: Sequence[str], keys: Sequence[str], ignore: Sequence[str] = ("produced_at",)
) -> str:
    """MERGE update condition "a value of the row changed" (Spark SQL over target ``t`` and
    source ``s``): true when one of ``columns`` other than ``keys`` and ``ignore`` differs, nulls
    compared as values, so merging the same rows again rewrites nothing."""
    return " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in columns if c not in (*keys, *ignore))


def stream_hour_replaces(min_coverage: float) -> str:
    """MERGE condition (target ``t``, source ``s`` a stream-consolidated hour): the stream hour
    replaces the row it matches when that row is a stream hour too (a newer consolidation of the
    same minutes or more), or when its coverage reaches ``min_coverage`` or the row's own: a
    partial stream hour never replaces a more complete candle."""
    return (f"(t.`source` <=> '{HOURLY_SOURCE_STREAM}' OR s.`coverage` >= {float(min_coverage)!r} "
            "OR s.`coverage` >= t.`coverage`)")


def candle_replaces(min_coverage: float) -> str:
    """MERGE condition (target ``t``, source ``s`` a candle): the candle replaces any row but a
    stream hour whose coverage reaches ``min_coverage`` (the complete stream hour stays)."""
    return (f"(NOT (t.`source` <=> '{HOURLY_SOURCE_STREAM}') OR NOT coalesce(t.`coverage` >= {float(min_coverage)!r}, false))")


#: Table property of Delta's auto compaction (Delta OSS 3.1+): a write that leaves at least
#: ``spark.databricks.delta.autoCompact.minNumFiles`` small files in a partition it touched is
#: followed, in the writer's session, by a compaction of that partition (an OPTIMIZE commit).
AUTO_COMPACT = "delta.autoOptimize.autoCompact"


@dataclass(frozen=True)
class Table:
    """Layout of one Delta table: its directory name under the storage root, partition columns,
    the key that identifies a row (what MERGE matches on) and table properties."""

    name: str
    description: str
    partition_by: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    #: partition column whose closed values (e.g. past days) OPTIMIZE compacts; None = whole table
    compact_by: str | None = None
    properties: dict[str, str] = field(default_factory=dict)


#: Every table of the platform, in the order the maintenance DAG visits them. The tables Spark
#: writes many times a day (the stream's every micro-batch, the hourly MERGEs) have auto
#: compaction on; the daily OPTIMIZE then finds a few files per partition to compact.
TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(RAW_DATA, "every valid message once, with its per-record metrics",
              partition_by=("date",), keys=("message_id",), compact_by="date",
              # file statistics (data skipping) only on the columns reads filter by: statistics
              # of every column made the stream's appends measurably slower (docs/benchmarks.md). The
              # stream's message_id lookup reads the files of a batch's exchange_time/event_time
              properties={"delta.dataSkippingStatsColumns":
                          "symbol,message_type,event_time,ingest_time,exchange_time",
                          AUTO_COMPACT: "true"}),
        Table(QUARANTINE, "records that failed parsing or validation, raw bytes and reason",
              keys=("quarantine_key",), properties={AUTO_COMPACT: "true"}),
        Table(MINUTE_METRICS, "one row per symbol and 1-minute event-time window",
              keys=("symbol", "window_start"),
              # consolidation finds minutes that arrived late through the change data feed
              # (compaction commits change no data: the feed leaves them out)
              properties={"delta.enableChangeDataFeed": "true", AUTO_COMPACT: "true"}),
        Table(HOURLY_METRICS, "one row per symbol and hour: consolidated stream hours and backfilled candles",
              keys=("symbol", "hour_start"), properties={AUTO_COMPACT: "true"}),
        Table(DATA_QUALITY, "data-quality check results per symbol and hour",
              keys=("symbol", "hour_start", "check"), properties={AUTO_COMPACT: "true"}),
        Table(PREDICTIONS, "backtest predictions of each model version", keys=("model_version",)),
        Table(FUTURE_PREDICTIONS, "served forecasts of the next hours"),
        Table(PREDICTION_METRICS, "evaluation metrics of each model version", keys=("model_version",)),
        Table(FORECAST_ACTUALS, "served forecasts against the closes that arrived: errors and band hits",
              keys=("symbol", "model_version", "origin_hour_start", "horizon")),
    )
}  # fmt: skip
