"""Model registry on the storage root (file:// or hdfs://, via ``btc_platform.lakehouse.storage``):
one per symbol, its layout and file names in ``btc_platform.lakehouse.model_registry`` (read by
the dashboard too); this module adds saving and loading models (Keras) and moving ``current``.

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

from btc_platform.lakehouse.model_registry import (
    BANDS,
    CONFIG,
    CURRENT,
    INTERVALS,
    MODEL,
    SCALER,
    TRAINING,
    ModelNotFoundError,
    RegistryFiles,
)
from btc_platform.lakehouse.storage import join, write_parquet
from btc_platform.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

__all__ = ["ModelNotFoundError", "Registry", "code_version", "utcnow_iso"]


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


class Registry(RegistryFiles):
    """The registry of one symbol (``RegistryFiles``) with its models."""

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
        training = self.read_json(version, TRAINING)
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
            path = Path(tmp) / MODEL
            forecaster.model.save(path)
            self.fs.write_bytes(self.uri(version, MODEL), path.read_bytes())
        self.write_json(version, SCALER, forecaster.scaler.to_dict())
        self.write_json(version, INTERVALS, forecaster.calibration.to_dict())
        self.write_json(version, BANDS, {k: b.to_dict() for k, b in forecaster.bands.items()})
        self.write_json(version, TRAINING, {**training, "code_version": code_version(), "saved_at": utcnow_iso()})
        # config last: its presence marks a complete version
        self.write_json(version, CONFIG, forecaster.config.to_dict())
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

        config = ModelConfig.from_dict(self.read_json(version, CONFIG))
        configure_runtime(self.settings.model_tf_threads, config.seed)
        with tempfile.TemporaryDirectory(prefix="btc-model-") as tmp:
            path = Path(tmp) / MODEL
            path.write_bytes(self.fs.read_bytes(self.uri(version, MODEL)))
            model = keras.models.load_model(path, compile=False)
        return Forecaster(
            config,
            model,
            Scaler.from_dict(self.read_json(version, SCALER)),
            calibration_from_dict(self.read_json(version, INTERVALS)),
            {k: BandModel.from_dict(v) for k, v in self.read_json(version, BANDS).items()}
            if self.exists(version, BANDS) else {},
        )

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
