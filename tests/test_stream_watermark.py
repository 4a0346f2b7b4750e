"""The streaming job's queries on a file source (no Kafka): Kafka-shaped rows are dropped
into a directory one file per step and ``processAllAvailable()`` moves the stream on.

Watermark delay 30 s, 1-minute windows. Checks: a window is written only once the watermark
passes its end; a record behind the watermark is counted while its window is open; one whose
window was written is not counted but is still in raw_data; duplicates are counted once; bad
records land in quarantine."""

from __future__ import annotations

import math
import statistics

import pytest

from btc_platform.ingest import schema
from btc_platform.lakehouse import datasets
from btc_platform.settings import load_settings
from btc_platform.testing.stream_testdata import KAFKA_DDL, at, book, kafka_rows, naive_utc
from spark_jobs import stream_job, stream_sinks

pytestmark = [pytest.mark.spark, pytest.mark.slow]

W0 = naive_utc(0)


@pytest.fixture
def pipeline(spark, tmp_path):
    """Start the job's queries on a parquet file source; yield (push(values), read(dataset))."""
    settings = load_settings(
        data_dir=tmp_path / "data",
        storage_root=f"file://{tmp_path}/store",
        stream_watermark_delay="30 seconds",
        stream_trigger_interval="0 seconds",
        stream_side_trigger_interval="0 seconds",
    )
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    source = spark.readStream.schema(KAFKA_DDL).parquet(str(inbox))
    queries = stream_job.start_queries(spark, source, settings)
    state = {"offset": 0, "step": 0}

    def push(values, arrival: float) -> None:
        rows = kafka_rows(values, start_offset=state["offset"], arrival=arrival)
        state["offset"] += len(values)
        state["step"] += 1
        staging = tmp_path / f"staging{state['step']}"
        spark.createDataFrame(rows, KAFKA_DDL).coalesce(1).write.parquet(str(staging))
        for part in staging.glob("*.parquet"):  # atomic rename into the watched directory
            part.rename(inbox / f"step{state['step']:03d}-{part.name}")
        for query in queries:
            query.processAllAvailable()

    def read(name: str):
        return spark.read.format("delta").load(settings.path(name))

    read.settings = settings  # what the consolidation test runs the batch job with
    try:
        yield push, read
    finally:
        for query in queries:
            query.stop()
        for query in queries:
            assert query.exception() is None


def metrics_by_window(read):
    return {r.window_start: r for r in read(datasets.MINUTE_METRICS).collect()}


def test_windows_finalise_after_watermark_and_late_records(pipeline):
    push, read = pipeline
    t10, t20, t40 = book(10, "100", "101"), book(20, "102", "104"), book(40, "99", "100")
    # step 1: three ticks of W0 and one of W1 -> max event 01:05, watermark 00:35
    push([schema.encode(m) for m in (t10, t20, t40, book(65, "200", "202"))], arrival=100)
    assert read(datasets.RAW_DATA).count() == 4
    assert metrics_by_window(read) == {}  # W0 ends 01:00 > watermark: not final yet

    # step 2: late but inside the watermark (00:50 > 00:35), a duplicate of t10 re-polled later,
    # a malformed record, and a tick at 01:20 -> watermark 00:50
    late_ok = book(50, "98", "99")
    duplicate = dict(t10, ingest_time=schema.format_ts(at(90)))
    push(
        [schema.encode(late_ok), schema.encode(duplicate), b"{broken", schema.encode(book(80, "201", "203"))],
        arrival=101,
    )
    assert metrics_by_window(read) == {}  # still not final: watermark 00:50 < 01:00

    # step 3: behind the watermark (00:30 < 00:50) but its minute is still open: counted (a window
    # takes rows until the watermark passes its end); a tick at 02:00 -> watermark 01:30
    behind = book(30, "50", "51")
    push([schema.encode(behind), schema.encode(book(120, "300", "302"))], arrival=102)
    # step 4: one more tick so a batch runs with the advanced watermark -> W0 is final, W1 is not
    push([schema.encode(book(130, "301", "303"))], arrival=103)

    windows = metrics_by_window(read)
    assert list(windows) == [W0]
    w0 = windows[W0]
    assert w0.tick_count == w0.message_count == 5  # t10, t20, 00:30, t40, 00:50; not the duplicate
    assert (w0.mid_open, w0.mid_close, w0.mid_high, w0.mid_low) == (100.5, 98.5, 103.0, 50.5)
    mids = [100.5, 103.0, 50.5, 99.5, 98.5]
    expected_vol = statistics.stdev([math.log(b / a) for a, b in zip(mids, mids[1:], strict=False)])
    assert w0.volatility == pytest.approx(expected_vol, rel=1e-12)
    assert w0.window_end == naive_utc(60)

    # step 5: a tick of W0 after W0 was written: too late for minute_metrics (the consolidation
    # windows it from raw_data), stored in raw_data all the same
    too_late = book(45, "97", "98")
    push([schema.encode(too_late), schema.encode(book(140, "302", "304"))], arrival=104)
    assert metrics_by_window(read)[W0] == w0

    raw_ids = [r.message_id for r in read(datasets.RAW_DATA).collect()]
    assert len(raw_ids) == len(set(raw_ids)) == 11  # every valid unique message, the duplicate once
    assert too_late["message_id"] in raw_ids  # not counted in metrics, but not lost either
    assert late_ok["message_id"] in raw_ids and behind["message_id"] in raw_ids

    quarantine = read(datasets.QUARANTINE).collect()
    assert [(q.value_text, q.kafka_offset, q.reason.split(":")[0]) for q in quarantine] == [
        ("{broken", 6, "unparseable_json")
    ]


