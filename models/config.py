"""All hyperparameters of the forecast in one config object (saved with every model)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

#: four weeks of hourly forecast origins: enough windows to tell a real difference from noise
#: (the test window a retrain judges its candidate on, unless ``test_hours`` says otherwise)
DEFAULT_TEST_HOURS = 672


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
