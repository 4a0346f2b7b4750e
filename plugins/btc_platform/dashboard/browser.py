"""The Chromium the dashboard's browser test (and benchmark) drives: Debian's ``chromium`` package.

Playwright's own browser download cannot be used here (only package registries are reachable),
so Playwright is pointed at the system binary (``executable_path``). :func:`ensure_chromium`
finds it, installs the package with apt-get when it is missing and this runs as root, and
otherwise raises naming the package to install (:func:`btc_platform.ops.debian.ensure_package`): ``make test`` runs it first
(``python -m btc_platform.dashboard.browser``), and the test's fixture calls it too.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys

from btc_platform.ops.command import LOG_FORMAT, run_action
from btc_platform.ops.debian import ensure_package

log = logging.getLogger(__name__)

#: The Debian package, and where it puts the browser.
PACKAGE = "chromium"
CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


class BrowserMissingError(RuntimeError):
    """Chromium is not installed and cannot be installed from here; the message says how."""


def find_chromium() -> str | None:
    for path in CANDIDATES:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


def ensure_chromium(install: bool = True) -> str:
    """Path of the Chromium binary; installs the Debian package ``chromium`` when missing, if
    ``install`` and running as root with apt-get. Raises :class:`BrowserMissingError` otherwise."""
    return ensure_package(PACKAGE, find_chromium, what=f"Chromium ({', '.join(CANDIDATES)})",
                          error=BrowserMissingError, install=install)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return run_action(lambda: sys.stdout.write(f"chromium: {ensure_chromium()}\n"), BrowserMissingError, log)


if __name__ == "__main__":
    raise SystemExit(main())
