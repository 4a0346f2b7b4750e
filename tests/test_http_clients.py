"""Binance and CoinGecko clients against a local server that speaks their exact formats.

Waits are asserted through an injected clock/sleep (no real sleeping); the only real wait is
the read-timeout case (0.2 s timeouts).
"""

from __future__ import annotations

import json
import logging
import socket
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from btc_platform.ingest import normalize
from btc_platform.ingest.clients.binance import BinanceClient, interval_ms
from btc_platform.ingest.clients.coingecko import (
    BUDGET_FILE,
    DEMO_KEY_HEADER,
    PRO_KEY_HEADER,
    BudgetExhausted,
    CoinGeckoClient,
)
from btc_platform.ingest.http import (
    ExchangeUnavailable,
    HttpClient,
    InvalidResponse,
    IPBanned,
    parse_retry_after,
)
from btc_platform.ingest.normalize import parse_kline
from btc_platform.ingest.schema import SchemaError, decode, format_ts
from btc_platform.ingest.sources import LiveSource
from btc_platform.settings import load_settings
from btc_platform.testing.exchange_server import (
    BOOK_TICKER,
    COINS_MARKETS,
    KLINES,
    SIMPLE_PRICE,
    TICKER_24HR,
    ExchangeServer,
    FakeClock,
    Reply,
    fixture,
    fixture_text,
)


@pytest.fixture
def server():
    srv = ExchangeServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def clock():
    return FakeClock()


def make_settings(tmp_path, server, **overrides):
    values = dict(
        data_dir=tmp_path / "data",
        binance_base_url=server.url,
        coingecko_base_url=server.url,
        http_max_retries=3,
        http_backoff_base_s=0.5,
        http_backoff_max_s=30.0,
        http_connect_timeout_s=1.0,
        http_read_timeout_s=2.0,
    )
    values.update(overrides)
    return load_settings(**values)


def binance(tmp_path, server, clock, **overrides) -> BinanceClient:
    return BinanceClient.from_settings(make_settings(tmp_path, server, **overrides), clock=clock,
                                       sleep=clock.sleep, rng=lambda: 0.5)


def coingecko(tmp_path, server, clock, **overrides) -> CoinGeckoClient:
    return CoinGeckoClient.from_settings(make_settings(tmp_path, server, **overrides), clock=clock,
                                         sleep=clock.sleep, rng=lambda: 0.5)


class RecordingContext:
    """SourceContext that records what the live source reports."""

    def __init__(self):
        self.rejected: list[tuple[str, str]] = []
        self.ok: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self.retried = 0
        self.errors = {}
        self.waiting = {}
        self.history = []

    def idle(self, seconds):
        return True

    def stopping(self):
        return False

    def reject(self, source, reason, payload):
        self.rejected.append((source, reason))

    def poll_ok(self, source):
        self.ok.append(source)

    def poll_failed(self, source, error):
        self.failed.append((source, type(error).__name__))

    def set_retried(self, count):
        self.retried = count

    def set_http_errors(self, errors):
        self.errors = errors

    def set_waiting(self, upstream, reason, until, **details):
        self.waiting[upstream] = (reason, until, details) if details else (reason, until)
        self.history.append((upstream, self.waiting[upstream]))


# ---- Binance: normal responses -------------------------------------------------------------
def test_book_ticker_is_fetched_and_normalised_exactly(tmp_path, server, clock):
    client = binance(tmp_path, server, clock)
    payload = client.book_ticker("BTCUSDT")
    assert payload == fixture("binance_book_ticker_BTCUSDT.json")
    assert server.requests_to(BOOK_TICKER)[0].query == {"symbol": "BTCUSDT"}

    received = datetime(2024, 3, 25, 8, 45, 0, 123000, tzinfo=UTC)
    message = normalize.book_ticker(payload, ingest_time=received)
    assert message["bid_price"] == Decimal("67012.34000000")
    assert message["ask_qty"] == Decimal("0.00000100")
    assert message["event_time"] == message["ingest_time"] == "2024-03-25T08:45:00.123Z"
    assert (message["source"], message["symbol"], message["message_type"]) == ("binance", "BTCUSDT", "book_ticker")


