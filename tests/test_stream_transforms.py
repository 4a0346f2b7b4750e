"""Pure transforms of the streaming job on small batch DataFrames built here: parsing and
validation (every kind of bad record lands in quarantine with its reason), per-record metrics,
raw_data partitioning and the minute-window metrics, against hand-computed numbers."""

from __future__ import annotations

import math
import statistics

import pytest

from btc_platform.ingest import schema
from btc_platform.lakehouse import datasets
from btc_platform.testing.stream_testdata import (
    KAFKA_DDL,
    at,
    book,
    kafka_rows,
    kline,
    market,
    naive_utc,
    tamper,
    ticker,
)
from spark_jobs import stream_transforms as st

pytestmark = pytest.mark.spark


def kafka_df(spark, values):
    return spark.createDataFrame(kafka_rows(values), KAFKA_DDL)


def parsed(spark, values):
    return st.parse_messages(kafka_df(spark, values))


def test_valid_messages_of_each_type_parse_with_their_fields(spark):
    b = book(1.5, "100.5", "101", "2", "3")
    t = ticker(2, "10", "1000", "-1.25")
    m = market(3, "800000000000", "20000000000", "0.7", lag_s=90)
    k = kline(-60, 2.5, "12.5", "1256.25", 340)
    rows = (
        parsed(spark, [schema.encode(b), schema.encode(t), schema.encode(m), schema.encode(k)])
        .orderBy("kafka_offset")
        .collect()
    )
    assert [r.reason for r in rows] == [None, None, None, None]
    assert [r.message_type for r in rows] == ["book_ticker", "ticker_24hr", "market", "kline_1m"]
    assert (rows[2].event_time, rows[2].exchange_time) == (naive_utc(3), naive_utc(-87))
    assert (rows[3].kline_open_time, rows[3].kline_volume, rows[3].kline_trade_count) == (naive_utc(-60), 12.5, 340)
    assert rows[0].message_id == b["message_id"]
    assert rows[0].event_time == naive_utc(1.5)
    assert (rows[0].bid_price, rows[0].ask_price, rows[0].bid_qty, rows[0].ask_qty) == (
        100.5,
        101.0,
        2.0,
        3.0,
    )
    assert (rows[1].volume_24h, rows[1].quote_volume_24h, rows[1].price_change_pct_24h) == (
        10.0,
        1000.0,
        -1.25,
    )
    assert (rows[2].market_cap, rows[2].quote_volume_24h) == (8e11, 2e10)


GOOD = book(1, "100", "101", "2", "3")
MARKET = market(1, "800", "20", "0.5")

BAD_RECORDS = [
    (b"not json at all", "unparseable_json:not a JSON object of the message schema"),
    (b"[1, 2]", "unparseable_json:not a JSON object of the message schema"),
    (tamper(GOOD, bid_price="abc"), "unparseable_json:not a JSON object of the message schema"),
    (
        tamper(GOOD, bid_price="NaN").replace(b'"NaN"', b"NaN"),
        "unparseable_json:not a JSON object of the message schema",
    ),
    (tamper(GOOD, schema_version=3), "unsupported_schema_version:3"),
    (tamper(GOOD, schema_version=None), "missing_field:schema_version"),
    (tamper(GOOD, message_type="trade"), "unknown_message_type:trade"),
    (tamper(GOOD, bid_price=None), "missing_field:bid_price"),
    (tamper(GOOD, message_id=""), "missing_field:message_id"),
    (tamper(MARKET, market_cap=None), "missing_field:market_cap"),
    (tamper(GOOD, source="mars"), "unknown_source:mars"),
    (tamper(GOOD, event_time="yesterday"), "unparseable_timestamp:event_time"),
    (tamper(GOOD, ingest_time="2024-01-01T00:00:00"), "unparseable_timestamp:ingest_time"),  # no zone
    (tamper(GOOD, event_time="2024-13-01T00:00:00Z"), "unparseable_timestamp:event_time"),
    (tamper(GOOD, bid_price=0), "non_positive_value:bid_price"),
    (tamper(GOOD, ask_price=-101), "non_positive_value:ask_price"),
    (tamper(MARKET, last_price=0), "non_positive_value:last_price"),
    (tamper(GOOD, bid_qty=-1), "negative_value:bid_qty"),
    (tamper(MARKET, market_cap=-5), "negative_value:market_cap"),
    (tamper(GOOD, ask_price=99.5), "ask_below_bid:ask_price<bid_price"),
    (tamper(GOOD, bid_price=12345).replace(b"12345", b"1e400"), "non_finite_value:bid_price"),
    (tamper(GOOD, colour="red"), "unknown_field:colour"),
    # unknown keys a count of the record's '":' would miss: one with whitespace before its colon,
    # one sent as null, one next to a known field sent as null; and a known name in another case
    (schema.encode(GOOD)[:-1] + b',"colour" :"red"}', "unknown_field:colour"),
    (schema.encode(GOOD)[:-1] + b',"colour":null}', "unknown_field:colour"),
    (schema.encode(MARKET)[:-1] + b',"bid_price":null,"colour":1}', "unknown_field:colour"),
    (schema.encode(GOOD).replace(b'"symbol":', b'"Symbol":'), "unknown_field:Symbol"),  # names match exactly
    (None, "empty_value:record has no value"),
]


