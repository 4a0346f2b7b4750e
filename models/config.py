"""All hyperparameters of the forecast in one config object (saved with every model)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters and evaluation rules.

    ``lookback`` hours of ``n_features`` features go in; ``horizon`` log returns of the close
    (relative to the last input close) come out. Sizes are modest on purpose: the whole
    2017-2024 hourly file trains in a few minutes on 2 CPU cores.
    """

    lookback: int = 12
    horizon: int = 24
    lstm_units: tuple[int, int] = (64, 32)
    dropout: float = 0.2
    learning_rate: float = 1e-3
    batch_size: int = 256
    epochs: int = 30  # cap; EarlyStopping usually stops earlier
    patience: int = 4
    val_fraction: float = 0.15  # last part of the training period, for EarlyStopping + intervals
    min_train_windows: int = 200  # fewer usable training windows -> InsufficientHistoryError
    min_val_windows: int = 24
    interval_level: float = 0.80
    #: quantiles the network predicts (pinball loss); the median is the point forecast and the
    #: outer pair, conformally widened on the validation slice, the model's ``interval_level`` band
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    seed: int = 42
    features: tuple[str, ...] = field(default=())  # filled from models.features.FEATURES

    def __post_init__(self):
        if self.lookback < 2 or self.horizon < 1:
            raise ValueError(f"lookback must be >= 2 and horizon >= 1, got {self.lookback}/{self.horizon}")
        if not 0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if not 0 < self.interval_level < 1:
            raise ValueError(f"interval_level must be in (0, 1), got {self.interval_level}")
        if len(self.quantiles) != 3 or not 0 < self.quantiles[0] < 0.5 < self.quantiles[2] < 1 \
                or self.quantiles[1] != 0.5:
            raise ValueError(f"quantiles must be (low, 0.5, high) around the median, got {self.quantiles}")
        if not self.features:
            from models.features import FEATURES

            object.__setattr__(self, "features", tuple(FEATURES))

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def separation_hours(self) -> int:
        """Hours between the last training row and the first test forecast origin (>= L + H)."""
        return self.lookback + self.horizon

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("lstm_units", "features", "quantiles"):
            if key in kwargs and kwargs[key] is not None:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


#: ModelConfig fields a retrain run may override (flat keys of the DAG's Params and the CLI)
MODEL_KEYS = ("epochs", "lookback", "horizon", "min_train_windows", "min_val_windows", "batch_size", "seed",
              "patience", "lstm_units")
PROMOTION_POLICIES = ("beat_current_and_persistence", "beat_persistence")


@dataclass(frozen=True)
class RetrainParams:
    """Everything one retrain / forecast run can be given, with its defaults: the one source of
    them for the pipeline, the CLI (its help quotes :meth:`default`) and the ``btc_retrain``
    DAG's Params.

    The flat dict the DAG and the CLI pass (:meth:`from_dict`) holds these fields and the
    :data:`MODEL_KEYS` of ``config``; a key left out or None takes the default. ``data_uri``,
    ``symbol`` and ``promotion_policy`` default to settings (hourly_metrics under the storage root,
    each symbol of ``BTC_BINANCE_SYMBOLS``, ``BTC_MODEL_PROMOTION_POLICY``).
    """

    config: ModelConfig = field(default_factory=ModelConfig)
    #: length of the test window (the latest hours): four weeks of hourly forecast origins, enough
    #: windows to tell a real difference from noise
    test_hours: int = 672
    #: promote the candidate whatever its metrics (recorded as forced)
    force_promotion: bool = False
    #: promotion needs at least this many test windows (three weeks of origins) ...
    min_promotion_windows: int = 504
    #: ... and a one-sided Diebold-Mariano p-value below this
    dm_alpha: float = 0.05
    #: retrain only when the newest model's data ends at least this many hours before the latest
    #: hour (scheduled and asset-triggered runs; manual runs pass 0: retrain whenever data changed)
    min_retrain_hours: int = 20
    data_uri: str | None = None
    symbol: str | None = None
    promotion_policy: str | None = None
    #: read hourly_metrics at this Delta version instead of the current one (time travel)
    as_of_version: int | None = None

    def __post_init__(self):
        if self.test_hours <= self.config.horizon:
            raise ValueError(f"test_hours must exceed the horizon ({self.config.horizon}), got {self.test_hours}: set "
                             f"test_hours above it (default {type(self).default('test_hours')}, 4 weeks) or lower the horizon")
        if self.promotion_policy is not None and self.promotion_policy not in PROMOTION_POLICIES:
            raise ValueError(f"unknown promotion_policy {self.promotion_policy!r}: use {' or '.join(PROMOTION_POLICIES)} "
                             "(BTC_MODEL_PROMOTION_POLICY)")
        if self.as_of_version is not None and self.as_of_version < 0:
            raise ValueError(f"as_of_version must be a table version >= 0, got {self.as_of_version}: leave it empty to "
                             "train on the current hourly_metrics")
        if self.min_promotion_windows < 1 or self.min_retrain_hours < 0 or not 0 < self.dm_alpha <= 1:
            raise ValueError("min_promotion_windows must be >= 1, min_retrain_hours >= 0 and dm_alpha in (0, 1], "
                             f"got {self.min_promotion_windows}, {self.min_retrain_hours}, {self.dm_alpha}")

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Every key :meth:`from_dict` accepts."""
        return (*MODEL_KEYS, *(f.name for f in dataclasses.fields(cls) if f.name != "config"))

    @classmethod
    def default(cls, key: str):
        """The default of ``key`` read from the dataclasses' fields, without building a
        ModelConfig (the DAG file calls this at parse time)."""
        owner = ModelConfig if key in MODEL_KEYS else cls
        fields = {f.name: f for f in dataclasses.fields(owner)}
        if key not in fields or key == "config":
            raise KeyError(f"no retrain parameter {key!r}; known: {', '.join(cls.keys())}")
        return fields[key].default

    @classmethod
    def from_dict(cls, params: dict | RetrainParams | None) -> RetrainParams:
        """The run's parameters from a flat dict (JSON of the DAG's Params, the CLI's arguments)."""
        if isinstance(params, RetrainParams):
            return params
        given = {k: v for k, v in (params or {}).items() if v is not None}
        unknown = sorted(set(given) - set(cls.keys()))
        if unknown:
            raise ValueError(f"unknown retrain parameter(s) {', '.join(unknown)}; known: {', '.join(cls.keys())}")
        model = {k: int(given.pop(k)) for k in MODEL_KEYS if k in given and k != "lstm_units"}
        if given.get("lstm_units"):
            model["lstm_units"] = tuple(int(u) for u in given.pop("lstm_units"))
        given.pop("lstm_units", None)
        kinds = {"test_hours": int, "min_promotion_windows": int, "min_retrain_hours": int, "as_of_version": int,
                 "dm_alpha": float, "force_promotion": bool, "data_uri": str, "symbol": str, "promotion_policy": str}
        typed = {k: kinds[k](v) for k, v in given.items() if v != ""}
        if "symbol" in typed:
            typed["symbol"] = typed["symbol"].upper()
        return cls(config=ModelConfig().replace(**model), **typed)

    def to_dict(self) -> dict:
        """The flat dict of :meth:`from_dict` (JSON-ready)."""
        out = {k: getattr(self.config, k) for k in MODEL_KEYS}
        out["lstm_units"] = list(self.config.lstm_units)
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "config"})
        return out

    def replace(self, **changes) -> RetrainParams:
        return dataclasses.replace(self, **changes)
