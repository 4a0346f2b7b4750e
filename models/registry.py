"""Model registry on the storage root (file:// or hdfs://, via ``btc_platform.lakehouse.storage``).

Layout under ``<storage_root>/models/``::

    <version>/model.keras      Keras 3 model
    <version>/scaler.json      feature mean/std + target scale (fitted on the training part only)
    <version>/intervals.json   interval calibration (validation slice)
    <version>/config.json      ModelConfig
    <version>/training.json    data range, split, epochs, timings, code version, params and the data
                               it was trained on: ``data_uri``, ``symbol``, ``data_end`` and
                               ``data_table_version`` (hourly_metrics Delta version; null for a CSV)
    <version>/metrics.json     evaluation on the test window (model vs persistence vs drift)
    <version>/backtest.parquet forecasts on the test window (published to the predictions table)
    <version>/decision.json    promoted / rejected, the reason, forced or not, what it was compared to
    current.json               pointer to the served version (moves only on promotion)

A rejected candidate stays in place with its decision. Every JSON is written atomically. With
``data_table_version`` a model's training data can be read again exactly (time travel:
``models.data.read_hourly_metrics(uri, symbol, version=...)``, ``train --as-of-version N``).
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from btc_platform.lakehouse import datasets
from btc_platform.lakehouse.storage import Storage, join, open_storage, write_parquet
from btc_platform.settings import PROJECT_ROOT, Settings, get_settings

log = logging.getLogger(__name__)

CURRENT = "current.json"


class ModelNotFoundError(LookupError):
    """No such model version, or no ``current`` model yet."""


def code_version() -> str:
    """Git commit of the working tree if available, else the models package version."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5, check=False
        )
        if out.returncode == 0 and out.stdout.strip():
            return f"git:{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("git not available for the code version: %s", exc)
    from models import __version__

    return f"models-{__version__}"


def utcnow_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Registry:
    def __init__(self, settings: Settings | None = None, root: str | None = None):
        self.settings = settings or get_settings()
        self.root = root or self.settings.path(datasets.MODELS)
        self.fs: Storage = open_storage(self.root, self.settings)

    # ---- paths ----------------------------------------------------------------------------
    def uri(self, version: str, name: str = "") -> str:
        return join(self.root, version, name)

    def exists(self, version: str, name: str = "config.json") -> bool:
        return self.fs.exists(self.uri(version, name))

    # ---- json documents -------------------------------------------------------------------
    def write_json(self, version: str, name: str, doc: dict) -> None:
        self.fs.write_text(self.uri(version, name), json.dumps(doc, indent=2, sort_keys=True, default=str))

    def read_json(self, version: str, name: str) -> dict:
        uri = self.uri(version, name)
        if not self.fs.exists(uri):
            raise ModelNotFoundError(f"{uri} does not exist")
        return json.loads(self.fs.read_text(uri))

    # ---- tables of a version (one Parquet file each) -------------------------------------------
    def write_frame(self, version: str, name: str, frame) -> None:
        write_parquet(frame, self.uri(version, name), storage=self.fs)

    def read_frame(self, version: str, name: str):
        import pyarrow.parquet as pq

        uri = self.uri(version, name)
        if not self.fs.exists(uri):
            raise ModelNotFoundError(f"{uri} does not exist")
        return pq.read_table(io.BytesIO(self.fs.read_bytes(uri))).to_pandas()

    def trained_on(self, version: str) -> dict:
        """The data ``version`` was trained on: data_uri, symbol, data_end and data_table_version
        (None for a candle CSV or a model saved before table versions were recorded)."""
        training = self.read_json(version, "training.json")
        return {
            "data_uri": training["data_uri"],
            "symbol": training["symbol"],
            "data_end": training["data_end"],
            "data_table_version": training.get("data_table_version"),
        }

    # ---- models ---------------------------------------------------------------------------
    def save_forecaster(self, version: str, forecaster, training: dict) -> str:
        """Write model, scaler, intervals, config and training info; returns the version URI."""
        with tempfile.TemporaryDirectory(prefix="btc-model-") as tmp:
            path = Path(tmp) / "model.keras"
            forecaster.model.save(path)
            self.fs.write_bytes(self.uri(version, "model.keras"), path.read_bytes())
        self.write_json(version, "scaler.json", forecaster.scaler.to_dict())
        self.write_json(version, "intervals.json", forecaster.calibration.to_dict())
        self.write_json(version, "bands.json", {k: b.to_dict() for k, b in forecaster.bands.items()})
        self.write_json(version, "training.json", {**training, "code_version": code_version(), "saved_at": utcnow_iso()})
        # config last: its presence marks a complete version
        self.write_json(version, "config.json", forecaster.config.to_dict())
        log.info("saved model %s to %s", version, self.uri(version))
        return self.uri(version)

    def load_forecaster(self, version: str):
        import keras

        from models.bands import BandModel
        from models.config import ModelConfig
        from models.features import Scaler
        from models.intervals import calibration_from_dict
        from models.train import Forecaster

        if not self.exists(version):
            raise ModelNotFoundError(f"model version {version} not found under {self.root}")
        from models.network import configure_runtime

        config = ModelConfig.from_dict(self.read_json(version, "config.json"))
        configure_runtime(self.settings.model_tf_threads, config.seed)
        with tempfile.TemporaryDirectory(prefix="btc-model-") as tmp:
            path = Path(tmp) / "model.keras"
            path.write_bytes(self.fs.read_bytes(self.uri(version, "model.keras")))
            model = keras.models.load_model(path, compile=False)
        return Forecaster(
            config,
            model,
            Scaler.from_dict(self.read_json(version, "scaler.json")),
            calibration_from_dict(self.read_json(version, "intervals.json")),
            {k: BandModel.from_dict(v) for k, v in self.read_json(version, "bands.json").items()}
            if self.exists(version, "bands.json") else {},
        )

    def versions(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        return [v for v in self.fs.listdir(self.root) if not v.startswith((".", "_")) and self.exists(v)]

    # ---- current pointer ------------------------------------------------------------------
    def current(self) -> dict | None:
        uri = join(self.root, CURRENT)
        if not self.fs.exists(uri):
            return None
        return json.loads(self.fs.read_text(uri))

    def current_version(self) -> str | None:
        doc = self.current()
        return doc["version"] if doc else None

    def set_current(self, version: str, reason: str, forced: bool) -> dict:
        doc = {
            "version": version,
            "previous": self.current_version(),
            "promoted_at": utcnow_iso(),
            "forced": forced,
            "reason": reason,
        }
        self.fs.write_text(join(self.root, CURRENT), json.dumps(doc, indent=2, sort_keys=True))
        log.info("current model -> %s (forced=%s): %s", version, forced, reason)
        return doc
