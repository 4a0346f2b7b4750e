"""Command line of the supervisor (``btc-supervisor``, ``python -m btc_platform.ops.supervisor``)::

    python -m btc_platform.ops.supervisor check [producer|stream|all] [--source SOURCE]
    python -m btc_platform.ops.supervisor status [producer|stream|all]
    python -m btc_platform.ops.supervisor stop [producer|stream|all]

Exit status: 0 done (``status`` only reports, whatever it finds), 1 a check or stop failed,
2 bad arguments or settings.
"""

from __future__ import annotations

import argparse
import logging
import sys

from btc_platform.ops.command import TIMED_LOG_FORMAT, run_action
from btc_platform.ops.process import ProcessError
from btc_platform.ops.supervisor import NAMES, PRODUCER, ensure_producer, ensure_stream, status, stop
from btc_platform.settings import get_settings

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m btc_platform.ops.supervisor",
        description="Check (start/restart), report or stop the supervised producer and streaming job. "
        "Configuration comes from the BTC_* environment (see .env.example).",
    )
    parser.add_argument("command", choices=("check", "status", "stop"), help="what to do")
    parser.add_argument(
        "target", nargs="?", default="all", choices=(*NAMES, "all"), help="which process (default: all)"
    )
    parser.add_argument("--source", help="producer source for `check` (default: BTC_PRODUCER_SOURCE)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=TIMED_LOG_FORMAT)
    try:
        settings = get_settings()
    except ValueError as exc:
        parser.exit(2, f"supervisor: {exc}\n")
    names = NAMES if args.target == "all" else (args.target,)

    def act() -> None:
        for name in names:
            if args.command == "check":
                ensure_producer(settings, args.source) if name == PRODUCER else ensure_stream(settings)
            elif args.command == "stop":
                stop(name, settings)
            else:
                log.info("%s", status(name, settings))

    return run_action(act, ProcessError, log)


if __name__ == "__main__":
    sys.exit(main())