def test_ticker_24hr_keeps_close_time_as_exchange_time(tmp_path, server, clock):
    payload = binance(tmp_path, server, clock).ticker_24hr("BTCUSDT")
    message = normalize.ticker_24hr(payload, ingest_time="2021-12-17T10:00:00.000Z")
    assert message["exchange_time"] == "2021-12-17T09:40:42.763Z"  # closeTime 1639734042763
    assert message["event_time"] == message["ingest_time"] == "2021-12-17T10:00:00.000Z"  # receipt
    assert message["window_open_time"] == "2021-12-16T09:40:42.763Z"
    assert message["last_price"] == Decimal("47174.97000000")
    assert message["quote_volume_24h"] == Decimal("1592599905.80360790")
    assert message["price_change_pct_24h"] == Decimal("-3.531")
    assert message["trade_count_24h"] == 1053126


# ---- Binance: failures --------------------------------------------------------------------------
def test_429_waits_retry_after_then_slows_down(tmp_path, server, clock):
    server.script(BOOK_TICKER, Reply(429, headers={"Retry-After": "7"}))
    client = binance(tmp_path, server, clock)
    assert client.book_ticker("BTCUSDT")["symbol"] == "BTCUSDT"
    assert clock.waits == [7.0]
    assert client.http.counters.retries == 1 and client.http.counters.rate_limited == 1
    # slowed down: requests are now spaced by 0.5 s, shrinking by x0.9 per success
    assert client.http.min_interval_s == pytest.approx(0.45)
    client.book_ticker("BTCUSDT")
    assert clock.waits == [7.0, 0.45]
    assert len(server.requests_to(BOOK_TICKER)) == 3


def test_retry_after_as_http_date():
    now = datetime(2024, 1, 1, 0, 0, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("Mon, 01 Jan 2024 00:00:42 GMT", now) == 42.0
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(None, now) is None


def test_418_bans_until_retry_after_without_calling(tmp_path, server, clock, caplog):
    server.script(BOOK_TICKER, Reply(418, headers={"Retry-After": "120"}))
    client = binance(tmp_path, server, clock)
    with caplog.at_level(logging.ERROR), pytest.raises(IPBanned) as banned:
        client.book_ticker("BTCUSDT")
    assert banned.value.until == clock.now + 120
    assert "BANNED" in caplog.text
    clock.now += 60
    with pytest.raises(IPBanned):
        client.book_ticker("BTCUSDT")
    assert len(server.requests_to(BOOK_TICKER)) == 1  # no call during the ban
    assert clock.waits == []
    clock.now += 61
    assert client.book_ticker("BTCUSDT")["bidPrice"] == "67012.34000000"
    assert len(server.requests_to(BOOK_TICKER)) == 2


def test_5xx_backs_off_exponentially_with_jitter_then_succeeds(tmp_path, server, clock):
    server.script(TICKER_24HR, Reply(500), Reply(503))
    client = binance(tmp_path, server, clock)
    assert client.ticker_24hr("BTCUSDT")["symbol"] == "BTCUSDT"
    # equal jitter with rng=0.5: 0.75 x min(30, 0.5 * 2**attempt)
    assert clock.waits == [0.375, 0.75]
    assert client.http.counters.retries == 2


def test_5xx_persisting_raises_named_error_after_bounded_retries(tmp_path, server, clock):
    server.script(TICKER_24HR, *[Reply(502)] * 10)
    client = binance(tmp_path, server, clock, http_max_retries=3)
    with pytest.raises(ExchangeUnavailable) as err:
        client.ticker_24hr("BTCUSDT")
    assert err.value.status == 502 and err.value.endpoint == TICKER_24HR
    assert clock.waits == [0.375, 0.75, 1.5]
    assert len(server.requests_to(TICKER_24HR)) == 4


def test_backoff_is_capped(clock):
    http = HttpClient("http://127.0.0.1:9", name="x", connect_timeout_s=1, read_timeout_s=1, max_retries=10,
                      backoff_base_s=1.0, backoff_max_s=4.0, clock=clock, sleep=clock.sleep, rng=lambda: 1.0)
    assert [http.backoff_delay(a) for a in range(5)] == [1.0, 2.0, 4.0, 4.0, 4.0]


def test_read_timeout_is_retried_then_unavailable(tmp_path, server, clock):
    server.script(BOOK_TICKER, Reply(delay_s=1.0), Reply(delay_s=1.0))
    client = binance(tmp_path, server, clock, http_read_timeout_s=0.2, http_max_retries=1)
    with pytest.raises(ExchangeUnavailable) as err:
        client.book_ticker("BTCUSDT")
    assert err.value.status is None and "Timeout" in str(err.value)
    assert clock.waits == [0.375]


def test_invalid_json_is_retried_then_a_named_error(tmp_path, server, clock):
    server.script(BOOK_TICKER, *[Reply(200, body="<html>maintenance</html>")] * 3)
    client = binance(tmp_path, server, clock, http_max_retries=2)
    with pytest.raises(InvalidResponse, match="invalid JSON"):
        client.book_ticker("BTCUSDT")
    assert len(server.requests_to(BOOK_TICKER)) == 3
    assert clock.waits == [0.375, 0.75]
    assert client.http.counters.errors == {"invalid_json": 3}


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("truncated", "truncated"),
        ("bad_encoding", "decoding"),
        ("tls", "ssl"),
        ("redirect_loop", "too_many_redirects"),
        (None, "invalid_json"),
    ],
)
def test_every_transport_failure_is_retried_with_backoff_and_counted(tmp_path, server, clock, fault, kind):
    bad = Reply(fault=fault) if fault else Reply(200, body='{"symbol": "BTCUSDT", "bidPri')
    server.script(BOOK_TICKER, bad, bad)
    client = binance(tmp_path, server, clock)
    assert client.book_ticker("BTCUSDT")["bidPrice"] == "67012.34000000"
    assert clock.waits == [0.375, 0.75]  # the same backoff as 5xx
    assert client.http.counters.errors == {kind: 2}
    assert client.http.counters.retries == 2 and client.http.counters.failures == 0
    assert len(server.requests_to(BOOK_TICKER)) == 3