def test_last_minute_arriving_after_the_hour_is_in_the_hours_row(spark, pipeline):
    """Minute H:59 arrives at H+1:00:45; the stream writes it once its watermark passes H+1:00, the
    sensor of the consolidation reports that moment, and the hour's close is that minute's."""
    from datetime import UTC, timedelta

    from btc_platform.ops.orchestration import minute_metrics_ready
    from btc_platform.testing.stream_testdata import T0
    from spark_jobs import consolidate_job

    push, read = pipeline
    settings = read.settings
    hour_end = T0 + timedelta(hours=1)
    push([schema.encode(book(s, "100", "101")) for s in (60, 1800, 3500)], arrival=3500)  # ..., 00:58:20
    last_minute = book(3570, "90", "92")  # 00:59:30, arriving at 01:00:45
    push([schema.encode(last_minute), schema.encode(book(3630, "95", "96"))], arrival=3645)  # max event 01:00:30
    ready, reason = minute_metrics_ready(settings, hour_end, now=hour_end + timedelta(seconds=45))
    assert not ready and "waiting for the stream" in reason  # no status record: the stream said nothing yet
    push([schema.encode(book(3700, "95", "96"))], arrival=3700)  # watermark 01:01:10 -> window 00:59 final

    minutes = {r.window_start: r for r in read(datasets.MINUTE_METRICS).collect()}
    assert naive_utc(3540) in minutes and minutes[naive_utc(3540)].mid_close == 91.0
    consolidate_job.run(spark, settings, T0, hour_end, produced_at=hour_end + timedelta(minutes=2))
    row = spark.read.format("delta").load(settings.path(datasets.HOURLY_METRICS)).where("hour_start = '2024-01-01 00:00:00'").first()
    assert row.close == 91.0 and row.open == 100.5 and row.minutes_present == 4
    assert row.hour_start.replace(tzinfo=UTC) == T0


