"""Command-line pieces shared by the Spark job entry modules (options, logging, settings)."""

from __future__ import annotations

import argparse
import logging

from btc_platform.settings import Settings, load_settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ConfigError(RuntimeError):
    """The job cannot start with this configuration (one-line reason, exit code 2)."""


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
        help="Spark master (default BTC_SPARK_MASTER; ignored under spark-submit, which sets it).",
    )
    parser.add_argument("--log-level", default="INFO", help="Python logging level (default INFO).")
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO), format=LOG_FORMAT)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with --storage-root applied when given."""
    return load_settings(**({"storage_root": args.storage_root} if args.storage_root else {}))