def test_transport_failures_never_end_the_live_source(tmp_path, server, clock):
    settings = make_settings(tmp_path, server, http_max_retries=1)
    source = LiveSource(settings, BinanceClient.from_settings(settings, clock=clock, sleep=clock.sleep),
                        CoinGeckoClient.from_settings(settings, clock=clock, sleep=clock.sleep), clock=clock)
    server.script(BOOK_TICKER, Reply(fault="truncated"), Reply(fault="tls"))
    server.script(TICKER_24HR, Reply(fault="bad_encoding"), Reply(fault="redirect_loop"))
    ctx = RecordingContext()
    assert list(source.poll_binance(ctx)) == []  # both calls failed after their retry: nothing, no crash
    assert ctx.failed == [("binance", "ExchangeUnavailable")] * 2
    assert ctx.errors["binance"] == {"truncated": 1, "ssl": 1, "decoding": 1, "too_many_redirects": 1}
    assert [decode(v)["message_type"] for _, v, _ in source.poll_binance(ctx)] == ["book_ticker", "ticker_24hr"]


def test_missing_field_is_rejected_and_counted_never_published(tmp_path, server, clock):
    server.script(BOOK_TICKER, Reply(200, body=fixture_text("binance_book_ticker_missing_field.json")))
    settings = make_settings(tmp_path, server)
    source = LiveSource(settings, BinanceClient.from_settings(settings, clock=clock, sleep=clock.sleep),
                        CoinGeckoClient.from_settings(settings, clock=clock, sleep=clock.sleep), clock=clock)
    ctx = RecordingContext()
    out = [decode(value) for _, value, _ in source.poll_binance(ctx)]
    assert [m["message_type"] for m in out] == ["ticker_24hr"]  # the incomplete book ticker is gone
    assert len(ctx.rejected) == 1 and "askQty" in ctx.rejected[0][1]
    with pytest.raises(SchemaError, match="askQty"):
        normalize.book_ticker(fixture("binance_book_ticker_missing_field.json"), ingest_time=datetime.now(UTC))


