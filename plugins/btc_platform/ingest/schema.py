"""The one message schema of the platform (Kafka topic ``cryptoTopic``, JSON, key = symbol).

Every message is a flat JSON object. ``FIELDS`` below is the single definition: the producer
builds and validates messages from it, and the Spark job derives its ``StructType`` from it
(``spark_schema()``), so nothing is typed twice.

Message types (``message_type``):

* ``book_ticker`` – Binance ``/api/v3/ticker/bookTicker``: best bid/ask price and quantity.
* ``ticker_24hr`` – Binance ``/api/v3/ticker/24hr``: last price, 24 h volumes, change, high/low;
  ``exchange_time`` is the ticker's ``closeTime``.
* ``market`` – CoinGecko: price, market cap, 24 h volume and change in USD; ``exchange_time`` is
  CoinGecko's ``last_updated_at`` / ``last_updated`` (often 30-90 s old when received).
* ``kline_1m`` – Binance ``/api/v3/klines?interval=1m``: the last *closed* 1-minute candle of a
  symbol (open/high/low/close, base and quote volume, trade count); ``kline_open_time`` is the
  minute it describes, ``exchange_time`` its close time. One message per symbol and minute.

Times (schema version 2): ``event_time`` is when the producer received the data (for simulated
and replayed data: the simulated clock), so it is close to receipt for every message and the
stream's windows and watermark use it: a message is never behind the watermark because the
exchange's own clock lags. The exchange's own time is kept as ``exchange_time`` (none for
``book_ticker``: Binance gives none). ``ingest_time`` is the wall-clock receipt time. Version 1
messages (``event_time`` = exchange time, no ``exchange_time``) are still accepted.

``source`` says where the data came from: ``binance``, ``coingecko`` or ``simulated``
(every message made by the simulator says so). Prices and quantities are carried as JSON
numbers written from ``Decimal`` (no float round trip in Python); timestamps are UTC
ISO-8601 strings with milliseconds and a ``Z`` suffix.

``message_id`` is a SHA-256 over the canonical content of the message (everything except
``message_id`` and ``ingest_time``, and ``event_time`` too when the message carries an
``exchange_time``): the same exchange observation polled twice gets the same id, so duplicates
can be removed downstream.

pyspark is imported only by :func:`spark_schema`: the producer, which uses this module, runs without it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from btc_platform.timestamps import format_utc

SCHEMA_VERSION = 2
SUPPORTED_SCHEMA_VERSIONS = frozenset({1, 2})

MESSAGE_TYPES = ("book_ticker", "ticker_24hr", "market", "kline_1m")
SOURCES = ("binance", "coingecko", "simulated")

STRING, INT, DECIMAL, TIMESTAMP = "string", "int", "decimal", "timestamp"

_ALL = frozenset(MESSAGE_TYPES)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str  # one of STRING, INT, DECIMAL, TIMESTAMP
    required_for: frozenset[str] = frozenset()
    positive: bool = False  # value must be > 0 when present
    non_negative: bool = False  # value must be >= 0 when present
    doc: str = ""


def _f(name: str, kind: str, required_for=(), positive=False, non_negative=False, doc=""):
    return FieldSpec(name, kind, frozenset(required_for), positive, non_negative, doc)


#: The schema, in wire order.
FIELDS: tuple[FieldSpec, ...] = (
    _f("schema_version", INT, _ALL, doc="Version of this schema."),
    _f("message_id", STRING, _ALL, doc="Deterministic SHA-256 of the content."),
    _f("message_type", STRING, _ALL, doc="book_ticker | ticker_24hr | market."),
    _f("source", STRING, _ALL, doc="binance | coingecko | simulated."),
    _f("symbol", STRING, _ALL, doc="Trading pair, e.g. BTCUSDT; also the Kafka key."),
    _f("event_time", TIMESTAMP, _ALL,
       doc="When the producer received the data (simulated clock for simulated data); windows use it."),
    _f("ingest_time", TIMESTAMP, _ALL, doc="When the producer received the payload (wall clock)."),
    # book ticker
    _f("bid_price", DECIMAL, {"book_ticker"}, positive=True),
    _f("bid_qty", DECIMAL, {"book_ticker"}, non_negative=True),
    _f("ask_price", DECIMAL, {"book_ticker"}, positive=True),
    _f("ask_qty", DECIMAL, {"book_ticker"}, non_negative=True),
    # 24 h ticker (Binance) and market (CoinGecko)
    _f("last_price", DECIMAL, {"ticker_24hr", "market"}, positive=True),
    _f("open_price_24h", DECIMAL, positive=True),
    _f("high_24h", DECIMAL, positive=True),
    _f("low_24h", DECIMAL, positive=True),
    _f("price_change_24h", DECIMAL),
    _f("price_change_pct_24h", DECIMAL),
    _f("volume_24h", DECIMAL, {"ticker_24hr"}, non_negative=True, doc="Base-asset volume."),
    _f("quote_volume_24h", DECIMAL, {"ticker_24hr", "market"}, non_negative=True,
       doc="Quote-currency volume (USDT on Binance, USD on CoinGecko)."),
    _f("trade_count_24h", INT, non_negative=True),
    _f("market_cap", DECIMAL, {"market"}, non_negative=True),
    _f("window_open_time", TIMESTAMP, doc="Start of the 24 h ticker window."),
    # schema version 2
    _f("exchange_time", TIMESTAMP,
       doc="The exchange's own time: CoinGecko last_updated_at, Binance closeTime (24 h ticker, kline)."),
    _f("kline_open_time", TIMESTAMP, {"kline_1m"}, doc="Start of the minute the kline describes."),
    _f("kline_open", DECIMAL, {"kline_1m"}, positive=True),
    _f("kline_high", DECIMAL, {"kline_1m"}, positive=True),
    _f("kline_low", DECIMAL, {"kline_1m"}, positive=True),
    _f("kline_close", DECIMAL, {"kline_1m"}, positive=True),
    _f("kline_volume", DECIMAL, {"kline_1m"}, non_negative=True, doc="Base-asset volume traded in the minute."),
    _f("kline_quote_volume", DECIMAL, {"kline_1m"}, non_negative=True, doc="Quote-asset volume of the minute."),
    _f("kline_trade_count", INT, {"kline_1m"}, non_negative=True, doc="Trades in the minute."),
)

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
FIELDS_BY_NAME: dict[str, FieldSpec] = {f.name: f for f in FIELDS}
_ID_EXCLUDED = frozenset({"message_id", "ingest_time"})


class SchemaError(ValueError):
    """A payload cannot become a valid message; the message says which field and why."""


def required_fields(message_type: str) -> tuple[str, ...]:
    return tuple(f.name for f in FIELDS if message_type in f.required_for)


# ---- time helpers ------------------------------------------------------------------------
def format_ts(value: datetime) -> str:
    """UTC ISO-8601 with milliseconds and Z, e.g. 2024-01-01T00:00:00.123Z (``btc_platform.timestamps``);
    ``SchemaError`` for a naive datetime."""
    try:
        return format_utc(value)
    except ValueError as exc:
        raise SchemaError(str(exc)) from exc


def parse_ts(value: str) -> datetime:
    """Parse an ISO-8601 timestamp that carries a UTC offset (``Z`` or ``+00:00``)."""
    if not isinstance(value, str):
        raise SchemaError(f"timestamp must be a string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SchemaError(f"unparseable timestamp {value!r}") from exc
    if parsed.tzinfo is None:
        raise SchemaError(f"timestamp without time zone {value!r}")
    return parsed.astimezone(UTC)


def ms_to_ts(millis: int | str) -> str:
    """Epoch milliseconds (as the exchanges send them) to the wire timestamp format."""
    try:
        millis_int = int(millis)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"epoch milliseconds expected, got {millis!r}") from exc
    return format_ts(datetime.fromtimestamp(millis_int / 1000, tz=UTC))


def to_decimal(value: Any, field: str = "value") -> Decimal:
    """Decimal from an exchange value (string or number) without a float round trip."""
    if isinstance(value, bool) or value is None:
        raise SchemaError(f"{field}: number expected, got {value!r}")
    if isinstance(value, float):
        value = repr(value)
    try:
        result = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise SchemaError(f"{field}: not a number: {value!r}") from exc
    if not result.is_finite():
        raise SchemaError(f"{field}: not a finite number: {value!r}")
    return result


# ---- building and validating -------------------------------------------------------------
def _coerce(spec: FieldSpec, value: Any) -> Any:
    if spec.kind == STRING:
        if not isinstance(value, str) or not value:
            raise SchemaError(f"{spec.name}: non-empty string expected, got {value!r}")
        return value
    if spec.kind == INT:
        if isinstance(value, bool) or not isinstance(value, (int, str, Decimal)):
            raise SchemaError(f"{spec.name}: integer expected, got {value!r}")
        try:
            result = int(value)
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"{spec.name}: integer expected, got {value!r}") from exc
    elif spec.kind == DECIMAL:
        result = to_decimal(value, spec.name)
    elif spec.kind == TIMESTAMP:
        if isinstance(value, datetime):
            return format_ts(value)
        return format_ts(parse_ts(value))
    else:  # pragma: no cover - schema definition error
        raise AssertionError(spec.kind)
    if spec.positive and result <= 0:
        raise SchemaError(f"{spec.name}: must be > 0, got {value!r}")
    if spec.non_negative and result < 0:
        raise SchemaError(f"{spec.name}: must be >= 0, got {value!r}")
    return result


def id_fields(names) -> frozenset[str]:
    """Which of the field ``names`` a message's id covers (see the module docstring)."""
    excluded = _ID_EXCLUDED | ({"event_time"} if "exchange_time" in names else frozenset())
    return frozenset(n for n in names if n not in excluded)


