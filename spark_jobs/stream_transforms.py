"""Pure DataFrame -> DataFrame transforms of the streaming job (Kafka -> raw_data, minute_metrics,
quarantine). Nothing here starts a query or touches storage; ``stream_job.py`` wires these
functions to the Kafka source and the file sinks (``stream_sinks.py``), and the tests call them
on small DataFrames.

Input of :func:`parse_messages` is a DataFrame shaped like the Kafka source (``key``, ``value``
binary or string, ``topic``, ``partition``, ``offset``, ``timestamp``). Its output carries every
message field (timestamps parsed to ``TimestampType``) plus ``reason``: ``None`` for a valid
record, else ``"<code>:<detail>"`` naming the first problem found, e.g.
``missing_field:bid_price``, ``non_positive_value:ask_price``, ``ask_below_bid:ask_price<bid_price``.
The codes are the ``REASON_*`` constants below.

* :func:`valid_records` + :func:`with_record_metrics` + :func:`raw_data_output` -> ``raw_data/``
  (one row per valid message, partitioned by ``date``/``hour`` of ``event_time``).
* :func:`quarantine_output` -> ``quarantine/`` (raw bytes, Kafka coordinates, reason, time).
* :func:`id_time`, :func:`id_time_spans`, :func:`id_time_ranges`, :func:`stored_id_time_bound`,
  :func:`stored_predicate`, :func:`extra_copies` and :func:`without_extra_copies`
  (:func:`absent_rows`) keep out of raw_data the ``message_id`` it already holds, however long
  ago it was stored (``stream_sinks``).
* :func:`with_window_time` + :func:`minute_metrics` -> ``minute_metrics/`` with exactly
  ``datasets.MINUTE_METRICS_COLUMNS``: windows and watermark on ``window_time``, which is the
  receipt time ``event_time`` of every message (an exchange's own, possibly minutes old, time is
  the ``exchange_time`` field and plays no part), except for a ``kline_1m``, which belongs to
  the minute it describes: its ``window_time`` is that minute's last millisecond (the kline's
  close time). A kline received more than the watermark delay after its minute closed is
  therefore too late for minute_metrics (it is still in raw_data).
"""

from __future__ import annotations

from functools import reduce
from operator import or_

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from btc_platform.ingest import schema
from btc_platform.lakehouse import datasets

# ---- quarantine reason codes ------------------------------------------------------------
REASON_EMPTY = "empty_value"  # Kafka record without a value (tombstone)
REASON_UNPARSEABLE = "unparseable_json"  # not JSON, not an object, or a field of the wrong type
REASON_UNKNOWN_FIELD = "unknown_field"
REASON_MISSING = "missing_field"
REASON_SCHEMA_VERSION = "unsupported_schema_version"
REASON_MESSAGE_TYPE = "unknown_message_type"
REASON_SOURCE = "unknown_source"
REASON_TIMESTAMP = "unparseable_timestamp"
REASON_NON_FINITE = "non_finite_value"
REASON_NON_POSITIVE = "non_positive_value"
REASON_NEGATIVE = "negative_value"
REASON_ASK_BELOW_BID = "ask_below_bid"

#: Kafka coordinates kept on every output row (renamed so they never clash with message fields).
KAFKA_META = (
    ("topic", "kafka_topic"),
    ("partition", "kafka_partition"),
    ("offset", "kafka_offset"),
    ("timestamp", "kafka_timestamp"),
)

#: Per-record metrics added to book_ticker rows (null for other message types).
RECORD_METRIC_COLUMNS = (
    "mid_price",  # (bid + ask) / 2
    "spread",  # ask - bid
    "spread_pct",  # spread / mid * 100
    "bid_depth_quote",  # bid_qty * bid_price (bid_qty itself is the base-currency depth)
    "ask_depth_quote",  # ask_qty * ask_price
    "liquidity_base",  # bid_qty + ask_qty
    "liquidity_quote",  # bid_depth_quote + ask_depth_quote
)