def test_unreachable_api_is_reported_with_the_offline_option(tmp_path, clock, caplog):
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    settings = load_settings(data_dir=tmp_path / "data", binance_base_url=url, coingecko_base_url=url,
                             http_max_retries=1)
    source = LiveSource(settings, BinanceClient.from_settings(settings, clock=clock, sleep=clock.sleep),
                        CoinGeckoClient.from_settings(settings, clock=clock, sleep=clock.sleep), clock=clock)
    ctx = RecordingContext()
    with caplog.at_level(logging.ERROR):
        assert list(source.poll_binance(ctx)) == []
    assert ctx.failed == [("binance", "ExchangeUnavailable")] * 2
    assert "unreachable" in caplog.text and "SOURCE=simulate" in caplog.text
    assert "Not switching to simulated data" in caplog.text


def test_weight_header_keeps_usage_under_the_configured_share(tmp_path, server, clock):
    clock.now = 1_700_000_010.0  # 30 s before a minute boundary
    to_boundary = 60 - clock.now % 60
    client = binance(tmp_path, server, clock, binance_weight_limit_1m=100, binance_weight_share=0.5)
    server.used_weight = 46  # the next response reports 48 used of the 50 allowed
    client.book_ticker("BTCUSDT")
    assert client.used_weight == 48 and clock.waits == []
    client.book_ticker("BTCUSDT")  # 48 + 2 = 50: still within the share
    assert clock.waits == []
    client.book_ticker("BTCUSDT")  # 50 + 2 > 50: wait for the next minute
    assert clock.waits == [pytest.approx(to_boundary)]


# ---- Binance: klines --------------------------------------------------------------------------
def test_iter_klines_paginates_and_yields_raw_rows(tmp_path, server, clock):
    rows = fixture("binance_klines_BTCUSDT_1h.json")
    client = binance(tmp_path, server, clock)
    got = list(client.iter_klines("BTCUSDT", "1h", rows[0][0], rows[-1][0] + interval_ms("1h") - 1, limit=2))
    assert got == rows
    starts = [int(r.query["startTime"]) for r in server.requests_to(KLINES)]
    assert starts == [rows[0][0], rows[1][0] + 1, rows[3][0] + 1]
    assert {r.query["limit"] for r in server.requests_to(KLINES)} == {"2"}


def test_iter_klines_end_is_inclusive_on_open_time(tmp_path, server, clock):
    rows = fixture("binance_klines_BTCUSDT_1h.json")
    client = binance(tmp_path, server, clock)
    got = list(client.iter_klines("BTCUSDT", "1h", rows[1][0], rows[3][0], limit=1000))
    assert got == rows[1:4]
    assert len(server.requests_to(KLINES)) == 1


def test_parse_kline_is_exact():
    kline = parse_kline(fixture("binance_klines_BTCUSDT_1h.json")[0])
    assert kline.open_time_ms == 1682899200000 and kline.close_time_ms == 1682902799999
    assert kline.close == Decimal("29268.81000000") and kline.trades == 38811
    with pytest.raises(SchemaError):
        parse_kline([1682899200000, "1"])


# ---- CoinGecko ----------------------------------------------------------------------------------
def test_simple_price_with_demo_key_is_normalised_exactly(tmp_path, server, clock):
    client = coingecko(tmp_path, server, clock, coingecko_api_key="CG-demo-123")
    payload = client.simple_price()
    request = server.requests_to(SIMPLE_PRICE)[0]
    assert request.headers[DEMO_KEY_HEADER] == "CG-demo-123"
    assert PRO_KEY_HEADER not in request.headers
    assert request.query["include_market_cap"] == request.query["include_last_updated_at"] == "true"
    message = normalize.coingecko_simple_price(payload, coin_id="bitcoin", vs_currency="usd", symbol="BTCUSDT",
                                               ingest_time="2024-03-25T08:45:03.000Z")
    assert message["last_price"] == Decimal("67187.3358936566")
    assert message["market_cap"] == Decimal("1317802988326.2493")
    assert message["price_change_pct_24h"] == Decimal("3.637278946773539")
    assert message["exchange_time"] == "2024-03-25T08:45:00.000Z"  # last_updated_at 1711356300
    assert message["event_time"] == "2024-03-25T08:45:03.000Z"  # receipt: windows never see the lag
    assert (message["source"], message["message_type"]) == ("coingecko", "market")


