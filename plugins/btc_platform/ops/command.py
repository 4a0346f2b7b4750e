"""The scaffold of the platform's small command lines (``btc-supervisor``, ``make chromium``,
``make prometheus``, ``make js``, ...): run the command's action and turn its outcome into the exit
status, the same way everywhere.

* exit 0 (:data:`EXIT_OK`) when the action returns;
* exit 1 (:data:`EXIT_FAILED`) with the error in one log line when it raises one of the errors the
  command expects (a missing package, a process that cannot be started, ...); any other exception
  propagates with its traceback.

A command with bad arguments or settings exits 2 through argparse (``parser.exit(2, ...)``) before
it gets here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

EXIT_OK, EXIT_FAILED = 0, 1

#: Log line formats of the command lines (with time for the long-running or operator ones).
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
TIMED_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def run_action(
    action: Callable[[], object],
    expected: type[Exception] | tuple[type[Exception], ...],
    log: logging.Logger,
) -> int:
    """Run ``action``: :data:`EXIT_OK` when it returns, :data:`EXIT_FAILED` (the error logged on ``log``
    in one line) when it raises one of ``expected``."""
    try:
        action()
    except expected as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    return EXIT_OK
