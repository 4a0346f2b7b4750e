"""Exchange payloads -> platform messages (``btc_platform.ingest.schema``).

One function per payload kind. Each reads the fields it needs from the raw JSON, converts them
exactly (``Decimal``; epoch milliseconds/seconds to the wire timestamp) and builds the message
with ``schema.make_message``. A payload without a field the message needs raises
``SchemaError`` naming the field: the caller counts it as rejected. Nothing is defaulted.
Optional fields (e.g. high/low in the 24 h ticker) are carried when the payload has them and
left out (null) when it does not.

``event_time`` is the receipt time (``ingest_time``) for every live message; the exchange's own
time goes to ``exchange_time`` (see ``btc_platform.ingest.schema``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from btc_platform.ingest.schema import SchemaError, format_ts, make_message, ms_to_ts, parse_ts, to_decimal

BINANCE = "binance"
COINGECKO = "coingecko"

#: Values of one kline array as Binance returns it.
KLINE_FIELDS = 12


@dataclass(frozen=True)
class Kline:
    """One parsed kline (candle). Times are epoch milliseconds (UTC), open_time inclusive."""

    open_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    close_time_ms: int
    quote_volume: Decimal
    trades: int
    taker_buy_base_volume: Decimal
    taker_buy_quote_volume: Decimal


def parse_kline(row: Any) -> Kline:
    """Parse one raw kline array (12 values as Binance returns them); ``SchemaError`` if malformed."""
    if not isinstance(row, (list, tuple)) or len(row) < KLINE_FIELDS:
        raise SchemaError(f"kline: expected a list of {KLINE_FIELDS} values, got {row!r}")
    try:
        open_ms, close_ms, trades = int(row[0]), int(row[6]), int(row[8])
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"kline: bad integer field in {row!r}") from exc
    return Kline(
        open_time_ms=open_ms,
        open=to_decimal(row[1], "open"),
        high=to_decimal(row[2], "high"),
        low=to_decimal(row[3], "low"),
        close=to_decimal(row[4], "close"),
        volume=to_decimal(row[5], "volume"),
        close_time_ms=close_ms,
        quote_volume=to_decimal(row[7], "quote_volume"),
        trades=trades,
        taker_buy_base_volume=to_decimal(row[9], "taker_buy_base_volume"),
        taker_buy_quote_volume=to_decimal(row[10], "taker_buy_quote_volume"),
    )


def _require(payload: Any, key: str, what: str) -> Any:
    if not isinstance(payload, Mapping):
        raise SchemaError(f"{what}: payload must be a JSON object, got {type(payload).__name__}")
    value = payload.get(key)
    if value is None:
        raise SchemaError(f"{what}: payload is missing required field {key!r}")
    return value


def _optional(payload: Mapping[str, Any], key: str) -> Any:
    return payload.get(key)


def _ts(value: datetime | str) -> str:
    return format_ts(value) if isinstance(value, datetime) else value


def book_ticker(payload: Any, *, ingest_time: datetime | str, source: str = BINANCE) -> dict[str, Any]:
    """Binance ``/api/v3/ticker/bookTicker``. No exchange time there: event_time = receipt time."""
    what = "bookTicker"
    return make_message(
        message_type="book_ticker",
        source=source,
        symbol=_require(payload, "symbol", what),
        event_time=_ts(ingest_time),
        ingest_time=_ts(ingest_time),
        bid_price=to_decimal(_require(payload, "bidPrice", what), "bidPrice"),
        bid_qty=to_decimal(_require(payload, "bidQty", what), "bidQty"),
        ask_price=to_decimal(_require(payload, "askPrice", what), "askPrice"),
        ask_qty=to_decimal(_require(payload, "askQty", what), "askQty"),
    )


def ticker_24hr(payload: Any, *, ingest_time: datetime | str, source: str = BINANCE) -> dict[str, Any]:
    """Binance ``/api/v3/ticker/24hr``; exchange_time is the ticker's ``closeTime``."""
    what = "ticker/24hr"
    close_time = _require(payload, "closeTime", what)
    optional = {
        "open_price_24h": "openPrice",
        "high_24h": "highPrice",
        "low_24h": "lowPrice",
        "price_change_24h": "priceChange",
        "price_change_pct_24h": "priceChangePercent",
    }
    values: dict[str, Any] = {}
    for field, key in optional.items():
        raw = _optional(payload, key)
        if raw is not None:
            values[field] = to_decimal(raw, key)
    if payload.get("count") is not None:
        values["trade_count_24h"] = payload["count"]
    if payload.get("openTime") is not None:
        values["window_open_time"] = ms_to_ts(payload["openTime"])
    return make_message(
        message_type="ticker_24hr",
        source=source,
        symbol=_require(payload, "symbol", what),
        event_time=_ts(ingest_time),
        ingest_time=_ts(ingest_time),
        exchange_time=ms_to_ts(close_time),
        last_price=to_decimal(_require(payload, "lastPrice", what), "lastPrice"),
        volume_24h=to_decimal(_require(payload, "volume", what), "volume"),
        quote_volume_24h=to_decimal(_require(payload, "quoteVolume", what), "quoteVolume"),
        **values,
    )