def test_pro_key_uses_the_pro_header(tmp_path, server, clock):
    client = coingecko(tmp_path, server, clock, coingecko_api_key="CG-pro-9", coingecko_api_plan="pro")
    client.simple_price()
    headers = server.requests_to(SIMPLE_PRICE)[0].headers
    assert headers[PRO_KEY_HEADER] == "CG-pro-9" and DEMO_KEY_HEADER not in headers


def test_coins_markets_entry_with_string_numbers(tmp_path, server, clock):
    payload = coingecko(tmp_path, server, clock).coins_markets()
    message = normalize.coingecko_market(payload, symbol="BTCUSDT", ingest_time="2021-07-09T18:41:00.000Z")
    assert message["last_price"] == Decimal("33519") and message["market_cap"] == Decimal("628584328045")
    assert message["price_change_24h"] == Decimal("589.89")
    assert message["exchange_time"] == "2021-07-09T18:40:37.367Z"
    assert message["event_time"] == "2021-07-09T18:41:00.000Z"
    assert server.requests_to(COINS_MARKETS)[0].query["ids"] == "bitcoin"


def test_coingecko_missing_field_is_rejected():
    payload = {"bitcoin": {"usd": 1, "usd_market_cap": 2, "usd_24h_vol": 3, "last_updated_at": 1711356300}}
    with pytest.raises(SchemaError, match="usd_24h_change"):
        normalize.coingecko_simple_price(payload, coin_id="bitcoin", vs_currency="usd", symbol="BTCUSDT",
                                         ingest_time="2024-03-25T08:45:03.000Z")


def test_coingecko_429_and_418_follow_the_same_rules(tmp_path, server, clock):
    server.script(SIMPLE_PRICE, Reply(429, headers={"Retry-After": "30"}), Reply(200),
                  Reply(418, headers={"Retry-After": "600"}))
    client = coingecko(tmp_path, server, clock)
    client.simple_price()
    assert clock.waits == [30.0]
    with pytest.raises(IPBanned):
        client.simple_price()
    assert client.http.banned_until == pytest.approx(clock.now + 600)


def test_monthly_budget_survives_restarts_and_is_enforced(tmp_path, server, clock):
    clock.now = datetime(2024, 4, 10, tzinfo=UTC).timestamp()
    first = coingecko(tmp_path, server, clock, coingecko_monthly_call_budget=3)
    first.simple_price()
    first.simple_price()
    # a restart reads the persisted count of this month
    second = coingecko(tmp_path, server, clock, coingecko_monthly_call_budget=3)
    assert second.budget.calls == 2 and second.budget.remaining == 1
    assert (tmp_path / "data" / "status" / BUDGET_FILE).is_file()
    second.simple_price()
    with pytest.raises(BudgetExhausted) as exhausted:
        second.simple_price()
    assert exhausted.value.until == datetime(2024, 5, 1, tzinfo=UTC).timestamp()
    assert len(server.requests_to(SIMPLE_PRICE)) == 3  # no call over budget
    clock.now = datetime(2024, 5, 1, 0, 0, 1, tzinfo=UTC).timestamp()
    assert second.budget.remaining == 3  # new month


def test_budget_spreads_calls_over_the_month(tmp_path, server, clock):
    clock.now = datetime(2024, 4, 1, tzinfo=UTC).timestamp()  # 30-day month ahead
    roomy = coingecko(tmp_path / "a", server, clock, coingecko_monthly_call_budget=100000)
    assert roomy.effective_interval_s() == 60.0  # poll interval dominates
    tight = coingecko(tmp_path / "b", server, clock, coingecko_monthly_call_budget=10000)
    assert tight.effective_interval_s() == pytest.approx(30 * 86400 / 10000)  # 259.2 s
    assert tight.seconds_until_due() == 0.0
    tight.simple_price()
    assert tight.seconds_until_due() == pytest.approx((30 * 86400) / 9999)
    clock.now += 300
    assert tight.seconds_until_due() == 0.0


