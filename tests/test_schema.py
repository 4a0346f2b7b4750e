"""The message schema as the producer uses it: round trip, deterministic ids, rejection of
incomplete payloads, decimal exactness, and the simulator's fast encoders matching the schema."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal

import pytest

from btc_platform.ingest import normalize, schema
from btc_platform.ingest.schema import (
    SCHEMA_VERSION,
    SchemaError,
    compute_message_id,
    decode,
    encode,
    make_message,
    required_fields,
)
from btc_platform.ingest.sources import SimulateSource, encode_book_ticker, encode_prevalidated
from btc_platform.testing.exchange_server import fixture

INGEST = "2024-03-25T08:45:00.123Z"


def book_payload(**changes):
    payload = fixture("binance_book_ticker_BTCUSDT.json")
    payload.update(changes)
    return payload


def test_round_trip_of_every_message_type():
    messages = [
        normalize.book_ticker(book_payload(), ingest_time=INGEST),
        normalize.ticker_24hr(fixture("binance_ticker_24hr_BTCUSDT.json"), ingest_time=INGEST),
        normalize.coingecko_simple_price(fixture("coingecko_simple_price_bitcoin.json"), coin_id="bitcoin",
                                         vs_currency="usd", symbol="BTCUSDT", ingest_time=INGEST),
        normalize.coingecko_market(fixture("coingecko_coins_markets_bitcoin.json"), symbol="BTCUSDT",
                                   ingest_time=INGEST),
        normalize.kline_1m(fixture("binance_klines_BTCUSDT_1m.json")[0], symbol="BTCUSDT", ingest_time=INGEST),
    ]
    assert {m["message_type"] for m in messages} == set(schema.MESSAGE_TYPES)
    for message in messages:
        wire = encode(message)
        assert decode(wire) == message
        assert json.loads(wire)["schema_version"] == SCHEMA_VERSION


def test_message_id_is_deterministic_and_content_based():
    first = normalize.ticker_24hr(fixture("binance_ticker_24hr_BTCUSDT.json"), ingest_time=INGEST)
    again = normalize.ticker_24hr(fixture("binance_ticker_24hr_BTCUSDT.json"), ingest_time="2024-03-25T09:00:00.000Z")
    assert first["message_id"] == again["message_id"]  # same observation polled twice -> duplicate id
    changed = fixture("binance_ticker_24hr_BTCUSDT.json")
    changed["lastPrice"] = "47174.98000000"
    assert normalize.ticker_24hr(changed, ingest_time=INGEST)["message_id"] != first["message_id"]
    assert len(first["message_id"]) == 64 and int(first["message_id"], 16) >= 0


@pytest.mark.parametrize("missing", ["symbol", "bidPrice", "bidQty", "askPrice", "askQty"])
def test_book_ticker_missing_field_is_rejected_never_defaulted(missing):
    payload = book_payload()
    del payload[missing]
    with pytest.raises(SchemaError, match=missing):
        normalize.book_ticker(payload, ingest_time=INGEST)


@pytest.mark.parametrize("missing", ["symbol", "lastPrice", "volume", "quoteVolume", "closeTime"])
def test_ticker_24hr_missing_field_is_rejected(missing):
    payload = fixture("binance_ticker_24hr_BTCUSDT.json")
    payload[missing] = None
    with pytest.raises(SchemaError, match=missing):
        normalize.ticker_24hr(payload, ingest_time=INGEST)


def test_optional_24hr_fields_are_left_out_not_invented():
    payload = fixture("binance_ticker_24hr_BTCUSDT.json")
    del payload["highPrice"], payload["count"]
    message = normalize.ticker_24hr(payload, ingest_time=INGEST)
    assert "high_24h" not in message and "trade_count_24h" not in message
    assert b"high_24h" not in encode(message)


def test_bad_values_are_rejected():
    with pytest.raises(SchemaError):
        normalize.book_ticker(book_payload(bidPrice="abc"), ingest_time=INGEST)
    with pytest.raises(SchemaError):
        normalize.book_ticker(book_payload(bidPrice="0"), ingest_time=INGEST)  # price must be > 0
    with pytest.raises(SchemaError, match="ask_price"):
        normalize.book_ticker(book_payload(askPrice="67012.33"), ingest_time=INGEST)  # crossed book
    with pytest.raises(SchemaError):
        normalize.book_ticker([book_payload()], ingest_time=INGEST)


def test_decimals_are_exact_on_the_wire():
    message = normalize.book_ticker(book_payload(bidPrice="67012.12345678", askQty="0.00000001"),
                                    ingest_time=INGEST)
    wire = encode(message).decode()
    assert '"bid_price":67012.12345678' in wire and '"ask_qty":0.00000001' in wire
    back = decode(wire)
    assert back["bid_price"] == Decimal("67012.12345678") and isinstance(back["bid_price"], Decimal)
    assert back["ask_qty"] == Decimal("0.00000001")


def test_coingecko_float_numbers_parsed_without_float_rounding():
    # 0.1 + 0.2 style values must keep the digits CoinGecko sent
    payload = {"bitcoin": {"usd": Decimal("67187.3358936566"), "usd_market_cap": Decimal("1.1"),
                           "usd_24h_vol": Decimal("0.3"), "usd_24h_change": Decimal("-0.30000000000000004"),
                           "last_updated_at": 1711356300}}
    message = normalize.coingecko_simple_price(payload, coin_id="bitcoin", vs_currency="usd", symbol="BTCUSDT",
                                               ingest_time=INGEST)
    assert message["price_change_pct_24h"] == Decimal("-0.30000000000000004")


def test_required_fields_of_the_schema():
    assert set(required_fields("book_ticker")) >= {"bid_price", "bid_qty", "ask_price", "ask_qty", "event_time"}
    assert "market_cap" in required_fields("market")


# ---- the simulator's fast encoders produce exactly what the schema would -------------------------
def test_fast_book_ticker_encoder_matches_schema():
    wire = encode_book_ticker('"BTCUSDT"', "2023-03-16T22:15:01.000Z", INGEST, 2490195, 208164, 2490255, 1)
    expected = make_message(message_type="book_ticker", source="simulated", symbol="BTCUSDT",
                            event_time="2023-03-16T22:15:01.000Z", ingest_time=INGEST,
                            bid_price=Decimal("24901.95"), bid_qty=Decimal("2.08164"),
                            ask_price=Decimal("24902.55"), ask_qty=Decimal("0.00001"))
    assert wire == encode(expected)


def test_fast_prevalidated_encoder_matches_schema_including_exponent_edge_cases():
    values = {"event_time": "2023-03-16T22:15:30.000Z", "ingest_time": INGEST, "last_price": "24919.98",
              "open_price_24h": "24899.18", "high_24h": "24919.98", "low_24h": "24896.29",
              "price_change_24h": "20.80", "price_change_pct_24h": "0.084", "volume_24h": "0.00000",
              "quote_volume_24h": "0.00000000", "window_open_time": "2023-03-16T22:15:00.000Z"}
    wire = encode_prevalidated("ticker_24hr", "BTCUSDT", values)
    expected = make_message(message_type="ticker_24hr", source="simulated", symbol="BTCUSDT",
                            **{k: (Decimal(v) if k not in ("event_time", "ingest_time", "window_open_time") else v)
                               for k, v in values.items()})
    assert wire == encode(expected)


def test_kline_1m_is_exact_and_checked():
    row = fixture("binance_klines_BTCUSDT_1m.json")[0]
    message = normalize.kline_1m(row, symbol="BTCUSDT", ingest_time=INGEST)
    assert message["kline_open_time"] == "2024-03-25T08:43:00.000Z"
    assert message["exchange_time"] == "2024-03-25T08:43:59.999Z"
    assert message["event_time"] == INGEST
    assert (message["kline_volume"], message["kline_quote_volume"], message["kline_trade_count"]) == (
        Decimal(row[5]), Decimal(row[7]), int(row[8]))
    again = normalize.kline_1m(row, symbol="BTCUSDT", ingest_time="2024-03-25T08:44:30.000Z")
    assert again["message_id"] == message["message_id"]  # the same kline polled twice: one id
    with pytest.raises(SchemaError, match="inconsistent OHLC"):
        normalize.kline_1m([*row[:2], row[3], *row[3:]], symbol="BTCUSDT", ingest_time=INGEST)  # high < open
    with pytest.raises(SchemaError, match="not a 1-minute kline"):
        normalize.kline_1m([row[0], *row[1:6], row[0] + 3_599_999, *row[7:]], symbol="BTCUSDT", ingest_time=INGEST)


def test_version_1_messages_are_still_accepted():
    v1 = json.loads(encode(normalize.book_ticker(book_payload(), ingest_time=INGEST)))
    v1["schema_version"] = 1
    assert decode(json.dumps(v1))["schema_version"] == 1


def test_fast_prevalidated_kline_matches_schema():
    values = {"event_time": "2023-03-16T22:16:00.000Z", "ingest_time": INGEST,
              "exchange_time": "2023-03-16T22:15:59.999Z", "kline_open_time": "2023-03-16T22:15:00.000Z",
              "kline_open": "24899.18", "kline_high": "24943.98", "kline_low": "24896.29", "kline_close": "24934.20",
              "kline_volume": "293.13711", "kline_quote_volume": "7302117.50", "kline_trade_count": "5862"}
    wire = encode_prevalidated("kline_1m", "BTCUSDT", values)
    times = ("event_time", "ingest_time", "exchange_time", "kline_open_time")
    expected = make_message(message_type="kline_1m", source="simulated", symbol="BTCUSDT",
                            **{k: (v if k in times else int(v) if k == "kline_trade_count" else Decimal(v))
                               for k, v in values.items()})
    assert wire == encode(expected)


class _Ctx:
    def idle(self, seconds):
        return True

    def stopping(self):
        return False

    def reject(self, source, reason, payload):
        raise AssertionError(reason)

    def poll_ok(self, source):
        pass


def test_simulated_stream_is_valid_and_labelled(tmp_path):
    candles = tmp_path / "candles.csv"
    candles.write_text(
        "open_time_utc,open,high,low,close,volume\n"
        "2023-03-16T22:15:00Z,24899.18,24943.98,24896.29,24934.2,293.13711\n"
        "2023-03-16T22:16:00Z,24935.6,24946.86,24910.48,24933.42,201.9253\n"
    )
    source = SimulateSource(["BTCUSDT"], coingecko_symbol="BTCUSDT", candles=candles, speed=0, seed=7,
                            market_lag_s=90)
    items = list(itertools.islice(source.messages(_Ctx()), 1000))
    messages = [decode(value) for _, value, _ in items]
    counts = {t: sum(m["message_type"] == t for m in messages) for t in schema.MESSAGE_TYPES}
    assert counts == {"book_ticker": 120, "ticker_24hr": 12, "market": 2, "kline_1m": 2}  # 2 candles, 1 s ticks
    klines = [m for m in messages if m["message_type"] == "kline_1m"]
    # the candle, received when its minute closed
    assert klines[0]["kline_open_time"] == "2023-03-16T22:15:00.000Z"
    assert klines[0]["event_time"] == "2023-03-16T22:16:00.000Z"
    assert klines[0]["exchange_time"] == "2023-03-16T22:15:59.999Z"
    assert (klines[0]["kline_open"], klines[0]["kline_high"], klines[0]["kline_low"], klines[0]["kline_close"]) == (
        Decimal("24899.18"), Decimal("24943.98"), Decimal("24896.29"), Decimal("24934.20"))
    assert klines[0]["kline_volume"] == Decimal("293.13711") and klines[0]["kline_trade_count"] == 5862
    assert klines[1]["kline_open_time"] == "2023-03-16T22:16:00.000Z"
    markets = [m for m in messages if m["message_type"] == "market"]
    assert [(m["event_time"], m["exchange_time"]) for m in markets] == [
        ("2023-03-16T22:15:00.000Z", "2023-03-16T22:13:30.000Z"),  # CoinGecko's time lags 90 s
        ("2023-03-16T22:16:00.000Z", "2023-03-16T22:14:30.000Z"),
    ]
    for (key, _, src), message in zip(items, messages, strict=True):
        assert src == message["source"] == "simulated" and key == message["symbol"].encode()
        assert message["message_id"] == compute_message_id(message)
    books = [m for m in messages if m["message_type"] == "book_ticker"]
    # historical event times from the candles, 1 s apart, within the candle's range and spread
    assert books[0]["event_time"] == "2023-03-16T22:15:00.000Z"
    assert books[61]["event_time"] == "2023-03-16T22:16:01.000Z"
    for book in books[:60]:
        mid = (book["bid_price"] + book["ask_price"]) / 2
        assert Decimal("24896.28") <= mid <= Decimal("24943.99")
        spread_bps = (book["ask_price"] - book["bid_price"]) / mid * 10000
        assert Decimal("0.001") < spread_bps <= Decimal("1.6")
        assert book["bid_qty"] > 0 and book["ask_qty"] > 0
