"""``btc-services``: start, stop and check the local services of the platform (PostgreSQL,
Kafka, HDFS, Spark standalone, Airflow; which of them run depends on ``BTC_PROFILE``).

::

    btc-services start  postgres|kafka|hdfs|spark|airflow|all [...]
    btc-services stop   postgres|kafka|hdfs|spark|airflow|all [...]
    btc-services status postgres|kafka|hdfs|spark|airflow|all [...]
    btc-services run --source live|simulate|replay [--profile local|cluster]

(also ``python -m btc_platform.ops.services.cli``). Exit status: 0 done / healthy, 1 a service
failed or is not healthy, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from btc_platform.lakehouse.lake import LegacyLayoutError
from btc_platform.ops.jars import JarsError
from btc_platform.ops.lifecycle import run, stop_all
from btc_platform.ops.process import ProcessError
from btc_platform.ops.services import SERVICES, expand, start, status, stop
from btc_platform.settings import SettingsError, get_settings, load_settings

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Start, stop and check the local Kafka (KRaft), HDFS and Airflow of the platform. "
        "Configuration comes from BTC_* environment variables (see .env.example); data and logs go "
        "under BTC_DATA_DIR."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command, text in (
        ("start", "start services and wait until they are healthy (idempotent)"),
        ("stop", "stop services: SIGTERM to the process group, bounded wait, then SIGKILL"),
        ("status", "show pid and health of services; exit 1 if one is not healthy (with `all`, a stopped "
                   "HDFS only counts when BTC_STORAGE_ROOT is hdfs://)"),
    ):
        p = sub.add_parser(command, help=text, description=text)
        p.add_argument("services", nargs="+", choices=(*SERVICES, "all"), metavar="SERVICE",
                       help=f"one or more of {', '.join(SERVICES)}, or all")  # fmt: skip
    p = sub.add_parser("run", help="start the platform (Kafka, HDFS if the storage root is hdfs://, Airflow)",
                       description="start the platform (Kafka, HDFS if the storage root is hdfs://, Airflow)")  # fmt: skip
    p.add_argument("--source", choices=("live", "simulate", "replay"), default=None,
                   help="producer data source, passed on as BTC_PRODUCER_SOURCE (default: the setting, 'live')")
    p.add_argument("--profile", choices=("local", "cluster"), default=None,
                   help="local (default) or cluster: Spark standalone + 3 Kafka brokers + HDFS + Airflow on "
                        "PostgreSQL; passed on as BTC_PROFILE")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip

    try:
        settings = get_settings()
        if args.command == "run" and args.profile and args.profile != settings.profile:
            overrides = {name: getattr(settings, name) for name in settings.model_fields_set}
            settings = load_settings(**{**overrides, "profile": args.profile})
        if args.command == "run":
            run(settings, args.source or settings.producer_source)
        elif args.command == "start":
            for name in expand(args.services):
                start(name, settings)
        elif args.command == "stop":
            names = expand(args.services)
            if names == list(SERVICES):
                stop_all(settings)
            else:
                for name in reversed(names):
                    stop(name, settings)
        else:
            healthy = True
            for name in expand(args.services):
                st = status(name, settings)
                optional = (
                    "all" in args.services and name == "hdfs" and not settings.storage_root.startswith("hdfs://")
                )
                if not st.pids:  # postgres / spark outside the cluster profile
                    log.info("%-8s %-9s (%s)", name, "unused", st.problem)
                    continue
                pids = ", ".join(f"{p}={pid or '-'}" for p, pid in st.pids.items())
                log.info("%-8s %-9s %s%s", name, "healthy" if st.healthy else ("unhealthy" if st.running else "stopped"),
                         pids, "" if st.healthy else f"  ({st.problem})")  # fmt: skip
                # with `status all`, a stopped HDFS is fine when the storage root is not on HDFS
                healthy = healthy and (st.healthy or (optional and not st.running))
            return 0 if healthy else 1
    except (ProcessError, JarsError, SettingsError, LegacyLayoutError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
