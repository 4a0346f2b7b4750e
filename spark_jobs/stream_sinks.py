"""Where the ingest query's micro-batches go: one ``foreachBatch`` callback writing each batch to
several Delta tables exactly once.

:func:`foreach_batch_writer` is the whole interface: given the query's checkpoint and the
:class:`BatchOutput` of each table (its URI and how its rows are derived from the micro-batch),
it returns a :class:`DeltaBatchWriter`, the ``(batch_df, batch_id)`` callback for
``writeStream.foreachBatch``. Each output is appended with Delta's idempotent writes: the
transaction carries ``txnAppId`` = the streaming query's id (stable across restarts, kept in its
checkpoint) and ``txnVersion`` = the batch id, and Delta itself skips a version it already
committed for that app id. A batch replayed after a crash therefore lands once in every table,
including when the crash came between the two tables' commits. An output marked
``skip_empty`` (quarantine) commits nothing for a batch that holds none of its rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from btc_platform import datasets
from btc_platform.spark import path_exists
from spark_jobs._cli import ConfigError

log = logging.getLogger(__name__)

#: How long the first batch waits for the query id (it is known as soon as ``start()`` returns).
_BIND_TIMEOUT_S = 120.0


class BatchOutput(NamedTuple):
    """One Delta table written from every micro-batch."""

    uri: str  # table URI (created beforehand with its layout, see spark_jobs.tables.ensure_table)
    rows: Callable  # micro-batch DataFrame -> the rows of this table
    skip_empty: bool = False  # commit nothing when a batch has no rows for this table


def check_checkpoint_layout(spark, checkpoint: str) -> None:
    """Refuse to start on checkpoints of the earlier layout, where quarantine had its own query.

    ``checkpoint`` is the ingest query's; the earlier quarantine query's sat next to it. That
    query numbered its batches on its own and wrote Parquet; see README, Troubleshooting.
    """
    old = f"{checkpoint.rstrip('/').rsplit('/', 1)[0]}/{datasets.CHECKPOINT_QUARANTINE.rsplit('/', 1)[-1]}"
    if path_exists(spark, old):
        raise ConfigError(
            f"{old} is a checkpoint of the earlier three-query layout (raw_data and quarantine now "
            "share one ingest query): stop the job, move checkpoints/, raw_data/, quarantine/ and "
            "minute_metrics/ aside, and start again (it re-reads Kafka from startingOffsets); see "
            "README, Troubleshooting"
        )


class DeltaBatchWriter:
    """The ``foreachBatch`` callback: persist the batch once, append it to every output under
    (query id, batch id). :meth:`bind` gives it the query id right after ``start()``."""

    def __init__(self, outputs: Sequence[BatchOutput]) -> None:
        self.outputs = tuple(outputs)
        self.app_id: str | None = None
        self._bound = threading.Event()

    def bind(self, query) -> None:
        self.app_id = str(query.id)
        self._bound.set()

    def __call__(self, batch, batch_id: int) -> None:
        if not self._bound.wait(_BIND_TIMEOUT_S):
            raise RuntimeError(f"batch {batch_id}: the writer was never bound to its streaming query")
        batch.persist()
        try:
            for output in self.outputs:
                started = time.monotonic()
                rows = output.rows(batch)
                if output.skip_empty and rows.isEmpty():
                    log.debug("batch %d: nothing for %s (%.2f s)", batch_id, output.uri, time.monotonic() - started)
                    continue
                (
                    rows.write.format("delta")
                    .mode("append")
                    .option("txnAppId", self.app_id)
                    .option("txnVersion", batch_id)
                    .save(output.uri)
                )
                log.info("batch %d: appended to %s in %.2f s", batch_id, output.uri, time.monotonic() - started)
        finally:
            batch.unpersist()


def foreach_batch_writer(spark, checkpoint: str, outputs: Sequence[BatchOutput]) -> DeltaBatchWriter:
    """The ``foreachBatch`` callback of the query checkpointed at ``checkpoint`` (bind it to the
    query after ``start()``). Raises :class:`ConfigError` on checkpoints of the earlier layout."""
    check_checkpoint_layout(spark, checkpoint)
    return DeltaBatchWriter(outputs)
