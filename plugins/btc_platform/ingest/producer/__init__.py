"""The producer: market data from a source (live APIs, replay file, simulator) into Kafka.

Run it::

    python -m btc_platform.ingest.producer --source live
    python -m btc_platform.ingest.producer --source simulate --candles ../shared/data/btc_usdt_1m_2023-03_2023-05.csv --speed 60
    python -m btc_platform.ingest.producer --source replay --replay-file captured.jsonl --speed 0

Kafka: confluent-kafka ``Producer`` with ``enable.idempotence=true`` and ``acks=all``, key = symbol,
value = ``schema.encode`` bytes. Delivery reports are counted (published / failed). If Kafka is
down librdkafka keeps every accepted message queued and retries it for
``producer_message_timeout_s``; when the local queue is full the source waits (backpressure),
nothing is dropped. SIGTERM/SIGINT stop the source and flush, bounded by
``producer_flush_timeout_s`` (below the supervisor's stop timeout, so the spool below is written
before a SIGKILL).

Spool: a message that was accepted but cannot be delivered - still queued when the flush ends
(purged then), timed out after ``producer_message_timeout_s``, or not taken by a full queue at
stop - is appended to the spool file ``<data_dir>/spool/producer.jsonl`` (one wire message a
line, fsync'ed at close) instead of being lost, and counted as ``spooled``. The next start
delivers the spool first, byte for byte (same ``message_id``), before any new message: the file
is renamed to ``producer.jsonl.sending`` and removed once every message in it was delivered or
spooled again (a process killed in between sends it again: duplicates, never a loss). Only a
SIGKILL would lose what librdkafka held in memory, hence the journal:

Journal (``producer_journal``, on by default): every message is appended to the write-ahead
journal ``<data_dir>/spool/producer.wal`` (unbuffered, so in the kernel before librdkafka has
it) before it is handed to Kafka, and the message_id of every confirmed one to
``producer.wal.delivered`` (collected, written at every status tick and poll). Both are emptied
whenever nothing is outstanding (at a status tick with an empty librdkafka queue) and removed
at a clean stop. A producer killed with SIGKILL leaves them behind: the next start re-sends,
before the spool, every journaled message without a confirmation, byte for byte (a message confirmed in the instant before the kill
is sent again: a duplicate the stream drops within its watermark delay, never a loss).
``producer_accepted_log`` (off by default) appends the ``message_id`` of every accepted message
to a file (the fault-injection suite counts losses against it).

Parts: ``app`` (``FeedProducer``: the loop and the sources' context), ``delivery`` (librdkafka
and delivery reports), ``journal``, ``spool``, ``health`` (the status record), ``cli``.

Health: a JSON status record (``btc_platform.status``) at ``producer_status_path``, rewritten
every ``producer_status_interval_s`` and at exit: pid, source mode, started_at, updated_at,
state, counters ``published``/``rejected``/``retried``/``failed``/``accepted``/``in_flight``,
per upstream (``binance``, ``coingecko``, ``simulated``, ...) the last successful poll and
publish, ``http_errors`` (failed HTTP attempts per upstream by kind: timeout, ssl, connection,
truncated, decoding, too_many_redirects, other_transport, invalid_json, http_5xx/429/418) and
``waiting``: what the producer is legitimately waiting for, per upstream ``{"reason": "ip_ban" |
"rate_limit", "until": <time>}``, or ``{"reason": "exchange_failing", "kind": <last failure kind>,
"failures": n, "since": <time>, "last_failure": <time>, "next_attempt": <time>, "detail": ...}``
while it backs off from 5xx / transport failures / invalid JSON (cleared by the first good
answer), and for Kafka ``{"reason": "broker_unreachable", "since": <time>}``
while librdkafka reports all brokers down and no delivery succeeded since. The supervisor does
not restart a producer whose fresh status record says it is waiting. Payloads that cannot become messages are counted as rejected, logged, and appended
with the reason to ``<logs_dir>/producer_rejected.jsonl``.
"""

from btc_platform.ingest.producer.app import FeedProducer
from btc_platform.ingest.producer.cli import build_parser, build_source, main
from btc_platform.ingest.producer.delivery import ThrottledLog, kafka_config
from btc_platform.ingest.producer.journal import Journal, message_id_of

__all__ = ["FeedProducer", "Journal", "ThrottledLog", "build_parser", "build_source", "kafka_config", "main",
           "message_id_of"]
