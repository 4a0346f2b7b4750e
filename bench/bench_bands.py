"""The band models alone on the rolling-origin backtest of ``make evaluate ... RETRAIN_EVERY=30d``.

Refits the band models (constant, EWMA, GARCH(1,1), range-based HAR: ``models.bands``) on the
same blocks and training windows as the LSTM backtest, without training any network, and prints
coverage and interval-score skill against GARCH(1,1) per horizon: the band figures of the full
backtest in a fraction of its time, for work on the bands.

    .venv/bin/python bench/bench_bands.py [--data FILE] [--test-from 2023-07-01] [--until DATE] [--retrain-every 30d]

``--until`` drops the data from that date on: a validation run before the test window (e.g.
``--test-from 2022-07-01 --until 2023-07-01``) to choose settings without touching it.
"""

from __future__ import annotations

import logging
import sys
import time

from bench_models import data_parser, log_figures, parse_with_data  # bench/ is on sys.path (script dir)

log = logging.getLogger("bench.bands")


def band_table(metrics: dict, reference: str = "garch") -> str:
    """Per horizon and overall: coverage and interval score of each band, skill vs ``reference``."""
    o = metrics["overall"]
    names = [k[len("band_"):-len("_winkler")] for k in o if k.startswith("band_") and k.endswith("_winkler")]
    head = ("   h | " + " ".join(f"{'cover ' + n:>14}" for n in names) + " | "
            + " ".join(f"{'IS ' + n:>12}" for n in names) + " | "
            + " ".join(f"{n + '/' + reference:>15}" for n in names if n != reference))
    lines = [head, "-" * len(head)]
    for row in [*metrics["per_horizon"], o]:
        cells = [f"{row['horizon']!s:>4}",
                 " ".join(f"{row[f'band_{n}_coverage']:>14.3f}" for n in names),
                 " ".join(f"{row[f'band_{n}_winkler']:>12.1f}" for n in names),
                 " ".join(f"{row[f'band_{n}_winkler_skill_vs_{reference}']:>+15.4f}" for n in names if n != reference)]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = data_parser(__doc__)
    parser.add_argument("--test-from", default="2023-07-01", help="first test origin YYYY-MM-DD")
    parser.add_argument("--until", default=None, help="use only the data before this date (validation runs)")
    parser.add_argument("--retrain-every", default="30d", help="refit period, e.g. 30d")
    args, data = parse_with_data(parser, argv, "bench_bands")
    if data is None:
        return 0
    import pandas as pd

    from models.backtest import band_backtest, parse_every
    from models.config import ModelConfig
    from models.data import load_series
    from models.evaluate import evaluate_forecasts

    started = time.perf_counter()
    frame = load_series(str(data), "BTCUSDT").frame
    if args.until:
        frame = frame[frame["hour_start"] < pd.Timestamp(args.until, tz="UTC")].reset_index(drop=True)
    cfg = ModelConfig()
    bt = band_backtest(frame, cfg, pd.Timestamp(args.test_from, tz="UTC"), parse_every(args.retrain_every))
    metrics = evaluate_forecasts(bt["actual"], bt["last_close"], bt["forecasts"], bands=bt["bands"],
                                 level=cfg.interval_level)
    o = metrics["overall"]
    log.info("bands, rolling origin from %s (%d refits, %d windows)\n%s", args.test_from, bt["refits"],
             metrics["n_windows"], band_table(metrics))
    rows = [("served band (calibrated, lowest interval score)", str(o["band_best"])),
            ("band backtest (s)", f"{bt['seconds']:.1f}"),
            ("total wall time (s)", f"{time.perf_counter() - started:.1f}")]
    log_figures(log, f"bench_bands on {data}", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
