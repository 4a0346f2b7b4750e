"""The Keras 3 network: two stacked LSTM layers with dropout -> Dense(horizon) scaled log returns.

The head starts at zero, i.e. at the persistence forecast (see ``build_model``).

Keras/TensorFlow are imported inside the functions; ``configure_runtime`` sets the thread
pools (2 cores shared with Spark/Kafka here) and must run before TensorFlow does any work.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

_configured = False


def configure_runtime(threads: int, seed: int) -> None:
    """Quiet TF logs, fix thread counts (first call only) and set every random seed."""
    global _configured
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import tensorflow as tf

    if not _configured:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError as exc:  # TF already initialised in this process: keep its pools
            log.warning("could not set TensorFlow threads to %d: %s", threads, exc)
        _configured = True
    keras.utils.set_random_seed(seed)


def build_model(config):
    """Input(lookback, n_features) -> LSTM -> Dropout -> LSTM -> Dropout -> Dense(horizon)."""
    import keras
    from keras import layers

    units1, units2 = config.lstm_units
    inputs = keras.Input(shape=(config.lookback, config.n_features), name="window")
    x = layers.LSTM(units1, return_sequences=True, name="lstm_1")(inputs)
    x = layers.Dropout(config.dropout, name="dropout_1")(x)
    x = layers.LSTM(units2, name="lstm_2")(x)
    x = layers.Dropout(config.dropout, name="dropout_2")(x)
    # zero-initialised head: an untrained network forecasts "no change" (= persistence) and only
    # moves away from it where training finds signal that also holds on the validation slice
    outputs = layers.Dense(
        config.horizon, kernel_initializer="zeros", bias_initializer="zeros", name="scaled_log_returns"
    )(x)
    model = keras.Model(inputs, outputs, name="btc_lstm")
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
    return model


def fit_model(model, config, x_fit, y_fit, x_val, y_val) -> dict:
    """Train with EarlyStopping on the validation slice (best weights restored); returns history."""
    import keras

    # the zero-initialised head forecasts "no change": this is the persistence loss on validation
    initial_val_loss = float(model.evaluate(x_val, y_val, batch_size=config.batch_size, verbose=0))
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True, verbose=0
    )
    history = model.fit(
        x_fit,
        y_fit,
        validation_data=(x_val, y_val),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        callbacks=[stop],
        verbose=0,
    )
    losses = history.history
    best = int(min(range(len(losses["val_loss"])), key=losses["val_loss"].__getitem__))
    return {
        "epochs_run": len(losses["loss"]),
        "best_epoch": best + 1,
        "best_val_loss": float(losses["val_loss"][best]),
        "persistence_val_loss": initial_val_loss,
        "val_losses": [round(float(v), 5) for v in losses["val_loss"]],
        "final_loss": float(losses["loss"][-1]),
    }


def predict(model, x, batch_size: int = 1024):
    import numpy as np

    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)