#: Columns of raw_data/, in order: every message field, the per-record metrics, the Kafka
#: coordinates and the partition columns (``date``/``hour`` of ``event_time`` in UTC).
RAW_DATA_COLUMNS: tuple[str, ...] = (
    *schema.FIELD_NAMES,
    *RECORD_METRIC_COLUMNS,
    *(new for _, new in KAFKA_META),
    *datasets.PARTITION_COLUMNS,
)

#: Columns of quarantine/, partitioned by ``date`` of ``quarantined_at``.
QUARANTINE_COLUMNS: tuple[str, ...] = (
    "value",  # the record's bytes exactly as read from Kafka
    "value_text",  # the same decoded as UTF-8, for reading
    "key",
    *(new for _, new in KAFKA_META),
    "reason",
    "quarantined_at",
    "date",
)

_CORRUPT = "_corrupt_record"
_PARSED = "_msg"
_TIMESTAMP_FIELDS = tuple(f.name for f in schema.FIELDS if f.kind == schema.TIMESTAMP)
_DECIMAL_FIELDS = tuple(f.name for f in schema.FIELDS if f.kind == schema.DECIMAL)
# An ISO-8601 timestamp must carry its offset (Z or +hh:mm), like schema.parse_ts demands.
_TZ_SUFFIX = r"(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)$"


def _reason(code: str, detail: Column | str) -> Column:
    detail_col = F.lit(detail) if isinstance(detail, str) else detail.cast("string")
    return F.concat(F.lit(code + ":"), F.coalesce(detail_col, F.lit("null")))


def _parse_timestamp(raw: Column) -> Column:
    """The timestamp of an ISO-8601 string with a UTC offset, else null (never an exception).

    The offset check looks at the last 6 characters only (the longest offset, ``+hh:mm``): an
    end-anchored pattern is tried at every position of the string, and this runs for every
    timestamp of every message.
    """
    return F.when(F.substring(raw, -6, 6).rlike(_TZ_SUFFIX), raw.try_cast("timestamp"))


def _raw_name(name: str) -> str:
    """Column of :func:`parse_messages`'s inner projection holding timestamp field ``name`` as sent."""
    return f"_raw_{name}"


