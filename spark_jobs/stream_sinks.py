"""Where the ingest query's micro-batches go: one ``foreachBatch`` callback writing each batch to
several Delta tables exactly once.

:func:`foreach_batch_writer` is the whole interface: given the query's checkpoint and the
:class:`BatchOutput` of each table (its URI and how its rows are derived from the micro-batch),
it returns a :class:`DeltaBatchWriter`, the ``(batch_df, batch_id)`` callback for
``writeStream.foreachBatch``. Each output is appended with Delta's idempotent writes: the
transaction carries ``txnAppId`` = the streaming query's id (stable across restarts, kept in its
checkpoint) and ``txnVersion`` = the batch id, and Delta itself skips a version it already
committed for that app id. A batch replayed after a crash therefore lands once in every table,
including when the crash came between the two tables' commits. An output with ``only_if``
(quarantine) commits nothing for a batch that holds none of its rows.

An output with ``unique_key`` (raw_data: ``message_id``) never holds a key twice, whatever the
delay between two copies of a message: the batch's rows are deduplicated on the key and those
whose key the table already holds are left out (``stream_transforms.absent_rows``; the lookup
reads only the files whose statistics overlap the batch's ``id_time`` ranges, and is not made at
all when every range starts after the ``id_time`` bound of what the table holds, kept by the
writer from one batch to the next per id group: ``BatchOutput.id_groups``, the columns a key
fixes, e.g. a source's messages of one type and symbol). The append is
blind and the stream is the table's only inserter (compaction rewrites files without changing
rows), so a lookup in the snapshot before the append is as good as a MERGE, without a MERGE's
conflicts with a concurrent OPTIMIZE. The counts of each batch (rows stored, copies left out)
go to :class:`BatchCounts`, which the progress listener adds to the status record.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import NamedTuple

from btc_platform.lakehouse import datasets
from btc_platform.lakehouse.spark_session import path_exists
from spark_jobs._cli import ConfigError

log = logging.getLogger(__name__)

#: How long the first batch waits for the query id (it is known as soon as ``start()`` returns).
_BIND_TIMEOUT_S = 120.0
#: Added to the ``id_time`` bound read from a table's statistics, which hold milliseconds.
_BOUND_MARGIN = timedelta(milliseconds=1)
#: How long the observed counts may trail the write that computed them (they are set when its
#: query finishes; measured as already set when ``save()`` returns).
_OBSERVATION_WAIT_S = 2.0


class BatchOutput(NamedTuple):
    """One Delta table written from every micro-batch."""

    uri: str  # table URI (created beforehand with its layout, see spark_jobs.tables.ensure_table)
    rows: Callable  # micro-batch DataFrame -> the rows of this table
    #: SQL predicate on the micro-batch selecting the rows this table is made of, for a table
    #: that only some batches feed (quarantine): it is written only when a batch holds such rows.
    #: ``None``: written from every batch.
    only_if: str | None = None
    #: name under which :class:`BatchCounts` records the batch's rows matching ``only_if`` (e.g.
    #: ``quarantined``); ``None``: not recorded.
    count_as: str | None = None
    #: column of a table that holds each value once (raw_data: ``message_id``): rows whose value
    #: the table or the batch holds already are left out. ``None``: every row is appended.
    unique_key: str | None = None
    #: columns that the ``unique_key`` fixes (two rows of one key agree on them; raw_data:
    #: ``stream_transforms.ID_GROUP_COLUMNS``): the writer keeps the ``id_time`` bound of what the
    #: table holds per value of these, so that one group's late rows do not send the batch of
    #: every other group to the lookup. ``()``: one bound for the table.
    id_groups: tuple[str, ...] = ()


class BatchCounts:
    """Counts of each micro-batch that only the ``foreachBatch`` writer knows (rows stored, copies
    left out), kept until the progress listener takes them for the status record."""

    _KEEP = 64  # batches whose counts nobody took (no listener) are forgotten after this many

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[int, dict[str, int]] = {}

    def add(self, batch_id: int, **counts: int) -> None:
        with self._lock:
            self._counts.setdefault(batch_id, {}).update(counts)
            for old in sorted(self._counts)[: -self._KEEP]:
                del self._counts[old]

    def take(self, batch_id: int) -> dict[str, int]:
        with self._lock:
            return self._counts.pop(batch_id, {})


def check_checkpoint_layout(spark, checkpoint: str) -> None:
    """Refuse to start on checkpoints of the earlier layout, where quarantine had its own query.

    ``checkpoint`` is the ingest query's; the earlier quarantine query's sat next to it. That
    query numbered its batches on its own and wrote Parquet; see docs/upgrading.md.
    """
    old = f"{checkpoint.rstrip('/').rsplit('/', 1)[0]}/{datasets.CHECKPOINT_QUARANTINE.rsplit('/', 1)[-1]}"
    if path_exists(spark, old):
        raise ConfigError(
            f"{old} is a checkpoint of the earlier three-query layout (raw_data and quarantine now "
            "share one ingest query): stop the job, move checkpoints/, raw_data/, quarantine/ and "
            "minute_metrics/ aside, and start again (it re-reads Kafka from startingOffsets); see "
            "docs/upgrading.md"
        )


class DeltaBatchWriter:
    """The ``foreachBatch`` callback: append each micro-batch to every output under (query id,
    batch id). :meth:`bind` gives it the query id right after ``start()``.

    The batch is not cached, only a ``unique_key`` output's rows are (while they are checked and
    appended, :meth:`_insert_absent`). The outputs written from every batch go first, and while
    the first of them computes the batch, an observation counts its records and the rows of each
    conditional output (``only_if``; recorded in :class:`BatchCounts` as ``count_as``); a
    conditional output is written only when that count is not zero, computing the batch once more
    (Kafka offsets and the batch time are fixed, so it is the same batch). Bad records are rare:
    caching every batch to write quarantine cost more than the write itself (docs/benchmarks.md).
    """

    def __init__(
        self, outputs: Sequence[BatchOutput], counts: BatchCounts | None = None, prepare: Callable | None = None
    ) -> None:
        self.outputs = tuple(o for o in outputs if o.only_if is None)
        self.conditional = tuple(o for o in outputs if o.only_if is not None)
        if not self.outputs:
            raise ValueError("at least one output must be written from every batch (only_if=None)")
        if any(o.unique_key for o in self.conditional):
            raise ValueError("an output with a unique_key is written from every batch (only_if=None)")
        self.counts = counts if counts is not None else BatchCounts()
        self.prepare = prepare  # source micro-batch -> the frame the outputs' rows are derived from
        self.app_id: str | None = None
        self._bound = threading.Event()
        #: per ``unique_key`` output: a bound of the ``id_time`` its table held when this writer
        #: read it (None: no row), the bound of every group it has not written since
        self._initial: dict[str, object] = {}
        #: per ``unique_key`` output: the bound of each group (``id_groups`` values) written since
        self._bounds: dict[str, dict[tuple, object]] = {}

    def bind(self, query) -> None:
        self.app_id = str(query.id)
        self._bound.set()

    def _append(self, rows, uri: str, batch_id: int) -> None:
        started = time.monotonic()
        (
            rows.write.format("delta")
            .mode("append")
            .option("txnAppId", self.app_id)
            .option("txnVersion", batch_id)
            .save(uri)
        )
        log.info("batch %d: appended to %s in %.2f s", batch_id, uri, time.monotonic() - started)

    def _insert_absent(self, rows, output: BatchOutput, batch_id: int) -> None:
        """Append ``rows`` whose ``output.unique_key`` neither the batch (first copy kept) nor the
        table holds; count them.

        ``rows`` are computed once (parsed, validated) and kept while this runs: a first pass gives
        their ``id_time`` ranges and whether the batch repeats a key; the append reads them from
        memory. The table is looked up (:meth:`_stored_ids`) only when a range reaches back to what
        the table may hold (:meth:`_reaching_back`, per id group); a batch with neither a repeated key nor such a
        range is appended as it is, without a second job."""
        from pyspark import StorageLevel
        from pyspark.sql import Observation
        from pyspark.sql import functions as F

        from spark_jobs import stream_transforms as st

        key = output.unique_key
        started = time.monotonic()
        rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            groups = output.id_groups
            spans = st.id_time_spans(rows.select(key, *groups, *st.ID_TIME_COLUMNS).where(F.col(key).isNotNull()),
                                     key, groups).collect()  # fmt: skip
            repeated = any(r["rows"] > r["ids"] for r in spans)
            extent = _group_extent(spans, groups)
            reaching = self._reaching_back(rows.sparkSession, output, extent)
            # the lookup reads the times of the groups that reach back to what the table holds
            ranges = st.id_time_ranges((r["lo"], r["hi"]) for r in spans if tuple(r[c] for c in groups) in reaching)
            looked_up = bool(ranges)
            fresh, extra = rows, []
            if looked_up or repeated:
                ids = rows.select(key).where(F.col(key).isNotNull())
                extra = st.extra_copies(ids, self._stored_ids(rows.sparkSession, output, ranges, looked_up),
                                        key).collect()  # fmt: skip
                if extra:  # usually none: the rows are appended as computed
                    spark = rows.sparkSession
                    fresh = st.without_extra_copies(rows, spark.createDataFrame(extra, st.extra_copies_schema(key)), key)
            observation = Observation(f"stored-{batch_id}")
            checked = time.monotonic() - started
            self._append(fresh.observe(observation, F.count(F.lit(1)).alias("n")), output.uri, batch_id)
            bounds = self._bounds.setdefault(output.uri, {})
            for group, (_, hi) in extent.items():  # the table holds these now (or did: a replayed batch)
                bounds[group] = max(b for b in (self._bound_of(output, group), hi) if b is not None)
            counted = _observed(observation)
            if counted is not None:
                self.counts.add(batch_id, stored=int(counted["n"]))
            lookup = (f"table looked up for {len(ranges)} id_time range(s) of {len(reaching)} of {len(extent)} "
                      "id group(s)" if looked_up else f"no lookup: table holds nothing of {len(extent)} id group(s)")
            log.info("batch %d: %s: %s row(s) stored, %d id(s) left out or repeated, %s in %.2f s", batch_id,
                     output.uri, "?" if counted is None else counted["n"], len(extra), lookup, checked)  # fmt: skip
        finally:
            rows.unpersist()

    def prime(self, spark) -> None:
        """Read the ``id_time`` bound of each ``unique_key`` output's table now (before the query
        starts), so that the first batch does not wait for it."""
        for output in self.outputs:
            if output.unique_key:
                self._read_bound(spark, output)

    def _read_bound(self, spark, output: BatchOutput) -> None:
        """The table's ``id_time`` bound (``stream_transforms.stored_id_time_bound``: Delta answers
        the maxima from its statistics), the bound of every group until this writer writes it."""
        from spark_jobs import stream_transforms as st

        if output.uri in self._initial:
            return
        started = time.monotonic()
        bound = spark.read.format("delta").load(output.uri).agg(st.stored_id_time_bound()).first()["bound"]
        # statistics of timestamps hold milliseconds: a margin so that a truncated maximum still bounds
        self._initial[output.uri] = bound + _BOUND_MARGIN if bound is not None else None
        log.info("%s: id_time of the stored rows up to %s (read in %.2f s)", output.uri,
                 self._initial[output.uri], time.monotonic() - started)  # fmt: skip

    def _bound_of(self, output: BatchOutput, group: tuple):
        """The ``id_time`` bound of the table's rows of ``group`` (None: it holds none)."""
        bounds = self._bounds.get(output.uri, {})
        return bounds[group] if group in bounds else self._initial[output.uri]

    def _reaching_back(self, spark, output: BatchOutput, extent: dict[tuple, tuple]) -> set[tuple]:
        """The groups of a batch whose ``id_time`` spans ``extent`` (group of ``output.id_groups``
        -> (first, last)) of which the table may hold an id: the group's first ``id_time`` is at
        or before that group's bound, which is the table's bound read at the first batch (:meth:`prime`) until
        this writer appends rows of the group, then the last ``id_time`` it appended (the stream
        is the table's only inserter; compaction rewrites files without adding rows). A copy of
        an id shares its group and its ``id_time``: one that lies after its group's bound is new."""
        if not extent:
            return set()
        self._read_bound(spark, output)
        return {group for group, (lo, _) in extent.items()
                if (bound := self._bound_of(output, group)) is not None and lo <= bound}  # fmt: skip

    @staticmethod
    def _stored_ids(spark, output: BatchOutput, ranges: list[tuple], look_up: bool):
        """The ``unique_key`` of the table's rows in ``ranges`` (``look_up``: read only the files
        whose statistics overlap them, ``stream_transforms.stored_predicate``), else none."""
        from spark_jobs import stream_transforms as st

        key = output.unique_key
        if not look_up:
            return spark.createDataFrame([], f"`{key}` string")
        return spark.read.format("delta").load(output.uri).where(st.stored_predicate(ranges)).select(key)

    def __call__(self, source, batch_id: int) -> None:
        from pyspark.sql import Observation
        from pyspark.sql import functions as F

        if not self._bound.wait(_BIND_TIMEOUT_S):
            raise RuntimeError(f"batch {batch_id}: the writer was never bound to its streaming query")
        batch = self.prepare(source) if self.prepare is not None else source
        # counted while the first output computes the batch: all records, each conditional output's
        observation = Observation(f"outputs-{batch_id}")
        observed = batch.observe(observation, F.count(F.lit(1)).alias("records"), *[
            F.count_if(F.expr(o.only_if)).alias(f"o{i}") for i, o in enumerate(self.conditional)
        ])  # fmt: skip
        for output in self.outputs:
            if output.unique_key:
                self._insert_absent(output.rows(observed), output, batch_id)
            else:
                self._append(output.rows(observed), output.uri, batch_id)
        counts = _observed(observation)
        if counts is not None:
            self.counts.add(batch_id, records=int(counts["records"]), **{
                o.count_as: int(counts[f"o{i}"]) for i, o in enumerate(self.conditional) if o.count_as
            })  # fmt: skip
        for i, output in enumerate(self.conditional):
            rows = output.rows(batch)
            # counts None: a replayed batch that Delta skipped (no query ran, nothing was counted):
            # look at the rows themselves; Delta skips the append too if it was committed before
            if not counts[f"o{i}"] if counts is not None else rows.isEmpty():
                log.debug("batch %d: nothing for %s", batch_id, output.uri)
                continue
            self._append(rows, output.uri, batch_id)


