"""The producer's command line: ``python -m btc_platform.ingest.producer`` (``btc-producer``)."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from btc_platform.ingest.producer.app import FeedProducer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m btc_platform.ingest.producer",
        description="Publish BTC market data to Kafka (topic, servers, intervals and paths come from BTC_* "
        "settings, see .env.example).",
    )
    parser.add_argument("--source", choices=("live", "replay", "simulate"), default=None,
                        help="live: Binance + CoinGecko APIs; replay: a JSONL file of captured messages; "
                        "simulate: synthetic market (source=simulated). Default: BTC_PRODUCER_SOURCE (live).")
    parser.add_argument("--record", metavar="FILE",
                        help="append every message confirmed by Kafka to FILE as JSONL (replayable).")
    parser.add_argument("--replay-file", metavar="FILE",
                        help="JSONL file of messages for --source replay (default: BTC_PRODUCER_REPLAY_FILE).")
    parser.add_argument("--candles", metavar="CSV",
                        help="simulate: drive the price path by a 1-minute candle CSV "
                        "(open_time_utc,open,high,low,close,volume); default: BTC_PRODUCER_SIMULATE_CANDLES, "
                        "empty = random walk.")
    parser.add_argument("--speed", type=float, default=None,
                        help="simulate/replay: simulated seconds per real second; 0 = as fast as possible "
                        "(default: BTC_PRODUCER_SPEED, 1).")
    parser.add_argument("--tick-ms", type=int, default=1000,
                        help="simulate: simulated milliseconds between book tickers, must divide 60000 "
                        "(default 1000).")
    parser.add_argument("--start-price", type=float, default=None,
                        help="simulate (random walk): starting price (default: BTC_SIMULATE_START_PRICE, 30000).")
    parser.add_argument("--seed", type=int, default=None, help="simulate: random seed (reproducible runs).")
    parser.add_argument("--market-lag", type=float, default=0.0, metavar="S",
                        help="simulate: CoinGecko-like market messages carry an exchange_time S seconds older "
                        "than their receipt, as the real CoinGecko's last_updated_at (default 0).")
    parser.add_argument("--max-messages", type=int, default=None, metavar="N",
                        help="stop after N messages were handed to Kafka (then flush).")
    parser.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds.")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="logging level (default INFO).")
    return parser


def build_source(args: argparse.Namespace, settings, *, sleep=time.sleep):
    """The source object for the parsed CLI options (``ConfigError`` on bad options)."""
    from btc_platform.ingest import sources

    if args.source == "live":
        from btc_platform.ingest.clients.binance import BinanceClient
        from btc_platform.ingest.clients.coingecko import CoinGeckoClient

        return sources.LiveSource(
            settings,
            BinanceClient.from_settings(settings, sleep=sleep),
            CoinGeckoClient.from_settings(settings, sleep=sleep),
        )
    if args.source == "replay":
        if not args.replay_file:
            raise sources.ConfigError("--source replay needs --replay-file FILE")
        return sources.ReplaySource(args.replay_file, speed=args.speed)
    return sources.SimulateSource(
        settings.binance_symbols,
        coingecko_symbol=settings.coingecko_symbol,
        candles=args.candles,
        speed=args.speed,
        tick_ms=args.tick_ms,
        start_price=settings.simulate_start_price if args.start_price is None else args.start_price,
        seed=args.seed,
        market_lag_s=args.market_lag,
    )


def main(argv: list[str] | None = None) -> int:
    from confluent_kafka import KafkaException

    from btc_platform.ingest.sources import ConfigError
    from btc_platform.settings import SettingsError, get_settings

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = get_settings()
        args.source = args.source or settings.producer_source
        args.replay_file = args.replay_file or settings.producer_replay_file or None
        args.candles = args.candles or settings.producer_simulate_candles or None
        args.speed = settings.producer_speed if args.speed is None else args.speed
        if args.max_messages is not None and args.max_messages <= 0:
            raise ConfigError("--max-messages must be > 0")
        if args.duration is not None and args.duration <= 0:
            raise ConfigError("--duration must be > 0")
        holder: list[FeedProducer] = []
        source = build_source(args, settings, sleep=lambda seconds: holder[0].sleep(seconds))
        app = FeedProducer(settings, source_mode=args.source, record_path=args.record)
        holder.append(app)
    except (SettingsError, ConfigError, OSError) as exc:
        sys.stderr.write(f"producer: {exc}\n")
        return 2
    except KafkaException as exc:  # a bad librdkafka configuration
        sys.stderr.write(f"producer: invalid Kafka configuration: {exc}\n")
        return 2
    return app.run(source, max_messages=args.max_messages, duration_s=args.duration)