def _validation_reason(corrupt: Column, value_text: Column) -> Column:
    """First problem of a parsed message as ``"<code>:<detail>"``, or null when it is valid.

    Over the columns of :func:`parse_messages`'s inner projection: every field (timestamps
    parsed) and each timestamp as sent (:func:`_raw_name`).
    """
    msg = F.col
    mtype = msg("message_type")
    checks: list[Column] = [
        F.when(value_text.isNull(), _reason(REASON_EMPTY, "record has no value")),
        F.when(corrupt.isNotNull(), _reason(REASON_UNPARSEABLE, "not a JSON object of the message schema")),
    ]
    # Keys the schema does not know (from_json would silently ignore them). sort_array, not
    # array_sort: array_sort's comparator is a lambda, which has no generated code and would keep
    # this whole projection out of whole-stage code generation.
    unknown = F.array_except(F.json_object_keys(value_text), F.array(*[F.lit(n) for n in schema.FIELD_NAMES]))
    checks.append(
        F.when(F.size(unknown) > 0, _reason(REASON_UNKNOWN_FIELD, F.array_join(F.sort_array(unknown), ",")))
    )
    checks += [
        F.when(msg("schema_version").isNull(), _reason(REASON_MISSING, "schema_version")),
        F.when(
            ~msg("schema_version").isin(*sorted(schema.SUPPORTED_SCHEMA_VERSIONS)),
            _reason(REASON_SCHEMA_VERSION, msg("schema_version")),
        ),
        F.when(mtype.isNull() | (mtype == ""), _reason(REASON_MISSING, "message_type")),
        F.when(~mtype.isin(*schema.MESSAGE_TYPES), _reason(REASON_MESSAGE_TYPE, mtype)),
    ]
    for spec in schema.FIELDS:  # required fields per message type, in schema order
        if not spec.required_for:
            continue
        # a timestamp is missing when it was not sent (one sent unparseable has its own reason)
        value = msg(_raw_name(spec.name) if spec.kind == schema.TIMESTAMP else spec.name)
        missing = value.isNull() | (value == "") if spec.kind == schema.STRING else value.isNull()
        checks.append(
            F.when(mtype.isin(*sorted(spec.required_for)) & missing, _reason(REASON_MISSING, spec.name))
        )
    checks.append(F.when(~msg("source").isin(*schema.SOURCES), _reason(REASON_SOURCE, msg("source"))))
    for name in _TIMESTAMP_FIELDS:  # sent, but not a timestamp with an offset
        checks.append(
            F.when(msg(_raw_name(name)).isNotNull() & msg(name).isNull(), _reason(REASON_TIMESTAMP, name))
        )
    for name in _DECIMAL_FIELDS:
        value = msg(name)
        checks.append(
            F.when(F.isnan(value) | value.isin(float("inf"), float("-inf")), _reason(REASON_NON_FINITE, name))
        )
    for spec in schema.FIELDS:
        if spec.positive:
            checks.append(F.when(msg(spec.name) <= 0, _reason(REASON_NON_POSITIVE, spec.name)))
        if spec.non_negative:
            checks.append(F.when(msg(spec.name) < 0, _reason(REASON_NEGATIVE, spec.name)))
    checks.append(
        F.when(
            (mtype == "book_ticker") & (msg("ask_price") < msg("bid_price")),
            _reason(REASON_ASK_BELOW_BID, "ask_price<bid_price"),
        )
    )
    return F.coalesce(*checks)


def parse_messages(kafka_df: DataFrame) -> DataFrame:
    """Parse Kafka ``value`` bytes with the message schema and attach a quarantine ``reason``.

    Output: ``value`` (as read), ``value_text``, ``key``, the ``kafka_*`` coordinates, every
    field of ``schema.FIELDS`` (timestamp fields as ``TimestampType``, null when unparseable)
    and ``reason`` (null for a valid record).
    """
    struct = schema.spark_schema(timestamps_as_strings=True).add(_CORRUPT, "string")
    options = {
        "mode": "PERMISSIVE",
        "columnNameOfCorruptRecord": _CORRUPT,
        "allowNonNumericNumbers": "false",
    }
    key = F.col("key") if "key" in kafka_df.columns else F.lit(None).cast("binary")
    df = kafka_df.select(
        F.col("value"),
        F.col("value").cast("string").alias("value_text"),
        key.alias("key"),
        *[F.col(old).alias(new) for old, new in KAFKA_META],
    )
    df = df.withColumn(_PARSED, F.from_json("value_text", struct, options))
    msg = F.col(_PARSED)
    fields = []
    for spec in schema.FIELDS:
        col = msg[spec.name]
        fields.append((_parse_timestamp(col) if spec.kind == schema.TIMESTAMP else col).alias(spec.name))
    meta = ["value", "value_text", "key", *[new for _, new in KAFKA_META]]
    # timestamps are parsed once, here; the validation reads them and their text as sent
    df = df.select(*meta, *fields, *[msg[name].alias(_raw_name(name)) for name in _TIMESTAMP_FIELDS],
                   msg[_CORRUPT].alias(_CORRUPT))  # fmt: skip
    reason = _validation_reason(F.col(_CORRUPT), F.col("value_text"))
    return df.select(*meta, *schema.FIELD_NAMES, reason.alias("reason"))


def valid_records(parsed: DataFrame) -> DataFrame:
    """Rows of :func:`parse_messages` without a reason: message fields and Kafka coordinates."""
    return parsed.where(F.col("reason").isNull()).select(*schema.FIELD_NAMES, *[new for _, new in KAFKA_META])


