"""Debian packages that tools of the platform come from (Chromium, Prometheus, npm): found on this
machine, else installed with apt-get when running as root with apt-get, else an error naming the
package to install.

:func:`ensure_package` is the one scaffold: ``find()`` what the package provides, install the package
when it is missing and may be installed from here, find it again; every failure raises the caller's
error class with the command to run by hand.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

INSTALL_TIMEOUT_S = 900

T = TypeVar("T")


def can_apt() -> bool:
    """Running as root with apt-get: a missing Debian package can be installed from here."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def _apt(error: type[Exception], *args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log.info("running apt-get %s", " ".join(args))
    done = subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        raise error(
            f"`apt-get {' '.join(args)}` failed (exit {done.returncode}): {done.stderr.strip()[-500:]}; "
            f"install the Debian package by hand"
        )


def apt_install(package: str, error: type[Exception] = RuntimeError) -> None:
    """``apt-get update`` then ``apt-get install -y package``; ``error`` naming the command on failure."""
    _apt(error, "update", "-qq")
    _apt(error, "install", "-y", "-qq", package)


def ensure_package(
    package: str,
    find: Callable[[], T | None],
    *,
    what: str,
    error: type[Exception],
    install: bool = True,
    then: str = "",
) -> T:
    """What ``find()`` returns; when it returns nothing, install the Debian ``package`` (if ``install``
    and :func:`can_apt`) and find it again. Raises ``error`` naming ``what`` is missing and the
    command to run (followed by ``then``, e.g. the make target to run afterwards)."""
    found = find()
    if found:
        return found
    if not install:
        raise error(f"{what} not found: install the Debian package `{package}`{then}")
    if not can_apt():
        raise error(f"{what} not found and it cannot be installed from here (needs root and apt-get): "
                    f"run `sudo apt-get install -y {package}`{then}")  # fmt: skip
    log.warning("%s is missing: installing the Debian package %s", what, package)
    apt_install(package, error)
    found = find()
    if not found:
        raise error(f"apt-get installed `{package}` but {what} is still not found")
    return found
