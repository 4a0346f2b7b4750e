"""``btc-sql -e``: every existing table is queryable as btc.<name>, and the catalog (Derby
metastore under the data dir) survives a restart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from btc_platform.lakehouse import datasets
from btc_platform.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings(storage_root=f"file://{tmp_path}/bitcoin", data_dir=tmp_path / "data")


def test_init_statements_and_command(settings, tmp_path):
    from btc_platform.lakehouse import sql

    assert sql.init_statements(settings, [datasets.HOURLY_METRICS]) == [
        "CREATE DATABASE IF NOT EXISTS btc",
        f"CREATE TABLE IF NOT EXISTS btc.hourly_metrics USING DELTA LOCATION '{settings.storage_root}/hourly_metrics'",
    ]
    args = sql.command(settings, tmp_path / "init.sql", "SELECT 1")
    assert Path(args[0]).name == "spark-sql" and args[-4:] == ["-i", str(tmp_path / "init.sql"), "-e", "SELECT 1"]
    confs = {args[i + 1].split("=", 1)[0]: args[i + 1].split("=", 1)[1] for i, a in enumerate(args) if a == "--conf"}
    assert confs["spark.sql.catalogImplementation"] == "hive"
    assert confs["spark.hadoop.javax.jdo.option.ConnectionURL"] == (
        f"jdbc:derby:;databaseName={settings.data_dir.resolve() / 'metastore'};create=true"
    )
    assert confs["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"


def _btc_sql(settings, query: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BTC_") or k == "BTC_CACHE_DIR"}
    env.update(BTC_DATA_DIR=str(settings.data_dir), BTC_STORAGE_ROOT=settings.storage_root,
               PYTHONPATH=os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]))  # fmt: skip
    return subprocess.run([sys.executable, "-m", "btc_platform.lakehouse.sql", "-e", query], env=env, cwd=settings.data_dir.parent,
                          capture_output=True, text=True, timeout=900)  # fmt: skip


@pytest.mark.spark
@pytest.mark.slow
def test_query_prints_rows_and_catalog_survives_restart(settings):
    import pandas as pd
    from deltalake import write_deltalake

    rows = pd.DataFrame({"symbol": ["BTCUSDT", "BTCUSDT", "ETHUSDT"], "close": [101.5, 102.5, 2000.0]})
    write_deltalake(settings.path(datasets.HOURLY_METRICS).removeprefix("file://"), rows)

    first = _btc_sql(settings, "SELECT symbol, close FROM btc.hourly_metrics ORDER BY close; "
                               "CREATE VIEW btc.btc_only AS SELECT * FROM btc.hourly_metrics WHERE symbol = 'BTCUSDT'")
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.splitlines() == ["BTCUSDT\t101.5", "BTCUSDT\t102.5", "ETHUSDT\t2000.0"]
    assert (settings.data_dir / "metastore").is_dir()
    assert (settings.data_dir / "logs" / "derby.log").is_file()

    # a new shell: the view made by the last one is still in the catalog
    second = _btc_sql(settings, "SELECT count(*) FROM btc.btc_only")
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.splitlines() == ["2"]
