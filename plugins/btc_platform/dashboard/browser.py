"""The Chromium the dashboard's browser test (and benchmark) drives: Debian's ``chromium`` package.

Playwright's own browser download cannot be used here (only package registries are reachable),
so Playwright is pointed at the system binary (``executable_path``). :func:`ensure_chromium`
finds it, installs the package with apt-get when it is missing and this runs as root, and
otherwise raises naming the package to install: ``make test`` runs it first
(``python -m btc_platform.dashboard.browser``), and the test's fixture calls it too.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

log = logging.getLogger(__name__)

#: The Debian package, and where it puts the browser.
PACKAGE = "chromium"
CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
INSTALL_TIMEOUT_S = 900


class BrowserMissingError(RuntimeError):
    """Chromium is not installed and cannot be installed from here; the message says how."""


def find_chromium() -> str | None:
    for path in CANDIDATES:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


def _apt(*args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log.info("running apt-get %s", " ".join(args))
    done = subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                          check=False)
    if done.returncode != 0:
        raise BrowserMissingError(
            f"`apt-get {' '.join(args)}` failed (exit {done.returncode}): {done.stderr.strip()[-500:]}; "
            f"install the Debian package by hand"
        )


def can_apt() -> bool:
    """Running as root with apt-get: a missing Debian package can be installed from here."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def apt_install(package: str) -> None:
    """``apt-get update`` then ``apt-get install -y package`` (raises naming the package on failure)."""
    _apt("update", "-qq")
    _apt("install", "-y", "-qq", package)


def ensure_chromium(install: bool = True) -> str:
    """Path of the Chromium binary; installs the Debian package ``chromium`` when missing, if
    ``install`` and running as root with apt-get. Raises :class:`BrowserMissingError` otherwise."""
    found = find_chromium()
    if found:
        return found
    if not install:
        raise BrowserMissingError(f"Chromium not found ({', '.join(CANDIDATES)}): install the Debian package `{PACKAGE}`")
    if not can_apt():
        raise BrowserMissingError(
            f"Chromium not found ({', '.join(CANDIDATES)}) and it cannot be installed from here "
            f"(needs root and apt-get): run `sudo apt-get install -y {PACKAGE}`"
        )
    log.warning("Chromium is missing: installing the Debian package %s", PACKAGE)
    apt_install(PACKAGE)
    found = find_chromium()
    if not found:
        raise BrowserMissingError(f"apt-get installed `{PACKAGE}` but no binary is at {', '.join(CANDIDATES)}")
    return found


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = ensure_chromium()
    except BrowserMissingError as exc:
        log.error("%s", exc)
        return 1
    sys.stdout.write(f"chromium: {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
