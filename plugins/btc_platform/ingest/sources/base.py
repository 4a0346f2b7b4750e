"""What every source shares: the ``(key, value, source)`` tuples it yields, the producer's context it
talks to, and the error that stops it from starting."""

from __future__ import annotations

from typing import Any, Protocol

from btc_platform.ingest.schema import encode

Outgoing = tuple[bytes, bytes, str]
#: Milliseconds of a minute.
MINUTE_MS = 60_000
OFFLINE_HINT = "for offline use run `make run SOURCE=simulate` (or `python -m btc_platform.ingest.producer --source simulate`)"


class SourceContext(Protocol):
    def idle(self, seconds: float) -> bool: ...
    def stopping(self) -> bool: ...
    def reject(self, source: str, reason: str, payload: Any) -> None: ...
    def poll_ok(self, source: str) -> None: ...
    def poll_failed(self, source: str, error: BaseException) -> None: ...
    def set_retried(self, count: int) -> None: ...
    def set_http_errors(self, errors: dict[str, dict[str, int]]) -> None: ...
    def set_waiting(self, upstream: str, reason: str | None, until: float | None, **details: Any) -> None: ...


class ConfigError(ValueError):
    """A source cannot start with the given options (the producer exits non-zero)."""


def out(message: dict[str, Any]) -> Outgoing:
    """A message as the tuple a source yields."""
    return message["symbol"].encode("utf-8"), encode(message), message["source"]
