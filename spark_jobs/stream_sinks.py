"""Where the ingest query's micro-batches go: one ``foreachBatch`` callback writing each batch to
several datasets exactly once.

:func:`foreach_batch_writer` is the whole interface: given the query's checkpoint and the
:class:`BatchOutput` of each dataset (its URI, partition columns, and how its rows are derived
from the micro-batch), it returns the ``(batch_df, batch_id)`` callback for
``writeStream.foreachBatch``. Each output is written with Spark's Parquet file-stream sink
(:func:`file_stream_sink`) under the query's batch id, so a replayed batch is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from btc_platform import datasets
from btc_platform.spark import path_exists
from spark_jobs._cli import ConfigError


class BatchOutput(NamedTuple):
    """One dataset written from every micro-batch."""

    path: str  # dataset URI
    partition_by: tuple[str, ...]
    rows: Callable  # micro-batch DataFrame -> the rows of this dataset


def check_checkpoint_layout(spark, checkpoint: str) -> None:
    """Refuse to start on checkpoints of the earlier layout, where quarantine had its own query.

    ``checkpoint`` is the ingest query's; the earlier quarantine query's sat next to it. That
    query numbered its batches on its own; the ingest query's batch ids would not line up with
    quarantine/_spark_metadata, and already-recorded ids would be skipped (records lost).
    """
    old = f"{checkpoint.rstrip('/').rsplit('/', 1)[0]}/{datasets.CHECKPOINT_QUARANTINE.rsplit('/', 1)[-1]}"
    if path_exists(spark, old):
        raise ConfigError(
            f"{old} is a checkpoint of the earlier three-query layout (raw_data and quarantine now "
            "share one ingest query): stop the job, move checkpoints/, raw_data/, quarantine/ and "
            "minute_metrics/ aside, and start again (it re-reads Kafka from startingOffsets); see "
            "README, Troubleshooting"
        )


def file_stream_sink(spark, path: str, partition_by: tuple[str, ...]):
    """Spark's own Parquet file-stream sink on ``path`` (JVM object), for use in ``foreachBatch``.

    ``addBatch(batch_id, df)`` writes through the manifest committer and records the files in
    ``path/_spark_metadata`` under ``batch_id``; a batch id already recorded there is skipped. A
    query that replays a batch after a crash therefore writes it once, exactly like
    ``writeStream.format("parquet")``, and readers (Spark, the metrics file stream) see only
    committed files.
    """
    jvm = spark.sparkContext._jvm
    return jvm.org.apache.spark.sql.execution.streaming.sinks.FileStreamSink(
        spark._jsparkSession,
        path,
        jvm.org.apache.spark.sql.execution.datasources.parquet.ParquetFileFormat(),
        jvm.PythonUtils.toSeq(list(partition_by)),
        jvm.PythonUtils.toScalaMap({}),
    )


def foreach_batch_writer(spark, checkpoint: str, outputs: Sequence[BatchOutput]):
    """The ``foreachBatch`` callback of the query checkpointed at ``checkpoint``: every micro-batch
    is persisted once and written to each of ``outputs`` under its batch id (exactly-once each).

    Raises :class:`ConfigError` on checkpoints of the earlier layout (nothing is written then).
    """
    check_checkpoint_layout(spark, checkpoint)
    sinks = [(file_stream_sink(spark, out.path, out.partition_by), out.rows) for out in outputs]

    def write_batch(batch, batch_id: int) -> None:
        batch.persist()
        try:
            for sink, rows in sinks:
                sink.addBatch(batch_id, rows(batch)._jdf)
        finally:
            batch.unpersist()

    return write_batch
