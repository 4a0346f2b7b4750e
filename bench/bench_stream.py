"""Benchmark of the streaming job (spark_jobs/stream_job.py) against a real local Kafka broker.

1. Throughput: preload a fresh topic with N simulated messages (default 1,000,000: book tickers,
   plus a 24 h ticker every 100 and a CoinGecko market message every 1,000), run the job with
   ``--available-now`` and compute messages/s from its per-batch progress lines.
2. Latency: start the job with the default trigger, publish a steady 1,000 msg/s with
   ``ingest_time`` = now for a 30 s warm-up and then 2 minutes, and measure ``ingest_time`` -> the
   record being readable in raw_data (the moment the Delta commit of the batch that holds it
   appears in ``_delta_log``); p50, p95 of the 2 measured minutes, and of everything sent including
   the job's cold start (its first batch plans, generates code and warms the JIT).

3. Reference: the same preloaded messages read by a plain Spark batch job in this process
   (Kafka source, ``from_json`` with the message schema, Parquet write partitioned by date, no
   validation, dedup or Delta) - a bare parse-and-write of the hour, so the stream's figure can
   be given as a ratio to it (absolute speeds on these machines move by half between days).

The broker is started by this benchmark (own data dir, free ports) and stopped at the end.
``--profile cluster`` runs parts 1 and 2 on the cluster profile's shape instead (btc_platform.topology:
three brokers with the topics at replication 3 / min.insync.replicas 2, a Spark standalone master
with two workers, the job's executors there); storage stays file:// on this machine so the latency
watcher can read the Delta log (the executors write it with Hadoop's stock local file system).
``--storage hdfs`` puts the storage root on an HDFS NameNode + DataNode started for the run (the
latency watcher then reads the Delta log and the new files through WebHDFS, polling every 0.2 s).
``--sweep local/4,e1/4,e2/4,e2/2,e2/1`` measures throughput only, one variant after another against
the same three brokers, HDFS or file storage and standalone master with two one-core workers:
``local/P`` the job on local[2], ``eN/P`` on N one-core executors, each on a topic of P partitions
preloaded once (``--symbols`` symbols taking turns, symbol k in partition k mod P).
Run: ``.venv/bin/python bench/bench_stream.py [--messages N] [--rate R]
[--seconds S] [--warmup S] [--skip-latency] [--skip-throughput] [--profile local|cluster]
[--storage file|hdfs] [--symbols N] [--sweep SPEC]``. Needs the jars (``make jars``). Targets on a 2-core machine:
>= 20,000 msg/s sustained, p95 <= 5 s.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

log = logging.getLogger("bench.stream")

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "spark_jobs" / "stream_job.py"
PROGRESS_RE = re.compile(r"stream progress (\{.*\})$")


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


# ---- simulated payloads ------------------------------------------------------------------------
def _fmt(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def symbol_name(index: int, symbols: int) -> str:
    """The symbol of message ``index`` when ``symbols`` symbols take turns (1: BTCUSDT only)."""
    return "BTCUSDT" if symbols == 1 else f"S{index % symbols:02d}USDT"


def payloads(count: int, start: datetime, step_ms: int, ingest: datetime | None = None, seed: int = 0,
             symbols: int = 1):  # fmt: skip
    """``count`` (Kafka key, wire message) pairs, event times ``step_ms`` apart from ``start`` (a
    random-walk book), the symbols taking turns (the key is the symbol, as the producer's)."""
    from btc_platform.ingest import schema

    try:  # the producer's fast, schema-identical encoder when it is there
        from btc_platform.ingest.sources import encode_book_ticker
    except ImportError:
        encode_book_ticker = None
    mid_c = 4_000_000 + seed
    for i in range(count):
        symbol = symbol_name(i, symbols)
        key = symbol.encode()
        event = start + timedelta(milliseconds=i * step_ms)
        ing = ingest or event
        mid_c += (i * 7919 + seed) % 201 - 100
        bid_c, ask_c = mid_c - 50, mid_c + 50 + (i % 3)
        if i % 1000 == 999:
            msg = schema.make_message(
                message_type="market", source="simulated", symbol=symbol, event_time=event,
                ingest_time=ing, last_price=f"{mid_c / 100:.2f}", market_cap="850000000000",
                quote_volume_24h="25000000000", price_change_pct_24h="1.25",
            )  # fmt: skip
            yield key, schema.encode(msg)
        elif i % 100 == 99:
            msg = schema.make_message(
                message_type="ticker_24hr", source="simulated", symbol=symbol, event_time=event,
                ingest_time=ing, last_price=f"{mid_c / 100:.2f}", volume_24h="20000.5",
                quote_volume_24h="800000000", price_change_pct_24h="-0.5",
            )  # fmt: skip
            yield key, schema.encode(msg)
        elif encode_book_ticker is not None:
            yield key, encode_book_ticker(
                f'"{symbol}"', _fmt(event), _fmt(ing), bid_c, 120000 + i % 977, ask_c, 80000
            )
        else:
            msg = schema.make_message(
                message_type="book_ticker", source="simulated", symbol=symbol, event_time=event,
                ingest_time=ing, bid_price=f"{bid_c / 100:.2f}", ask_price=f"{ask_c / 100:.2f}",
                bid_qty="1.2", ask_qty="0.8",
            )  # fmt: skip
            yield key, schema.encode(msg)


def _producer(bootstrap: str):
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500000,
        }
    )


