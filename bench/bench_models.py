"""Benchmark of the LSTM forecast on the real hourly BTCUSDT file (if present).

Same evaluation as ``make evaluate DATA=<file>``: train on everything before the test window
(default: the last 6 months of the file), evaluate against persistence and drift, then print
skill at 1, 6, 12 and 24 h, interval coverage, training time and prediction time.

Data: ``$BTC_BENCH_DATA_DIR/btc_usdt_1h_2017_2024h1.csv`` (default ``../shared/data`` relative to
the repository). Skips with a message (exit 0) when the file is absent.

    .venv/bin/python bench/bench_models.py [--data FILE] [--test-from DATE]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("bench.models")

ROOT = Path(__file__).resolve().parents[1]
FILE_NAME = "btc_usdt_1h_2017_2024h1.csv"


def default_data() -> Path:
    base = os.environ.get("BTC_BENCH_DATA_DIR") or str(ROOT.parent / "shared" / "data")
    return Path(base) / FILE_NAME


def data_parser(doc: str) -> argparse.ArgumentParser:
    """Argument parser of a benchmark on the hourly candle file (``--data``)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help=f"hourly candle CSV (default $BTC_BENCH_DATA_DIR/{FILE_NAME})")
    return parser


def parse_with_data(parser: argparse.ArgumentParser, argv: list[str] | None, name: str):
    """Parsed arguments and the candle file, None (logged as a skip) when it is absent."""
    args = parser.parse_args(argv if argv is not None else [])  # run_all.py calls main()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = args.data or default_data()
    if not data.is_file():
        log.warning("SKIP %s: %s not found (set BTC_BENCH_DATA_DIR or pass --data)", name, data)
        return args, None
    return args, data


def main(argv: list[str] | None = None) -> int:
    parser = data_parser(__doc__)
    parser.add_argument("--test-from", default=None, help="first test origin YYYY-MM-DD (default: last 6 months)")
    args, data = parse_with_data(parser, argv, "bench_models")
    if data is None:
        return 0
    from models.offline import evaluate_offline

    started = time.perf_counter()
    result = evaluate_offline(str(data), args.test_from)
    total = time.perf_counter() - started
    sk = result["skill"]
    log.info("metrics table\n%s", result["table"])
    rows = [
        ("test windows", f"{result['metrics']['n_windows']}"),
        ("skill h1", f"{sk['h1']:.4f}"),
        ("skill h6", f"{sk['h6']:.4f}"),
        ("skill h12", f"{sk['h12']:.4f}"),
        ("skill h24", f"{sk['h24']:.4f}"),
        ("skill overall", f"{sk['overall']:.4f}"),
        ("80% LSTM band coverage", f"{sk['interval_coverage']:.3f}"),
        ("served band (calibrated, lowest interval score)", f"{sk.get('band_best')}"),
        ("served band coverage", f"{sk.get('band_coverage'):.3f}"),
        ("served band interval-score skill vs constant / EWMA",
         f"{sk.get('band_winkler_skill_vs_constant'):.4f} / {sk.get('band_winkler_skill_vs_ewma'):.4f}"),
        ("served point model", result["served_point"]["model"]),
        ("persistence RMSE h1 / h24 (USD)", f"{result['metrics']['per_horizon'][0]['persistence_rmse']:.1f} / "
                                            f"{result['metrics']['per_horizon'][23]['persistence_rmse']:.1f}"),
        ("epochs run", f"{result['epochs_run']}"),
        ("training time (s)", f"{result['train_seconds']:.1f}"),
        ("prediction time, all test windows (s)", f"{result['predict_seconds']:.3f}"),
        ("prediction time per window (ms)", f"{result['predict_ms_per_window']:.3f}"),
        ("load CSV (s)", f"{result['load_seconds']:.2f}"),
        ("total wall time (s)", f"{total:.1f}"),
    ]
    log_figures(log, f"bench_models on {data}", rows)
    return 0


def log_figures(logger: logging.Logger, title: str, rows: list[tuple[str, str]]) -> None:
    """Log ``(name, value)`` figures as an aligned table under ``title``."""
    width = max(len(k) for k, _ in rows)
    logger.info("%s\n%s", title, "\n".join(f"  {k:<{width}}  {v}" for k, v in rows))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