def with_record_metrics(valid: DataFrame) -> DataFrame:
    """Add ``RECORD_METRIC_COLUMNS`` (book_ticker rows only; null for the other types)."""
    is_book = F.col("message_type") == "book_ticker"
    bid, ask = F.col("bid_price"), F.col("ask_price")
    mid = (bid + ask) / 2
    bid_quote = F.col("bid_qty") * bid
    ask_quote = F.col("ask_qty") * ask
    metrics = {
        "mid_price": mid,
        "spread": ask - bid,
        "spread_pct": (ask - bid) / mid * 100,  # mid > 0: prices were validated positive
        "bid_depth_quote": bid_quote,
        "ask_depth_quote": ask_quote,
        "liquidity_base": F.col("bid_qty") + F.col("ask_qty"),
        "liquidity_quote": bid_quote + ask_quote,
    }
    return valid.withColumns({name: F.when(is_book, expr) for name, expr in metrics.items()})


def with_partition_columns(df: DataFrame, time_col: str) -> DataFrame:
    """``date`` (YYYY-MM-DD) and ``hour`` (0..23) of ``time_col`` in UTC."""
    return df.withColumns(
        {
            "date": F.date_format(F.col(time_col), "yyyy-MM-dd"),
            "hour": F.hour(F.col(time_col)).cast("int"),
        }
    )


#: Columns of a message that fix its ``message_id`` in time: a message with an ``exchange_time``
#: has it in its id (its ``event_time``, the receipt time, is left out, so two polls of one
#: observation share an id), any other message its ``event_time``. Two copies of one id always
#: agree on :func:`id_time`, whenever and however often they were sent.
ID_TIME_COLUMNS = ("exchange_time", "event_time")


def id_time() -> Column:
    """The time that a message's ``message_id`` covers: ``exchange_time``, else ``event_time``."""
    return F.coalesce(*[F.col(c) for c in ID_TIME_COLUMNS])


#: Columns that a ``message_id`` fixes besides its :func:`id_time` (the id is a hash of the
#: content, these included): two copies of one id always agree on them, so the writer keeps the
#: ``id_time`` bound of what raw_data holds per value of these (``stream_sinks``). Each is one
#: producer's ordered sequence: a source's polls of one message type and symbol.
ID_GROUP_COLUMNS = ("source", "message_type", "symbol")


def id_time_spans(rows: DataFrame, key: str | None = None, by: tuple[str, ...] = ()) -> DataFrame:
    """Per minute of :func:`id_time` that ``rows`` touch (and value of the columns ``by``), the
    first and last ``id_time`` (``lo``, ``hi``): a handful of rows that :func:`id_time_ranges`
    merges into ranges. With ``key``, also the minute's ``rows`` and distinct ``ids``: the copies
    of one id share its ``id_time``, so ``rows > ids`` in some minute exactly when ``rows`` repeat
    a key."""
    t = id_time()
    counts = [F.count(F.lit(1)).alias("rows"), F.count_distinct(key).alias("ids")] if key else []
    return rows.groupBy(*by, F.date_trunc("minute", t).alias("minute")).agg(F.min(t).alias("lo"), F.max(t).alias("hi"),
                                                                            *counts)  # fmt: skip


def stored_id_time_bound() -> Column:
    """Aggregate: an upper bound of the :func:`id_time` of every row (of raw_data), the larger of
    the maxima of :data:`ID_TIME_COLUMNS`; null over no rows. A batch whose ``id_time`` all lie
    after it holds no id of those rows."""
    return F.greatest(*[F.max(c) for c in ID_TIME_COLUMNS]).alias("bound")


def id_time_ranges(spans, gap_s: float = 60.0) -> list[tuple]:
    """Merge ``(lo, hi)`` spans (any order) into disjoint ``[lo, hi]`` ranges, joining two when
    the second starts at most ``gap_s`` after the first ends: few ranges, each tight, so that a
    lookup by :func:`stored_predicate` reads the files of the times a batch holds and no others."""
    merged: list[list] = []
    for lo, hi in sorted((lo, hi) for lo, hi in spans if lo is not None):
        if merged and (lo - merged[-1][1]).total_seconds() <= gap_s:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(lo, hi) for lo, hi in merged]


