"""The model registry's layout on the storage root and its plain-file reads (no Keras).

``models.registry.Registry`` builds on :class:`RegistryFiles` to save and load models; the
dashboard reads the same files through it, so file names and the layout are spelled here only.

Layout: one registry per symbol, ``<storage_root>/models/<SYMBOL>/``::

    <version>/model.keras      Keras 3 model
    <version>/scaler.json      feature mean/std + target scale (fitted on the training part only)
    <version>/intervals.json   interval calibration (validation slice)
    <version>/bands.json       band baselines fitted on the training windows
    <version>/config.json      ModelConfig (written last: its presence marks a complete version)
    <version>/training.json    data range, split, epochs, timings, code version and the data it was
                               trained on (``data_uri``, ``symbol``, ``data_end``, ``data_table_version``)
    <version>/metrics.json     evaluation on the test window (model vs persistence vs drift, bands)
    <version>/backtest.parquet forecasts on the test window (published to the predictions table)
    <version>/decision.json    promoted / rejected, the reason, forced or not, what it was compared to
    current.json               pointer to the served version (moves only on promotion)

Registries written before there was one per symbol hold the versions of one symbol directly
under ``models/``. They stay readable where they are: a symbol without its own directory whose
models are in that legacy layout (by the ``symbol`` of their training.json) keeps using it, for
reading and writing alike (:attr:`RegistryFiles.legacy`); every other symbol gets its own.
"""

from __future__ import annotations

import json
import logging

from btc_platform.lakehouse import datasets
from btc_platform.lakehouse.storage import Storage, join, open_storage
from btc_platform.settings import Settings, get_settings

log = logging.getLogger(__name__)

CURRENT = "current.json"
CONFIG = "config.json"
TRAINING = "training.json"
METRICS = "metrics.json"
DECISION = "decision.json"
BACKTEST = "backtest.parquet"
MODEL = "model.keras"
SCALER = "scaler.json"
INTERVALS = "intervals.json"
BANDS = "bands.json"


class ModelNotFoundError(LookupError):
    """No such model version, or no ``current`` model yet."""


def _is_version(name: str) -> bool:
    return not name.startswith((".", "_")) and not name.endswith(".json")


class RegistryFiles:
    """The registry of one symbol (default: the first of ``BTC_BINANCE_SYMBOLS``); ``root``
    overrides where it is (then no legacy lookup)."""

    def __init__(self, settings: Settings | None = None, symbol: str | None = None, root: str | None = None):
        self.settings = settings or get_settings()
        self.symbol = (symbol or self.settings.binance_symbols[0]).upper()
        self.legacy = False
        if root is None:
            root = self.settings.path(datasets.MODELS, self.symbol)
            self.fs: Storage = open_storage(root, self.settings)
            base = self.settings.path(datasets.MODELS)
            if not self.fs.exists(root) and legacy_symbol(self.fs, base) == self.symbol:
                root, self.legacy = base, True
                log.info("model registry of %s: the single-symbol layout of %s (written before one per symbol)",
                         self.symbol, base)
        else:
            self.fs = open_storage(root, self.settings)
        self.root = root

    # ---- paths ----------------------------------------------------------------------------
    def uri(self, version: str, name: str = "") -> str:
        return join(self.root, version, name)

    def exists(self, version: str, name: str = CONFIG) -> bool:
        return self.fs.exists(self.uri(version, name))

    # ---- json documents -------------------------------------------------------------------
    def read_json(self, version: str, name: str) -> dict:
        uri = self.uri(version, name)
        if not self.fs.exists(uri):
            raise ModelNotFoundError(f"{uri} does not exist")
        return json.loads(self.fs.read_text(uri))

    def read_json_or_none(self, version: str, name: str) -> dict | None:
        return self.read_json(version, name) if self.exists(version, name) else None

    def write_json(self, version: str, name: str, doc: dict) -> None:
        self.fs.write_text(self.uri(version, name), json.dumps(doc, indent=2, sort_keys=True, default=str))

    # ---- versions and the current pointer -------------------------------------------------
    def versions(self) -> list[str]:
        """Complete versions (their config.json written)."""
        if not self.fs.exists(self.root):
            return []
        return [v for v in self.fs.listdir(self.root) if _is_version(v) and self.exists(v)]

    def current(self) -> dict | None:
        uri = join(self.root, CURRENT)
        if not self.fs.exists(uri):
            return None
        return json.loads(self.fs.read_text(uri))

    def current_version(self) -> str | None:
        doc = self.current()
        return doc["version"] if doc else None


def legacy_symbol(fs: Storage, base: str) -> str | None:
    """The symbol of a single-symbol registry written directly under ``base`` (None if there is none)."""
    if not fs.exists(base):
        return None
    for name in sorted(fs.listdir(base), reverse=True):
        training = join(base, name, TRAINING)
        if _is_version(name) and fs.exists(training):
            symbol = json.loads(fs.read_text(training)).get("symbol")
            if symbol:
                return str(symbol).upper()
    return None
