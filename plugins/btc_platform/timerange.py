"""``--start``/``--end`` values of the batch jobs and the DAG Params that feed them (Spark-free).

One parser and one hour rule for every entry point: the jobs' command lines and the Airflow
Param checks of ``btc_platform.ops.orchestration``, so a value the DAG accepts is one the job
accepts.
"""

from __future__ import annotations

from datetime import UTC, datetime

#: How a range bound is written (in messages that ask for one).
EXAMPLE = "2024-05-01 or 2024-05-01T13:00:00Z"


class RangeError(ValueError):
    """A --start/--end value that cannot be used (one-line reason)."""


def parse_utc(value: str) -> datetime:
    """ISO-8601 date or date-time to an aware UTC datetime (a value without offset is UTC)."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise RangeError(f"not an ISO-8601 date or date-time: {value!r} (write e.g. {EXAMPLE})") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def require_hour_aligned(start: datetime | None, end: datetime | None, *, prefix: str = "--") -> None:
    """RangeError unless each given bound is on a full UTC hour and ``start < end`` (when both are
    given; a bound left out is not checked). ``prefix``: how the message names the bounds
    (``--start`` for a command line, ``start`` for a DAG Param)."""
    for name, value in (("start", start), ("end", end)):
        if value is not None and value != value.replace(minute=0, second=0, microsecond=0):
            whole = value.replace(minute=0, second=0, microsecond=0)
            raise RangeError(f"{prefix}{name} must be on a full hour (UTC), got {value.isoformat()}: "
                             f"use {whole.isoformat()} or the hour after")  # fmt: skip
    if start is not None and end is not None and start >= end:
        raise RangeError(f"{prefix}start {start.isoformat()} must be before {prefix}end {end.isoformat()} "
                         "(the end is exclusive: swap them, or widen the range)")  # fmt: skip