def preload(bootstrap: str, topic: str, count: int, symbols: int = 1, partitions: int = 0) -> float:
    """``count`` messages into ``topic``; with ``partitions``, symbol k goes to partition k mod
    partitions (an even spread; librdkafka's default CRC32 partitioner puts the 16 names S00USDT ..
    S15USDT into only 2 of 4 partitions: CRC32 is linear, and the names differ in a few bits)."""
    producer = _producer(bootstrap)
    started = time.monotonic()
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for i, (key, value) in enumerate(payloads(count, start, step_ms=20, symbols=symbols)):
        where = {"partition": (i % symbols) % partitions} if partitions else {}
        while True:
            try:
                producer.produce(topic, key=key, value=value, **where)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError("messages still undelivered after 120 s")
    return time.monotonic() - started


# ---- running the job -----------------------------------------------------------------------------
def job_command(bootstrap: str, topic: str, storage: str, *extra: str) -> list[str]:
    return [
        sys.executable, str(JOB), "--bootstrap-servers", bootstrap, "--topic", topic,
        "--storage-root", storage, *extra,
    ]  # fmt: skip


#: Settings of the job's environment beyond the data dir (the cluster profile's master and sizes).
JOB_SETTINGS: dict[str, str] = {}


def job_env(data_dir: Path, job_settings: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(JOB_SETTINGS if job_settings is None else job_settings)
    env["BTC_DATA_DIR"] = str(data_dir)
    return env


def progress_lines(stream) -> list[dict]:
    return [json.loads(m.group(1)) for line in stream if (m := PROGRESS_RE.search(line.rstrip()))]


def throughput(
    bootstrap: str, topic: str, count: int, workdir: Path, max_offsets: int, job_log: Path | None = None,
    storage: str | None = None, job_settings: dict[str, str] | None = None, name: str = "tp",
) -> dict:
    """Run the job with ``--available-now`` over the preloaded topic (storage root ``storage``,
    default ``file://<workdir>/tp-store``; ``job_settings``: BTC_* of its environment)."""
    storage = storage or f"file://{workdir}/{name}-store"
    cmd = job_command(
        bootstrap, topic, storage, "--available-now", "--max-offsets-per-trigger", str(max_offsets)
    )
    started = time.monotonic()
    result = subprocess.run(
        cmd, env=job_env(workdir / f"{name}-data", job_settings), capture_output=True, text=True, timeout=3600
    )
    wall = time.monotonic() - started
    if job_log is not None:
        job_log.write_text(result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"stream job failed ({result.returncode}): {result.stderr[-3000:]}")
    records = progress_lines(result.stderr.splitlines())
    figures: dict = {"job_wall_s": wall}
    spans = []
    for query in ("ingest", "minute_metrics"):
        batches = [r for r in records if r["query"] == query and r["input_rows"]]
        rows = sum(r["input_rows"] for r in batches)
        busy_ms = sum(r["batch_duration_ms"] for r in batches)
        starts = [datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")) for r in batches]
        ends = [
            s + timedelta(milliseconds=r["batch_duration_ms"]) for s, r in zip(starts, batches, strict=True)
        ]
        if batches:
            spans.append((min(starts), max(ends)))
        figures[query] = {
            "rows": rows,
            "batches": len(batches),
            "rows_per_s_busy": rows / (busy_ms / 1000) if busy_ms else None,
            "valid": sum(r["valid"] or 0 for r in batches),
            "quarantined": sum(r["quarantined"] or 0 for r in batches),
            # where the busy time went (Spark's durationMs of each batch, summed): addBatch = the writes
            "phases_ms": {key: sum((r.get("phases_ms") or {}).get(key, 0) for r in batches)
                          for key in sorted({k for r in batches for k in (r.get("phases_ms") or {})})},
        }
    if spans:
        first, last = min(s for s, _ in spans), max(e for _, e in spans)
        figures["sustained_msgs_per_s"] = count / (last - first).total_seconds()
        figures["processing_span_s"] = (last - first).total_seconds()
    return figures


def reference(bootstrap: str, topic: str, count: int, workdir: Path) -> dict:
    """Rows/s of a bare Spark parse-and-write of the topic (batch read, same session options)."""
    from pyspark.sql import functions as F

    from btc_platform.ingest import schema
    from btc_platform.lakehouse.spark_session import build_session
    from btc_platform.settings import load_settings

    settings = load_settings(data_dir=workdir / "ref-data")
    spark = build_session("bench-reference", settings, master=settings.spark_master,
                          driver_memory=settings.stream_driver_memory,
                          driver_java_options=settings.stream_driver_java_options)  # fmt: skip
    try:
        runs = []
        for run in range(2):  # the first run pays the JVM warm-up, like the stream's first batch
            started = time.monotonic()
            messages = (
                spark.read.format("kafka")
                .option("kafka.bootstrap.servers", bootstrap)
                .option("subscribe", topic)
                .option("startingOffsets", "earliest")
                .load()
                .select(F.from_json(F.col("value").cast("string"), schema.spark_schema(timestamps_as_strings=False)).alias("m"))
                .select("m.*")
                .withColumn("date", F.to_date("event_time"))
            )
            messages.write.mode("overwrite").partitionBy("date").parquet(f"file://{workdir}/ref-{run}")
            runs.append(time.monotonic() - started)
        return {"cold_rows_per_s": count / runs[0], "rows_per_s": count / runs[1]}
    finally:
        spark.stop()


class CommitWatcher(threading.Thread):
    """Polls raw_data/_delta_log (a file:// or hdfs:// table URI; hdfs:// through WebHDFS); for each
    new commit, records when it became readable and the ingest_time of every row of the files it
    added (read with pyarrow)."""

    def __init__(self, raw_uri: str, settings=None, poll_s: float = 0.05):
        from btc_platform.lakehouse.storage import open_storage

        super().__init__(daemon=True)
        self.raw_uri = raw_uri.rstrip("/")
        self.meta = f"{self.raw_uri}/_delta_log"
        self.storage = open_storage(raw_uri, settings)
        self.poll_s = poll_s
        self.stop_event = threading.Event()
        self.seen_logs: set[str] = set()
        self.seen_files: set[str] = set()
        self.latencies: list[tuple[datetime, float]] = []  # (ingest_time, seconds to readable)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.scan()
                time.sleep(self.poll_s)
            self.scan()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def scan(self) -> None:
        import io

        import pyarrow.parquet as pq

        if not self.storage.isdir(self.meta):
            return
        for entry in self.storage.listdir(self.meta):
            # commits are <version>.json, written atomically (temporary files start with '.')
            if entry in self.seen_logs or not entry.endswith(".json") or entry.startswith("."):
                continue
            seen_at = datetime.now(UTC)
            self.seen_logs.add(entry)
            for line in self.storage.read_text(f"{self.meta}/{entry}").splitlines():
                add = json.loads(line).get("add")
                if not add or not add.get("dataChange", True):
                    continue
                path = f"{self.raw_uri}/{unquote(add['path'])}"
                if path in self.seen_files:
                    continue
                self.seen_files.add(path)
                table = pq.read_table(io.BytesIO(self.storage.read_bytes(path)), columns=["ingest_time"])
                for ingest in table.column("ingest_time").to_pylist():
                    moment = ingest if ingest.tzinfo else ingest.replace(tzinfo=UTC)
                    self.latencies.append((moment, (seen_at - moment).total_seconds()))


def _percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    if not values:
        return {"p50_s": float("nan"), "p95_s": float("nan"), "max_s": float("nan")}
    p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
    return {"p50_s": statistics.median(values), "p95_s": p95, "max_s": values[-1]}


def latency(
    bootstrap: str,
    topic: str,
    workdir: Path,
    rate: int,
    seconds: int,
    warmup: int = 0,
    job_log: Path | None = None,
    storage: str | None = None,
    settings=None,
) -> dict:
    """Steady ``rate`` msg/s for ``warmup`` + ``seconds`` against a freshly started job.

    Percentiles over the records sent after the warm-up (steady state) and over all records
    (including the job's cold start: JVM warm-up, first query planning, code generation)."""
    storage = storage or f"file://{workdir}/lat-store"
    data_dir = workdir / "lat-data"
    cmd = job_command(bootstrap, topic, storage)
    proc = subprocess.Popen(
        cmd, env=job_env(data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    stderr_lines: list[str] = []
    reader = threading.Thread(target=lambda: stderr_lines.extend(proc.stderr), daemon=True)
    reader.start()
    # WebHDFS polled every 0.2 s (a LISTSTATUS each); the local log every 0.05 s
    watcher = CommitWatcher(f"{storage}/raw_data", settings, poll_s=0.05 if storage.startswith("file:") else 0.2)
    try:
        status = data_dir / "status" / "stream.json"
        deadline = time.monotonic() + 300
        while not status.exists():  # the queries are up once the listener wrote a record
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("stream job did not start: " + "".join(stderr_lines[-30:]))
            time.sleep(0.2)
        watcher.start()
        producer = _producer(bootstrap)
        sent, total = 0, rate * (warmup + seconds)
        t_start = time.monotonic()
        measure_from = datetime.now(UTC) + timedelta(seconds=warmup)
        clock = datetime.now(UTC)  # event times 1 ms apart, never behind a message sent before (a producer's)
        while sent < total:
            due = int((time.monotonic() - t_start) * rate) + 1
            now = datetime.now(UTC)
            count = min(due - sent, total - sent)
            clock = max(clock, now)
            for key, value in payloads(count, clock, 1, ingest=now, seed=sent):
                producer.produce(topic, key=key, value=value)
            clock += timedelta(milliseconds=max(count, 0))
            sent = max(sent, min(due, total))
            producer.poll(0)
            time.sleep(0.01)
        producer.flush(60)
        produce_s = time.monotonic() - t_start
        drain_deadline = time.monotonic() + 60
        while len(watcher.latencies) < sent and time.monotonic() < drain_deadline:
            time.sleep(0.2)
    finally:
        watcher.stop_event.set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    watcher.join(timeout=30)
    reader.join(timeout=30)
    if job_log is not None:
        job_log.write_text("".join(stderr_lines))
    if watcher.error is not None:
        raise watcher.error
    if not watcher.latencies:
        raise RuntimeError("no records became readable in raw_data")
    steady = [lat for ingest, lat in watcher.latencies if ingest >= measure_from]
    raw_batches = sorted(
        r["batch_duration_ms"] / 1000
        for r in progress_lines(stderr_lines)
        if r["query"] == "ingest" and r["input_rows"]
    )
    return {
        "raw_batch_p50_s": statistics.median(raw_batches) if raw_batches else float("nan"),
        "raw_batch_max_s": raw_batches[-1] if raw_batches else float("nan"),
        "raw_batches": len(raw_batches),
        "sent": sent,
        "readable": len(watcher.latencies),
        "steady_records": len(steady),
        "rate_msgs_per_s": sent / produce_s,
        **_percentiles(steady),
        "cold": _percentiles([lat for _, lat in watcher.latencies]),
        "job_exit": proc.returncode,
    }


def parse_sweep(spec: str) -> list[tuple[str, int, int]]:
    """``"local/4,e1/4,e2/1"`` -> [(master, executors, partitions)]: ``local`` is Spark local[2] in
    the job's driver, ``eN`` N one-core executors on the standalone workers; ``/P`` the topic's
    partitions."""
    variants = []
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        head, sep, parts = token.partition("/")
        if not sep or not parts.isdigit() or int(parts) < 1:
            raise ValueError(f"--sweep: expected local/P or eN/P (P partitions), got {token!r}")
        if head == "local":
            variants.append(("local", 0, int(parts)))
        elif head.startswith("e") and head[1:].isdigit() and int(head[1:]) >= 1:
            variants.append(("cluster", int(head[1:]), int(parts)))
        else:
            raise ValueError(f"--sweep: expected local or eN (N executors) before '/', got {token!r}")
    if not variants:
        raise ValueError("--sweep: no variants given")
    return variants


def _start_services(args, workdir: Path):
    """Kafka (1 broker, or the cluster shape's 3), the Spark standalone cluster when needed, HDFS
    when the storage is hdfs://; returns (settings, BTC_* for the job of the cluster shape, storage
    root or None for the per-run file:// default)."""
    from btc_platform.ops import services
    from btc_platform.settings import load_settings

    n_ports = 5 + (5 if args.storage == "hdfs" else 0)
    port, controller, master, master_ui, worker_ui, *hdfs_ports = _free_ports(n_ports)
    overrides: dict = {"data_dir": workdir / "kafka-data", "kafka_port": port, "kafka_controller_port": controller,
                       "kafka_bootstrap_servers": f"127.0.0.1:{port}"}  # fmt: skip
    cluster: dict = {}
    if args.profile == "cluster" or args.sweep:
        from btc_platform.topology import CLUSTER_SHAPE

        cluster = {k: v for k, v in CLUSTER_SHAPE.items() if k != "airflow_database"}
        cluster.update(spark_master_port=master, spark_master_ui_port=master_ui, spark_worker_ui_port=worker_ui,
                       spark_master=f"spark://127.0.0.1:{master}", spark_driver_host="127.0.0.1")  # fmt: skip
        if args.sweep:  # one-core workers: an executor per worker, the executor count set per run
            cluster.update(spark_worker_cores=1, spark_executor_cores=1)
    hdfs: dict = {}
    if args.storage == "hdfs":
        names = ("hdfs_namenode_port", "hdfs_namenode_http_port", "hdfs_datanode_port", "hdfs_datanode_http_port",
                 "hdfs_datanode_ipc_port")  # fmt: skip
        hdfs = dict(zip(names, hdfs_ports, strict=True))
    settings = load_settings(**overrides, **cluster, **hdfs)
    services.start_kafka(settings)
    job_settings = {f"BTC_{k.upper()}": str(v) for k, v in hdfs.items()}
    if cluster:
        settings = load_settings(**{**{n: getattr(settings, n) for n in settings.model_fields_set},
                                    "kafka_bootstrap_servers": ",".join(f"127.0.0.1:{p}" for p, _ in
                                                                        settings.kafka_broker_ports())})  # fmt: skip
        services.start_spark(settings)
        job_settings.update({f"BTC_{k.upper()}": str(v) for k, v in cluster.items()})
        job_settings["BTC_KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    storage = None
    if hdfs:
        services.start_hdfs(settings)
        storage = f"{settings.hdfs_uri}/bench"
    return settings, job_settings, storage


def _stop_services(settings) -> None:
    from btc_platform.ops import services

    for name in ("spark", "hdfs", "kafka"):
        services.stop(name, settings)


def _partition_sizes(settings, topic: str) -> list[int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "bench-sizes"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in sorted(meta.partitions)]
    finally:
        consumer.close()


def sweep(args, workdir: Path) -> list[tuple[str, ...]]:
    """Throughput of the preloaded topic per variant (Spark master/executors x topic partitions),
    all against the same brokers and storage in one run; rows of the result table."""
    from btc_platform.ops import services

    variants = parse_sweep(args.sweep)
    settings, cluster_settings, storage = _start_services(args, workdir)
    local_settings = {k: v for k, v in cluster_settings.items() if k.startswith("BTC_HDFS_")}
    rows: list[tuple[str, ...]] = []
    try:
        topics = {}
        for parts in sorted({p for _, _, p in variants}):
            topic = services.ensure_topic(settings, f"sweep-p{parts}", parts)
            load_s = preload(settings.kafka_bootstrap_servers, topic, args.messages, args.symbols, parts)
            sizes = _partition_sizes(settings, topic)
            log.info("preloaded %s: %d messages of %d symbols in %.1f s, per partition %s", topic, args.messages,
                     args.symbols, load_s, sizes)  # fmt: skip
            topics[parts] = (topic, sizes)
        for master, executors, parts in variants:
            name = f"local-p{parts}" if master == "local" else f"e{executors}-p{parts}"
            job_settings = dict(local_settings) if master == "local" else {
                **cluster_settings, "BTC_STREAM_CORES_MAX": str(executors)}  # fmt: skip
            topic, sizes = topics[parts]
            run_storage = f"{storage}/{name}" if storage else None
            log_path = args.job_log.with_suffix(f".{name}.log") if args.job_log else None
            started = datetime.now(UTC)
            tp = throughput(settings.kafka_bootstrap_servers, topic, args.messages, workdir,
                            args.max_offsets_per_trigger, log_path, storage=run_storage, job_settings=job_settings,
                            name=name)  # fmt: skip
            log.info("%s (%s): %s", name, started.strftime("%H:%M:%S"), json.dumps(tp, default=str))
            spark = "local[2] (driver only)" if master == "local" else f"{executors} x 1-core executor(s)"
            ingest = tp["ingest"]
            rows.append((name, spark, str(parts), "/".join(str(n) for n in sizes),
                         f"{tp.get('sustained_msgs_per_s', 0):,.0f}",
                         f"{ingest['rows_per_s_busy']:,.0f}" if ingest["rows_per_s_busy"] else "-",
                         str(ingest["batches"]), f"{tp['job_wall_s']:.0f}"))  # fmt: skip
    finally:
        _stop_services(settings)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--messages", type=int, default=1_000_000, help="messages to preload (default 1,000,000)"
    )
    parser.add_argument(
        "--max-offsets-per-trigger", type=int, default=250_000, help="batch size cap for the preload run"
    )
    parser.add_argument("--rate", type=int, default=1000, help="steady load in msg/s (default 1000)")
    parser.add_argument("--seconds", type=int, default=120, help="steady load duration (default 120)")
    parser.add_argument(
        "--warmup", type=int, default=30,
        help="seconds of the same steady load before the measured ones (default 30): the job's cold "
        "start is reported separately",
    )  # fmt: skip
    parser.add_argument("--skip-latency", action="store_true", help="throughput part only")
    parser.add_argument("--skip-throughput", action="store_true", help="latency part only (no preload)")
    parser.add_argument("--skip-reference", action="store_true", help="no bare-Spark reference run")
    parser.add_argument("--profile", choices=("local", "cluster"), default="local",
                        help="local: Spark local[2], one broker; cluster: Spark standalone master + 2 workers, "
                             "3 brokers (replication 3, min.insync.replicas 2)")  # fmt: skip
    parser.add_argument("--storage", choices=("file", "hdfs"), default="file",
                        help="storage root of the job: file:// in the work dir, or hdfs:// on an HDFS NameNode + "
                             "DataNode this benchmark starts (the latency watcher reads the Delta log via WebHDFS)")  # fmt: skip
    parser.add_argument("--symbols", type=int, default=1,
                        help="symbols taking turns in the preloaded messages (the Kafka key: with 1, every "
                             "message is in one partition)")  # fmt: skip
    parser.add_argument("--sweep", default="",
                        help="throughput only, one variant after another on the cluster shape's services "
                             "(3 brokers, master + 2 one-core workers): comma-separated local/P (local[2]) or "
                             "eN/P (N executors), P partitions of the preloaded topic, e.g. "
                             "local/4,e1/4,e2/4,e2/2,e2/1")  # fmt: skip
    parser.add_argument("--job-log", type=Path, help="keep the latency run's job log (stderr) in this file, the throughput run's next to it (.throughput.log)")
    args = parser.parse_args(argv if argv is not None else [])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.symbols < 1:
        parser.error("--symbols must be >= 1")

    from btc_platform.ops import services
    from btc_platform.settings import load_settings

    workdir = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    if not load_settings(data_dir=workdir / "kafka-data").spark_jars():
        log.warning("SKIP stream benchmark: no Spark Kafka connector jars (run `make jars`)")
        return 0
    if args.sweep:
        try:
            parse_sweep(args.sweep)
        except ValueError as exc:
            parser.error(str(exc))
        try:
            rows = sweep(args, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        header = ("run", "Spark", "partitions", "messages per partition", "sustained msg/s (both queries)",
                  "ingest rows / busy s", "ingest batches", "job wall s")  # fmt: skip
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in (header, *rows)]
        log.info("stream throughput sweep: %s messages preloaded (%d symbols), storage %s, 3 brokers (RF 3), "
                 "max %s offsets per trigger\n%s", f"{args.messages:,}", args.symbols, args.storage,
                 f"{args.max_offsets_per_trigger:,}", "\n".join(lines))  # fmt: skip
        return 0
    settings, job_settings, storage = _start_services(args, workdir)
    JOB_SETTINGS.update(job_settings)
    try:
        bootstrap = settings.kafka_bootstrap_servers
        tp = None
        if not args.skip_throughput:
            topic = services.ensure_topic(settings, "bench-throughput", 3)
            load_s = preload(bootstrap, topic, args.messages, args.symbols)
            log.info("preloaded %d messages in %.1f s (%.0f msg/s)", args.messages, load_s, args.messages / load_s)
            tp_log = args.job_log.with_suffix(".throughput.log") if args.job_log else None
            tp = throughput(bootstrap, topic, args.messages, workdir, args.max_offsets_per_trigger, tp_log,
                            storage=f"{storage}/tp" if storage else None)  # fmt: skip
            log.info("throughput figures: %s", json.dumps(tp, default=str))
        lat = None
        if not args.skip_latency:
            topic = services.ensure_topic(settings, "bench-latency", 3)
            lat = latency(bootstrap, topic, workdir, args.rate, args.seconds, args.warmup, args.job_log,
                          storage=f"{storage}/lat" if storage else None, settings=settings)  # fmt: skip
            log.info("latency figures: %s", json.dumps(lat))
        ref = None
        if not args.skip_reference and tp is not None:
            ref = reference(bootstrap, "bench-throughput", args.messages, workdir)
            log.info("reference figures: %s", json.dumps(ref))
    finally:
        _stop_services(settings)
        shutil.rmtree(workdir, ignore_errors=True)

    rows = [
        ("profile", f"{args.profile} (Spark {settings.spark_master}, {settings.kafka_brokers} broker(s), "
                    f"replication {settings.kafka_replication_factor}), storage {args.storage}"),
    ]
    if tp:
        rows += [
            ("messages preloaded", f"{args.messages:,}"),
            ("sustained throughput (both queries, msg/s)", f"{tp.get('sustained_msgs_per_s', 0):,.0f}"),
            ("processing span (s)", f"{tp.get('processing_span_s', 0):.1f}"),
            ("job wall time incl. startup (s)", f"{tp['job_wall_s']:.1f}"),
        ]
    if ref:
        rows += [
            ("reference: bare Spark parse + Parquet write (rows/s, warm / cold)",
             f"{ref['rows_per_s']:,.0f} / {ref['cold_rows_per_s']:,.0f}"),
            ("sustained throughput / warm reference",
             f"{tp.get('sustained_msgs_per_s', 0) / ref['rows_per_s']:.2f}"),
        ]  # fmt: skip
    for query in ("ingest", "minute_metrics") if tp else ():
        q = tp[query]
        rate = f"{q['rows_per_s_busy']:,.0f}" if q["rows_per_s_busy"] else "-"
        rows.append((f"{query}: rows / busy s ({q['batches']} batches)", rate))
    if lat:
        rows += [
            (f"steady load (msg/s, {args.warmup} s warm-up + {args.seconds} s)", f"{lat['rate_msgs_per_s']:.0f}"),
            (f"latency ingest -> readable p50 (s, last {args.seconds} s)", f"{lat['p50_s']:.2f}"),
            (f"latency ingest -> readable p95 (s, last {args.seconds} s)", f"{lat['p95_s']:.2f}"),
            (f"latency max (s, last {args.seconds} s)", f"{lat['max_s']:.2f}"),
            ("latency p50 / p95 / max incl. the cold start (s)",
             f"{lat['cold']['p50_s']:.2f} / {lat['cold']['p95_s']:.2f} / {lat['cold']['max_s']:.2f}"),
            (f"raw_data batch duration p50 / max (s, {lat['raw_batches']} batches)",
             f"{lat['raw_batch_p50_s']:.2f} / {lat['raw_batch_max_s']:.2f}"),
            ("records readable / sent", f"{lat['readable']:,} / {lat['sent']:,}"),
        ]
    width = max(len(name) for name, _ in rows)
    log.info("stream benchmark\n%s", "\n".join(f"  {name:<{width}}  {value}" for name, value in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
