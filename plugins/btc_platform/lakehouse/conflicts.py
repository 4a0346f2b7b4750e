"""Delta commit conflicts: retried with backoff, named when they persist (Spark-free).

Two writers of one Delta table can both read version N and race to commit N+1: the loser gets a
conflict (Spark: ``delta.exceptions.ConcurrentAppendException`` and its siblings; delta-rs:
``deltalake.exceptions.CommitFailedError``). The platform's table writers run in the Airflow pool
``btc_table_writers`` (one at a time) and the stream only appends blindly, so a conflict means a
writer outside that order (a manual job, a maintenance run started by hand); it is retried with
exponential backoff, the whole operation again (re-reading the table: a MERGE's condition is
decided anew), and after the last try it raises :class:`CommitConflictError` naming the table.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Exception class names of a lost commit race (Spark's delta.exceptions, delta-rs).
CONFLICTS = frozenset({
    "ConcurrentAppendException", "ConcurrentDeleteDeleteException", "ConcurrentDeleteReadException",
    "ConcurrentTransactionException", "ConcurrentWriteException", "DeltaConcurrentModificationException",
    "MetadataChangedException", "ProtocolChangedException", "CommitFailedError",
})  # fmt: skip
#: Tries of a conflicting commit, and the first backoff (doubled each time, with jitter).
ATTEMPTS = 5
BACKOFF_S = 1.0


class CommitConflictError(RuntimeError):
    """A commit kept conflicting with concurrent writers after every retry."""


def is_conflict(exc: BaseException) -> bool:
    """True for a lost commit race (by class name: pyspark and delta-rs need not be imported)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & CONFLICTS) or any(name in str(exc) for name in CONFLICTS if name.startswith("Concurrent"))


def retry_on_conflict(
    operation: Callable[[], T], what: str, *, attempts: int = ATTEMPTS, backoff_s: float = BACKOFF_S,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``operation()``, run again after a commit conflict (backoff ``backoff_s`` doubling, jittered);
    other exceptions pass through at once."""
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except Exception as exc:
            if not is_conflict(exc):
                raise
            if attempt == attempts:
                raise CommitConflictError(f"{what}: commit conflict after {attempts} tries: "
                                          f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc  # fmt: skip
            wait = backoff_s * 2 ** (attempt - 1) * (1 + random.random() / 2)  # noqa: S311 - jitter, not crypto
            log.warning("%s: commit conflict (try %d of %d: %s), again in %.1f s", what, attempt, attempts,
                        type(exc).__name__, wait)  # fmt: skip
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover
