"""Pure transforms of the hourly consolidation: minute_metrics rows -> hourly_metrics rows.

One output row per (symbol, UTC hour) that has at least one minute with a price; an hour
without such minutes produces no row (the data-quality ``hour_gap`` check reports it).

How each hourly column is derived from the minutes of the hour (``datasets`` column lists):

* ``open`` / ``close``: ``mid_open`` of the earliest / ``mid_close`` of the latest minute with a
  price; ``high`` / ``low``: max of ``mid_high`` / min of ``mid_low``.
* ``spread_mean``, ``spread_pct_mean``, ``liquidity_base_mean``, ``liquidity_quote_mean``:
  **tick-weighted** means of the minute means (weight = the minute's ``tick_count``), i.e.
  exactly the mean over every book-ticker message of the hour, not a mean of means that
  would over-weight quiet minutes. ``spread_max`` / ``spread_pct_max``: max of the minute maxima.
* ``volatility``: sample standard deviation of the 1-minute log returns
  ``ln(close_t / close_{t-1})`` between *consecutive* minutes of the hour (a return across a
  missing minute is not a 1-minute return and is left out); not annualised; null with fewer
  than two returns.
* ``tick_count``: sum; ``minutes_present``: distinct minutes with a price;
  ``coverage`` = minutes_present / 60.
* ``market_cap``, ``cg_volume_24h``, ``cg_price_change_pct_24h``: the latest non-null value of
  the hour (each field on its own), null if CoinGecko said nothing that hour.
* ``volume``, ``quote_volume``, ``trade_count``: sums of the minutes' values (each minute's
  closed 1-minute kline, as a backfilled candle sums the same trades); ``volume_minutes``: how
  many minutes had their kline (60 = complete; the ``volume_incomplete`` data-quality check
  reports fewer); all null when no kline arrived that hour, never 0 for "unknown".
* ``source`` = ``stream``; ``produced_at`` = the run's time (given by the caller).

Minute rows repeated for the same (symbol, window_start) - impossible with the exactly-once
file sink, possible after a manual re-run of the stream - are reduced to one (the one with the
most ticks; :func:`duplicate_minutes` counts them so the job can log it).
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from btc_platform.lakehouse import datasets

MINUTES_PER_HOUR = 60


def select_range(minutes: DataFrame, start: datetime, end: datetime) -> DataFrame:
    """Minute rows whose window starts in ``[start, end)``."""
    return minutes.where((F.col("window_start") >= F.lit(start)) & (F.col("window_start") < F.lit(end)))


def duplicate_minutes(minutes: DataFrame) -> DataFrame:
    """One row ``duplicates`` = rows beyond the first per (symbol, window_start)."""
    return minutes.agg((F.count(F.lit(1)) - F.count_distinct("symbol", "window_start")).alias("duplicates"))


def deduplicate_minutes(minutes: DataFrame) -> DataFrame:
    """One row per (symbol, window_start): the one with the most ticks (deterministic ties)."""
    order = Window.partitionBy("symbol", "window_start").orderBy(
        F.col("tick_count").desc_nulls_last(),
        F.col("window_end").desc_nulls_last(),
        F.col("mid_close").desc_nulls_last(),
        F.col("mid_open").desc_nulls_last(),
        F.col("spread_mean").desc_nulls_last(),
    )
    return minutes.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") == 1).drop("_rank")


def _first_by_time(value: str, time_col: str = "window_start") -> Column:
    return F.min(F.when(F.col(value).isNotNull(), F.struct(F.col(time_col), F.col(value))))[value]


def _last_by_time(value: str, time_col: str = "window_start") -> Column:
    return F.max(F.when(F.col(value).isNotNull(), F.struct(F.col(time_col), F.col(value))))[value]


def _tick_weighted_mean(value: str) -> Column:
    weight = F.col("tick_count").cast("double")
    numerator = F.sum(F.col(value) * weight)
    denominator = F.sum(F.when(F.col(value).isNotNull(), weight))
    return F.when(denominator > 0, numerator / denominator)


def with_minute_returns(minutes: DataFrame) -> DataFrame:
    """Adds ``hour_start`` and ``log_return`` (to the previous minute of the same hour, if adjacent)."""
    hourly = minutes.withColumn("hour_start", F.date_trunc("hour", F.col("window_start")))
    priced = F.col("mid_close").isNotNull() & (F.col("mid_close") > 0)
    order = Window.partitionBy("symbol", "hour_start").orderBy("window_start")
    # previous *priced* minute: order priced minutes first within their own window
    prev_close = F.lag("mid_close").over(order)
    prev_start = F.lag("window_start").over(order)
    adjacent = (F.unix_seconds(F.col("window_start")) - F.unix_seconds(prev_start)) == 60
    priced_rows = hourly.where(priced).withColumn(
        "log_return", F.when(adjacent & (prev_close > 0), F.log(F.col("mid_close") / prev_close))
    )
    unpriced_rows = hourly.where(~priced | F.col("mid_close").isNull()).withColumn(
        "log_return", F.lit(None).cast("double")
    )
    return priced_rows.unionByName(unpriced_rows)


def consolidate(minutes: DataFrame, start: datetime, end: datetime, produced_at: datetime) -> DataFrame:
    """hourly_metrics rows (``datasets.HOURLY_METRICS_COLUMNS``) of ``[start, end)``."""
    rows = with_minute_returns(deduplicate_minutes(select_range(minutes, start, end)))
    has_price = F.col("mid_close").isNotNull()
    agg = rows.groupBy("symbol", "hour_start").agg(
        _first_by_time("mid_open").alias("open"),
        F.max("mid_high").alias("high"),
        F.min("mid_low").alias("low"),
        _last_by_time("mid_close").alias("close"),
        _tick_weighted_mean("spread_mean").alias("spread_mean"),
        F.max("spread_max").alias("spread_max"),
        _tick_weighted_mean("spread_pct_mean").alias("spread_pct_mean"),
        F.max("spread_pct_max").alias("spread_pct_max"),
        _tick_weighted_mean("liquidity_base_mean").alias("liquidity_base_mean"),
        _tick_weighted_mean("liquidity_quote_mean").alias("liquidity_quote_mean"),
        F.stddev_samp("log_return").alias("volatility"),
        F.count("log_return").alias("_returns"),
        F.sum("tick_count").alias("tick_count"),
        F.count_distinct(F.when(has_price, F.col("window_start"))).alias("minutes_present"),
        _last_by_time("market_cap").alias("market_cap"),
        _last_by_time("cg_volume_24h").alias("cg_volume_24h"),
        _last_by_time("cg_price_change_pct_24h").alias("cg_price_change_pct_24h"),
        F.sum("volume").alias("volume"),
        F.sum("quote_volume").alias("quote_volume"),
        F.sum("trade_count").alias("trade_count"),
        F.count_distinct(F.when(F.col("volume").isNotNull(), F.col("window_start"))).alias("_volume_minutes"),
    )
    out = agg.where(F.col("minutes_present") > 0).withColumns(
        {
            "volatility": F.when(F.col("_returns") >= 2, F.col("volatility")),
            "coverage": F.col("minutes_present") / F.lit(float(MINUTES_PER_HOUR)),
            "volume_minutes": F.when(F.col("_volume_minutes") > 0, F.col("_volume_minutes")),
            "source": F.lit(datasets.HOURLY_SOURCE_STREAM),
            "produced_at": F.lit(produced_at),
            "date": F.date_format("hour_start", "yyyy-MM-dd"),
            "hour": F.hour("hour_start"),
        }
    )
    return out.select(*[F.col(name).cast(kind).alias(name) for name, kind in datasets.HOURLY_METRICS_COLUMNS])


# ---- rows too late for the stream's minute windows ---------------------------------------------
#: How long after its window a late row is still looked for in raw_data (by ``event_time``, the
#: column raw_data's files have statistics on): a kline's ``event_time`` is after its minute.
LATE_LOOKBACK_MARGIN_S = 3600


def raw_minute_counts(raw_windowed: DataFrame) -> DataFrame:
    """raw_data rows (with ``window_time``) -> ``symbol``, ``window_start``, ``raw_count``."""
    return raw_windowed.groupBy("symbol", F.date_trunc("minute", "window_time").alias("window_start")).agg(
        F.count(F.lit(1)).alias("raw_count")
    )


def late_minutes(minutes: DataFrame, raw_counts: DataFrame) -> DataFrame:
    """The (symbol, window_start) whose raw_data rows the stream's minute row does not all hold:
    no minute row, or a ``message_count`` below raw_data's (rows behind the stream's watermark;
    a minute row without ``message_count``, written before it existed, is taken as complete)."""
    held = minutes.groupBy("symbol", "window_start").agg(F.max("message_count").alias("message_count"),
                                                         F.count(F.lit(1)).alias("_rows"))  # fmt: skip
    joined = raw_counts.join(held, ["symbol", "window_start"], "left")
    late = F.col("_rows").isNull() | (F.col("message_count") < F.col("raw_count"))
    return joined.where(late).select("symbol", "window_start", "raw_count", F.col("message_count").alias("held"))


def with_late_minutes(minutes: DataFrame, rewindowed: DataFrame) -> DataFrame:
    """``minutes`` with the minutes of ``rewindowed`` (computed from raw_data) in place of theirs."""
    keys = rewindowed.select("symbol", "window_start")
    kept = minutes.join(keys, ["symbol", "window_start"], "left_anti")
    return kept.unionByName(rewindowed.select(*minutes.columns))