def _group_extent(spans, groups: tuple[str, ...]) -> dict[tuple, tuple]:
    """Per value of the ``groups`` columns, the first and last ``id_time`` of ``spans`` (rows of
    ``stream_transforms.id_time_spans``)."""
    extent: dict[tuple, tuple] = {}
    for span in spans:
        if span["lo"] is None:  # no id_time (raw_data's rows all have one): as id_time_ranges
            continue
        group = tuple(span[c] for c in groups)
        lo, hi = extent.get(group, (span["lo"], span["hi"]))
        extent[group] = (min(lo, span["lo"]), max(hi, span["hi"]))
    return extent


def _observed(observation, wait_s: float = _OBSERVATION_WAIT_S) -> dict | None:
    """The observation's metrics once the query that computes them has run, or None when no
    query ran (Delta skipped a write it had committed before: the future never completes)."""
    future = observation._jo.future()  # pyspark's Observation.get would block for ever then
    deadline = time.monotonic() + wait_s
    while not future.isCompleted():
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)
    return observation.get


def foreach_batch_writer(
    spark, checkpoint: str, outputs: Sequence[BatchOutput], counts: BatchCounts | None = None,
    prepare: Callable | None = None,
) -> DeltaBatchWriter:
    """The ``foreachBatch`` callback of the query checkpointed at ``checkpoint`` (bind it to the
    query after ``start()``); ``prepare`` turns each source micro-batch into the frame the outputs
    are derived from. Raises :class:`ConfigError` on checkpoints of the earlier layout."""
    check_checkpoint_layout(spark, checkpoint)
    return DeltaBatchWriter(outputs, counts, prepare)
