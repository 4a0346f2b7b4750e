"""Data-quality checks of hourly_metrics over [start, end), evaluated with Spark.

The check definitions, severities and the failure rule live in ``btc_platform.quality``
(Spark-free); this module computes, in two small aggregations plus the distinct
(symbol, hour) pairs for the gap check, which rows fail each check and builds the report rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import reduce
from operator import or_

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from btc_platform import quality as q

PRICE_COLUMNS = ("open", "high", "low", "close")
SPREAD_COLUMNS = ("spread_mean", "spread_max", "spread_pct_mean", "spread_pct_max")

#: Columns of the data_quality report (``range`` = partition column, one per checked range).
REPORT_SCHEMA = T.StructType(
    [
        T.StructField("range_start", T.TimestampType()),
        T.StructField("range_end", T.TimestampType()),
        T.StructField("check", T.StringType()),
        T.StructField("severity", T.StringType()),
        T.StructField("status", T.StringType()),
        T.StructField("rows_checked", T.LongType()),
        T.StructField("failed_count", T.LongType()),
        T.StructField("failed", T.ArrayType(T.StringType())),
        T.StructField("message", T.StringType()),
        T.StructField("checked_at", T.TimestampType()),
        T.StructField("range", T.StringType()),
    ]
)


def row_conditions(min_coverage: float) -> dict[str, Column]:
    """Per-row failure condition of each row-level check."""
    return {
        q.COVERAGE: F.col("coverage").isNull() | (F.col("coverage") < F.lit(min_coverage)),
        q.HIGH_BELOW_LOW: F.col("high") < F.col("low"),
        q.NON_POSITIVE_PRICE: reduce(or_, [F.col(c).isNull() | (F.col(c) <= 0) for c in PRICE_COLUMNS]),
        q.NEGATIVE_SPREAD: reduce(or_, [F.coalesce(F.col(c) < 0, F.lit(False)) for c in SPREAD_COLUMNS]),
    }


def _failures(cond: Column) -> Column:
    pair = F.struct(F.unix_seconds(F.col("hour_start")).alias("s"), F.col("symbol").alias("symbol"))
    return F.slice(F.array_sort(F.collect_list(F.when(cond, pair))), 1, q.MAX_LISTED)


def _pairs(items: Iterable) -> list[tuple[str, datetime]]:
    return [(item["symbol"], datetime.fromtimestamp(item["s"], UTC)) for item in items]


def run_checks(
    hourly: DataFrame,
    start: datetime,
    end: datetime,
    *,
    symbols: Sequence[str],
    min_coverage: float,
) -> list[q.CheckResult]:
    """Every check of ``btc_platform.quality.CHECKS`` on the rows of ``[start, end)``.

    ``symbols``: the symbols expected every hour (gap check); symbols present in the data are
    expected too.
    """
    rows = hourly.where((F.col("hour_start") >= F.lit(start)) & (F.col("hour_start") < F.lit(end)))
    conditions = row_conditions(min_coverage)
    aggs = [F.count(F.lit(1)).alias("rows")]
    for name, cond in conditions.items():
        aggs += [F.count(F.when(cond, 1)).alias(f"{name}__n"), _failures(cond).alias(f"{name}__x")]
    summary = rows.agg(*aggs).first()
    checked = summary["rows"]
    results = []
    for name in conditions:
        results.append(
            q.make_result(
                name,
                start,
                end,
                checked,
                _pairs(summary[f"{name}__x"]),
                summary[f"{name}__n"],
                threshold=min_coverage,
            )
        )

    keys = rows.groupBy("symbol", "hour_start").count()
    dup = (
        keys.where(F.col("count") > 1)
        .agg(F.count(F.lit(1)).alias("n"), _failures(F.lit(True)).alias("x"))
        .first()
    )
    results.append(q.make_result(q.DUPLICATE, start, end, checked, _pairs(dup["x"]), dup["n"]))

    present = _pairs(keys.select(F.unix_seconds("hour_start").alias("s"), "symbol").collect())
    expected = set(symbols) | {symbol for symbol, _ in present}
    gaps = q.hour_gaps(present, expected, start, end)
    results.append(q.make_result(q.HOUR_GAP, start, end, checked, gaps))
    order = list(q.CHECKS)
    return sorted(results, key=lambda r: order.index(r.check))


def range_id(start: datetime, end: datetime) -> str:
    """Partition value of a checked range, e.g. ``20240101T00Z_20240101T03Z`` (no ':' for HDFS)."""
    return f"{start.astimezone(UTC):%Y%m%dT%HZ}_{end.astimezone(UTC):%Y%m%dT%HZ}"


def report_frame(spark: SparkSession, results: Sequence[q.CheckResult], checked_at: datetime) -> DataFrame:
    """One report row per check (``REPORT_SCHEMA``)."""
    rows = [
        (
            r.range_start,
            r.range_end,
            r.check,
            r.severity,
            r.status,
            r.rows_checked,
            r.failed_count,
            list(r.failed),
            r.message,
            checked_at,
            range_id(r.range_start, r.range_end),
        )
        for r in results
    ]
    return spark.createDataFrame(rows, schema=REPORT_SCHEMA)


def write_report(report: DataFrame, root: str) -> None:
    """Overwrite the report partition(s) of the checked range(s) only (re-runs replace, never add)."""
    (
        report.coalesce(1)
        .write.mode("overwrite")
        .option("partitionOverwriteMode", "dynamic")
        .partitionBy("range")
        .parquet(root)
    )
