"""Waiting for a condition in integration tests (bounded, with a message naming what was awaited)."""

from __future__ import annotations

import time


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.5):
    """Call ``predicate`` every ``interval_s`` until it returns a truthy value; return that value.

    Raises ``AssertionError`` naming ``what`` after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