# ---- limits that survive restarts -----------------------------------------------------------------
def test_ban_and_429_pause_survive_a_restart(tmp_path, server, clock):
    server.script(BOOK_TICKER, Reply(418, headers={"Retry-After": "300"}))
    server.script(SIMPLE_PRICE, Reply(429, headers={"Retry-After": "40"}))
    first = binance(tmp_path, server, clock)
    with pytest.raises(IPBanned):
        first.book_ticker("BTCUSDT")
    ban_end = clock.now + 300
    cg = coingecko(tmp_path, server, clock)
    cg.simple_price()  # waits the 40 s (fake clock) then succeeds
    assert (tmp_path / "data" / "status" / "http_binance.json").is_file()  # next to the CoinGecko budget
    assert (tmp_path / "data" / "status" / BUDGET_FILE).is_file()

    # "restart": new clients built from the same settings, 100 s into the ban
    clock.now += 100
    second = binance(tmp_path, server, clock)
    assert second.http.waiting_until() == ("ip_ban", pytest.approx(ban_end))
    with pytest.raises(IPBanned):
        second.ticker_24hr("BTCUSDT")
    assert len(server.requests_to(BOOK_TICKER)) == 1 and server.requests_to(TICKER_24HR) == []
    # the spacing set by the 429 is remembered too (the pause itself is over)
    assert coingecko(tmp_path, server, clock).http.min_interval_s == 0.5
    clock.now = ban_end + 1
    assert binance(tmp_path, server, clock).book_ticker("BTCUSDT")["symbol"] == "BTCUSDT"


def test_429_pause_is_waited_out_by_a_new_process(tmp_path, server, clock):
    server.script(BOOK_TICKER, Reply(429, headers={"Retry-After": "50"}), Reply(429, headers={"Retry-After": "50"}))
    first = binance(tmp_path, server, clock, http_max_retries=1)
    with pytest.raises(ExchangeUnavailable):  # second 429 exhausts the retries
        first.book_ticker("BTCUSDT")
    pause_end = first.http.pause_until
    clock.waits.clear()
    clock.now += 10
    second = binance(tmp_path, server, clock)
    assert second.http.waiting_until() == ("rate_limit", pytest.approx(pause_end))
    restarted_at = clock.now
    second.book_ticker("BTCUSDT")
    assert clock.waits == [pytest.approx(pause_end - restarted_at)]  # no call before the pause ends
    assert len(server.requests_to(BOOK_TICKER)) == 3


def test_live_source_reports_the_ban_it_waits_out(tmp_path, server, clock):
    server.script(BOOK_TICKER, Reply(418, headers={"Retry-After": "120"}))
    settings = make_settings(tmp_path, server)

    def source():
        return LiveSource(settings, BinanceClient.from_settings(settings, clock=clock, sleep=clock.sleep),
                          CoinGeckoClient.from_settings(settings, clock=clock, sleep=clock.sleep), clock=clock)

    ctx = RecordingContext()
    assert list(source().poll_binance(ctx)) == []
    restarted, ctx = source(), RecordingContext()
    restarted.report_waits(ctx)
    assert ctx.waiting == {"binance": ("ip_ban", pytest.approx(clock.now + 120)), "coingecko": (None, None)}
    assert list(restarted.poll_binance(ctx)) == []
    assert len(server.requests_to(BOOK_TICKER)) == 1 and server.requests_to(TICKER_24HR) == []


def test_live_source_reports_the_failures_it_backs_off_from(tmp_path, server, clock):
    """5xx and transport failures: the status says the producer waits, of which kind, since when
    and when it tries next, before every backoff wait and after giving up; a good answer clears it."""
    settings = make_settings(tmp_path, server, http_max_retries=1)
    ctx = RecordingContext()
    seen = []

    def sleep(seconds):  # what the status record would say during each backoff wait
        seen.append(ctx.waiting.get("binance"))
        clock.sleep(seconds)

    source = LiveSource(settings, BinanceClient.from_settings(settings, clock=clock, sleep=sleep, rng=lambda: 0.5),
                        CoinGeckoClient.from_settings(settings, clock=clock, sleep=sleep), clock=clock)
    server.script(BOOK_TICKER, Reply(503), Reply(fault="truncated"))
    server.script(TICKER_24HR, Reply(fault="truncated"))
    start = clock.now
    messages = source.messages(ctx)
    first = decode(next(messages)[1])
    assert first["message_type"] == "ticker_24hr"  # bookTicker gave up after its one retry
    iso = lambda epoch: format_ts(datetime.fromtimestamp(epoch, UTC))  # noqa: E731  (as the "until" field)
    assert seen[0] == ("exchange_failing", None, {
        "kind": "http_5xx", "failures": 1, "since": iso(start), "last_failure": iso(start),
        "next_attempt": iso(start + 0.375), "detail": "HTTP 503",
    })  # fmt: skip
    # gave up on bookTicker: the next attempt is the next Binance poll
    gave_up = [w[2] for u, w in ctx.history if u == "binance" and w[0] and w[2]["failures"] == 2]
    assert gave_up and gave_up[0]["next_attempt"] == iso(start + settings.binance_poll_interval_s)
    assert gave_up[0]["kind"] == "truncated"
    # still failing during ticker_24hr's backoff
    reason, until, details = seen[1]
    assert (reason, until, details["kind"], details["failures"]) == ("exchange_failing", None, "truncated", 3)
    assert details["since"] == iso(start)
    # ticker_24hr answered: nothing to wait for any more
    assert ctx.waiting["binance"] == (None, None)
    assert ctx.errors["binance"] == {"http_5xx": 1, "truncated": 2}