def stored_predicate(ranges: list[tuple]) -> Column:
    """Rows of raw_data whose :func:`id_time` falls in one of ``ranges``, written so that Delta
    skips files through their statistics: ``exchange_time`` and ``event_time`` are statistics
    columns, ``coalesce`` of the two is not (and a file whose ``exchange_time`` is all null is
    skipped through its null count)."""
    if not ranges:
        return F.lit(False)
    exchange, event = (F.col(c) for c in ID_TIME_COLUMNS)

    def within(col: Column) -> Column:
        return reduce(or_, [col.between(F.lit(lo), F.lit(hi)) for lo, hi in ranges])

    return (exchange.isNotNull() & within(exchange)) | (exchange.isNull() & within(event))


def extra_copies(batch_ids: DataFrame, stored_ids: DataFrame, key: str = "message_id") -> DataFrame:
    """The ``key`` values that must not be appended as they are: held by ``stored_ids`` (``stored``
    true) or more than once by ``batch_ids`` (``copies`` > 1). Both frames are one column ``key``,
    so only ids are shuffled; the answer is usually empty."""
    counted = batch_ids.groupBy(key).agg(F.count(F.lit(1)).alias("copies"))
    stored = stored_ids.select(key).distinct().withColumn("stored", F.lit(True))
    joined = counted.join(stored, key, "left").withColumn("stored", F.coalesce(F.col("stored"), F.lit(False)))
    return joined.where(F.col("stored") | (F.col("copies") > 1))


def extra_copies_schema(key: str = "message_id") -> str:
    """DDL of :func:`extra_copies`' rows (to make a frame of the collected rows)."""
    return f"`{key}` string, copies long, stored boolean"


def without_extra_copies(rows: DataFrame, extra: DataFrame, key: str = "message_id") -> DataFrame:
    """``rows`` less the keys ``extra`` (:func:`extra_copies`) says are stored, and with one row of
    each key it says the batch repeats. ``extra`` is small: it is broadcast, the wide rows are not
    shuffled (only those of repeated keys are, to keep one)."""
    stored = F.broadcast(extra.where(F.col("stored")).select(key))
    repeated = F.broadcast(extra.where(~F.col("stored")).select(key))
    fresh = rows.join(stored, key, "left_anti")
    single = fresh.join(repeated, key, "left_anti")
    first_copies = fresh.join(repeated, key, "left_semi").dropDuplicates([key])
    return single.unionByName(first_copies).select(*rows.columns)


def absent_rows(rows: DataFrame, stored_ids: DataFrame, key: str = "message_id") -> DataFrame:
    """``rows`` without those whose ``key`` is in ``stored_ids`` (one column ``key``), one row of
    each key (:func:`extra_copies` + :func:`without_extra_copies`)."""
    return without_extra_copies(rows, extra_copies(rows.select(key), stored_ids, key), key)


def ingest_records(parsed: DataFrame, quarantined_at: Column | None = None) -> DataFrame:
    """Every record of :func:`parse_messages` in one frame that feeds both raw_data and quarantine.

    The raw bytes (``value``, ``value_text``, ``key``) are kept only on quarantined records, which
    also get ``quarantined_at`` (default: the micro-batch time) and ``quarantine_key``, their Kafka
    coordinates (``quarantine``'s key, unique: a bad record is never taken for a copy). Repeated
    ``message_id`` are kept out of raw_data by its writer (``stream_sinks``). Split it with
    :func:`valid_records` and :func:`quarantine_output` (``quarantined_at=F.col("quarantined_at")``).
    """
    bad = F.col("reason").isNotNull()
    at = quarantined_at if quarantined_at is not None else F.current_timestamp()
    coordinates = F.concat_ws(
        ":", *[F.col(name).cast("string") for name in ("kafka_topic", "kafka_partition", "kafka_offset")]
    )
    return parsed.withColumns(
        {
            "value": F.when(bad, F.col("value")),
            "value_text": F.when(bad, F.col("value_text")),
            "key": F.when(bad, F.col("key")),
            "quarantined_at": F.when(bad, at),
            "quarantine_key": F.when(bad, coordinates),
        }
    )


