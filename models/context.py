"""What every task of a retrain run shares: its resolved parameters, the series it read (once),
the split of that series, the version key of a candidate.

Data: hourly_metrics is a Delta table read with delta-rs (``models.data.load_series``: one symbol,
the columns used, filters pushed down), at most once per task: a task's :class:`Context` keeps
what it read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

import pandas as pd

from btc_platform.lakehouse import datasets
from btc_platform.settings import Settings, get_settings
from models.config import ModelConfig, RetrainParams
from models.data import HOUR, HourlyData, InsufficientHistoryError, VersionGoneDataError, load_series
from models.features import hours_needed
from models.registry import Registry

log = logging.getLogger(__name__)

#: The rows a model was trained on, kept with the model: its table version stays readable after
#: VACUUM and log clean-up removed that version from the table.
TRAINING_SNAPSHOT = "training_data.parquet"


@dataclass
class Context:
    """One task's parameters with the settings' defaults filled in, and what it has read."""

    settings: Settings
    params: RetrainParams
    data_uri: str
    symbol: str
    policy: str
    #: what this task has read, by (uri, symbol, version, until): each series is read once per task
    loaded: dict = field(default_factory=dict)

    @property
    def config(self) -> ModelConfig:
        return self.params.config

    def registry(self) -> Registry:
        """The model registry of this run's symbol."""
        return Registry(self.settings, self.symbol)

    def load(
        self,
        *,
        uri: str | None = None,
        symbol: str | None = None,
        version: int | None = None,
        until: pd.Timestamp | None = None,
    ) -> HourlyData:
        """The series of ``uri``/``symbol`` (default: the context's) at table ``version``, up to
        ``until``; read on first use, then kept for the rest of the task."""
        key = (uri or self.data_uri, symbol or self.symbol, version, until)
        if key not in self.loaded:
            try:
                self.loaded[key] = load_series(key[0], key[1], version=version, until=until)
            except VersionGoneDataError:
                kept = self.training_snapshot(*key)
                if kept is None:
                    raise
                self.loaded[key] = kept
        return self.loaded[key]

    def training_snapshot(self, uri: str, symbol: str, version: int | None, until) -> HourlyData | None:
        """The series of ``uri``/``symbol`` at table ``version`` from the snapshot of a registered
        model trained on that version (None if no model kept one)."""
        registry = Registry(self.settings, symbol)
        for model in registry.versions():
            if not registry.exists(model, TRAINING_SNAPSHOT):
                continue
            trained = registry.trained_on(model)
            if (trained["data_uri"], trained["symbol"], trained["data_table_version"]) != (uri, symbol, version):
                continue
            frame = registry.read_frame(model, TRAINING_SNAPSHOT)
            if until is not None:
                frame = frame[frame["hour_start"] <= until].reset_index(drop=True)
            log.warning("%s version %s is gone from the table: read the snapshot kept with model %s", uri, version,
                        model)
            return HourlyData(frame, f"{uri}@v{version} (snapshot of model {model})", version)
        return None


def resolve(params: dict | RetrainParams | None, settings: Settings | None = None) -> Context:
    """The task's context from its params (a flat dict or :class:`RetrainParams`)."""
    p = RetrainParams.from_dict(params)
    s = settings or get_settings()
    return Context(
        settings=s,
        params=p,
        data_uri=p.data_uri or s.path(datasets.HOURLY_METRICS),
        symbol=(p.symbol or s.binance_symbols[0]).upper(),
        policy=p.promotion_policy or s.model_promotion_policy,
    )


def first_test_origin(frame: pd.DataFrame, test_hours: int) -> pd.Timestamp:
    """First forecast origin of the test window: the latest ``test_hours`` hours."""
    return frame["hour_start"].iloc[-1] + HOUR - pd.Timedelta(hours=test_hours)


def check_history(frame: pd.DataFrame, config: ModelConfig, start: pd.Timestamp) -> dict:
    """Raise InsufficientHistoryError (hours needed vs found) unless training and test parts suffice."""
    span = config.lookback + config.horizon
    train_end = start - pd.Timedelta(hours=span)
    train_needed = hours_needed(config, 0) - span
    train_found = int((frame["hour_start"] < train_end).sum()) if len(frame) else 0
    test_found = int((frame["hour_start"] >= start).sum()) if len(frame) else 0
    if train_found < train_needed:
        raise InsufficientHistoryError(
            train_needed,
            train_found,
            what="hours of training history",
            detail=f"before {train_end.isoformat()}, i.e. {span} h before the test window starting {start.isoformat()}",
        )
    if test_found < config.horizon + 1:
        raise InsufficientHistoryError(
            config.horizon + 1, test_found, what="hours in the test window", detail=f"from {start.isoformat()}"
        )
    return {"train_hours_needed": train_needed, "train_hours_found": train_found, "test_hours_found": test_found}


def make_version(ctx: Context, data: HourlyData) -> str:
    """``<data end>Z-<hash of config, data range, rows, table version, test window>``."""
    frame = data.frame
    end = frame["hour_start"].iloc[-1]
    key = json.dumps(
        {
            "config": ctx.config.to_dict(),
            "data_uri": ctx.data_uri,
            "symbol": ctx.symbol,
            "start": frame["hour_start"].iloc[0].isoformat(),
            "end": end.isoformat(),
            "rows": len(frame),
            "test_hours": ctx.params.test_hours,
            **({"table_version": data.table_version} if data.table_version is not None else {}),
        },
        sort_keys=True,
    )
    return f"{end:%Y%m%dT%H}Z-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