def test_each_kind_of_bad_record_is_quarantined_with_its_reason(spark):
    values = [schema.encode(GOOD), schema.encode(MARKET)] + [value for value, _ in BAD_RECORDS]
    frame = parsed(spark, values).cache()
    quarantine = st.quarantine_output(frame).orderBy("kafka_offset").collect()
    valid = st.valid_records(frame).collect()

    assert sorted(r.message_id for r in valid) == sorted([GOOD["message_id"], MARKET["message_id"]])
    assert [r.kafka_offset for r in quarantine] == list(range(2, 2 + len(BAD_RECORDS)))
    for row, (value, reason) in zip(quarantine, BAD_RECORDS, strict=True):
        assert row.reason == reason, value
        assert row.value == (None if value is None else bytearray(value))  # raw bytes kept as read
        assert row.value_text == (None if value is None else value.decode())
        assert (row.kafka_topic, row.kafka_partition) == ("cryptoTopic", 0)
        assert row.date == row.quarantined_at.strftime("%Y-%m-%d")
    assert tuple(st.quarantine_output(frame).columns) == st.QUARANTINE_COLUMNS


def test_record_metrics_of_a_book_ticker(spark):
    values = [schema.encode(book(1, "100", "101", "2", "3")), schema.encode(MARKET)]
    rows = st.with_record_metrics(st.valid_records(parsed(spark, values))).orderBy("kafka_offset").collect()
    b, m = rows
    assert b.mid_price == 100.5
    assert b.spread == 1.0
    assert b.spread_pct == pytest.approx(1 / 100.5 * 100, rel=1e-12)
    assert (b.bid_depth_quote, b.ask_depth_quote) == (200.0, 303.0)
    assert (b.liquidity_base, b.liquidity_quote) == (5.0, 503.0)
    assert all(m[c] is None for c in st.RECORD_METRIC_COLUMNS)  # not a book ticker: nothing invented


def test_raw_data_output_partitions_by_event_time_hour(spark):
    late_evening = book(23 * 3600 + 59 * 60 + 59.999, "100", "101")
    next_day = book(24 * 3600, "100", "101")
    frame = st.with_record_metrics(
        st.valid_records(parsed(spark, [schema.encode(late_evening), schema.encode(next_day)]))
    )
    rows = st.raw_data_output(frame).orderBy("event_time").collect()
    assert [(r.date, r.hour) for r in rows] == [("2024-01-01", 23), ("2024-01-02", 0)]
    assert tuple(st.raw_data_output(frame).columns) == st.RAW_DATA_COLUMNS


