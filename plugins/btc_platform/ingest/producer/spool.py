"""The producer's spool: accepted messages Kafka could not take, kept on disk for a later send.

``<data_dir>/spool/producer.jsonl``, one wire message a line, appended when a delivery fails
for a reason that a later send can overcome (see :mod:`btc_platform.ingest.producer.delivery`)
and fsync'ed before the journal forgets those messages. It is sent at the next start, and while
running as soon as Kafka confirms deliveries again (:mod:`btc_platform.ingest.producer.backlog`,
which also bounds it). To send it, the file is renamed to
``producer.jsonl.sending`` (:meth:`Spool.take`); that file is removed once every message in it
was delivered or spooled again (:meth:`Spool.release`). A process killed in between leaves it
behind and the next take sends it again: duplicates, never a loss.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

SENDING_SUFFIX = ".sending"


class Spool:
    """Append-only file of undelivered messages plus the ``.sending`` file being re-sent."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.sending_path = self.path.with_name(self.path.name + SENDING_SUFFIX)
        self.spooled = 0  # messages appended by this run
        self.file_bytes = self.path.stat().st_size if self.path.exists() else 0
        self.sending_bytes = 0  # size of the taken file until it is released
        self._handle = None
        self._taken = False

    @property
    def held_bytes(self) -> int:
        """Bytes of undelivered messages the spool holds on disk (spool file + taken file)."""
        return self.file_bytes + self.sending_bytes

    @property
    def taken(self) -> bool:
        """A taken file is being sent (or waits until everything sent from it is settled)."""
        return self._taken

    def append(self, value: bytes) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "ab")  # closed in close()
        self._handle.write(value + b"\n")
        self.spooled += 1
        self.file_bytes += len(value) + 1

    def sync(self) -> None:
        """Make every appended message durable (flush + fsync)."""
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def _close_file(self) -> None:
        if self._handle is not None:
            self.sync()
            self._handle.close()
            self._handle = None

    def close(self) -> None:
        if self._handle is not None:
            self._close_file()
            log.warning("%d undelivered message(s) kept in %s for the next start", self.spooled, self.path)

    def take(self) -> Path | None:
        """Move the spool aside for sending (kept beside one left by a killed run); None if empty."""
        sending = self.sending_path
        self._close_file()  # appends after the rename go to a new spool file
        if self.path.exists():
            if sending.exists():  # a run was killed while sending: send both
                with sending.open("ab") as out, self.path.open("rb") as extra:
                    out.write(extra.read())
                    out.flush()
                    os.fsync(out.fileno())
                self.path.unlink()
            else:
                os.replace(self.path, sending)
        self._taken = sending.exists()
        self.file_bytes = 0
        self.sending_bytes = sending.stat().st_size if self._taken else 0
        return sending if self._taken else None

    @staticmethod
    def lines(sending: Path) -> Iterator[tuple[int, bytes]]:
        """``(line number, message)`` of every non-empty line of ``sending``."""
        with sending.open("rb") as handle:
            for lineno, raw in enumerate(handle, 1):
                value = raw.rstrip(b"\n")
                if value:
                    yield lineno, value

    def release(self) -> None:
        """Every message of the taken file was delivered or spooled again: remove it."""
        if self._taken:
            self.sending_path.unlink(missing_ok=True)
            self._taken = False
            self.sending_bytes = 0


class RefusedFile:
    """Messages Kafka refused for good, one JSON line each: ``refused_at``, ``error`` and the wire
    ``message`` (never re-sent by the producer; an operator can re-send them once the cause is
    fixed, e.g. the topic's max.message.bytes)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._handle = None

    def append(self, value: bytes, error: str, at: str) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")  # closed in close()
        line = json.dumps({"refused_at": at, "error": error, "message": value.decode("utf-8", errors="replace")})
        self._handle.write(line + "\n")

    def sync(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self.sync()
            self._handle.close()
            self._handle = None
