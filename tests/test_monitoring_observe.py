"""``btc_platform.monitoring.observe``: the data-quality observation read from a real Delta table,
by a monitor process that loads no pandas (its resident memory: docs/performance.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pandas as pd

from btc_platform.lakehouse import datasets, lake

NOW = datetime(2026, 12, 7, 22, 30, tzinfo=UTC)

#: In a fresh interpreter: the observation, and whether pandas / pyarrow got loaded for it.
OBSERVE = """
import json, sys
from btc_platform.monitoring.observe import Observer
from btc_platform.settings import get_settings
obs = Observer(get_settings())._quality(float(sys.argv[1]))
print(json.dumps({"obs": None if obs is None else [obs.hour_start, list(obs.failed)],
                  "loaded": sorted(m for m in ("pandas", "pyarrow") if m in sys.modules)}))
"""


def _results(hour: datetime, checked_at: datetime, statuses: dict[str, tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame([{"symbol": "BTCUSDT", "hour_start": hour, "check": check, "status": status,
                          "severity": severity, "detail": None if status == "pass" else "failed", "range_start": hour,
                          "range_end": hour + timedelta(hours=1), "checked_at": checked_at} for check, (status, severity) in statuses.items()])


def _observe(settings) -> dict:
    out = subprocess.run([sys.executable, "-c", OBSERVE, str(NOW.timestamp())], capture_output=True, text=True,
                         check=True, env={"BTC_DATA_DIR": str(settings.data_dir), "PYTHONPATH": ":".join(sys.path)})
    return json.loads(out.stdout.splitlines()[-1])


def test_newest_hour_last_run_failed_error_checks_without_pandas(settings_env):
    settings = settings_env()
    assert _observe(settings) == {"obs": None, "loaded": []}  # no table yet: cannot tell
    newest = NOW.replace(minute=0) - timedelta(hours=1)
    frames = [
        _results(newest - timedelta(hours=1), NOW - timedelta(minutes=80), {"coverage_min": ("fail", "error")}),
        # the newest hour checked twice: only the last run counts
        _results(newest, NOW - timedelta(minutes=20), {"coverage_min": ("fail", "error"), "ohlc_consistent": ("pass", "error")}),
        _results(newest, NOW - timedelta(minutes=5), {"coverage_min": ("pass", "error"), "ohlc_consistent": ("fail", "error"),
                                                      "volume_positive": ("fail", "warning")}),
        _results(NOW - timedelta(days=3), NOW - timedelta(days=3), {"old_check": ("fail", "error")}),  # out of the day
    ]
    frame = pd.concat(frames, ignore_index=True)
    lake.write_table(datasets.DATA_QUALITY, frame[[c for c, _ in datasets.DATA_QUALITY_COLUMNS]], settings)
    assert _observe(settings) == {"obs": [newest.timestamp(), ["ohlc_consistent"]], "loaded": []}
