"""Probes that ``make compose-test`` (tests/test_compose_stack.py) runs inside a container of the
compose stack, where HDFS, Kafka and the supervised processes' records are reachable; each prints
one JSON document on stdout.

    python -m btc_platform.testing.compose_probe tables          # rows and latest ingest_time
    python -m btc_platform.testing.compose_probe raw-ids         # {message_id: rows in raw_data}
    python -m btc_platform.testing.compose_probe hourly START END  # hourly_metrics rows in [START, END)
    python -m btc_platform.testing.compose_probe drain [--timeout S]  # stop the producer, stream catches up

``drain`` is the fault-injection suite's end of a run (bench/chaos.py ``Platform.drain``): the
producer stopped gracefully (it flushes what it accepted), then wait until the stream has
processed every message in Kafka. Supervision must not restart the producer meanwhile: the test
ends the supervisor DAG's run first.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from datetime import UTC, datetime

from btc_platform.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: after the lag reached 0, the last batch's commit is in the status before its files are read
SETTLE_S = 6.0


def _rows(name: str, settings: Settings, columns: list[str]):
    from btc_platform.lakehouse import lake

    try:
        return lake.read_table(name, settings, columns=columns)
    except lake.TableNotFoundError:
        return None


def tables(settings: Settings) -> dict:
    raw = _rows("raw_data", settings, ["ingest_time"])
    minutes = _rows("minute_metrics", settings, ["symbol"])
    latest = None
    if raw is not None and len(raw):
        stamp = raw["ingest_time"].max()
        latest = (stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp).timestamp()
    return {"raw_data": 0 if raw is None else len(raw), "minute_metrics": 0 if minutes is None else len(minutes),
            "latest_ingest": latest}  # fmt: skip


def raw_ids(settings: Settings) -> dict[str, int]:
    raw = _rows("raw_data", settings, ["message_id"])
    return {} if raw is None else dict(Counter(raw["message_id"]))


def hourly(settings: Settings, start: str, end: str) -> list[dict]:
    frame = _rows("hourly_metrics", settings, ["symbol", "hour_start", "source", "close"])
    if frame is None:
        return []
    low, high = datetime.fromisoformat(start), datetime.fromisoformat(end)
    hours = frame["hour_start"].dt.tz_localize(UTC) if frame["hour_start"].dt.tz is None else frame["hour_start"]
    chosen = frame[(hours >= low) & (hours < high)].sort_values(["symbol", "hour_start"])
    return [{"symbol": r.symbol, "hour_start": r.hour_start.isoformat(), "source": r.source, "close": r.close}
            for r in chosen.itertuples()]  # fmt: skip


def drain(settings: Settings, timeout_s: float) -> dict:
    from btc_platform.ops import supervisor

    stopped = supervisor.stop("producer", settings)
    deadline = time.monotonic() + timeout_s
    lag = None
    while time.monotonic() < deadline:
        try:
            lag = supervisor.stream_lag(settings)
        except Exception as exc:  # noqa: BLE001 - a broker hiccup during the drain: ask again
            log.info("lag unknown (%s)", exc)
            lag = None
        if lag == 0:
            time.sleep(SETTLE_S)
            break
        time.sleep(2.0)
    return {"producer": stopped.reason, "lag": lag}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m btc_platform.testing.compose_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["tables", "raw-ids", "hourly", "drain"])
    parser.add_argument("range", nargs="*", help="hourly: START END (ISO, UTC)")
    parser.add_argument("--timeout", type=float, default=300.0, help="drain: seconds to wait for lag 0")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = get_settings()
    if args.what == "tables":
        answer: object = tables(settings)
    elif args.what == "raw-ids":
        answer = raw_ids(settings)
    elif args.what == "hourly":
        answer = hourly(settings, *args.range)
    else:
        answer = drain(settings, args.timeout)
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