def test_delta_batch_writer_writes_a_batch_id_once(spark, tmp_path):
    """What the ingest query writes both tables with: a replayed (query id, batch id) is skipped by
    Delta, also by a restarted job; an output with only_if commits nothing for a batch without
    rows for it, and the batch is not cached for it."""
    from delta.tables import DeltaTable

    out, side = f"file://{tmp_path}/out", f"file://{tmp_path}/side"
    rows = spark.createDataFrame([("2024-01-01", 1), ("2024-01-02", 2)], "date string, n int")
    more = spark.createDataFrame([("2024-01-02", 3)], "date string, n int")
    outputs = [stream_sinks.BatchOutput(out, lambda b: b),
               stream_sinks.BatchOutput(side, lambda b: b.where("n > 2"), only_if="n > 2")]  # fmt: skip
    query = type("Query", (), {"id": "0b7e6c1e-query"})()
    writer = stream_sinks.DeltaBatchWriter(outputs)
    writer.bind(query)
    writer(rows, 0)
    writer(rows, 0)  # the same batch again, as after a crash before the checkpoint commit
    restarted = stream_sinks.DeltaBatchWriter(outputs)  # a restarted job: same query id
    restarted.bind(query)
    restarted(more, 1)
    restarted(more, 0)
    got = sorted((r.date, r.n) for r in spark.read.format("delta").load(out).collect())
    assert got == [("2024-01-01", 1), ("2024-01-02", 2), ("2024-01-02", 3)]
    assert [r.n for r in spark.read.format("delta").load(side).collect()] == [3]
    # batch 0 held no row for the side table: its only commit is batch 1
    assert DeltaTable.forPath(spark, side).history().count() == 1
    assert not rows.is_cached and not more.is_cached
    with pytest.raises(ValueError, match="every batch"):
        stream_sinks.DeltaBatchWriter(outputs[1:])  # nothing computes the batch's observation


def test_refuses_checkpoints_of_the_earlier_quarantine_query(spark, tmp_path):
    settings = load_settings(data_dir=tmp_path / "data", storage_root=f"file://{tmp_path}/store")
    (tmp_path / "store" / "checkpoints" / "quarantine").mkdir(parents=True)
    source = spark.readStream.schema(KAFKA_DDL).parquet(str(tmp_path))
    with pytest.raises(stream_job.ConfigError, match="earlier three-query layout"):
        stream_job.start_ingest_query(spark, source, settings)
    assert not (tmp_path / "store" / "raw_data").exists()  # nothing started, nothing written
    assert spark.streams.active == []


def test_lagging_coingecko_and_klines_are_in_every_minute_that_received_them(spark, pipeline, tmp_path):
    """A live source whose CoinGecko updates lag 90 s (``last_updated_at`` 90 s before receipt,
    the exchange server's format through the real normaliser): every minute that received a
    CoinGecko message has its fields, and each minute has the volume of its own closed 1m kline,
    received 2 s after the minute closed. With CoinGecko's time as event time (schema 1) every
    one of these market messages was 60 s behind the watermark and dropped."""
    from btc_platform.ingest import normalize
    from btc_platform.testing.exchange_server import fixture

    push, read = pipeline
    cg = fixture("coingecko_simple_price_bitcoin.json")
    kline_row = fixture("binance_klines_BTCUSDT_1m.json")[0]
    messages: list[tuple[float, bytes]] = []
    for second in range(0, 301, 5):  # book tickers every 5 s for 5 minutes
        messages.append((second, schema.encode(book(second, "100", "101"))))
    for minute in range(5):
        received = minute * 60 + 20
        payload = {"bitcoin": {**cg["bitcoin"], "last_updated_at": int(at(received - 90).timestamp()),
                               "usd_market_cap": 1e12 + minute}}
        messages.append((received, schema.encode(normalize.coingecko_simple_price(
            payload, coin_id="bitcoin", vs_currency="usd", symbol="BTCUSDT", ingest_time=at(received)))))
        row = [int(at(minute * 60).timestamp() * 1000), *kline_row[1:5], str(minute + 1),
               int(at(minute * 60 + 59.999).timestamp() * 1000), kline_row[7], 100 + minute, *kline_row[9:]]
        messages.append((minute * 60 + 62, schema.encode(normalize.kline_1m(row, symbol="BTCUSDT",
                                                                              ingest_time=at(minute * 60 + 62)))))
    messages.sort(key=lambda m: m[0])
    for step_end in range(90, 361, 90):  # what arrived in each 90 s, as the stream would read it
        push([value for t, value in messages if step_end - 90 < t <= step_end], arrival=step_end)
    push([schema.encode(book(400, "100", "101"))], arrival=400)  # watermark 370: minutes 0-4 final

    minutes = metrics_by_window(read)
    assert sorted(minutes) == [naive_utc(m * 60) for m in range(6)]
    for m in range(5):  # each of these minutes received one CoinGecko message and its own kline
        row = minutes[naive_utc(m * 60)]
        assert row.market_cap == 1e12 + m, m
        assert (row.volume, row.trade_count) == (float(m + 1), 100 + m), m
    assert minutes[naive_utc(300)].market_cap is None and minutes[naive_utc(300)].volume is None
    raw = read(datasets.RAW_DATA).where("message_type = 'market'").collect()
    lags = {(r.event_time - r.exchange_time).total_seconds() for r in raw}
    assert len(raw) == 5 and lags == {90.0}  # CoinGecko's own time kept as a field


