"""A Binance IP ban survives a kill -9 of the real producer process, and the supervisor keeps a
producer that waits it out.

The producer runs as a real process (``python -m btc_platform.ingest.producer --source live``) against
the local exchange server; its Kafka bootstrap points at a closed port (the broker plays no part
in this: accepted messages just stay queued and the process is killed before any flush).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from btc_platform.ops import supervisor
from btc_platform.ops.supervisor import decide
from btc_platform.settings import PROJECT_ROOT, load_settings
from btc_platform.status import read_status
from btc_platform.testing.exchange_server import BOOK_TICKER, TICKER_24HR, ExchangeServer, Reply
from btc_platform.testing.polling import wait_until
from tests.test_supervisor import _record

BAN_S = 6


@pytest.fixture
def server():
    srv = ExchangeServer().start()
    yield srv
    srv.stop()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _binance_calls(server) -> list[float]:
    return sorted(r.at for path in (BOOK_TICKER, TICKER_24HR) for r in server.requests_to(path))


def test_ban_kill_restart_makes_no_call_before_the_ban_ends(tmp_path, server, caplog):
    server.script(BOOK_TICKER, Reply(418, headers={"Retry-After": str(BAN_S)}))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "plugins"), str(PROJECT_ROOT)]),
        "BTC_DATA_DIR": str(tmp_path / "data"),
        "BTC_BINANCE_BASE_URL": server.url,
        "BTC_COINGECKO_BASE_URL": server.url,
        "BTC_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{_closed_port()}",
        "BTC_PRODUCER_STATUS_INTERVAL_S": "0.2",
        "BTC_BINANCE_POLL_INTERVAL_S": "0.2",
    }
    settings = load_settings(data_dir=tmp_path / "data", supervisor_producer_stale_s=2)
    argv = [sys.executable, "-m", "btc_platform.ingest.producer", "--source", "live", "--log-level", "WARNING"]
    log_file = (tmp_path / "producer.log").open("ab")
    procs = []
    try:
        procs.append(subprocess.Popen(argv, env=env, cwd=PROJECT_ROOT, stdout=log_file, stderr=log_file))
        state_file = settings.status_dir / "http_binance.json"
        state = wait_until(lambda: state_file.is_file() and read_status(state_file), 30, "the 418 to be persisted")
        ban_end = state["banned_until"]
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        calls_before = len(_binance_calls(server))
        assert calls_before == 1  # the banned call, nothing after it

        procs.append(subprocess.Popen(argv, env=env, cwd=PROJECT_ROOT, stdout=log_file, stderr=log_file))
        status = wait_until(
            lambda: (read_status(settings.producer_status_path) or {}).get("waiting", {}).get("binance")
            and read_status(settings.producer_status_path)["pid"] == procs[1].pid
            and read_status(settings.producer_status_path),
            30, "the restarted producer to report the ban",
        )
        assert status["waiting"]["binance"]["reason"] == "ip_ban"
        # the supervisor, asked while the ban lasts, keeps the quiet producer and says why
        assert time.time() < ban_end, "restart took longer than the ban: test cannot observe the wait"
        with caplog.at_level(logging.INFO, logger="btc_platform.ops.supervisor"):
            assert supervisor._producer_stale(settings, _record(time.time() - 60), time.time()) == decide.OK
        assert "healthy, ok, waiting: binance ip_ban until" in caplog.text

        wait_until(lambda: len(_binance_calls(server)) > calls_before, BAN_S + 20, "calls after the ban")
        after = _binance_calls(server)[calls_before:]
        assert min(after) >= ban_end, f"a call {ban_end - min(after):.2f} s before the ban ended"
        assert procs[1].poll() is None  # still running: the ban never ended the producer
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        log_file.close()
