"""Where the producer's messages come from: ``live``, ``replay`` and ``simulate``.

A source is an object with ``messages(ctx)`` returning an iterator of ``(key, value, source)``
tuples: the Kafka key (symbol bytes), the encoded message (``schema.encode`` bytes) and the
message's ``source`` field (for per-source health). ``ctx`` is the producer's
:class:`SourceContext`: ``ctx.idle(seconds)`` waits while the producer keeps serving delivery
reports and status (returns False once a stop was requested), ``ctx.reject(...)`` counts and
logs a payload that could not become a message, ``ctx.poll_ok``/``ctx.poll_failed`` record the
health of each upstream.

* :class:`LiveSource` polls Binance (bookTicker + 24hr per symbol, every
  ``binance_poll_interval_s``; the last closed 1-minute kline per symbol once a minute, see
  :meth:`LiveSource.poll_klines`) and CoinGecko (own cadence and budget). A CoinGecko update
  already published (same ``last_updated_at``) is not published again. When an API cannot be
  reached it says so and names the offline option; it never switches to simulated data.
* :class:`ReplaySource` re-publishes a JSONL file of captured messages (``--record`` output),
  paced by event time / ``speed`` (0 = as fast as possible).
* :class:`SimulateSource` makes a synthetic market (random walk, or driven by a candle CSV
  ``open_time_utc,open,high,low,close,volume``) with ``source = "simulated"``: book tickers
  every tick, a 24 h ticker every ``TICKER_EVERY_MS``, a CoinGecko-like market message every
  ``MARKET_EVERY_MS`` of simulated time (its ``exchange_time`` lagging by ``market_lag_s``, as
  CoinGecko's does) and a ``kline_1m`` per symbol when a minute closes (simulated trade count:
  ``SIMULATED_TRADES_PER_UNIT`` x volume). Event times come from the simulated clock (historical
  for candle files). Book tickers are encoded with a string template (the message id computed
  exactly as ``schema.compute_message_id`` does) so the source can feed >= 50k msg/s.
"""

from btc_platform.ingest.sources.base import OFFLINE_HINT, ConfigError, Outgoing, SourceContext
from btc_platform.ingest.sources.live import LiveSource
from btc_platform.ingest.sources.replay import ReplaySource
from btc_platform.ingest.sources.simulate import SimulateSource
from btc_platform.ingest.sources.wire import encode_book_ticker, encode_prevalidated

__all__ = [
    "OFFLINE_HINT", "ConfigError", "LiveSource", "Outgoing", "ReplaySource", "SimulateSource", "SourceContext",
    "encode_book_ticker", "encode_prevalidated",
]  # fmt: skip
