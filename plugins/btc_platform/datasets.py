"""Dataset layout under the storage root: names, partitioning and the columns each job writes.

This is the contract between the streaming job (writes raw_data, minute_metrics, quarantine),
the consolidation/backfill jobs (read minute_metrics, write hourly_metrics and data-quality
reports) and the models (read hourly_metrics, write models/, predictions/...). Column lists are
plain data so that importing this module never imports Spark.
"""

from __future__ import annotations

from collections.abc import Sequence

# ---- dataset directories (relative to the storage root) ----------------------------------
RAW_DATA = "raw_data"
MINUTE_METRICS = "minute_metrics"
QUARANTINE = "quarantine"
HOURLY_METRICS = "hourly_metrics"
DATA_QUALITY = "data_quality"
PREDICTIONS = "predictions"
FUTURE_PREDICTIONS = "future_predictions"
PREDICTION_METRICS = "prediction_metrics"
MODELS = "models"
CHECKPOINT_RAW = "checkpoints/raw"
CHECKPOINT_METRICS = "checkpoints/metrics"
#: Checkpoint of the separate quarantine query of the earlier layout (only checked for, see
#: stream_sinks.check_checkpoint_layout).
CHECKPOINT_QUARANTINE = "checkpoints/quarantine"

#: Partition columns of raw_data, minute_metrics, quarantine and hourly_metrics:
#: ``date`` = "YYYY-MM-DD" (string) and ``hour`` = 0..23 (int) of the event time in UTC.
#: hourly_metrics therefore holds exactly one partition per hour.
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
    ("volume", DOUBLE),  # base volume (candles); null for stream hours
    ("quote_volume", DOUBLE),  # quote volume (candles); null for stream hours
    ("trade_count", LONG),  # trades (candles); null for stream hours
    ("market_cap", DOUBLE),
    ("cg_volume_24h", DOUBLE),
    ("cg_price_change_pct_24h", DOUBLE),
    ("source", STRING),  # stream | backfill
    ("produced_at", TIMESTAMP),
    ("date", STRING),
    ("hour", INT),
)

HOURLY_SOURCE_STREAM = "stream"
HOURLY_SOURCE_BACKFILL = "backfill"


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
