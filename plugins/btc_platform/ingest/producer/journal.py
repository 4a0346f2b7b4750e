"""The producer's write-ahead journal: every accepted message on disk until Kafka confirmed it.

``producer.wal`` (accepted messages, one wire message a line) and ``producer.wal.delivered``
(the message_id of every confirmed one) under ``<data_dir>/spool``. Both are emptied whenever
nothing is outstanding and removed at a clean stop; a run killed with SIGKILL leaves them behind
and the next start re-sends every journaled message without a confirmation (see
:mod:`btc_platform.ingest.producer`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_MESSAGE_ID = b'"message_id":"'


def _digest(value: bytes) -> bytes:
    """What the journal records of a confirmed message: its message_id, else a hash of it."""
    start = value.find(_MESSAGE_ID)
    if start >= 0:
        return value[start + len(_MESSAGE_ID): start + len(_MESSAGE_ID) + 64]
    return hashlib.blake2b(value, digest_size=12).hexdigest().encode("ascii")


def message_id_of(value: bytes) -> bytes:
    """The ``message_id`` of an encoded message without parsing it (b"-" when it has none)."""
    start = value.find(_MESSAGE_ID)
    if start < 0:
        return b"-"
    start += len(_MESSAGE_ID)
    end = value.find(b'"', start)
    return value[start:end] if end > start else b"-"


class Journal:
    """Write-ahead journal of accepted messages until Kafka confirmed them (module docstring).

    ``accept`` before ``produce``, ``delivered`` from the delivery report; ``clear`` only when
    no message is outstanding. Accepted messages are written at once (``os.write`` on an
    O_APPEND file: a SIGKILL of the process loses nothing written); delivery digests are
    collected and written by ``flush_delivered`` (at every status tick and poll of the producer
    loop): a kill before that only makes the next start send a confirmed message again."""

    RECOVERING = ".recovering"

    def __init__(self, path: Path):
        self.path = path
        self.delivered_path = self._delivered(path)
        self._fd: int | None = None
        self._delivered_fd: int | None = None
        self._confirmed: list[bytes] = []
        self.dirty = False
        #: Kept whole until the next start (set when the delivery reports cannot be trusted to
        #: account for every message, e.g. after a fatal producer error): never cleared or removed.
        self.pinned = False

    @staticmethod
    def _delivered(path: Path) -> Path:
        return path.with_name(path.name + ".delivered")

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self._fd = os.open(self.path, flags | os.O_TRUNC, 0o644)
        self._delivered_fd = os.open(self.delivered_path, flags | os.O_TRUNC, 0o644)

    def accept(self, value: bytes) -> None:
        os.write(self._fd, value + b"\n")
        self.dirty = True

    def delivered(self, value: bytes) -> None:
        self._confirmed.append(_digest(value))

    def flush_delivered(self) -> None:
        if self._confirmed and self._delivered_fd is not None:
            self._confirmed.append(b"")
            os.write(self._delivered_fd, b"\n".join(self._confirmed))
            self._confirmed.clear()

    def clear(self) -> None:
        """Nothing is outstanding: forget every journaled message (unless pinned)."""
        if self.pinned:
            return
        os.ftruncate(self._fd, 0)
        os.ftruncate(self._delivered_fd, 0)
        self._confirmed.clear()
        self.dirty = False

    def close(self, *, remove: bool) -> None:
        if self._fd is None:
            return
        self.flush_delivered()
        for fd in (self._fd, self._delivered_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._delivered_fd = None
        if remove and not self.pinned:
            self.path.unlink(missing_ok=True)
            self.delivered_path.unlink(missing_ok=True)

    def take_left_over(self) -> Path | None:
        """Move the journal a killed run left behind aside (kept beside an earlier one that was
        being re-sent when that run died too); None if there is none."""
        recovering = self.path.with_name(self.path.name + self.RECOVERING)
        if self.path.exists():
            if recovering.exists():
                for src, dst in ((self.path, recovering), (self.delivered_path, self._delivered(recovering))):
                    if src.exists():
                        with dst.open("ab") as out:
                            out.write(src.read_bytes())
                        src.unlink()
            else:
                os.replace(self.path, recovering)
                if self.delivered_path.exists():
                    os.replace(self.delivered_path, self._delivered(recovering))
        return recovering if recovering.exists() else None

    @classmethod
    def undelivered(cls, recovering: Path) -> list[bytes]:
        """Journaled messages of ``recovering`` without a delivery digest, in journal order."""
        delivered_path = cls._delivered(recovering)
        done = set(delivered_path.read_bytes().split(b"\n")) if delivered_path.exists() else set()
        return [line for line in recovering.read_bytes().split(b"\n") if line and _digest(line) not in done]

    @classmethod
    def remove(cls, recovering: Path) -> None:
        recovering.unlink(missing_ok=True)
        cls._delivered(recovering).unlink(missing_ok=True)


class AcceptedLog:
    """``producer_accepted_log``: the message_id of every accepted message, one a line (an audit
    the fault-injection suite counts losses against)."""

    def __init__(self, path: str | Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, value: bytes) -> None:
        os.write(self._fd, message_id_of(value) + b"\n")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
