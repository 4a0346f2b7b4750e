"""The Keras 3 network: two stacked LSTM layers with dropout -> quantiles of the scaled log returns.

The head is ``Dense(len(quantiles) * horizon)``: output ``[:, i * horizon + k]`` is the
``quantiles[i]`` quantile of the (scaled) log return k+1 hours ahead, trained with the pinball
(quantile) loss averaged over quantiles and steps (``pinball_loss``). Its weights start at zero
and its biases at the training quantiles of the scaled targets, i.e. at a constant band around
the persistence forecast; training moves it only where the validation slice agrees.

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


def pinball_loss(quantiles, horizon: int):
    """Mean pinball loss of a flat (batch, n_quantiles * horizon) output against (batch, horizon)."""
    import numpy as np
    from keras import ops

    q = np.asarray(quantiles, dtype="float32").reshape(1, -1, 1)

    def loss(y_true, y_pred):
        pred = ops.reshape(y_pred, (-1, q.shape[1], horizon))
        err = ops.expand_dims(ops.cast(y_true, pred.dtype), 1) - pred
        return ops.mean(ops.maximum(q * err, (q - 1.0) * err), axis=(1, 2))

    return loss  # a plain function: Keras wraps it (models load with compile=False, no custom objects)


def build_model(config, target_quantiles=None):
    """Input(lookback, n_features) -> LSTM -> Dropout -> LSTM -> Dropout -> Dense(n_q * horizon).

    ``target_quantiles`` (n_q, horizon): starting biases (quantiles of the scaled fit targets).
    """
    import keras
    import numpy as np
    from keras import layers

    units1, units2 = config.lstm_units
    inputs = keras.Input(shape=(config.lookback, config.n_features), name="window")
    x = layers.LSTM(units1, return_sequences=True, name="lstm_1")(inputs)
    x = layers.Dropout(config.dropout, name="dropout_1")(x)
    x = layers.LSTM(units2, name="lstm_2")(x)
    x = layers.Dropout(config.dropout, name="dropout_2")(x)
    # zero-initialised head: an untrained network forecasts a constant band around "no change"
    # (= persistence) and only moves away from it where training finds signal
    n_out = len(config.quantiles) * config.horizon
    head = layers.Dense(n_out, kernel_initializer="zeros", bias_initializer="zeros", name="scaled_return_quantiles")
    outputs = head(x)
    model = keras.Model(inputs, outputs, name="btc_lstm")
    if target_quantiles is not None:
        kernel, _bias = head.get_weights()
        head.set_weights([kernel, np.asarray(target_quantiles, dtype="float32").reshape(n_out)])
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss=pinball_loss(config.quantiles, config.horizon))
    return model


def copy_model(model, config):
    """A compiled copy of ``model`` with its weights (a warm start that leaves the original as is)."""
    copy = build_model(config)
    copy.set_weights(model.get_weights())
    return copy


def fit_model(model, config, x_fit, y_fit, x_val, y_val, keep_start: bool = False) -> dict:
    """Train with EarlyStopping on the validation slice (best weights restored); returns history.

    ``keep_start`` (a warm start): when no epoch beats the starting weights on the validation
    slice, the starting weights are kept (``best_epoch`` 0) instead of the best epoch's."""
    import keras

    # the initial head is a constant band around "no change": its validation loss is the bar
    initial_val_loss = float(model.evaluate(x_val, y_val, batch_size=config.batch_size, verbose=0))
    start_weights = model.get_weights() if keep_start else None
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
    best_val_loss = float(losses["val_loss"][best])
    if start_weights is not None and best_val_loss >= initial_val_loss:
        model.set_weights(start_weights)
        best, best_val_loss = -1, initial_val_loss
    return {
        "epochs_run": len(losses["loss"]),
        "best_epoch": best + 1,
        "best_val_loss": best_val_loss,
        "persistence_val_loss": initial_val_loss,
        "val_losses": [round(float(v), 5) for v in losses["val_loss"]],
        "final_loss": float(losses["loss"][-1]),
    }


def predict(model, x, batch_size: int = 1024):
    import numpy as np

    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)
