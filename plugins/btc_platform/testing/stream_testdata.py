"""Builders for the streaming tests: wire messages made with btc_platform.ingest.schema, and Kafka-shaped
rows (key, value, topic, partition, offset, timestamp) around them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from btc_platform.ingest import schema

T0 = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
SYMBOL = "BTCUSDT"
KAFKA_DDL = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def naive_utc(seconds: float) -> datetime:
    """``at(seconds)`` as Spark returns timestamps in a UTC session (naive)."""
    return at(seconds).replace(tzinfo=None)


def book(
    seconds: float, bid, ask, bid_qty="1", ask_qty="1", symbol: str = SYMBOL, ingest: float | None = None
) -> dict:
    return schema.make_message(
        message_type="book_ticker",
        source="simulated",
        symbol=symbol,
        event_time=at(seconds),
        ingest_time=at(seconds if ingest is None else ingest),
        bid_price=str(bid),
        ask_price=str(ask),
        bid_qty=str(bid_qty),
        ask_qty=str(ask_qty),
    )


def ticker(seconds: float, volume, quote_volume, change_pct, last="100") -> dict:
    return schema.make_message(
        message_type="ticker_24hr",
        source="simulated",
        symbol=SYMBOL,
        event_time=at(seconds),
        ingest_time=at(seconds),
        last_price=str(last),
        volume_24h=str(volume),
        quote_volume_24h=str(quote_volume),
        price_change_pct_24h=str(change_pct),
    )


def kline(open_s: float, received_s: float, volume, quote_volume, trades, o="100", h="101", lo="99", c="100.5",
          symbol: str = SYMBOL) -> dict:
    """The closed 1-minute kline of the minute starting at ``open_s``, received at ``received_s``."""
    return schema.make_message(
        message_type="kline_1m",
        source="simulated",
        symbol=symbol,
        event_time=at(received_s),
        ingest_time=at(received_s),
        exchange_time=at(open_s + 59.999),
        kline_open_time=at(open_s),
        kline_open=str(o),
        kline_high=str(h),
        kline_low=str(lo),
        kline_close=str(c),
        kline_volume=str(volume),
        kline_quote_volume=str(quote_volume),
        kline_trade_count=int(trades),
    )


def market(seconds: float, market_cap, volume, change_pct, last="100", lag_s: float | None = None) -> dict:
    """A CoinGecko-like market message received at ``seconds``; with ``lag_s`` its exchange_time
    (CoinGecko's last_updated_at) is that much older."""
    return schema.make_message(
        message_type="market",
        source="simulated",
        symbol=SYMBOL,
        event_time=at(seconds),
        ingest_time=at(seconds),
        exchange_time=None if lag_s is None else at(seconds - lag_s),
        last_price=str(last),
        market_cap=str(market_cap),
        quote_volume_24h=str(volume),
        price_change_pct_24h=str(change_pct),
    )


def tamper(message: dict, **changes: Any) -> bytes:
    """Wire bytes of ``message`` with fields changed (``None`` removes a field), unvalidated."""
    body = json.loads(schema.encode(message))
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return json.dumps(body).encode("utf-8")


def kafka_rows(
    values: list[bytes | None], *, start_offset: int = 0, arrival: float = 0.0, topic: str = "cryptoTopic"
):
    """Kafka-shaped tuples for ``values`` (offsets consecutive, arrival times 1 ms apart)."""
    return [
        (SYMBOL.encode(), value, topic, 0, start_offset + i, at(arrival) + timedelta(milliseconds=i))
        for i, value in enumerate(values)
    ]
