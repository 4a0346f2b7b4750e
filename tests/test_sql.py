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
        "USE btc",
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

    # a new shell: the view made by the last one is still in the catalog (by its bare name too:
    # the shell is in the btc database); a name Spark cannot resolve ends with one line
    second = _btc_sql(settings, "SELECT count(*) FROM btc_only; SELECT * FROM btc.hourly_metric")
    assert second.returncode == 2, second.stderr[-3000:]
    assert second.stdout.splitlines() == ["2"]
    last = second.stderr.splitlines()[-1]
    assert " ERROR " in last and last.endswith(
        ": no table or view btc.hourly_metric; tables: btc.hourly_metrics (views you created: SHOW VIEWS IN btc)"
    )
    assert "UnresolvedRelation" not in second.stderr and "TABLE_OR_VIEW_NOT_FOUND" not in second.stderr


@pytest.mark.parametrize(
    ("query", "missing"),
    [
        ("SELECT * FROM btc.data_quality", ["data_quality"]),
        ("select * from `btc`.`Data_Quality` q join btc.hourly_metrics h using (hour_start)", ["data_quality"]),
        ("SELECT * FROM data_quality", ["data_quality"]),  # the bare name (the shell uses btc)
        ("SELECT * FROM hourly_metrics JOIN predictions p ON true", ["predictions"]),
        ("SELECT * FROM btc.hourly_metrics", []),
        ("SELECT * FROM btc.my_view", []),  # not a platform table: left to Spark (a view may exist)
        ("SELECT * FROM range(10) data_quality", []),  # an alias, not a table
        ("SELECT * FROM other.data_quality", []),  # another database
        ("WITH x AS (SELECT 1) SELECT * FROM x", []),
    ],
)
def test_missing_platform_tables_are_found_in_the_query(query, missing):
    from btc_platform.lakehouse import sql

    assert sql.missing_tables(query, [datasets.HOURLY_METRICS]) == missing


def test_a_query_on_a_table_not_written_yet_fails_before_spark_with_one_line(settings, settings_env, caplog):
    import pandas as pd
    from deltalake import write_deltalake

    from btc_platform.lakehouse import sql

    write_deltalake(settings.path(datasets.HOURLY_METRICS).removeprefix("file://"), pd.DataFrame({"close": [1.0]}))
    settings_env(data_dir=settings.data_dir, storage_root=settings.storage_root)
    assert sql.main(["-e", "SELECT * FROM btc.data_quality"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"table btc.data_quality does not exist yet (nothing has written {settings.storage_root}/data_quality); "
                      "tables: btc.hourly_metrics"]
    assert not (settings.data_dir / "metastore").exists()  # Spark never started
