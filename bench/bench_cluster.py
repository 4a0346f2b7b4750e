"""The cluster profile end to end, with figures: start it (``btc-services run --profile cluster
--source simulate``: PostgreSQL, three Kafka brokers, HDFS, Spark standalone master + workers,
Airflow on PostgreSQL whose supervisor DAG submits the stream to the master), check that the
stream writes raw_data on HDFS from executors on the workers, measure the memory of the whole
profile at rest, submit a batch job (consolidation) to the master, then the fault scenarios:

* ``kill -9`` of one Spark worker's process group (worker + its executors) mid-stream: time until
  the stream completes a micro-batch with new rows again, the stream's driver pid and Spark
  application unchanged (the job did not stop); the worker is restarted;
* ``kill -9`` of one Kafka broker while producer and stream run: time until a micro-batch with
  new rows again; the broker is restarted; at the end every message_id in the topic is compared
  with raw_data (lost / duplicated) and the producer's failed deliveries are read.

Stops everything at the end, pass or fail. Ports come from the BTC_* settings (override them
when another instance uses the defaults). ``--keep`` leaves the platform running.

    python bench/bench_cluster.py [--keep] [--skip-faults]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

log = logging.getLogger("bench.cluster")


def _stream_batch(settings) -> tuple[int, int] | None:
    """(batch id, input rows) of the ingest query's last reported micro-batch."""
    from btc_platform.status import read_status

    status = read_status(settings.stream_status_path) or {}
    for name, query in (status.get("queries") or {}).items():
        if "ingest" in name or "raw" in name:
            last = query.get("last_progress") or query
            batch = last.get("batch_id")
            if batch is not None:
                return int(batch), int(last.get("input_rows") or 0)
    return None


def _wait_new_batch(settings, after: int, timeout_s: float) -> float:
    """Seconds until the ingest query reports a batch with rows whose id is above ``after``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        batch = _stream_batch(settings)
        if batch and batch[0] > after and batch[1] > 0:
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"no ingest batch with rows after batch {after} within {timeout_s:.0f} s")


def memory_by_component(settings) -> dict[str, float]:
    """RSS (MiB) of every process of this platform instance, by component."""
    import psutil

    from btc_platform.ops.services import COMPONENT_ENV, marked_processes

    totals: Counter[str] = Counter()
    for pid in marked_processes(settings):
        try:
            proc = psutil.Process(pid)
            component = proc.environ().get(COMPONENT_ENV, "?")
            totals[component] += proc.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            continue
    return dict(totals)


def _group_of(settings, name: str) -> int:
    from btc_platform.ops.services.base import read_pid

    record = read_pid(settings, name)
    if record is None:
        raise RuntimeError(f"{name} has no pid record")
    return record.pgid


def _stream_app(settings) -> tuple[str, int]:
    from btc_platform.ops.services.spark import master_state

    apps = [a for a in master_state(settings).get("activeapps", []) if a.get("name") == "btc-stream"]
    if len(apps) != 1:
        raise RuntimeError(f"expected one btc-stream application on the master, found {apps}")
    return apps[0]["id"], int(apps[0].get("cores", 0))


def _topic_ids(settings) -> list[str]:
    """message_id of every message in the topic up to its current end offsets."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": f"bench-{time.time()}",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        meta = consumer.list_topics(settings.kafka_topic, timeout=10).topics[settings.kafka_topic]
        ends = {p: consumer.get_watermark_offsets(TopicPartition(settings.kafka_topic, p), timeout=10)[1]
                for p in meta.partitions}  # fmt: skip
        consumer.assign([TopicPartition(settings.kafka_topic, p, 0) for p in ends])
        done = {p for p, end in ends.items() if end == 0}
        ids: list[str] = []
        deadline = time.monotonic() + 120
        while len(done) < len(ends) and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=5000, timeout=1.0):
                if msg.error():
                    raise RuntimeError(str(msg.error()))
                if msg.offset() < ends[msg.partition()]:
                    ids.append(json.loads(msg.value())["message_id"])
                if msg.offset() >= ends[msg.partition()] - 1:
                    done.add(msg.partition())
        return ids
    finally:
        consumer.close()


