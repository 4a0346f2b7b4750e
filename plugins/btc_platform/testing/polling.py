"""Waiting for a condition in integration tests and benchmarks (bounded, with a message naming what
was awaited), and free local ports for the services they start."""

from __future__ import annotations

import socket
import time
from contextlib import ExitStack


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


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free on 127.0.0.1 right now."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports
