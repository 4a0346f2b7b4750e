"""Where the time of a first ``make run`` goes: from the start of ``btc-services run`` to the first
minute_metrics row, and on a first start (empty hourly_metrics) on to the simulated history,
the first model and the first served forecast.

Not a ``bench_*`` module (``make bench`` does not run it): it starts the whole platform with
the ``BTC_*`` settings of its environment (give it its own ports and data dir), watches it and
prints, in seconds since the start of ``btc-services run``:

* Airflow healthy, the producer and the stream process started (their pid records: the
  supervisor DAG's task), the producer's first publish, the stream's first ingest batch;
* the first minute_metrics row on disk (the first closed minute window);
* with ``--until forecast``: the first-start history in hourly_metrics (btc_backfill's @once
  run), the first model version in the registry and the first served forecast (btc_retrain).

The platform keeps running afterwards (``make stop`` stops it) unless ``--stop``. Usage::

    BTC_DATA_DIR=$PWD/.data BTC_AIRFLOW_PORT=18580 ... python bench/measure_first_run.py \\
        --source simulate --until forecast
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("measure_first_run")


def _rows(settings, table: str, column: str) -> int:
    from btc_platform.lakehouse import lake

    try:
        return len(lake.read_table(table, settings, columns=[column]))
    except lake.TableNotFoundError:
        return 0


def _stream_batch(settings) -> bool:
    from btc_platform.status import StatusError, read_status

    try:
        record = read_status(settings.stream_status_path) or {}
    except StatusError:
        return False
    return bool((record.get("queries") or {}).get("ingest"))


def milestones(settings, until: str) -> list[tuple[str, Callable[[], bool]]]:
    from btc_platform.lakehouse import datasets
    from btc_platform.ops import supervisor
    from btc_platform.ops.services import airflow_health

    steps = [
        ("airflow healthy", lambda: airflow_health(settings) is None),
        ("producer started", lambda: supervisor.status("producer", settings).action == "running"),
        ("stream started", lambda: supervisor.status("stream", settings).action == "running"),
        ("producer first publish", lambda: supervisor.last_publish_time(settings) is not None),
        ("stream first ingest batch", lambda: _stream_batch(settings)),
        ("first minute_metrics row", lambda: _rows(settings, datasets.MINUTE_METRICS, "window_start") > 0),
    ]
    if until == "forecast":
        steps += [
            ("first-start history", lambda: _rows(settings, datasets.HOURLY_METRICS, "hour_start") > 0),
            ("first model evaluated", lambda: _rows(settings, datasets.PREDICTION_METRICS, "model_version") > 0),
            ("first forecast served", lambda: _rows(settings, datasets.FUTURE_PREDICTIONS, "target_hour_start") > 0),
        ]
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="simulate", choices=("simulate", "live", "replay"))
    parser.add_argument("--until", default="minute", choices=("minute", "forecast"),
                        help="stop watching at the first minute row, or at the first served forecast")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds before giving up")
    parser.add_argument("--stop", action="store_true", help="stop the platform afterwards (make stop)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from btc_platform.settings import get_settings

    settings = get_settings()
    bindir = Path(sys.executable).parent
    run_log = settings.logs_dir / "measure_first_run.log"
    run_log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with run_log.open("w") as out:
        proc = subprocess.Popen([str(bindir / "btc-services"), "run", "--source", args.source], stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    pending = milestones(settings, args.until)
    seen: list[tuple[str, float]] = []
    try:
        while pending and time.monotonic() - started < args.timeout:
            for name, reached in list(pending):
                try:
                    done = reached()
                except Exception as exc:  # noqa: BLE001 - a service still starting answers with errors
                    log.debug("%s: %s", name, exc)
                    done = False
                if done:
                    seen.append((name, time.monotonic() - started))
                    log.info("%6.1f s  %s", seen[-1][1], name)
                    pending.remove((name, reached))
            if proc.poll() not in (None, 0):
                log.error("btc-services run exited with %s (its output: %s)", proc.returncode, run_log)
                return 1
            time.sleep(1.0)
        if proc.poll() is None:
            proc.wait(timeout=max(1.0, args.timeout - (time.monotonic() - started)))
    finally:
        if args.stop:
            subprocess.run([str(bindir / "btc-services"), "stop", "all"], check=False)
    for name, _ in pending:
        log.warning("not reached within %.0f s: %s", args.timeout, name)
    log.info("seconds after the start of `btc-services run --source %s`:\n%s", args.source,
             "\n".join(f"{seconds:7.1f} s  {name}" for name, seconds in seen))  # fmt: skip
    return 0 if not pending else 1


if __name__ == "__main__":
    sys.exit(main())