def compute_message_id(message: Mapping[str, Any]) -> str:
    present = [k for k in FIELD_NAMES if message.get(k) is not None]
    covered = id_fields(present)
    content = {k: message[k] for k in present if k in covered}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def validate(message: Mapping[str, Any]) -> dict[str, Any]:
    """Check and normalise a message dict; raise ``SchemaError`` naming the first problem.

    Unknown keys are rejected, required fields must be present and non-null, numbers become
    ``Decimal``/``int`` and timestamps the canonical string form.
    """
    unknown = set(message) - set(FIELD_NAMES)
    if unknown:
        raise SchemaError(f"unknown field(s): {', '.join(sorted(unknown))}")
    version = message.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise SchemaError(f"unsupported schema_version {version!r}")
    mtype = message.get("message_type")
    if mtype not in MESSAGE_TYPES:
        raise SchemaError(f"unknown message_type {mtype!r}")
    if message.get("source") not in SOURCES:
        raise SchemaError(f"unknown source {message.get('source')!r}")
    out: dict[str, Any] = {}
    for spec in FIELDS:
        value = message.get(spec.name)
        if value is None:
            if mtype in spec.required_for:
                raise SchemaError(f"{mtype}: required field {spec.name} is missing")
            continue
        out[spec.name] = _coerce(spec, value)
    if mtype == "book_ticker" and out["ask_price"] < out["bid_price"]:
        raise SchemaError(f"ask_price {out['ask_price']} < bid_price {out['bid_price']}")
    if mtype == "kline_1m" and not (
        out["kline_low"] <= min(out["kline_open"], out["kline_close"])
        and max(out["kline_open"], out["kline_close"]) <= out["kline_high"]
    ):
        raise SchemaError(
            f"kline_1m: inconsistent OHLC open={out['kline_open']} high={out['kline_high']} "
            f"low={out['kline_low']} close={out['kline_close']}"
        )
    return out


