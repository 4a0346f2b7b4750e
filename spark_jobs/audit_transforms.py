"""The hourly ingest audit: what Kafka holds for an hour against what raw_data and quarantine hold.

For every record Kafka received in ``[start, end)`` (by its Kafka timestamp) the stream's own
parser (``stream_transforms.parse_messages``) decides what should have become of it: a valid
message must be in raw_data (its ``message_id``, once), a bad record in quarantine (its Kafka
coordinates). :func:`audit` counts per symbol and hour of arrival and returns one
``data_quality`` row per pair, check ``ingest_complete`` (``btc_platform.lakehouse.quality``):
``fail`` when a message is missing from raw_data, held there more than once, or a bad record is
missing from quarantine; ``detail`` carries the counts (and up to three missing ids) either way.

Copies of a message (a producer re-sending from its journal) are several Kafka records with one
``message_id``: they count once. The symbol of a bad record is its Kafka key (the producer keys by
symbol), ``?`` without one. Rows stored before the hour (the same message sent earlier) count as
stored: raw_data is looked up by ``message_id`` over the ``id_time`` of the hour's messages.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from btc_platform.lakehouse import datasets
from btc_platform.lakehouse.quality import ERROR, INGEST_COMPLETE
from spark_jobs import stream_transforms as st

#: Missing message ids a failed result names.
LISTED_IDS = 3


def coordinates() -> Column:
    """``topic:partition:offset`` of a record (its ``kafka_*`` columns): how a bad record is found
    in quarantine."""
    return F.concat_ws(":", *[F.col(c).cast("string") for c in ("kafka_topic", "kafka_partition", "kafka_offset")])


def quarantine_keys(quarantine: DataFrame) -> DataFrame:
    """quarantine's rows -> their ``quarantine_key`` (:func:`coordinates`)."""
    return quarantine.select(coordinates().alias("quarantine_key"))


def hour_messages(parsed: DataFrame) -> DataFrame:
    """Parsed Kafka records -> ``symbol``, ``hour_start`` (of the Kafka timestamp), ``message_id``
    (null for a bad record), ``quarantine_key`` (null for a valid one) and the ``id_time`` columns."""
    bad = F.col("reason").isNotNull()
    return parsed.select(
        F.coalesce(F.when(~bad, F.col("symbol")), F.col("key").cast("string"), F.lit("?")).alias("symbol"),
        F.date_trunc("hour", "kafka_timestamp").alias("hour_start"),
        F.when(~bad, F.col("message_id")).alias("message_id"),
        F.when(bad, coordinates()).alias("quarantine_key"),
        *[F.when(~bad, F.col(c)).alias(c) for c in st.ID_TIME_COLUMNS],
    )


def audit(
    messages: DataFrame, raw_ids: DataFrame, quarantine_keys: DataFrame, start: datetime, end: datetime,
    checked_at: datetime,
) -> DataFrame:
    """``data_quality`` rows of the check ``ingest_complete`` (see the module docstring).

    ``messages``: :func:`hour_messages`; ``raw_ids``: the ``message_id`` column of raw_data's rows
    that may match (one row per stored row, duplicates included); ``quarantine_keys``:
    :func:`quarantine_keys` of quarantine."""
    stored = raw_ids.groupBy("message_id").agg(F.count(F.lit(1)).alias("copies"))
    valid = (
        messages.where(F.col("message_id").isNotNull())
        .groupBy("symbol", "hour_start", "message_id")
        .agg(F.count(F.lit(1)).alias("sent"))
        .join(stored, "message_id", "left")
    )
    per_valid = valid.groupBy("symbol", "hour_start").agg(
        F.sum("sent").alias("records"),
        F.count(F.lit(1)).alias("messages"),
        F.count_if(F.col("copies").isNull()).alias("missing"),
        F.count_if(F.col("copies") > 1).alias("held_twice"),
        F.slice(F.sort_array(F.collect_list(F.when(F.col("copies").isNull(), F.col("message_id")))), 1, LISTED_IDS)
        .alias("missing_ids"),
    )
    bad = messages.where(F.col("quarantine_key").isNotNull()).join(
        quarantine_keys.select("quarantine_key").distinct().withColumn("_q", F.lit(True)), "quarantine_key", "left"
    )
    per_bad = bad.groupBy("symbol", "hour_start").agg(
        F.count(F.lit(1)).alias("bad"), F.count_if(F.col("_q").isNull()).alias("bad_missing")
    )
    counts = per_valid.join(per_bad, ["symbol", "hour_start"], "full").na.fill(
        0, ["records", "messages", "missing", "held_twice", "bad", "bad_missing"]
    )
    failed = (F.col("missing") > 0) | (F.col("held_twice") > 0) | (F.col("bad_missing") > 0)
    detail = F.format_string(
        "kafka: %d record(s), %d message(s), %d bad; raw_data: %d missing, %d held more than once; "
        "quarantine: %d missing",
        "records", "messages", "bad", "missing", "held_twice", "bad_missing",
    )
    missing_ids = F.coalesce(F.col("missing_ids"), F.array().cast("array<string>"))
    detail = F.when(F.size(missing_ids) > 0, F.concat(detail, F.lit(" (e.g. "), F.array_join(missing_ids, ", "),
                                                      F.lit(")"))).otherwise(detail)  # fmt: skip
    out = counts.select(
        "symbol",
        "hour_start",
        F.lit(INGEST_COMPLETE).alias("check"),
        F.lit(ERROR).alias("severity"),
        F.when(failed, "fail").otherwise("pass").alias("status"),
        detail.alias("detail"),
        F.lit(start).alias("range_start"),
        F.lit(end).alias("range_end"),
        F.lit(checked_at).alias("checked_at"),
    )
    return out.select(*[F.col(n).cast(k).alias(n) for n, k in datasets.DATA_QUALITY_COLUMNS])
