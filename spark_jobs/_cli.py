"""The scaffold of every batch Spark job main: options, logging, settings, exit codes, session.

A job module gives :func:`job_main` its parser and a ``prepare(args, settings)`` that checks the
options and returns the :class:`Work` to run in a Spark session (or an exit code, for a command
that needs no Spark); :func:`job_main` does the rest, the same way for every job:

* exit 2 (:data:`EXIT_CONFIG`), one line ``<job> cannot start: <reason>``, nothing written, on a
  configuration error (:data:`CONFIG_ERRORS`: bad settings, a bad ``--start``/``--end``, bad
  options, datasets of the Parquet layout), found before the session starts or in it;
* exit 1 (:data:`EXIT_FAILED`) when the work fails: one line ``<what> failed: <reason>`` for an
  expected failure (bad input, exchange errors), else the traceback;
* exit 0 (:data:`EXIT_OK`) otherwise; the session is stopped in every case.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from btc_platform.lakehouse.lake import LegacyLayoutError, check_layout
from btc_platform.lakehouse.spark_session import build_session
from btc_platform.settings import Settings, SettingsError, load_settings
from btc_platform.timerange import RangeError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


class ConfigError(ValueError):
    """The job cannot start with these options or this configuration (one-line reason, exit 2)."""


#: What makes a job refuse to start (exit 2 with a one-line reason).
CONFIG_ERRORS: tuple[type[Exception], ...] = (SettingsError, RangeError, ConfigError, LegacyLayoutError)


@dataclass(frozen=True)
class Work:
    """What a job main runs in its Spark session once its options are valid."""

    run: Callable[[Any], object]  # run(spark)
    what: str  # names it in the failure line: "<what> failed[: reason]"
    expected: tuple[type[Exception], ...] = ()  # failures logged in one line, without a traceback


def add_common_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--storage-root, --master and --log-level, as every batch job takes them."""
    parser.add_argument(
        "--storage-root",
        default=None,
        help="Override BTC_STORAGE_ROOT (file:///... or hdfs://host:port/path).",
    )
    parser.add_argument(
        "--master",
        default=None,
        help="Spark master (default BTC_SPARK_BATCH_MASTER, else BTC_SPARK_MASTER; the batch jobs' master, the "
        "same that Airflow's spark_default connection passes to spark-submit).",
    )
    parser.add_argument("--log-level", default="INFO", help="Python logging level (default INFO).")
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO), format=LOG_FORMAT)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with --storage-root applied when given."""
    return load_settings(**({"storage_root": args.storage_root} if args.storage_root else {}))


def job_main(
    name: str,
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    prepare: Callable[[argparse.Namespace, Settings], Work | int],
    *,
    app_name: str,
    log: logging.Logger,
    lake_layout: bool = True,
) -> int:
    """Parse ``argv``, load the settings, ``prepare`` the work and run it (see the module doc).

    ``name`` names the job in the "cannot start" line; ``log`` is the job's logger; with
    ``lake_layout`` the job refuses datasets of the Parquet layout (``lake.check_layout``)."""
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        settings = settings_from_args(args)
        work = prepare(args, settings)
        if lake_layout:
            check_layout(settings)
    except CONFIG_ERRORS as exc:
        log.error("%s cannot start: %s", name, exc)
        return EXIT_CONFIG
    if isinstance(work, int):
        return work
    spark = build_session(app_name, settings, master=args.master or settings.batch_spark_master)
    try:
        work.run(spark)
    except CONFIG_ERRORS as exc:  # found in the tables (e.g. no range to check)
        log.error("%s cannot start: %s", name, exc)
        return EXIT_CONFIG
    except work.expected as exc:
        log.error("%s failed: %s", work.what, exc)
        return EXIT_FAILED
    except Exception:
        log.exception("%s failed", work.what)
        return EXIT_FAILED
    finally:
        spark.stop()
    return EXIT_OK
