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
last start appear too, and then ``USE btc``, so a table's bare name works as well. The registered tables are Delta tables at their location: queries read
the current version. Embedded Derby admits one shell at a time (a second one fails to boot the
metastore). Query results go to stdout (tab-separated rows; ``SET spark.sql.cli.print.header=true;``
adds column names), Spark's log to stderr.

A query (``-e``) that names a table of the platform nobody has written yet stops before Spark
starts, and one that Spark cannot resolve ends with one line instead of Spark's analysis dump:
both name the table and the tables that exist (exit status 2).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
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

#: ``btc.<name>`` (backticks allowed) anywhere in a query, and a bare name after FROM / JOIN that
#: is not a function call (``range(10)``), a subquery or qualified with another database.
_QUALIFIED = re.compile(rf"`?\b{DATABASE}`?\s*\.\s*`?(\w+)`?", re.IGNORECASE)
_BARE = re.compile(r"\b(?:FROM|JOIN)\s+`?(\w+)`?(?![\w`])(?!\s*[.(])", re.IGNORECASE)
#: Spark's analysis error for a name it cannot resolve (spark-sql prints it to stderr).
_NOT_FOUND = re.compile(r"\[TABLE_OR_VIEW_NOT_FOUND\] The table or view (\S+) cannot be found")


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
    statements.append(f"USE {DATABASE}")
    return statements


def _tables_line(existing: Sequence[str]) -> str:
    if not existing:
        return "no table exists yet (the stream writes the first ones a minute or two after `make run`)"
    return "tables: " + ", ".join(f"{DATABASE}.{name}" for name in existing)


def missing_tables(query: str, existing: Sequence[str]) -> list[str]:
    """The platform's tables (``datasets.TABLES``) that ``query`` names and that do not exist yet,
    in the order named. Other names (views you made, typos) are left to Spark."""
    from btc_platform.lakehouse import datasets

    named = [m.group(1) for m in _QUALIFIED.finditer(query)]
    named += [m.group(1) for m in _BARE.finditer(query)]
    missing = [name.lower() for name in named if name.lower() in datasets.TABLES and name.lower() not in existing]
    return list(dict.fromkeys(missing))


def missing_table_message(name: str, settings: Settings, existing: Sequence[str]) -> str:
    """One line: which platform table does not exist yet, where it would be, what exists."""
    return (f"table {DATABASE}.{name} does not exist yet (nothing has written {settings.path(name)}); "
            f"{_tables_line(existing)}")  # fmt: skip


def not_found_message(name: str, existing: Sequence[str]) -> str:
    """One line for Spark's TABLE_OR_VIEW_NOT_FOUND of ``name`` (as Spark quotes it)."""
    return (f"no table or view {name.replace('`', '')}; {_tables_line(existing)} "
            f"(views you created: SHOW VIEWS IN {DATABASE})")  # fmt: skip


def run_query(args: Sequence[str], env: dict[str, str], existing: Sequence[str]) -> int:
    """Run spark-sql with ``-e``: its stdout and log pass through; a TABLE_OR_VIEW_NOT_FOUND ends
    with one logged line (Spark's analysis dump after it is dropped), exit status 2."""
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True, errors="replace")
    not_found = None
    for line in proc.stderr or ():
        match = _NOT_FOUND.search(line) if not_found is None else None
        if match:
            not_found = match.group(1)
        if not_found is None:
            sys.stderr.write(line)
    code = proc.wait()
    if not_found is not None:
        log.error("%s", not_found_message(not_found, existing))
        return 2
    return code


def write_init_file(settings: Settings, names: Sequence[str]) -> Path:
    """``<data_dir>/sql/init.sql`` for the tables ``names`` (those that exist now)."""
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
    whichever ``python3`` is on PATH, not necessarily this one), and the shell's web UI on the
    loopback address unless SPARK_LOCAL_IP says otherwise (as for the platform's other drivers)."""
    return {"SPARK_HOME": str(Path(pyspark.__file__).resolve().parent), "SPARK_LOCAL_IP": "127.0.0.1", **os.environ}


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
    existing = existing_tables(settings)
    if args.execute is not None and (missing := missing_tables(args.execute, existing)):
        log.error("%s", missing_table_message(missing[0], settings, existing))
        return 2
    argv_sql = command(settings, write_init_file(settings, existing), args.execute)
    log.info("starting spark-sql (metastore %s)", metastore_dir(settings))
    if args.execute is not None:
        return run_query(argv_sql, sql_env(), existing)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv_sql[0], argv_sql, sql_env())  # the shell takes over this process (terminal, Ctrl-C)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