def make_message(
    *,
    message_type: str,
    source: str,
    symbol: str,
    event_time: datetime | str,
    ingest_time: datetime | str,
    **values: Any,
) -> dict[str, Any]:
    """Build a validated message with its deterministic ``message_id``."""
    draft: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "message_type": message_type,
        "source": source,
        "symbol": symbol,
        "event_time": event_time,
        "ingest_time": ingest_time,
        **{k: v for k, v in values.items() if v is not None},
    }
    draft["message_id"] = "pending"
    normalised = validate(draft)
    normalised["message_id"] = compute_message_id(normalised)
    return normalised


# ---- wire format -------------------------------------------------------------------------
def _json_value(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")  # exact digits as a JSON number
    return json.dumps(value)


def encode(message: Mapping[str, Any]) -> bytes:
    """Serialise a validated message to its JSON wire form (field order as in ``FIELDS``)."""
    body = ",".join(
        f"{json.dumps(k)}:{_json_value(message[k])}" for k in FIELD_NAMES if message.get(k) is not None
    )
    return ("{" + body + "}").encode("utf-8")


def decode(payload: bytes | str) -> dict[str, Any]:
    """Parse and validate a wire message; raises ``SchemaError`` on any problem."""
    try:
        raw = json.loads(payload, parse_float=Decimal, parse_int=Decimal)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SchemaError(f"invalid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise SchemaError("message must be a JSON object")
    if isinstance(raw.get("schema_version"), Decimal):
        raw["schema_version"] = int(raw["schema_version"])
    return validate(raw)


# ---- Spark --------------------------------------------------------------------------------
def spark_schema(timestamps_as_strings: bool = True):
    """The Spark ``StructType`` of a message, derived from ``FIELDS``.

    Decimals map to ``DoubleType`` (metrics are computed in double precision); timestamps stay
    strings by default so the streaming job can quarantine unparseable ones instead of turning
    them into nulls. Every field is nullable at the Spark level: required-ness is checked by
    the job (``required_fields``) so that violations are quarantined with a reason.
    """
    from pyspark.sql import types as T

    mapping = {
        STRING: T.StringType(),
        INT: T.LongType(),
        DECIMAL: T.DoubleType(),
        TIMESTAMP: T.StringType() if timestamps_as_strings else T.TimestampType(),
    }
    return T.StructType([T.StructField(f.name, mapping[f.kind], True) for f in FIELDS])
