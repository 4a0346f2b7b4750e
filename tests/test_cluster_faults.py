"""Fault tolerance of the cluster profile's components, on real processes (no mocks):

* three KRaft brokers, topic at replication factor 3 and min.insync.replicas 2: ``kill -9`` of
  the broker leading a partition while the platform's producer configuration (idempotent,
  acks=all) publishes; every message_id arrives exactly once, the broker is restarted and
  rejoins the in-sync replicas;
* a Spark standalone master with two workers and a checkpointed streaming query (its own
  driver process, like the stream job): ``kill -9`` of one worker's process group (worker and
  executors) mid-stream; the query keeps running in the same application, its tasks rerun on the
  other worker, the output holds every generated row once; the worker is restarted.

Recovery times are logged (figures: docs/benchmarks.md, `make bench-cluster` for the whole platform).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from btc_platform.settings import load_settings
from btc_platform.testing.polling import free_ports, wait_until
from tests.fixtures_services import _start_with_free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow]
log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
#: Seconds the three brokers get after SIGTERM at the end of the Kafka test, then SIGKILL.
KAFKA_CLUSTER_STOP_TIMEOUT_S = 5.0


def _group(settings, name: str) -> int:
    from btc_platform.ops.services.base import read_pid

    record = read_pid(settings, name)
    assert record is not None, f"{name} has no pid record"
    return record.pgid


def _wait(check, timeout_s: float, what: str):
    return wait_until(check, timeout_s, what, interval_s=0.2)


# ---------------------------------------------------------------------------------------------
# Kafka: three brokers, RF 3, min.insync.replicas 2
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def kafka_cluster(tmp_path):
    from btc_platform.ops import services

    def make_settings():
        port, controller = free_ports(2)
        return load_settings(data_dir=tmp_path, kafka_brokers=3, kafka_replication_factor=3,
                             kafka_min_insync_replicas=2, kafka_heap="256m", kafka_port=port,
                             kafka_controller_port=controller, kafka_partitions=3,
                             kafka_bootstrap_servers=f"127.0.0.1:{port}")  # fmt: skip

    settings = _start_with_free_ports(make_settings, services.start_kafka, lambda s: services.stop("kafka", s))
    # the bootstrap servers of every broker (the settings' default covers only the first)
    settings = load_settings(**{**{n: getattr(settings, n) for n in settings.model_fields_set},
                                "kafka_bootstrap_servers": ",".join(f"127.0.0.1:{p}" for p, _ in
                                                                    settings.kafka_broker_ports())})  # fmt: skip
    try:
        yield settings
    finally:
        # the brokers' data is thrown away: a short grace before SIGKILL (this stop used to wait out
        # the whole STOP_TIMEOUT_S, a broker still stopping after the test's kill and restart)
        services.stop("kafka", settings, timeout=KAFKA_CLUSTER_STOP_TIMEOUT_S)


def _topic_meta(settings):
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    return admin.list_topics(settings.kafka_topic, timeout=10).topics[settings.kafka_topic]


def test_kill_9_of_a_leading_broker_loses_and_duplicates_nothing(kafka_cluster):
    from confluent_kafka import Consumer, Producer, TopicPartition

    from btc_platform.ingest.producer import kafka_config
    from btc_platform.ops.process import wait_until_healthy
    from btc_platform.ops.services.base import read_pid
    from btc_platform.ops.services.kafka import kafka_health, start_broker

    settings = kafka_cluster
    meta = _topic_meta(settings)
    assert all(len(p.replicas) == 3 for p in meta.partitions.values())
    victim = meta.partitions[0].leader  # node id = broker index + 1
    led = {p for p, part in meta.partitions.items() if part.leader == victim}

    acked: dict[str, int] = {}
    failures: list[str] = []
    first_ack_after_kill: dict[int, float] = {}
    partitions_used: set[int] = set()
    killed_at: list[float] = []

    def report(err, msg):
        if err is not None:
            failures.append(str(err))
            return
        message_id = json.loads(msg.value())["message_id"]
        acked[message_id] = acked.get(message_id, 0) + 1
        partitions_used.add(msg.partition())
        if killed_at and msg.partition() in led and msg.partition() not in first_ack_after_kill:
            first_ack_after_kill[msg.partition()] = time.monotonic() - killed_at[0]

    producer = Producer(kafka_config(settings))
    total, kill_at = 20000, 8000
    for i in range(total):
        key = f"SYM{i % 31}"
        producer.produce(settings.kafka_topic, key=key, value=json.dumps({"message_id": f"m-{i:06d}", "i": i}),
                         on_delivery=report)  # fmt: skip
        producer.poll(0)
        if i == kill_at:
            producer.flush(30)  # half acked before the kill
            os.killpg(_group(settings, f"kafka-{victim}"), signal.SIGKILL)
            killed_at.append(time.monotonic())
        if i % 500 == 0:
            time.sleep(0.05)  # a steady stream, not one burst
    assert producer.flush(120) == 0, "messages still undelivered after 120 s"
    log.info("broker kill: first ack per partition led by the killed broker after %s s", first_ack_after_kill)

    start_broker(settings, victim - 1)
    restarted = time.monotonic()
    wait_until_healthy(read_pid(settings, f"kafka-{victim}"), lambda: kafka_health(settings), 90, "3 brokers")
    _wait(lambda: all(len(p.isrs) == 3 for p in _topic_meta(settings).partitions.values()), 90,
          "every partition back to 3 in-sync replicas")  # fmt: skip
    log.info("broker kill: broker restarted and back in sync after %.1f s", time.monotonic() - restarted)

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "fault-check",
                         "enable.auto.commit": False})  # fmt: skip
    seen: dict[str, int] = {}
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(settings.kafka_topic, p), timeout=10)[1]
                for p in meta.partitions}  # fmt: skip
        consumer.assign([TopicPartition(settings.kafka_topic, p, 0) for p in ends])
        deadline = time.monotonic() + 60
        while sum(seen.values()) < sum(ends.values()) and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=5000, timeout=1.0):
                assert msg.error() is None, msg.error()
                message_id = json.loads(msg.value())["message_id"]
                seen[message_id] = seen.get(message_id, 0) + 1
    finally:
        consumer.close()
    expected = {f"m-{i:06d}" for i in range(total)}
    assert failures == []
    assert set(acked) == expected and max(acked.values()) == 1
    lost = expected - set(seen)
    duplicated = {m for m, n in seen.items() if n > 1}
    log.info("broker kill: %d messages, lost %d, duplicated %d", total, len(lost), len(duplicated))
    assert (len(lost), len(duplicated), set(seen) - expected) == (0, 0, set())
    # the killed leader's partitions (those the keys use) got new leaders and took writes again
    assert led & partitions_used and set(first_ack_after_kill) == led & partitions_used


# ---------------------------------------------------------------------------------------------
# Spark standalone: master + two workers, a checkpointed streaming query
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def spark_cluster(tmp_path):
    from btc_platform.ops import services

    def make_settings():
        master, ui, worker_ui = free_ports(3)
        return load_settings(data_dir=tmp_path, spark_workers=2, spark_worker_cores=2, spark_worker_memory="1g",
                             spark_executor_cores=1, spark_executor_memory="512m", spark_cores_max=2,
                             spark_master_port=master, spark_master_ui_port=ui, spark_worker_ui_port=worker_ui,
                             spark_driver_host="127.0.0.1", spark_driver_memory="512m")  # fmt: skip

    def start(settings):
        settings = load_settings(**{**{n: getattr(settings, n) for n in settings.model_fields_set},
                                    "spark_master": settings.spark_standalone_url})  # fmt: skip
        services.start_spark(settings)

    settings = _start_with_free_ports(make_settings, start, lambda s: services.stop("spark", s))
    settings = load_settings(**{**{n: getattr(settings, n) for n in settings.model_fields_set},
                                "spark_master": settings.spark_standalone_url})  # fmt: skip
    try:
        yield settings
    finally:
        services.stop("spark", settings)


def test_kill_9_of_a_worker_mid_stream_reruns_its_tasks_on_the_other(spark_cluster, tmp_path):
    import pyarrow.parquet as pq

    from btc_platform.ops.services.spark import master_state, spark_health, start_worker
    from btc_platform.ops.supervisor.launch import child_env

    settings = spark_cluster
    out, status, stop = tmp_path / "out", tmp_path / "status.json", tmp_path / "stop"
    env, _ = child_env(settings)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "plugins"), str(ROOT), env.get("PYTHONPATH", "")])
    log_file = (tmp_path / "driver.log").open("wb")
    driver = subprocess.Popen([sys.executable, str(ROOT / "tests" / "spark_fault_driver.py"), "--out", str(out),
                               "--status", str(status), "--stop", str(stop)], env=env, stdout=log_file,
                              stderr=subprocess.STDOUT, cwd=tmp_path)  # fmt: skip

    def progress():
        if driver.poll() is not None:
            raise AssertionError(f"driver exited {driver.returncode}: {(tmp_path / 'driver.log').read_text()[-3000:]}")
        return json.loads(status.read_text()) if status.exists() else None

    def executors_on_both_workers():
        workers = master_state(settings).get("workers", [])
        return len([w for w in workers if w.get("state") == "ALIVE" and w.get("coresused", 0) > 0]) == 2

    try:
        _wait(lambda: (p := progress()) and p["batch_id"] >= 3, 120, "3 batches on the cluster")
        _wait(executors_on_both_workers, 30, "an executor on each worker")
        before = progress()
        os.killpg(_group(settings, "spark-worker-1"), signal.SIGKILL)
        killed = time.monotonic()
        after = _wait(lambda: (p := progress()) and p["batch_id"] > before["batch_id"] + 1 and p, 120,
                      "two batches after the kill")  # fmt: skip
        recovery = time.monotonic() - killed
        log.info("worker kill: batch %d -> %d within %.1f s, same application %s", before["batch_id"],
                 after["batch_id"], recovery, after["app_id"] == before["app_id"])  # fmt: skip
        assert after["app_id"] == before["app_id"] and after["pid"] == before["pid"]  # the job did not stop
        apps = [a["id"] for a in master_state(settings).get("activeapps", [])]
        assert apps == [before["app_id"]]

        start_worker(settings, 0)
        _wait(lambda: spark_health(settings) is None, 60, "worker 1 registered again")
        _wait(lambda: (p := progress()) and p["batch_id"] > after["batch_id"] + 1, 60, "batches after the restart")
    finally:
        stop.touch()
        try:
            driver.wait(timeout=90)
        finally:
            if driver.poll() is None:
                driver.kill()
            log_file.close()
    assert driver.returncode == 0, (tmp_path / "driver.log").read_text()[-3000:]
    # the files the sink committed (its _spark_metadata log); a task killed with its executor may
    # leave a file that no batch committed, which readers of the sink ignore the same way
    committed = set()
    for path in sorted((out / "data" / "_spark_metadata").iterdir()):
        if not (path.name.isdigit() or path.name.endswith(".compact")):
            continue  # .crc side files
        for line in path.read_text().splitlines()[1:]:
            entry = json.loads(line)
            if entry.get("action", "add") == "add":
                committed.add(entry["path"].removeprefix("file://"))
    values = [v for f in sorted(committed) for v in pq.read_table(f, columns=["value"]).column("value").to_pylist()]
    assert values, "no rows written"
    # every generated row exactly once: the batch the killed worker was running was rerun, not lost
    # nor written twice (the file sink commits a batch's files once)
    assert len(values) == len(set(values)) and sorted(values) == list(range(len(values)))
