"""Data-quality checks of hourly_metrics over [start, end), evaluated with Spark.

The check definitions, severities and the failure rule live in ``btc_platform.lakehouse.quality``
(Spark-free); this module decides each check for each (symbol, hour) of the range - the rows of
the data_quality table (``datasets.DATA_QUALITY_COLUMNS``) - and sums them up into one
:class:`btc_platform.lakehouse.quality.CheckResult` per check.

The (symbol, hour) pairs looked at: every hour of the range for every expected symbol and every
symbol present in the range. A pair with hourly rows gets one result per check (a row check
fails when one of its rows fails it; ``duplicate_symbol_hour`` when it has more than one row);
a pair without any row gets only its failed ``hour_gap`` result.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import reduce
from operator import or_

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from btc_platform.lakehouse import datasets
from btc_platform.lakehouse import quality as q

PRICE_COLUMNS = ("open", "high", "low", "close")
SPREAD_COLUMNS = ("spread_mean", "spread_max", "spread_pct_mean", "spread_pct_max")
HOUR_S = 3600


def row_conditions(min_coverage: float) -> dict[str, Column]:
    """Per-row failure condition of each row-level check."""
    return {
        q.COVERAGE: F.col("coverage").isNull() | (F.col("coverage") < F.lit(min_coverage)),
        q.HIGH_BELOW_LOW: F.col("high") < F.col("low"),
        q.NON_POSITIVE_PRICE: reduce(or_, [F.col(c).isNull() | (F.col(c) <= 0) for c in PRICE_COLUMNS]),
        q.NEGATIVE_SPREAD: reduce(or_, [F.coalesce(F.col(c) < 0, F.lit(False)) for c in SPREAD_COLUMNS]),
        q.VOLUME_INCOMPLETE: (F.col("source") == F.lit(datasets.HOURLY_SOURCE_STREAM))
        & F.coalesce(F.col("volume_minutes") < F.lit(60), F.lit(True)),
    }


def _checked_pairs(
    spark: SparkSession, rows: DataFrame, start: datetime, end: datetime, symbols: Sequence[str]
):
    """Every (symbol, hour_start) of the range for the expected and the present symbols."""
    hours = int((end - start).total_seconds()) // HOUR_S
    grid = spark.range(hours).select(
        F.timestamp_seconds(F.lit(int(start.timestamp())) + F.col("id") * HOUR_S).alias("hour_start")
    )
    expected = spark.createDataFrame([(s,) for s in sorted(set(symbols))], "symbol string")
    return grid.crossJoin(expected.unionByName(rows.select("symbol")).distinct())


def _outcome(check: str, failed: Column) -> Column:
    return F.struct(F.lit(check).alias("check"), failed.alias("failed"))


def hour_results(
    spark: SparkSession,
    hourly: DataFrame,
    start: datetime,
    end: datetime,
    *,
    symbols: Sequence[str],
    min_coverage: float,
    checked_at: datetime,
) -> DataFrame:
    """data_quality rows (``datasets.DATA_QUALITY_COLUMNS``) of the checks of ``[start, end)``.

    ``symbols``: the symbols expected every hour (gap check); symbols present in the data are
    expected too.
    """
    rows = hourly.where((F.col("hour_start") >= F.lit(start)) & (F.col("hour_start") < F.lit(end)))
    conditions = row_conditions(min_coverage)
    per_hour = rows.groupBy("symbol", "hour_start").agg(
        F.count(F.lit(1)).alias("_rows"),
        *[F.bool_or(F.coalesce(cond, F.lit(False))).alias(name) for name, cond in conditions.items()],
    )
    pairs = _checked_pairs(spark, rows, start, end, symbols).join(per_hour, ["symbol", "hour_start"], "left")
    outcomes = [_outcome(name, F.col(name)) for name in conditions]
    outcomes += [_outcome(q.DUPLICATE, F.col("_rows") > 1), _outcome(q.HOUR_GAP, F.lit(False))]
    checked = pairs.select(
        "symbol",
        "hour_start",
        F.explode(
            F.when(F.col("_rows").isNotNull(), F.array(*outcomes)).otherwise(
                F.array(_outcome(q.HOUR_GAP, F.lit(True)))
            )
        ).alias("o"),
    )
    severity = F.create_map(*[F.lit(v) for name, (sev, _) in q.CHECKS.items() for v in (name, sev)])
    detail = F.create_map(
        *[
            F.lit(v)
            for name, (_, text) in q.CHECKS.items()
            for v in (name, text.format(threshold=min_coverage))
        ]
    )
    check = F.col("o.check")
    return checked.select(
        "symbol",
        "hour_start",
        check.alias("check"),
        severity[check].alias("severity"),
        F.when(F.col("o.failed"), F.lit("fail")).otherwise(F.lit("pass")).alias("status"),
        F.when(F.col("o.failed"), detail[check]).alias("detail"),
        F.lit(start).alias("range_start"),
        F.lit(end).alias("range_end"),
        F.lit(checked_at).alias("checked_at"),
    ).select(*[F.col(name).cast(kind).alias(name) for name, kind in datasets.DATA_QUALITY_COLUMNS])


def summarise(
    results: DataFrame, rows_checked: int, start: datetime, end: datetime, min_coverage: float
) -> list[q.CheckResult]:
    """One :class:`CheckResult` per check of ``btc_platform.lakehouse.quality.CHECKS`` from the
    :func:`hour_results` rows (failures counted and the first ones named, by hour then symbol)."""
    failed = F.col("status") == "fail"
    pair = F.struct(F.unix_seconds("hour_start").alias("s"), F.col("symbol").alias("symbol"))
    summary = {
        r["check"]: r
        for r in results.groupBy("check")
        .agg(
            F.count(F.when(failed, 1)).alias("n"),
            F.slice(F.array_sort(F.collect_list(F.when(failed, pair))), 1, q.MAX_LISTED).alias("x"),
        )
        .collect()
    }
    out = []
    for name in q.CHECKS:
        found = summary.get(name)
        pairs = [(p["symbol"], datetime.fromtimestamp(p["s"], UTC)) for p in (found["x"] if found else [])]
        out.append(
            q.make_result(
                name, start, end, rows_checked, pairs, found["n"] if found else 0, threshold=min_coverage
            )
        )
    return out
