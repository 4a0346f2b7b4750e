"""Debian's Prometheus (package ``prometheus``: ``prometheus`` and ``promtool``) for the test that
scrapes the monitor, and the alerting rules the platform ships for those who run Prometheus and
Alertmanager (``infra/prometheus/alerts.yml``, checked with ``promtool check rules``).

:func:`ensure_prometheus` finds the binaries, installs the package with apt-get when they are
missing and this runs as root, and otherwise raises naming the package: ``make prometheus``
(part of ``make test``) runs it, like ``make chromium``.
"""

from __future__ import annotations

import logging
import shutil
import sys

from btc_platform.ops.command import LOG_FORMAT, run_action
from btc_platform.ops.debian import ensure_package
from btc_platform.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

PACKAGE = "prometheus"
BINARIES = ("prometheus", "promtool")
#: The alerting rules shipped with the platform, and a scrape configuration for the monitor.
RULES_FILE = PROJECT_ROOT / "infra" / "prometheus" / "alerts.yml"
CONFIG_FILE = PROJECT_ROOT / "infra" / "prometheus" / "prometheus.yml"


class PrometheusMissingError(RuntimeError):
    """Prometheus is not installed and cannot be installed from here; the message says how."""


def find() -> dict[str, str] | None:
    found = {name: shutil.which(name) for name in BINARIES}
    return None if None in found.values() else found  # type: ignore[return-value]


def ensure_prometheus(install: bool = True) -> dict[str, str]:
    """Paths of ``prometheus`` and ``promtool``; installs the Debian package when missing, if
    ``install`` and running as root with apt-get. Raises :class:`PrometheusMissingError` otherwise."""
    return ensure_package(PACKAGE, find, what=" and ".join(BINARIES), error=PrometheusMissingError, install=install)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return run_action(lambda: sys.stdout.write("".join(f"{name}: {path}\n" for name, path in ensure_prometheus().items())),
                      PrometheusMissingError, log)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
