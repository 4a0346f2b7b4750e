"""Rolling-origin backtest: later refits warm-start the network, and the band-only backtest gives
exactly the bands of the full one (tiny network, synthetic hours)."""

from __future__ import annotations

import numpy as np

from btc_platform.testing.models_testdata import candles_from_close, random_walk_close
from models.backtest import band_backtest, rolling_backtest
from models.config import ModelConfig


def test_later_refits_continue_the_previous_network_and_band_backtest_matches():
    frame = candles_from_close(random_walk_close(1100, seed=4), wick=0.002)
    cfg = ModelConfig(epochs=2, lstm_units=(4, 4), lookback=4, horizon=3, min_train_windows=100)
    test_from = frame["hour_start"].iloc[1000]
    full = rolling_backtest(frame, cfg, test_from, 40, threads=1, warm_epochs=1)
    assert [r["warm_start"] for r in full["refits"]] == [False, True, True]
    assert [r["epochs_run"] for r in full["refits"]][1:] == [1, 1]  # warm refits: at most warm_epochs
    bands_only = band_backtest(frame, cfg, test_from, 40)
    assert bands_only["refits"] == len(full["refits"])
    np.testing.assert_array_equal(bands_only["actual"], full["actual"])
    assert set(bands_only["bands"]) == set(full["bands"]) - {"lstm"} == {"constant", "ewma", "garch", "har"}
    for name, (low, high) in bands_only["bands"].items():
        np.testing.assert_allclose(low, full["bands"][name][0])
        np.testing.assert_allclose(high, full["bands"][name][1])
    cold = rolling_backtest(frame, cfg, test_from, 40, threads=1, warm_epochs=None)
    assert [r["warm_start"] for r in cold["refits"]] == [False, False, False]


def test_a_warm_start_keeps_its_weights_when_no_epoch_beats_them():
    """A learning rate that wrecks the network: cold, the best (bad) epoch is kept; warm, the
    starting weights are, and the validation loss reported is theirs."""
    from models import network

    rng = np.random.default_rng(1)
    cfg = ModelConfig(epochs=2, patience=1, lstm_units=(4, 4), lookback=4, horizon=3, learning_rate=50.0)
    x, y = rng.standard_normal((300, 4, 8)).astype("float32"), rng.standard_normal((300, 3)).astype("float32")
    network.configure_runtime(1, cfg.seed)
    model = network.build_model(cfg, np.quantile(y, cfg.quantiles, axis=0))
    start = [w.copy() for w in model.get_weights()]
    warm = network.fit_model(model, cfg, x[:200], y[:200], x[200:], y[200:], keep_start=True)
    assert warm["best_epoch"] == 0 and warm["best_val_loss"] == warm["persistence_val_loss"]
    for kept, original in zip(model.get_weights(), start, strict=True):
        np.testing.assert_array_equal(kept, original)
    cold = network.fit_model(model, cfg, x[:200], y[:200], x[200:], y[200:])
    assert cold["best_epoch"] >= 1 and cold["best_val_loss"] > cold["persistence_val_loss"]