def raw_data_output(valid_with_metrics: DataFrame) -> DataFrame:
    """Select ``RAW_DATA_COLUMNS`` (partition columns from ``event_time``)."""
    return with_partition_columns(valid_with_metrics, "event_time").select(*RAW_DATA_COLUMNS)


def quarantine_output(parsed: DataFrame, quarantined_at: Column | None = None) -> DataFrame:
    """Rows of :func:`parse_messages` with a reason, as ``QUARANTINE_COLUMNS``.

    ``quarantined_at`` defaults to the micro-batch time (``current_timestamp()``); ``date`` is
    its UTC day, because a bad record may have no usable event time.
    """
    at = quarantined_at if quarantined_at is not None else F.current_timestamp()
    bad = parsed.where(F.col("reason").isNotNull()).withColumn("quarantined_at", at)
    return bad.withColumn("date", F.date_format("quarantined_at", "yyyy-MM-dd")).select(*QUARANTINE_COLUMNS)


#: Column the minute windows and their watermark use (see the module docstring).
WINDOW_TIME = "window_time"


def with_window_time(records: DataFrame) -> DataFrame:
    """Add :data:`WINDOW_TIME`: ``event_time``, for a ``kline_1m`` its minute's close time."""
    kline_close = F.col("kline_open_time") + F.expr("INTERVAL 59.999 SECONDS")
    return records.withColumn(
        WINDOW_TIME, F.when(F.col("message_type") == "kline_1m", kline_close).otherwise(F.col("event_time"))
    )


def _latest(message_type: str, *fields: str) -> Column:
    """Struct of the latest (by event_time, then ingest_time) ``message_type`` row's fields."""
    return F.max(
        F.when(
            F.col("message_type") == message_type,
            F.struct(F.col("event_time"), F.col("ingest_time"), *[F.col(f) for f in fields]),
        )
    )


def _welford_step(acc: Column, x: Column) -> Column:
    """One step of Welford's online mean/variance (numerically stable, single pass)."""
    n = acc["n"] + 1
    delta = x - acc["mean"]
    mean = acc["mean"] + delta / n
    return F.struct(n.alias("n"), mean.alias("mean"), (acc["m2"] + delta * (x - mean)).alias("m2"))


def _log_return_stddev(sorted_ticks: Column) -> Column:
    """Sample stddev of log returns between consecutive ticks (time-sorted structs with ``mid``).

    Null when there are fewer than two returns (fewer than three ticks). Linear in the number of
    ticks: the lambdas only reference their own arguments, never another array expression.
    """
    n = F.size(sorted_ticks)
    returns = F.zip_with(
        F.slice(sorted_ticks, 2, n - 1),
        F.slice(sorted_ticks, 1, n - 1),
        lambda cur, prev: F.log(cur["mid"] / prev["mid"]),
    )
    zero = F.struct(F.lit(0).cast("long").alias("n"), F.lit(0.0).alias("mean"), F.lit(0.0).alias("m2"))
    stats = F.aggregate(returns, zero, _welford_step)
    return F.when(n >= 3, F.sqrt(stats["m2"] / (stats["n"] - 1)))


