"""Atomic JSON status records for the supervisor (producer, streaming job).

A status file is rewritten as a whole: the record is written to a temporary file in the same
directory, flushed and fsync'ed, then moved over the old file with ``os.replace`` (atomic on
POSIX), so a reader never sees a half-written record.

Usage::

    from btc_platform.status import write_status, read_status
    write_status(settings.producer_status_path, {"published": 10})
    read_status(settings.producer_status_path)  # -> dict, or None if there is no record yet
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from btc_platform.timestamps import format_utc

log = logging.getLogger(__name__)

#: Key of the producer's status record holding the time of its last publish to Kafka (ISO UTC),
#: at the top level and per upstream under ``sources``; the supervisor and the dashboard read it.
LAST_PUBLISH_KEY = "last_publish_at"


class StatusError(ValueError):
    """A status file exists but does not hold a JSON object."""


def utc_now_iso() -> str:
    """Current UTC time in the platform's ISO-8601 form (milliseconds, ``Z``)."""
    return format_utc(datetime.now(UTC))


def write_status(path: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """Atomically replace the JSON record at ``path`` (parent directories are created)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps(dict(record), sort_keys=True, indent=1, default=str)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def read_status(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The record at ``path``, or ``None`` when no record was written yet.

    Raises ``StatusError`` when the file exists but is not a JSON object (it is never
    partially written by ``write_status``, so this means someone else wrote it).
    """
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StatusError(f"{target}: not valid JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise StatusError(f"{target}: expected a JSON object, got {type(record).__name__}")
    return record
