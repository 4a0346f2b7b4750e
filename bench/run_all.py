"""Run every benchmark in bench/ (each ``bench_<area>.py`` exposes ``main(argv)``) and print figures.

Benchmarks read the real candles in ../shared/data (override with BTC_BENCH_DATA_DIR) and skip
their data-dependent parts when the files are absent. Select some with ``--only producer,stream``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("bench")
BENCH_DIR = Path(__file__).resolve().parent


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="", help="comma-separated areas, e.g. producer,batch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    wanted = {a.strip() for a in args.only.split(",") if a.strip()}
    failures = []
    for path in sorted(BENCH_DIR.glob("bench_*.py")):
        area = path.stem.removeprefix("bench_")
        if wanted and area not in wanted:
            continue
        log.info("=== benchmark %s ===", area)
        started = time.monotonic()
        try:
            _load(path).main([])  # each benchmark with its default options
        except Exception:  # one failing benchmark must not hide the others' figures
            log.exception("benchmark %s failed", area)
            failures.append(area)
        log.info("=== %s done in %.1f s ===", area, time.monotonic() - started)
    if failures:
        log.error("failed benchmarks: %s", ", ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