def minute_metrics(records: DataFrame, window: str = "1 minute") -> DataFrame:
    """One row per symbol and ``window`` of :data:`WINDOW_TIME`, as ``datasets.MINUTE_METRICS_COLUMNS``.

    ``records`` are valid records with metrics (:func:`with_record_metrics`), with
    :func:`with_window_time` (added here when missing, batch use), each message once (raw_data),
    with a watermark on ``window_time`` when streaming, so that each window is emitted once in
    append mode after the watermark passes its end. ``volume``, ``quote_volume`` and
    ``trade_count`` are the minute's own ``kline_1m`` (null when none arrived in time). No window functions (not allowed in
    streaming): the ticks of a window are collected as (event_time, mid) structs, sorted and
    reduced with higher-order functions for open/close and the log-return volatility.
    """
    tick = F.when(
        F.col("mid_price").isNotNull(), F.struct(F.col("event_time"), F.col("mid_price").alias("mid"))
    )
    if WINDOW_TIME not in records.columns:
        records = with_window_time(records)
    agg = records.groupBy(F.window(WINDOW_TIME, window).alias("w"), F.col("symbol")).agg(
        F.collect_list(tick).alias("ticks"),
        F.max("mid_price").alias("mid_high"),
        F.min("mid_price").alias("mid_low"),
        F.avg("spread").alias("spread_mean"),
        F.max("spread").alias("spread_max"),
        F.avg("spread_pct").alias("spread_pct_mean"),
        F.max("spread_pct").alias("spread_pct_max"),
        F.avg(F.when(F.col("mid_price").isNotNull(), F.col("bid_qty"))).alias("bid_liquidity_mean"),
        F.avg(F.when(F.col("mid_price").isNotNull(), F.col("ask_qty"))).alias("ask_liquidity_mean"),
        F.avg("liquidity_base").alias("liquidity_base_mean"),
        F.avg("liquidity_quote").alias("liquidity_quote_mean"),
        F.count("mid_price").alias("tick_count"),
        F.count(F.lit(1)).alias("message_count"),
        _latest("ticker_24hr", "volume_24h", "quote_volume_24h", "price_change_pct_24h").alias("t24"),
        _latest("market", "market_cap", "quote_volume_24h", "price_change_pct_24h").alias("cg"),
        _latest("kline_1m", "kline_volume", "kline_quote_volume", "kline_trade_count").alias("k1m"),
    )
    # Sort each window's ticks once (own projection, so the sorted array is computed once per row).
    agg = agg.withColumn("ticks", F.sort_array("ticks"))
    ticks = F.col("ticks")
    n = F.size(ticks)
    out = agg.select(
        F.col("symbol"),
        F.col("w.start").alias("window_start"),
        F.col("w.end").alias("window_end"),
        F.when(n > 0, F.element_at(ticks, 1)["mid"]).alias("mid_open"),
        F.col("mid_high"),
        F.col("mid_low"),
        F.when(n > 0, F.element_at(ticks, -1)["mid"]).alias("mid_close"),
        "spread_mean",
        "spread_max",
        "spread_pct_mean",
        "spread_pct_max",
        "bid_liquidity_mean",
        "ask_liquidity_mean",
        "liquidity_base_mean",
        "liquidity_quote_mean",
        _log_return_stddev(ticks).alias("volatility"),
        (F.col("mid_high") - F.col("mid_low")).alias("mid_range"),
        F.col("tick_count"),
        F.col("t24.volume_24h").alias("volume_24h"),
        F.col("t24.quote_volume_24h").alias("quote_volume_24h"),
        F.col("t24.price_change_pct_24h").alias("price_change_pct_24h"),
        F.col("cg.market_cap").alias("market_cap"),
        F.col("cg.quote_volume_24h").alias("cg_volume_24h"),
        F.col("cg.price_change_pct_24h").alias("cg_price_change_pct_24h"),
        F.col("k1m.kline_volume").alias("volume"),
        F.col("k1m.kline_quote_volume").alias("quote_volume"),
        F.col("k1m.kline_trade_count").alias("trade_count"),
        F.col("message_count"),
    )
    out = with_partition_columns(out, "window_start")
    columns = datasets.MINUTE_METRICS_COLUMNS
    return out.select(*[F.col(name).cast(kind).alias(name) for name, kind in columns])
