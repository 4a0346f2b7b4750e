"""``btc-sql`` (``make sql``): a Spark SQL shell where every table is ``btc.<name>``.

::

    btc-sql                                   # interactive spark-sql shell
    btc-sql -e "SELECT * FROM btc.hourly_metrics ORDER BY hour_start DESC LIMIT 5"

It runs pyspark's own ``spark-sql`` with every option of ``btc_platform.lakehouse.spark_session.spark_conf`` (Delta,
UTC, jars, the master) plus a persistent Hive catalog: an embedded Derby metastore in
``<data_dir>/metastore`` and the warehouse in ``<data_dir>/warehouse``, so names survive restarts.
Each start first runs ``<data_dir>/sql/init.sql``, written here: ``CREATE DATABASE IF NOT EXISTS
btc`` and ``CREATE TABLE IF NOT EXISTS btc.<name> USING DELTA LOCATION '<uri>'`` for every table
of ``btc_platform.lakehouse.datasets.TABLES`` that exists (has a Delta log), so tables created since the
last start appear too. The registered tables are Delta tables at their location: queries read
the current version. Embedded Derby admits one shell at a time (a second one fails to boot the
metastore). Query results go to stdout (tab-separated rows; ``SET spark.sql.cli.print.header=true;``
adds column names), Spark's log to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pyspark

from btc_platform.lakehouse.lake import LegacyLayoutError, check_layout, existing_tables
from btc_platform.lakehouse.spark_session import environment_script, spark_conf
from btc_platform.settings import Settings, SettingsError, get_settings

log = logging.getLogger(__name__)

#: Database (schema) the tables are registered in.
DATABASE = "btc"


def metastore_dir(settings: Settings) -> Path:
    return settings.data_dir / "metastore"


def catalog_conf(settings: Settings) -> dict[str, str]:
    """Spark options of the persistent catalog: Hive catalog on an embedded Derby metastore
    under the data dir (created on first use), warehouse next to it."""
    return {
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": (settings.data_dir / "warehouse").resolve().as_uri(),
        "spark.hadoop.javax.jdo.option.ConnectionURL":
            f"jdbc:derby:;databaseName={metastore_dir(settings).resolve()};create=true",
    }  # fmt: skip


def init_statements(settings: Settings, names: Sequence[str]) -> list[str]:
    """The database, then one ``CREATE TABLE IF NOT EXISTS ... USING DELTA LOCATION`` per table."""
    statements = [f"CREATE DATABASE IF NOT EXISTS {DATABASE}"]
    for name in names:
        location = settings.path(name).replace("'", "\\'")
        statements.append(f"CREATE TABLE IF NOT EXISTS {DATABASE}.{name} USING DELTA LOCATION '{location}'")
    return statements


def write_init_file(settings: Settings) -> Path:
    """``<data_dir>/sql/init.sql`` for the tables that exist now."""
    names = existing_tables(settings)
    log.info("tables under %s: %s", settings.storage_root, ", ".join(names) or "none yet")
    path = settings.data_dir / "sql" / "init.sql"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{statement};\n" for statement in init_statements(settings, names)))
    return path


def command(settings: Settings, init_file: Path, query: str | None = None) -> list[str]:
    """The spark-sql command line: master, every platform option, the catalog, ``-i``, ``-e``."""
    # Derby's log goes to the logs dir, not ./derby.log
    derby_log = f"-Dderby.stream.error.file={settings.logs_dir / 'derby.log'}"
    conf = spark_conf(settings, settings.spark_master, driver_java_options=derby_log)
    conf.update(catalog_conf(settings))
    args = [environment_script("spark-sql"), "--master", settings.spark_master, "--name", "btc-sql"]
    for key, value in conf.items():
        args += ["--conf", f"{key}={value}"]
    args += ["-i", str(init_file)]
    if query:
        args += ["-e", query]
    return args


def sql_env() -> dict[str, str]:
    """This environment plus SPARK_HOME = the pyspark package (spark-sql's own lookup runs
    whichever ``python3`` is on PATH, not necessarily this one)."""
    return {"SPARK_HOME": str(Path(pyspark.__file__).resolve().parent), **os.environ}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="btc-sql",
        description="Spark SQL shell over the platform's Delta tables (btc.<name>); -e runs one query.",
    )
    parser.add_argument("-e", "--execute", metavar="QUERY", default=None,
                        help="run QUERY (one or more ;-separated statements), print the result, exit")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        settings = get_settings()
        check_layout(settings)
    except (SettingsError, LegacyLayoutError) as exc:
        log.error("%s", exc)
        return 2
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    argv_sql = command(settings, write_init_file(settings), args.execute)
    log.info("starting spark-sql (metastore %s)", metastore_dir(settings))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv_sql[0], argv_sql, sql_env())  # the shell takes over this process (terminal, Ctrl-C)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
