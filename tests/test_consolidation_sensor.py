"""The consolidation of hour H waits for the stream's minute_metrics watermark (status record)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from btc_platform.ops.orchestration import minute_metrics_ready
from btc_platform.settings import load_settings
from btc_platform.status import write_status

HOUR_END = datetime(2024, 1, 1, 10, 0, tzinfo=UTC)


def _settings(tmp_path, watermark: str | None):
    settings = load_settings(data_dir=tmp_path, consolidation_max_wait_s=600)
    if watermark is not None:
        write_status(settings.stream_status_path, {"queries": {"minute_metrics": {"watermark": watermark},
                                                               "ingest": {"watermark": "2030-01-01T00:00:00Z"}}})  # fmt: skip
    return settings


def test_waits_until_the_minute_metrics_watermark_passes_the_hour(tmp_path):
    before = _settings(tmp_path, "2024-01-01T09:59:40.000Z")
    ready, reason = minute_metrics_ready(before, HOUR_END, now=HOUR_END + timedelta(seconds=70))
    assert not ready and "2024-01-01T09:59:40" in reason
    passed = _settings(tmp_path, "2024-01-01T10:00:05.000Z")
    ready, reason = minute_metrics_ready(passed, HOUR_END, now=HOUR_END + timedelta(seconds=70))
    assert ready and "has passed" in reason


def test_gives_up_after_the_maximum_wait_and_says_so(tmp_path):
    stalled = _settings(tmp_path, "2024-01-01T09:30:00Z")
    assert not minute_metrics_ready(stalled, HOUR_END, now=HOUR_END + timedelta(seconds=599))[0]
    ready, reason = minute_metrics_ready(stalled, HOUR_END, now=HOUR_END + timedelta(seconds=600))
    assert ready and "consolidating the minutes that exist" in reason


def test_no_stream_status_waits_then_consolidates(tmp_path):
    absent = _settings(tmp_path, None)
    ready, reason = minute_metrics_ready(absent, HOUR_END, now=HOUR_END + timedelta(seconds=1))
    assert not ready and "no minute_metrics watermark" in reason
    # an hour long past (catch-up after a pause) does not wait at all
    assert minute_metrics_ready(absent, HOUR_END, now=HOUR_END + timedelta(days=1))[0]