def lost_and_duplicated(settings, timeout_s: float = 180.0) -> dict[str, int]:
    """Messages of the topic (now) missing from raw_data once the stream caught up, and raw_data
    rows beyond one per message_id."""
    from btc_platform.lakehouse.lake import read_table

    ids = set(_topic_ids(settings))
    deadline = time.monotonic() + timeout_s
    while True:
        rows = read_table("raw_data", settings, columns=["message_id"])["message_id"]
        missing = ids - set(rows)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(3)
    return {"topic_messages": len(ids), "raw_rows": len(rows), "lost": len(missing),
            "duplicated": int(len(rows) - rows.nunique())}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="leave the platform running")
    parser.add_argument("--skip-faults", action="store_true", help="no worker/broker kill scenarios")
    parser.add_argument("--rest-s", type=float, default=45.0, help="settle time before the memory figure")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from btc_platform.lakehouse.lake import read_table
    from btc_platform.lakehouse.spark_session import spark_submit_args, spark_submit_binary
    from btc_platform.ops import lifecycle, supervisor
    from btc_platform.ops.services.kafka import start_broker
    from btc_platform.ops.services.spark import start_worker
    from btc_platform.settings import load_settings

    settings = load_settings(profile="cluster", producer_source="simulate", first_run_backfill=False)
    figures: dict[str, object] = {}
    try:
        started = time.monotonic()
        lifecycle.run(settings, "simulate")
        figures["start_s"] = round(time.monotonic() - started, 1)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                rows = len(read_table("raw_data", settings, columns=["message_id"]))
            except Exception as exc:  # noqa: BLE001 - table not created yet: keep polling, say why
                log.info("raw_data not readable yet: %s", str(exc)[:120])
                rows = 0
            if rows:
                break
            time.sleep(3)
        figures["first_rows_s"] = round(time.monotonic() - started, 1)
        app, cores = _stream_app(settings)
        figures["stream_app"], figures["stream_cores"] = app, cores
        log.info("stream application %s with %d cores writes %s", app, cores, settings.path("raw_data"))
        time.sleep(args.rest_s)
        memory = memory_by_component(settings)
        figures["memory_at_rest_mib"] = {k: round(v) for k, v in sorted(memory.items())}
        figures["memory_at_rest_total_mib"] = round(sum(memory.values()))

        # a batch job submitted to the master, code shipped with --py-files (as the stream)
        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        from btc_platform.ops.services.spark import spark_home
        from btc_platform.ops.supervisor.launch import child_env

        env = {**child_env(settings)[0], "SPARK_HOME": spark_home(), "BTC_CONSOLIDATION_MAX_WAIT_S": "5"}
        cmd = [spark_submit_binary(), *spark_submit_args(settings, "btc-consolidate-bench"),
               "spark_jobs/consolidate_job.py", "--start", hour.isoformat(), "--end",
               (hour + timedelta(hours=1)).isoformat()]  # fmt: skip
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
        figures["batch_s"] = round(time.monotonic() - t0, 1)
        if proc.returncode != 0:
            raise RuntimeError(f"consolidation on the cluster failed:\n{proc.stderr[-3000:]}")
        hourly = read_table("hourly_metrics", settings)
        figures["hourly_rows"] = len(hourly)

        if not args.skip_faults:
            stream_pid = supervisor.status("stream", settings).pid
            batch = _stream_batch(settings) or (-1, 0)
            os.killpg(_group_of(settings, "spark-worker-1"), signal.SIGKILL)
            killed = time.monotonic()
            figures["worker_kill_recovery_s"] = round(_wait_new_batch(settings, batch[0], 240), 1)
            figures["worker_kill_same_app"] = _stream_app(settings)[0] == app
            figures["worker_kill_same_driver"] = supervisor.status("stream", settings).pid == stream_pid
            start_worker(settings, 0)
            figures["worker_restart_s"] = round(time.monotonic() - killed, 1)

            batch = _stream_batch(settings) or (-1, 0)
            os.killpg(_group_of(settings, "kafka-2"), signal.SIGKILL)
            killed = time.monotonic()
            figures["broker_kill_recovery_s"] = round(_wait_new_batch(settings, batch[0], 240), 1)
            start_broker(settings, 1)
            from btc_platform.ops.process import wait_until_healthy
            from btc_platform.ops.services.base import read_pid
            from btc_platform.ops.services.kafka import kafka_health

            wait_until_healthy(read_pid(settings, "kafka-2"), lambda: kafka_health(settings), 120, "3 brokers")
            figures["broker_restart_s"] = round(time.monotonic() - killed, 1)
            figures["broker_kill_same_driver"] = supervisor.status("stream", settings).pid == stream_pid
            figures.update(lost_and_duplicated(settings))
            from btc_platform.status import read_status

            producer = read_status(settings.producer_status_path) or {}
            figures["producer_failed"] = producer.get("failed")
            figures["producer_published"] = producer.get("published")
    finally:
        sys.stdout.write(json.dumps(figures, indent=1, default=str) + "\n")
        if not args.keep:
            lifecycle.stop_all(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