def coingecko_simple_price(
    payload: Any,
    *,
    coin_id: str,
    vs_currency: str,
    symbol: str,
    ingest_time: datetime | str,
    source: str = COINGECKO,
) -> dict[str, Any]:
    """CoinGecko ``/api/v3/simple/price`` with every include_* flag; exchange_time = last_updated_at."""
    what = "simple/price"
    coin = _require(payload, coin_id, what)
    vs = vs_currency.lower()
    what = f"simple/price[{coin_id}]"
    updated = _require(coin, "last_updated_at", what)
    try:
        event_time = format_ts(datetime.fromtimestamp(int(updated), tz=UTC))
    except (TypeError, ValueError, OverflowError) as exc:
        raise SchemaError(f"{what}: last_updated_at is not epoch seconds: {updated!r}") from exc
    return make_message(
        message_type="market",
        source=source,
        symbol=symbol,
        event_time=_ts(ingest_time),
        ingest_time=_ts(ingest_time),
        exchange_time=event_time,
        last_price=to_decimal(_require(coin, vs, what), vs),
        market_cap=to_decimal(_require(coin, f"{vs}_market_cap", what), f"{vs}_market_cap"),
        quote_volume_24h=to_decimal(_require(coin, f"{vs}_24h_vol", what), f"{vs}_24h_vol"),
        price_change_pct_24h=to_decimal(_require(coin, f"{vs}_24h_change", what), f"{vs}_24h_change"),
    )


def coingecko_market(
    payload: Any, *, symbol: str, ingest_time: datetime | str, source: str = COINGECKO
) -> dict[str, Any]:
    """One entry of CoinGecko ``/api/v3/coins/markets``; exchange_time = ``last_updated``."""
    what = "coins/markets"
    if isinstance(payload, list):
        if len(payload) != 1:
            raise SchemaError(f"{what}: expected exactly one coin, got {len(payload)}")
        payload = payload[0]
    values: dict[str, Any] = {}
    for field, key in {
        "high_24h": "high_24h",
        "low_24h": "low_24h",
        "price_change_24h": "price_change_24h",
        "price_change_pct_24h": "price_change_percentage_24h",
    }.items():
        raw = _optional(payload, key) if isinstance(payload, Mapping) else None
        if raw is not None:
            values[field] = to_decimal(raw, key)
    return make_message(
        message_type="market",
        source=source,
        symbol=symbol,
        event_time=_ts(ingest_time),
        ingest_time=_ts(ingest_time),
        exchange_time=format_ts(parse_ts(_require(payload, "last_updated", what))),
        last_price=to_decimal(_require(payload, "current_price", what), "current_price"),
        market_cap=to_decimal(_require(payload, "market_cap", what), "market_cap"),
        quote_volume_24h=to_decimal(_require(payload, "total_volume", what), "total_volume"),
        **values,
    )


def kline_1m(payload: Any, *, symbol: str, ingest_time: datetime | str, source: str = BINANCE) -> dict[str, Any]:
    """One closed 1-minute kline of Binance ``/api/v3/klines`` (the raw 12-value array).

    ``kline_open_time`` is the minute it describes, ``exchange_time`` its close time. The caller
    makes sure the kline is closed (its close time is before the receipt time).
    """
    kline = parse_kline(payload)
    if kline.close_time_ms - kline.open_time_ms != 59_999:
        raise SchemaError(f"kline_1m: not a 1-minute kline: open {kline.open_time_ms}, close {kline.close_time_ms}")
    return make_message(
        message_type="kline_1m",
        source=source,
        symbol=symbol,
        event_time=_ts(ingest_time),
        ingest_time=_ts(ingest_time),
        exchange_time=ms_to_ts(kline.close_time_ms),
        kline_open_time=ms_to_ts(kline.open_time_ms),
        kline_open=kline.open,
        kline_high=kline.high,
        kline_low=kline.low,
        kline_close=kline.close,
        kline_volume=kline.volume,
        kline_quote_volume=kline.quote_volume,
        kline_trade_count=kline.trades,
    )
