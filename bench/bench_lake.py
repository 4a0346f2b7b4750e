"""Benchmark: reading the hourly series of the hourly_metrics Delta table into pandas (delta-rs).

Writes the real hourly candle file as an hourly_metrics Delta table (the full column contract,
``source=backfill``) with delta-rs, in a temporary directory (or ``--table DIR``), in
``--commits`` appends (default 1, as one backfill writes it; the hourly consolidation adds one
small file per hour until OPTIMIZE compacts them: try ``--commits 1000``). Then times, best and
median of ``--repeat`` runs:

* ``lake.read_at``: the models' read, the columns they use and the symbol filter pushed down;
* ``models.data.load_hourly_metrics``: the same read plus the data-contract checks.

Data: ``$BTC_BENCH_DATA_DIR/btc_usdt_1h_2017_2024h1.csv`` (default ``../shared/data``); skips
with a message (exit 0) when the file is absent.

    .venv/bin/python bench/bench_lake.py [--data FILE] [--commits N] [--repeat N]
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_models import data_parser, log_figures, parse_with_data  # a sibling: the script dir is importable

log = logging.getLogger("bench.lake")

SYMBOL = "BTCUSDT"


def write_table(data: Path, uri: str, commits: int) -> tuple[int, float]:
    """The candle file as hourly_metrics rows in ``commits`` appends; (rows, seconds)."""
    import numpy as np

    from btc_platform.testing.models_testdata import (  # the contract's columns
        to_hourly_metrics,
        write_hourly_metrics,
    )
    from models.data import load_candles_csv

    rows = to_hourly_metrics(load_candles_csv(str(data)), symbol=SYMBOL)
    started = time.perf_counter()
    for part in np.array_split(np.arange(len(rows)), commits):
        write_hourly_metrics(rows.iloc[part], uri)
    return len(rows), time.perf_counter() - started


def timed(repeat: int, work) -> tuple[float, float, object]:
    seconds, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        seconds.append(time.perf_counter() - started)
    return min(seconds), statistics.median(seconds), result


def main(argv: list[str] | None = None) -> int:
    parser = data_parser(__doc__)
    parser.add_argument("--table", default=None, help="write the table here (default: a temporary directory)")
    parser.add_argument("--commits", type=int, default=1, help="appends the rows are written in (default 1)")
    parser.add_argument("--repeat", type=int, default=5, help="timed reads of each kind (default 5)")
    args, data = parse_with_data(parser, argv, "bench_lake")
    if data is None:
        return 0
    from btc_platform.lakehouse import lake
    from models.data import HOURLY_COLUMNS, load_hourly_metrics

    with tempfile.TemporaryDirectory(prefix="bench-lake-") as tmp:
        uri = args.table or f"file://{tmp}/hourly_metrics"
        n_rows, write_seconds = write_table(data, uri, args.commits)
        logging.getLogger("btc_platform.lakehouse.lake").setLevel(logging.WARNING)  # one line per read otherwise
        files = len(lake.open_at(uri).file_uris())
        read_best, read_median, frame = timed(
            args.repeat, lambda: lake.read_at(uri, columns=HOURLY_COLUMNS, filters=[("symbol", "=", SYMBOL)])
        )
        load_best, load_median, series = timed(args.repeat, lambda: load_hourly_metrics(uri, SYMBOL))
    rows = [
        ("hours in the table", f"{n_rows}"),
        ("commits / data files", f"{args.commits} / {files}"),
        ("write with delta-rs (s)", f"{write_seconds:.2f}"),
        ("lake.read_at, best / median (s)", f"{read_best:.3f} / {read_median:.3f} ({len(frame)} rows)"),
        ("load_hourly_metrics, best / median (s)", f"{load_best:.3f} / {load_median:.3f} ({len(series)} rows)"),
    ]
    log_figures(log, f"bench_lake on {data}", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
