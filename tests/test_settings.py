"""The settings module: local defaults, BTC_* overrides, and clear errors naming the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from btc_platform.settings import SettingsError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_run_locally(settings_env, tmp_path):
    s = settings_env()
    assert s.kafka_topic == "cryptoTopic"
    assert s.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert s.data_dir == tmp_path / "data"
    assert s.storage_root == f"file://{(tmp_path / 'data').resolve()}/bitcoin"
    assert s.path("raw_data", "/date=2024-01-01/") == f"file://{(tmp_path / 'data').resolve()}/bitcoin/raw_data/date=2024-01-01"
    assert s.producer_source == "live"
    assert s.jars_dir == s.cache_dir / "jars"


def test_environment_overrides(settings_env):
    s = settings_env(
        kafka_partitions="6",
        binance_symbols=" btcusdt, ethusdt ,",
        storage_root="hdfs://namenode:8020/bitcoin/",
        producer_source="replay",
        stream_fail_on_data_loss="true",
    )
    assert s.kafka_partitions == 6
    assert s.binance_symbols == ("BTCUSDT", "ETHUSDT")
    assert s.storage_root == "hdfs://namenode:8020/bitcoin"
    assert s.path("hourly_metrics") == "hdfs://namenode:8020/bitcoin/hourly_metrics"
    assert s.producer_source == "replay"


@pytest.mark.parametrize(
    ("name", "value", "detail"),
    [
        ("storage_root", "ftp://host/bitcoin", "file:// or hdfs://"),
        ("storage_root", "not a uri", "file:// or hdfs://"),
        ("storage_root", "hdfs:///bitcoin", "hdfs://host:port"),
        ("storage_root", "hdfs://namenode:port/bitcoin", "hdfs://host:port"),
        ("binance_poll_interval_s", "-1", "greater than 0"),
        ("coingecko_poll_interval_s", "0.5", "greater than or equal to 1"),
        ("http_max_retries", "-3", "greater than or equal to 0"),
        ("kafka_bootstrap_servers", "localhost", "host:port"),
        ("kafka_bootstrap_servers", "127.0.0.1:9092,broker2", "host:port"),
        ("kafka_partitions", "0", "greater than 0"),
        ("kafka_port", "ninety", "integer"),
        ("producer_source", "kafka", "live"),
    ],
)
def test_bad_values_name_the_variable(settings_env, name, value, detail):
    with pytest.raises(SettingsError) as info:
        settings_env(**{name: value})
    message = str(info.value)
    assert f"BTC_{name.upper()}" in message
    assert detail in message


def test_cli_exits_non_zero_with_one_line_reason(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "BTC_DATA_DIR": str(tmp_path), "BTC_KAFKA_PORT": "-5"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "btc-services"), "status", "kafka"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "BTC_KAFKA_PORT" in errors[0], proc.stderr
