"""The one settings object of the platform.

Every host, port, topic, path and interval that the producer, the Spark jobs, the DAGs and the
models use is read here, from environment variables prefixed ``BTC_`` (see ``.env.example``
for the full list). Defaults run the platform locally without Docker; the compose stack
overrides them through the same variable names.

Usage::

    from btc_platform.settings import get_settings
    s = get_settings()
    s.kafka_bootstrap_servers

Nothing is read at import time: ``get_settings()`` builds (and caches) the object on first
call, and ``get_settings.cache_clear()`` lets tests re-read a changed environment.
"""

from __future__ import annotations

import functools
from pathlib import Path
from urllib.parse import urlparse

from pydantic import ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from btc_platform.settings.batch import BatchSettings
from btc_platform.settings.compose import ComposeSettings
from btc_platform.settings.ingest import IngestSettings
from btc_platform.settings.monitoring import MonitoringSettings
from btc_platform.settings.services import PROJECT_ROOT, STORAGE_SCHEMES, ServiceSettings
from btc_platform.settings.stream import StreamSettings
from btc_platform.topology import KAFKA_BROKER_PORT_STEP, profile_defaults

__all__ = ["ENV_PREFIX", "PROJECT_ROOT", "Settings", "SettingsError", "get_settings", "load_settings"]

ENV_PREFIX = "BTC_"


class SettingsError(ValueError):
    """A setting has a value the platform cannot use; the message names the variable."""


# The groups are listed last-first: pydantic collects fields from the base listed last to the one
# listed first (like dataclasses), so the fields keep the order services, ingest, stream, batch,
# monitoring, compose (the order of .env.example).
class Settings(ComposeSettings, MonitoringSettings, BatchSettings, StreamSettings, IngestSettings, ServiceSettings,
               BaseSettings):  # fmt: skip
    """Typed, validated platform settings (env prefix ``BTC_``); the fields are declared per concern in
    this package's modules (services, ingest, stream, batch, monitoring, compose)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        frozen=True,
        case_sensitive=False,
    )

    # ---- Cross-group validators -------------------------------------------------------------
    @model_validator(mode="after")
    def _profile(self) -> Settings:
        """The cluster profile's defaults for the settings not set explicitly (one place:
        btc_platform.topology.profile_defaults)."""
        if self.profile != "local":
            defaults = profile_defaults(kafka_port=self.kafka_port, spark_master_port=self.spark_master_port,
                                        hdfs_namenode_port=self.hdfs_namenode_port)  # fmt: skip
            for name, value in defaults.items():
                if name not in self.model_fields_set:
                    object.__setattr__(self, name, value)
        if self.kafka_replication_factor > self.kafka_brokers:
            raise ValueError(f"kafka_replication_factor {self.kafka_replication_factor} > kafka_brokers {self.kafka_brokers}")
        if self.kafka_min_insync_replicas > self.kafka_replication_factor:
            raise ValueError(f"kafka_min_insync_replicas {self.kafka_min_insync_replicas} > kafka_replication_factor "
                             f"{self.kafka_replication_factor}")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _storage(self) -> Settings:
        uri = self.storage_root or f"file://{self.data_dir.resolve()}/bitcoin"
        parsed = urlparse(uri)
        if parsed.scheme not in STORAGE_SCHEMES:
            raise ValueError(
                f"storage_root must be a file:// or hdfs:// URI, got {uri!r}"
            )
        if parsed.scheme == "hdfs" and not parsed.netloc:
            raise ValueError(f"storage_root hdfs URI needs host:port, got {uri!r}")
        if not parsed.path.startswith("/"):
            raise ValueError(f"storage_root needs an absolute path, got {uri!r}")
        object.__setattr__(self, "storage_root", uri.rstrip("/"))
        return self

    # ---- Derived values ---------------------------------------------------------------------
    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def status_dir(self) -> Path:
        return self.data_dir / "status"

    @property
    def producer_status_path(self) -> Path:
        return self.status_dir / "producer.json"

    @property
    def producer_spool_path(self) -> Path:
        """Messages the producer accepted but could not deliver, kept for its next start."""
        return self.data_dir / "spool" / "producer.jsonl"

    @property
    def producer_journal_path(self) -> Path:
        """Write-ahead journal of the producer's accepted, not yet confirmed messages."""
        return self.data_dir / "spool" / "producer.wal"

    @property
    def stream_status_path(self) -> Path:
        return self.status_dir / "stream.json"

    @property
    def jars_dir(self) -> Path:
        return self.cache_dir / "jars"

    @property
    def hdfs_uri(self) -> str:
        """URI of the local single-node HDFS started by infra/ (not necessarily the storage root)."""
        return f"hdfs://127.0.0.1:{self.hdfs_namenode_port}"

    def kafka_broker_ports(self) -> list[tuple[int, int]]:
        """(broker port, controller port) of each local broker."""
        step = KAFKA_BROKER_PORT_STEP
        return [(self.kafka_port + i * step, self.kafka_controller_port + i * step) for i in range(self.kafka_brokers)]

    @property
    def batch_spark_master(self) -> str:
        """The Spark master of Airflow's batch jobs: ``spark_batch_master``, else ``spark_master``."""
        return self.spark_batch_master or self.spark_master

    @property
    def spark_standalone_url(self) -> str:
        """URL of the local Spark standalone master."""
        return f"spark://127.0.0.1:{self.spark_master_port}"

    def path(self, *parts: str) -> str:
        """A URI under the storage root, e.g. ``s.path("raw_data")``."""
        return "/".join([self.storage_root, *[p.strip("/") for p in parts]])

    def spark_jars(self, group: str = "spark") -> list[str]:
        """Jars resolved by infra/ for Spark (the Kafka connector and its dependencies)."""
        folder = self.jars_dir / group
        return sorted(str(p) for p in folder.glob("*.jar")) if folder.is_dir() else []


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read the settings from the environment once (raise ``SettingsError`` if invalid)."""
    return load_settings()


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment plus explicit overrides, with a readable error."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            env = f"{ENV_PREFIX}{field.upper()}" if err["loc"] else "settings"
            problems.append(f"{env}: {err['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from exc
