"""Producer CLI (help, fatal configuration errors) and the replay source's pacing, without Kafka."""

from __future__ import annotations

import pytest

from btc_platform.ingest import normalize
from btc_platform.ingest.producer import build_parser, main
from btc_platform.ingest.schema import encode, ms_to_ts
from btc_platform.ingest.sources import ReplaySource
from btc_platform.testing.exchange_server import FakeClock, fixture


def test_help_documents_every_option(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for action in parser._actions:
        for option in action.option_strings:
            assert option in text
        assert action.help, f"{action.option_strings} has no help"


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
