"""The dashboard's chart library: plotly.js's *finance* bundle (npm package
``plotly.js-finance-dist-min``: scatter, bar, candlestick and a few more trace types),
installed from the npm registry with ``npm ci`` into ``<BTC_CACHE_DIR>/js/`` by ``make js``
(``python -m btc_platform.dashboard.assets``; ``make run`` and ``make test`` run it first).

The version and its integrity hash are pinned in ``infra/js/package.json`` and
``package-lock.json``; nothing of the package is committed. The full plotly.js bundle (the one the
``plotly`` Python package ships) is several times larger, and evaluating it dominated a page load
(docs/benchmarks.md); this one has every trace type the page draws.

npm missing: installed with apt-get (Debian's ``npm``) when running as root, otherwise an error
naming the package (:func:`btc_platform.ops.debian.ensure_package`, as for Chromium).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
from pathlib import Path

from btc_platform.ops.command import LOG_FORMAT, run_action
from btc_platform.ops.debian import ensure_package
from btc_platform.settings import PROJECT_ROOT, Settings, get_settings

log = logging.getLogger(__name__)

PACKAGE = "plotly.js-finance-dist-min"
BUNDLE = "plotly-finance.min.js"
#: Where the pinned package.json and package-lock.json live in the repository.
SOURCE_DIR = PROJECT_ROOT / "infra" / "js"
MANIFESTS = ("package.json", "package-lock.json")
NPM_PACKAGE = "npm"
NPM_TIMEOUT_S = 600


class AssetsMissingError(RuntimeError):
    """The chart library is not installed (or cannot be): the message says what to run."""


def js_dir(settings: Settings) -> Path:
    return settings.cache_dir / "js"


def bundle_path(settings: Settings) -> Path:
    """The plotly.js bundle the page loads (may not exist yet: :func:`ensure_bundle`)."""
    return js_dir(settings) / "node_modules" / PACKAGE / BUNDLE


def _manifest_hash() -> str:
    digest = hashlib.sha256()
    for name in MANIFESTS:
        digest.update((SOURCE_DIR / name).read_bytes())
    return digest.hexdigest()


def installed(settings: Settings) -> bool:
    """The bundle is there and was installed from the current manifests."""
    stamp = js_dir(settings) / ".installed"
    return (bundle_path(settings).is_file() and stamp.is_file()
            and stamp.read_text(encoding="utf-8").strip() == _manifest_hash())  # fmt: skip


def _npm() -> str:
    return ensure_package(NPM_PACKAGE, lambda: shutil.which("npm"), what="npm", error=AssetsMissingError,
                          then=", then `make js`")


def ensure_bundle(settings: Settings) -> Path:
    """Install the pinned package into ``<cache>/js`` unless it is there already; its bundle's path."""
    if installed(settings):
        return bundle_path(settings)
    target = js_dir(settings)
    target.mkdir(parents=True, exist_ok=True)
    for name in MANIFESTS:
        shutil.copyfile(SOURCE_DIR / name, target / name)
    command = [_npm(), "ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund"]
    log.info("installing %s into %s: %s", PACKAGE, target, " ".join(command[1:]))
    done = subprocess.run(command, cwd=target, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise AssetsMissingError(f"`npm ci` in {target} failed (exit {done.returncode}): "
                                 f"{(done.stderr or done.stdout).strip()[-800:]}")
    if not bundle_path(settings).is_file():
        raise AssetsMissingError(f"`npm ci` installed {PACKAGE} but {bundle_path(settings)} is missing")
    (target / ".installed").write_text(_manifest_hash() + "\n", encoding="utf-8")
    return bundle_path(settings)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return run_action(lambda: sys.stdout.write(f"plotly.js: {ensure_bundle(get_settings())}\n"), AssetsMissingError, log)


if __name__ == "__main__":
    raise SystemExit(main())
