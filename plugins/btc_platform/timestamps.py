"""The platform's one written form of a point in time: UTC ISO-8601 with milliseconds and ``Z``
(``2024-01-01T00:00:00.123Z``), as the messages (``btc_platform.ingest.schema.format_ts``) and the
status records (``btc_platform.status``) carry it. Bottom layer: imports nothing of the platform."""

from __future__ import annotations

from datetime import UTC, datetime


def format_utc(value: datetime) -> str:
    """``value`` in the platform's form; ``ValueError`` for a naive datetime."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: timestamps must be timezone-aware")
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def epoch_iso(epoch: float | None) -> str | None:
    """Epoch seconds in the platform's form (None for None)."""
    return None if epoch is None else format_utc(datetime.fromtimestamp(epoch, tz=UTC))