# ---- live 1-minute klines ---------------------------------------------------------------------
def test_live_source_publishes_each_closed_1m_kline_once(tmp_path, server, clock):
    clock.now = datetime(2024, 3, 25, 8, 44, 5, tzinfo=UTC).timestamp()
    server.clock = clock
    settings = make_settings(tmp_path, server)
    source = LiveSource(settings, BinanceClient.from_settings(settings, clock=clock, sleep=clock.sleep),
                        CoinGeckoClient.from_settings(settings, clock=clock, sleep=clock.sleep), clock=clock)
    ctx = RecordingContext()
    first = [decode(v) for _, v, _ in source.poll_klines(ctx)]
    assert [m["kline_open_time"] for m in first] == ["2024-03-25T08:43:00.000Z"]  # the closed one, not 08:44
    assert first[0]["message_type"] == "kline_1m" and first[0]["kline_trade_count"] == 1874
    assert first[0]["event_time"] == "2024-03-25T08:44:05.000Z"  # receipt
    request = server.requests_to(KLINES)[0]
    assert request.query == {"symbol": "BTCUSDT", "interval": "1m", "limit": "2"}
    clock.now += 30  # same minute: nothing due, no call
    assert list(source.poll_klines(ctx)) == []
    assert len(server.requests_to(KLINES)) == 1
    # 08:45:00.5 but Binance has not rolled over yet: it still answers 08:43 closed, 08:44 open
    clock.now = datetime(2024, 3, 25, 8, 45, 0, 500000, tzinfo=UTC).timestamp()
    stale = [[*r[:6], r[6], *r[7:]] for r in fixture("binance_klines_BTCUSDT_1m.json")]
    stale[0][0], stale[0][6] = 1711356180000, 1711356239999  # 08:43 (already published)
    stale[1][0], stale[1][6] = 1711356240000, 1711356299999  # 08:44, the open one
    server.script(KLINES, Reply(200, body=json.dumps(stale)))
    assert list(source.poll_klines(ctx)) == []  # dedup by open time; 08:44 not closed at Binance
    clock.now += 1  # asked again at the next poll
    again = [decode(v)["kline_open_time"] for _, v, _ in source.poll_klines(ctx)]
    assert again == ["2024-03-25T08:44:00.000Z"]
    assert len(server.requests_to(KLINES)) == 3 and ctx.rejected == []


def test_coingecko_update_already_published_is_not_published_again(tmp_path, server, clock):
    settings = make_settings(tmp_path, server, coingecko_poll_interval_s=1)
    source = LiveSource(settings, BinanceClient.from_settings(settings, clock=clock, sleep=clock.sleep),
                        CoinGeckoClient.from_settings(settings, clock=clock, sleep=clock.sleep), clock=clock)
    ctx = RecordingContext()
    assert len(list(source.poll_coingecko(ctx))) == 1
    assert list(source.poll_coingecko(ctx)) == []  # same last_updated_at
    body = fixture("coingecko_simple_price_bitcoin.json")
    body["bitcoin"]["last_updated_at"] += 60
    server.script(SIMPLE_PRICE, Reply(200, body=json.dumps(body)))
    assert len(list(source.poll_coingecko(ctx))) == 1