def test_unique_key_output_holds_a_message_id_once_whatever_the_delay_of_its_copy(spark, tmp_path):
    """raw_data's writer: a copy of a stored message_id is left out however long after it comes
    (days, a restarted job, another batch), also a copy within one batch and a re-poll whose receipt
    time (event_time) differs but whose exchange_time, in the id, is the same; the counts say so."""
    from spark_jobs import tables

    out = f"file://{tmp_path}/raw"
    ddl = "message_id string, exchange_time timestamp, event_time timestamp, date string, n int"
    spark.createDataFrame([], ddl).write.format("delta").save(out)
    day = naive_utc(0)
    later = naive_utc(3 * 86400)  # three days later: far beyond any dedup window

    def batch(*rows):
        return spark.createDataFrame([(i, x, e, str(e.date()), n) for i, x, e, n in rows], ddl)

    counts = stream_sinks.BatchCounts()
    outputs = [stream_sinks.BatchOutput(out, lambda b: b, unique_key="message_id")]
    writer = stream_sinks.DeltaBatchWriter(outputs, counts)
    writer.bind(type("Query", (), {"id": "5d1f-raw"})())
    writer(batch(("a", day, day, 1), ("b", None, day, 2), ("b", None, day, 3)), 0)
    restarted = stream_sinks.DeltaBatchWriter(outputs, counts)  # a job started days later
    restarted.bind(type("Query", (), {"id": "5d1f-raw"})())
    # a re-poll of a (same exchange_time, later receipt), a late re-send of b, and c: new
    restarted(batch(("a", day, later, 4), ("b", None, day, 5), ("c", None, later, 6)), 1)
    restarted(batch(("c", None, later, 7)), 2)
    stored = sorted(r.message_id for r in tables.read_table(spark, out).collect())
    assert stored == ["a", "b", "c"]
    assert [counts.take(i).get("stored") for i in range(3)] == [2, 1, 0]


def test_unique_key_lookup_is_skipped_only_for_times_after_all_the_table_holds(spark, tmp_path):
    """The writer looks raw_data up only when a batch's id_time ranges reach back to the bound of
    what the table holds: a copy of the newest stored message (id_time exactly at the bound), a copy
    next to new later rows (the batch starts before the bound) and a copy coming to a restarted
    writer (bound read from the table) are all left out; a batch entirely after the bound is not
    looked up, and its copies within the batch are still kept once."""
    from spark_jobs import tables

    out = f"file://{tmp_path}/raw"
    ddl = "message_id string, exchange_time timestamp, event_time timestamp, date string, n int"
    spark.createDataFrame([], ddl).write.format("delta").save(out)

    def batch(*rows):
        return spark.createDataFrame([(i, x, e, str(e.date()), n) for i, x, e, n in rows], ddl)

    def writer():
        w = stream_sinks.DeltaBatchWriter([output], counts)
        w.bind(type("Query", (), {"id": "7c2e-raw"})())
        return w

    counts = stream_sinks.BatchCounts()
    output = stream_sinks.BatchOutput(out, lambda b: b, unique_key="message_id")
    t0, t1, t2, t3 = (naive_utc(s) for s in (0, 10, 20, 30))
    first = writer()
    assert not first._reaching_back(spark, output, {(): (t0, t0)})  # an empty table holds nothing
    # a CoinGecko-like message: exchange_time (in its id) minutes before its receipt
    first(batch(("a", None, t1, 1), ("cg", naive_utc(-600), t0, 2)), 0)
    assert first._reaching_back(spark, output, {(): (t1, t1)}) == {()}
    assert not first._reaching_back(spark, output, {(): (t2, t3)})
    first(batch(("a", None, t1, 3), ("b", None, t2, 4)), 1)  # a copy of the newest stored id, one new
    first(batch(("c", None, t3, 5), ("c", None, t3, 6)), 2)  # after the bound: no lookup, one c kept
    restarted = writer()  # the bound is read from the table again
    assert restarted._reaching_back(spark, output, {(): (t3, t3)}) == {()}
    assert not restarted._reaching_back(spark, output, {(): (naive_utc(31), naive_utc(40))})
    restarted(batch(("c", None, t3, 7)), 3)
    restarted(batch(("cg", naive_utc(-600), naive_utc(900), 8), ("d", None, naive_utc(900), 9)), 4)
    stored = sorted((r.message_id, r.n) for r in tables.read_table(spark, out).collect())
    assert stored == [("a", 1), ("b", 4), ("c", 5), ("cg", 2), ("d", 9)]
    assert [counts.take(i).get("stored") for i in range(5)] == [2, 1, 1, 0, 1]


