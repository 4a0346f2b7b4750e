"""The local exchange stand-in's live market (``python -m btc_platform.testing.exchange_server``):
what the platform's clients read from it when it runs offline against it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from btc_platform.ingest import normalize
from btc_platform.ingest.clients.binance import BinanceClient
from btc_platform.ingest.clients.coingecko import CoinGeckoClient
from btc_platform.ingest.simulated_history import simulated_klines
from btc_platform.settings import load_settings
from btc_platform.testing.exchange_server import ExchangeServer, FakeClock, LiveMarket

HOUR = datetime(2026, 12, 7, 10, tzinfo=UTC)


@pytest.fixture
def market_server():
    clock = FakeClock(start=HOUR.timestamp() + 5)
    server = ExchangeServer()
    server.clock = clock
    server.klines = simulated_klines(HOUR - timedelta(days=2), HOUR, 67000.0, seed=3)
    server.market = LiveMarket(server.klines, clock, seed=3)
    server.live_times = True
    server.start()
    yield server, clock
    server.stop()


def test_the_live_market_quotes_one_moving_price_and_closes_its_hours_into_klines(market_server, tmp_path):
    server, clock = market_server
    settings = load_settings(data_dir=tmp_path / "data", binance_base_url=server.url, coingecko_base_url=server.url)
    binance = BinanceClient.from_settings(settings, clock=clock, sleep=clock.sleep)
    coingecko = CoinGeckoClient.from_settings(settings, clock=clock, sleep=clock.sleep)

    book = normalize.book_ticker(binance.book_ticker("BTCUSDT"), ingest_time=HOUR)
    first = float(book["bid_price"])
    assert first == pytest.approx(67000.0, rel=0.01) and float(book["ask_price"]) == pytest.approx(first + 0.01)
    mids = []
    for _ in range(50):  # the hour 10:00 quoted for 50 minutes
        clock.sleep(60)
        mids.append(float(normalize.book_ticker(binance.book_ticker("BTCUSDT"), ingest_time=HOUR)["bid_price"]))
    assert len(set(mids)) > 40  # it moves
    price = float(coingecko.simple_price()["bitcoin"]["usd"])
    ticker = binance.ticker_24hr("BTCUSDT")
    assert float(ticker["lastPrice"]) == price == mids[-1]  # every endpoint quotes the same price at a time
    assert ticker["closeTime"] == int(clock() * 1000)
    recent = [normalize.parse_kline(r) for r in binance.recent_klines("BTCUSDT")]
    assert [float(k.close) for k in recent] == [price, price]

    # the history: 48 closed hours up to 10:00; 10:00 becomes a kline only once it has closed
    rows = [normalize.parse_kline(r) for r in binance.klines("BTCUSDT", "1h", 0, 2**62)]
    assert len(rows) == 48 and rows[-1].open_time_ms == int((HOUR - timedelta(hours=1)).timestamp() * 1000)
    clock.sleep(15 * 60)  # 11:05
    binance.book_ticker("BTCUSDT")
    rows = [normalize.parse_kline(r) for r in binance.klines("BTCUSDT", "1h", 0, 2**62)]
    assert len(rows) == 49
    hour = rows[-1]
    assert hour.open_time_ms == int(HOUR.timestamp() * 1000) and hour.close_time_ms == hour.open_time_ms + 3_599_999
    assert float(hour.open) == first and float(hour.close) == price
    assert float(hour.high) == max([first, *mids, price]) and float(hour.low) == min([first, *mids, price])

    # the weight header counts the minute's requests only, as Binance's does (a run lasts hours)
    clock.sleep(60)
    binance.book_ticker("BTCUSDT")
    assert server.used_weight == 2