def test_stored_ids_are_looked_up_by_the_time_their_id_covers(spark):
    """raw_data's lookup: rows of the batch whose id a stored row has are left out; a stored row is
    found through its exchange_time when the message has one (a re-poll of the same observation
    minutes later: other event_time, same id), else through its event_time, and stored rows
    outside the batch's ranges are not selected."""
    msg = book(5, "100", "101")
    polled = dict(msg, ingest_time=schema.format_ts(at(9)))  # the same message sent again: same id
    cg = market(10, "8.5e11", "2.5e10", "1.2", lag_s=600)  # exchange_time -590 s
    cg_later = market(600, "8.5e11", "2.5e10", "1.2", lag_s=1190)  # received 10 min later, same observation
    assert cg_later["message_id"] == cg["message_id"]
    new = book(6, "100", "101")
    batch = st.valid_records(parsed(spark, [schema.encode(m) for m in (polled, new, cg_later)]))
    stored = st.valid_records(parsed(spark, [schema.encode(m) for m in (msg, cg, book(500, "1", "2"))]))
    ranges = st.id_time_ranges((r["lo"], r["hi"]) for r in st.id_time_spans(batch).collect())
    assert ranges == [(naive_utc(-590), naive_utc(-590)), (naive_utc(5), naive_utc(6))]
    found = stored.where(st.stored_predicate(ranges))
    assert sorted(r.message_id for r in found.collect()) == sorted([msg["message_id"], cg["message_id"]])
    assert [r.message_id for r in st.absent_rows(batch, found.select("message_id")).collect()] == [new["message_id"]]


def test_ingest_records_keep_every_bad_record_and_one_copy_of_each_valid_one(spark):
    msg = book(5, "100", "101")
    again = dict(msg, ingest_time=schema.format_ts(at(9)))  # same message_id, polled again
    # the same bad bytes twice (other offsets) and a bad record that carries msg's message_id
    bad_copy = tamper(msg, ask_price=1.0)
    values = [schema.encode(msg), b"not json", schema.encode(again), b"not json", bad_copy]
    records = st.ingest_records(parsed(spark, values)).cache()

    raw = st.raw_data_output(st.with_record_metrics(st.valid_records(records))).collect()
    assert [r.message_id for r in raw] == [msg["message_id"]] * 2  # raw_data's writer keeps one
    quarantine = st.quarantine_output(records, records["quarantined_at"]).orderBy("kafka_offset").collect()
    assert [(q.kafka_offset, q.value_text) for q in quarantine] == [
        (1, "not json"), (3, "not json"), (4, bad_copy.decode())
    ]  # fmt: skip
    assert all(q.quarantined_at is not None and q.reason for q in quarantine)
    valid_rows = records.where("reason IS NULL").collect()
    assert [(r.value, r.value_text, r.key, r.quarantined_at) for r in valid_rows] == [(None, None, None, None)] * 2