def test_unique_key_bound_is_kept_per_id_group_and_copies_are_still_left_out(spark, tmp_path):
    """With ``id_groups`` (raw_data: source, message_type, symbol) the writer keeps one bound per
    group: a group's rows after its own bound are not looked up even when another group has
    stored later times (one symbol's messages a batch behind another's); a copy of any group's
    newest stored message, a copy among new rows of its group, a copy coming to a restarted writer
    (every group bounded by the table's maximum until written) and a CoinGecko-like copy whose
    exchange_time lies before its group's bound are all left out."""
    from spark_jobs import tables

    out = f"file://{tmp_path}/raw"
    ddl = "message_id string, symbol string, exchange_time timestamp, event_time timestamp, date string, n int"
    spark.createDataFrame([], ddl).write.format("delta").save(out)

    def batch(*rows):
        return spark.createDataFrame([(i, s, x, e, str(e.date()), n) for i, s, x, e, n in rows], ddl)

    def writer():
        w = stream_sinks.DeltaBatchWriter([output], counts)
        w.bind(type("Query", (), {"id": "9a4b-raw"})())
        return w

    counts = stream_sinks.BatchCounts()
    output = stream_sinks.BatchOutput(out, lambda b: b, unique_key="message_id", id_groups=("symbol",))
    t = [naive_utc(s) for s in range(0, 100, 10)]
    first = writer()
    first.prime(spark)
    first(batch(("x1", "X", None, t[3], 1), ("y1", "Y", None, t[1], 2), ("cg1", "CG", t[0], t[4], 3)), 0)
    # Y's next rows lie before X's last but after Y's own: nothing of the table can be a copy
    assert first._reaching_back(spark, output, {("Y",): (t[2], t[2]), ("X",): (t[4], t[4])}) == set()
    assert first._reaching_back(spark, output, {("Y",): (t[1], t[2])}) == {("Y",)}
    assert first._reaching_back(spark, output, {("Z",): (t[0], t[0])}) == set()  # the table was empty
    first(batch(("y2", "Y", None, t[2], 4), ("x2", "X", None, t[4], 5)), 1)  # no lookup: both new
    # copies: Y's newest stored (at its bound), X's among new X rows, CG's with exchange_time before its bound
    first(batch(("y2", "Y", None, t[2], 6), ("x1", "X", None, t[3], 7), ("x3", "X", None, t[5], 8),
                ("cg1", "CG", t[0], t[6], 9), ("cg2", "CG", t[1], t[6], 10)), 2)  # fmt: skip
    restarted = writer()  # every group bounded by the table's maximum (t6 + margin) until written
    assert restarted._reaching_back(spark, output, {("Y",): (t[3], t[3])}) == {("Y",)}
    assert restarted._reaching_back(spark, output, {("Y",): (t[7], t[7])}) == set()
    restarted(batch(("y1", "Y", None, t[1], 11), ("y3", "Y", None, t[7], 12)), 3)
    restarted(batch(("x3", "X", None, t[5], 13), ("y4", "Y", None, t[8], 14), ("y4", "Y", None, t[8], 15)), 4)
    stored = sorted((r.message_id, r.n) for r in tables.read_table(spark, out).collect())
    assert stored == [("cg1", 3), ("cg2", 10), ("x1", 1), ("x2", 5), ("x3", 8), ("y1", 2), ("y2", 4),
                      ("y3", 12), ("y4", 14)]  # fmt: skip
    assert [counts.take(i).get("stored") for i in range(5)] == [3, 2, 2, 1, 1]
