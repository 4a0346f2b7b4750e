"""The replay source: a JSONL file of captured messages (``--record`` output), paced by event time."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from btc_platform.ingest.schema import (
    SchemaError,
    decode,
    encode,
    parse_ts,
)
from btc_platform.ingest.sources.base import ConfigError, Outgoing, SourceContext

log = logging.getLogger(__name__)

class ReplaySource:
    """Re-publish a JSONL file of messages (one wire message per line), paced by event time."""

    name = "replay"

    def __init__(self, path: str | Path, *, speed: float = 1.0, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"replay file not found: {self.path}")
        if speed < 0:
            raise ConfigError(f"--speed must be >= 0, got {speed}")
        self.speed = speed
        self.clock = clock

    def messages(self, ctx: SourceContext) -> Iterator[Outgoing]:
        first_event: float | None = None
        real_start = self.clock()
        with self.path.open("rb") as handle:
            for lineno, raw in enumerate(handle, 1):
                line = raw.strip()
                if not line:
                    continue
                try:
                    message = decode(line)
                except SchemaError as exc:
                    ctx.reject("replay", f"{self.path.name} line {lineno}: {exc}", line[:500])
                    continue
                if self.speed > 0:
                    event = parse_ts(message["event_time"]).timestamp()
                    if first_event is None:
                        first_event = event
                    wait = real_start + (event - first_event) / self.speed - self.clock()
                    if wait > 0 and not ctx.idle(wait):
                        return
                ctx.poll_ok(message["source"])
                yield message["symbol"].encode("utf-8"), encode(message), message["source"]
        log.info("replay of %s complete", self.path)