def test_minute_metrics_against_hand_computed_values(spark):
    a = book(10, "100", "101", "2", "3")  # mid 100.5, spread 1
    b = book(20, "102", "104", "1", "1")  # mid 103, spread 2
    c = book(40, "99", "100", "4", "0")  # mid 99.5, spread 1
    d = book(70, "200", "202", "1", "1")  # next window, mid 201
    t_old, t_new = ticker(5, "10", "1000", "1.5"), ticker(30, "11", "1100", "-2.5")
    m = market(50, "800000000000", "20000000000", "0.7", lag_s=90)  # CoinGecko's own time 90 s old
    k0 = kline(0, 62, "12.5", "1256.25", 340)  # minute 0's kline, received in minute 1
    shuffled = [c, t_new, a, m, d, k0, b, t_old]
    records = st.with_record_metrics(st.valid_records(parsed(spark, [schema.encode(x) for x in shuffled])))
    result = st.minute_metrics(records)

    assert result.columns == datasets.column_names(datasets.MINUTE_METRICS_COLUMNS)
    contract = datasets.struct_type(datasets.MINUTE_METRICS_COLUMNS)
    assert [(f.name, f.dataType) for f in result.schema] == [(f.name, f.dataType) for f in contract]
    w0, w1 = result.orderBy("window_start").collect()

    pct = [1 / 100.5 * 100, 2 / 103 * 100, 1 / 99.5 * 100]
    expected_w0 = {
        "symbol": "BTCUSDT",
        "window_start": naive_utc(0),
        "window_end": naive_utc(60),
        "mid_open": 100.5,
        "mid_high": 103.0,
        "mid_low": 99.5,
        "mid_close": 99.5,
        "spread_mean": 4 / 3,
        "spread_max": 2.0,
        "spread_pct_mean": sum(pct) / 3,
        "spread_pct_max": 2 / 103 * 100,
        "bid_liquidity_mean": 7 / 3,
        "ask_liquidity_mean": 4 / 3,
        "liquidity_base_mean": 11 / 3,
        "liquidity_quote_mean": (503 + 206 + 396) / 3,
        "volatility": statistics.stdev([math.log(103 / 100.5), math.log(99.5 / 103)]),
        "mid_range": 3.5,
        "tick_count": 3,
        "volume_24h": 11.0,
        "quote_volume_24h": 1100.0,
        "price_change_pct_24h": -2.5,
        "market_cap": 8e11,
        "cg_volume_24h": 2e10,
        "cg_price_change_pct_24h": 0.7,
        "date": "2024-01-01",
        "hour": 0,
        "volume": 12.5,
        "quote_volume": 1256.25,
        "trade_count": 340,
    }
    for key, value in expected_w0.items():
        assert w0[key] == (pytest.approx(value, rel=1e-12) if isinstance(value, float) else value), key

    assert (w1.mid_open, w1.mid_close, w1.mid_high, w1.mid_low, w1.tick_count) == (
        201.0,
        201.0,
        201.0,
        201.0,
        1,
    )
    assert w1.volatility is None  # fewer than two returns: no volatility, not 0
    assert w1.mid_range == 0.0
    assert w1.spread_pct_mean == pytest.approx(2 / 201 * 100, rel=1e-12)
    assert (w1.volume_24h, w1.market_cap, w1.cg_volume_24h) == (None, None, None)
    assert (w1.volume, w1.trade_count) == (None, None)  # minute 1's own kline did not arrive


def test_volatility_uses_time_order_not_arrival_order(spark):
    mids = [100.0, 101.0, 100.5, 102.0, 101.0]
    messages = [book(i * 7, str(mid - 0.5), str(mid + 0.5)) for i, mid in enumerate(mids)]
    reversed_arrival = [schema.encode(x) for x in reversed(messages)]
    records = st.with_record_metrics(st.valid_records(parsed(spark, reversed_arrival)))
    (row,) = st.minute_metrics(records).collect()
    returns = [math.log(b / a) for a, b in zip(mids, mids[1:], strict=False)]
    assert row.volatility == pytest.approx(statistics.stdev(returns), rel=1e-12)
    assert (row.mid_open, row.mid_close) == (100.0, 101.0)


def test_id_time_spans_count_the_rows_and_ids_of_each_minute(spark):
    """The writer's check for copies within a batch: the copies of an id share its id_time, so a
    minute with more rows than ids holds a repeated id."""
    ddl = "message_id string, exchange_time timestamp, event_time timestamp"
    rows = spark.createDataFrame([("a", None, naive_utc(5)), ("a", None, naive_utc(5)), ("b", naive_utc(-590), naive_utc(6)),
                                  ("c", None, naive_utc(70))], ddl)  # fmt: skip
    spans = sorted((r.lo, r.hi, r.rows, r.ids) for r in st.id_time_spans(rows, "message_id").collect())
    assert spans == [(naive_utc(-590), naive_utc(-590), 1, 1), (naive_utc(5), naive_utc(5), 2, 1), (naive_utc(70), naive_utc(70), 1, 1)]
