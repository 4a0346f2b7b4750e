"""Builders for the streaming tests: wire messages made with btc_platform.schema, and Kafka-shaped
rows (key, value, topic, partition, offset, timestamp) around them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from btc_platform import schema

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


def market(seconds: float, market_cap, volume, change_pct, last="100") -> dict:
    return schema.make_message(
        message_type="market",
        source="simulated",
        symbol=SYMBOL,
        event_time=at(seconds),
        ingest_time=at(seconds),
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
