"""Producer CLI (options reaching the source, fatal configuration errors) and the replay source's pacing, without Kafka."""

from __future__ import annotations

import json
from datetime import datetime
from itertools import pairwise

import pytest

from btc_platform.ingest import normalize
from btc_platform.ingest.producer import build_parser, build_source, main
from btc_platform.ingest.schema import encode, ms_to_ts
from btc_platform.ingest.sources import ReplaySource, SimulateSource
from btc_platform.testing.exchange_server import FakeClock, fixture


def _book_tickers(source, count: int) -> list[dict]:
    """The first ``count`` book tickers of BTCUSDT the source yields."""
    out = []
    for key, value, _ in source.messages(PacingContext(FakeClock())):
        message = json.loads(value)
        if key == b"BTCUSDT" and message["message_type"] == "book_ticker":
            out.append(message)
            if len(out) == count:
                return out
    raise AssertionError(f"the source ended after {len(out)} book ticker(s)")


def test_simulate_options_drive_the_source(settings_env):
    settings = settings_env(binance_symbols="BTCUSDT,ETHUSDT")
    argv = ["--source", "simulate", "--speed", "0", "--tick-ms", "500", "--start-price", "100", "--seed", "7",
            "--market-lag", "2.5"]  # fmt: skip
    source = build_source(build_parser().parse_args(argv), settings)
    assert isinstance(source, SimulateSource) and source.symbols == ["BTCUSDT", "ETHUSDT"]
    assert source.market_lag_ms == 2500
    books = _book_tickers(source, 8)
    times = [datetime.fromisoformat(b["event_time"]) for b in books]
    assert {(b - a).total_seconds() for a, b in pairwise(times)} == {0.5}  # --tick-ms
    assert all(99 < float(b["bid_price"]) < float(b["ask_price"]) < 101 for b in books)  # --start-price
    again = build_source(build_parser().parse_args(argv), settings)  # --seed: the same price path
    assert [(b["bid_price"], b["ask_price"]) for b in _book_tickers(again, 8)] == \
        [(b["bid_price"], b["ask_price"]) for b in books]


def test_replay_options_drive_the_source(settings_env, tmp_path):
    settings = settings_env()
    path = tmp_path / "capture.jsonl"
    path.write_bytes(_ticker_line(1_700_000_000_000) + b"\n")
    args = build_parser().parse_args(["--source", "replay", "--replay-file", str(path), "--speed", "2"])
    source = build_source(args, settings)
    assert isinstance(source, ReplaySource) and (source.path, source.speed) == (path, 2.0)
    assert [value for _, value, _ in source.messages(PacingContext(FakeClock()))] == [_ticker_line(1_700_000_000_000)]


@pytest.mark.parametrize(
    ("argv", "env", "reason"),
    [
        (["--source", "replay"], {}, "needs --replay-file"),
        (["--source", "replay", "--replay-file", "/nonexistent/x.jsonl"], {}, "replay file not found"),
        (["--source", "simulate", "--speed", "-1"], {}, "--speed must be >= 0"),
        (["--source", "simulate", "--tick-ms", "7"], {}, "--tick-ms must divide 60000"),
        (["--source", "simulate", "--max-messages", "0"], {}, "--max-messages must be > 0"),
        (["--source", "live"], {"binance_poll_interval_s": "0"}, "BTC_BINANCE_POLL_INTERVAL_S"),
        (["--source", "live"], {"kafka_bootstrap_servers": "nohostport"}, "BTC_KAFKA_BOOTSTRAP_SERVERS"),
    ],
)
def test_fatal_configuration_errors_exit_2_with_one_line(settings_env, monkeypatch, capsys, argv, env, reason):
    from btc_platform.settings import get_settings

    settings_env()
    for key, value in env.items():
        monkeypatch.setenv(f"BTC_{key.upper()}", value)
    get_settings.cache_clear()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert reason in err and err.count("\n") == 1 and err.startswith("producer: ")


def test_candle_file_without_required_columns_is_fatal(settings_env, capsys, tmp_path):
    settings_env()
    candles = tmp_path / "candles.csv"
    candles.write_text("open_time_utc,open,high,low,close\n2023-03-16T22:15:00Z,1,2,0.5,1.5\n")
    assert main(["--source", "simulate", "--candles", str(candles)]) == 2
    assert "lacks column(s) volume" in capsys.readouterr().err


class PacingContext:
    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.rejected: list[str] = []

    def idle(self, seconds):
        self.clock.sleep(seconds)
        return True

    def stopping(self):
        return False

    def reject(self, source, reason, payload):
        self.rejected.append(reason)

    def poll_ok(self, source):
        pass


def _ticker_line(received_ms: int) -> bytes:
    """A 24 h ticker received at ``received_ms`` (its event time; closeTime 5 s earlier)."""
    payload = fixture("binance_ticker_24hr_BTCUSDT.json")
    payload["closeTime"] = received_ms - 5000
    return encode(normalize.ticker_24hr(payload, ingest_time=ms_to_ts(received_ms)))


def test_replay_is_paced_by_event_time_and_rejects_bad_lines(tmp_path):
    base = 1_700_000_000_000
    lines = [_ticker_line(base), b"{not json", _ticker_line(base + 2000), b"", _ticker_line(base + 3000)]
    path = tmp_path / "capture.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    clock = FakeClock(start=500.0)
    ctx = PacingContext(clock)
    out = list(ReplaySource(path, speed=2.0, clock=clock).messages(ctx))
    assert [value for _, value, _ in out] == [lines[0], lines[2], lines[4]]  # published as recorded
    assert [key for key, _, _ in out] == [b"BTCUSDT"] * 3
    assert clock.waits == [1.0, 0.5]  # 2 s and 3 s of event time at speed 2
    assert len(ctx.rejected) == 1 and "line 2" in ctx.rejected[0]


def test_replay_speed_zero_does_not_wait(tmp_path):
    path = tmp_path / "capture.jsonl"
    path.write_bytes(_ticker_line(1_700_000_000_000) + b"\n" + _ticker_line(1_700_000_060_000) + b"\n")
    clock = FakeClock()
    assert len(list(ReplaySource(path, speed=0, clock=clock).messages(PacingContext(clock)))) == 2
    assert clock.waits == []
