"""The streaming job against a REAL Kafka broker (and once a real HDFS), run as a subprocess the
way the supervisor runs it: messages published with confluent-kafka, including duplicates and
malformed records; the outputs are read back with Spark through the file sinks' logs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from btc_platform.ingest import schema
from btc_platform.lakehouse import datasets
from btc_platform.status import read_status
from btc_platform.testing.stream_testdata import SYMBOL, book, tamper

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "spark_jobs" / "stream_job.py"


def publish(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 20}
    )
    errors: list[str] = []

    def delivered(err, _msg) -> None:
        if err is not None:
            errors.append(str(err))

    for value in values:
        producer.produce(topic, key=SYMBOL.encode(), value=value, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert errors == []


def messages(count: int, offset_s: float = 0.0) -> list[dict]:
    return [
        book(offset_s + i * 0.01, f"{40000 + i % 97}.5", f"{40001 + i % 97}.5", "1.25", "0.5")
        for i in range(count)
    ]


MALFORMED = [b"not json", b'{"schema_version": 9}', b"[]"]


def job_env(tmp_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "BTC_DATA_DIR": str(tmp_path / "data"),
            "BTC_SPARK_SHUFFLE_PARTITIONS": "2",
            **(extra or {}),
        }
    )
    return env


def job_cmd(bootstrap: str, topic: str, storage: str, *extra: str) -> list[str]:
    return [
        sys.executable, str(JOB),
        "--master", "local[2]",
        "--bootstrap-servers", bootstrap,
        "--topic", topic,
        "--storage-root", storage,
        "--watermark", "10 seconds",
        *extra,
    ]  # fmt: skip


def run_available_now(
    cmd: list[str], env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*cmd, "--available-now"], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def read(spark, uri: str):
    return spark.read.format("delta").load(uri)


def new_topic(kafka_service, partitions: int = 3) -> str:
    return kafka_service.create_topic(f"stream-{uuid.uuid4().hex[:8]}", partitions)


def test_raw_holds_valid_unique_messages_and_quarantine_the_rest(kafka_service, spark, tmp_path):
    topic = new_topic(kafka_service)
    valid = messages(300)
    # the same observations polled again 5 s later: same message_id, other ingest_time
    duplicates = [
        dict(m, ingest_time=schema.format_ts(schema.parse_ts(m["ingest_time"]) + timedelta(seconds=5)))
        for m in valid[:25]
    ]
    bad = [*MALFORMED, tamper(valid[0], ask_price=1.0), tamper(valid[1], bid_qty=-3)]
    values = [schema.encode(m) for m in valid] + [schema.encode(m) for m in duplicates] + bad
    publish(kafka_service.bootstrap_servers, topic, values)

    storage = f"file://{tmp_path}/store"
    env = job_env(tmp_path)
    run_available_now(job_cmd(kafka_service.bootstrap_servers, topic, storage), env)

    raw = read(spark, f"{storage}/{datasets.RAW_DATA}")
    counts = Counter(r.message_id for r in raw.select("message_id").collect())
    assert set(counts) == {m["message_id"] for m in valid}
    assert max(counts.values()) == 1
    assert raw.where(raw.kafka_topic != topic).count() == 0

    quarantine = read(spark, f"{storage}/{datasets.QUARANTINE}").collect()
    assert sorted(bytes(q.value) for q in quarantine) == sorted(bad)
    reasons = Counter(q.reason.split(":")[0] for q in quarantine)
    assert reasons == {
        "unparseable_json": 2,
        "unsupported_schema_version": 1,
        "ask_below_bid": 1,
        "negative_value": 1,
    }
    assert len({(q.kafka_partition, q.kafka_offset) for q in quarantine}) == len(bad)

    status = read_status(tmp_path / "data" / "status" / "stream.json")
    assert set(status["queries"]) == {"ingest", "minute_metrics"}
    seen = status["queries"]["ingest"]
    assert (seen["valid_total"], seen["quarantined_total"]) == (len(values) - len(bad), len(bad))
    assert (seen["stored_total"], seen["duplicates_total"]) == (len(valid), len(duplicates))
    assert sum(status["end_offset"][topic].values()) == len(values)
    # when rows were last written (the monitor's raw-data-stale rule): a batch's end, not after the last one
    last_end = datetime.fromisoformat(seen["timestamp"].replace("Z", "+00:00")) + timedelta(
        milliseconds=seen["batch_duration_ms"])
    assert seen["last_rows_at"] is not None and datetime.fromisoformat(seen["last_rows_at"]) <= last_end

    # the hourly audit of the range: every Kafka record in raw_data once or in quarantine ...
    from delta.tables import DeltaTable

    from btc_platform.settings import load_settings
    from spark_jobs import audit

    settings = load_settings(data_dir=tmp_path / "data", storage_root=storage, kafka_topic=topic,
                             kafka_bootstrap_servers=kafka_service.bootstrap_servers)  # fmt: skip
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start, end = hour - timedelta(hours=1), hour + timedelta(hours=1)
    rows = audit.run(spark, settings, start, end)
    assert {r.symbol for r in rows} == {SYMBOL} and {r.status for r in rows} == {"pass"}
    assert sum(int(re.search(r"(\d+) message\(s\)", r.detail).group(1)) for r in rows) == len(valid)
    # ... and red, naming the message, when raw_data lost one
    lost = valid[7]["message_id"]
    DeltaTable.forPath(spark, f"{storage}/{datasets.RAW_DATA}").delete(f"message_id = '{lost}'")
    with pytest.raises(audit.IngestIncompleteError, match=f"1 missing.*{lost}"):
        audit.run(spark, settings, start, end)
    checks = read(spark, f"{storage}/{datasets.DATA_QUALITY}").where("check = 'ingest_complete'").collect()
    assert sorted(r.status for r in checks).count("fail") == 1 and len(checks) == len(rows)


def wait_for_batches(
    status_path: Path, query: str, batches: int, proc: subprocess.Popen, timeout: float = 300
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "job exited early"
        record = read_status(status_path) if status_path.exists() else None
        progress = (record or {}).get("queries", {}).get(query, {})
        if progress.get("batch_id") is not None and progress["batch_id"] >= batches:
            return
        time.sleep(0.5)
    raise AssertionError(f"{query} did not reach batch {batches} in {timeout} s")


def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(kafka_service, spark, tmp_path):
    topic = new_topic(kafka_service)
    # killed after batch 3 of 1,000 (4,000-5,000 stored): 3,000 left for the restart, which its
    # available-now run reads in a few batches of the same bound
    valid = messages(8000)
    values = [schema.encode(m) for m in valid]
    values[2500:2500] = MALFORMED
    publish(kafka_service.bootstrap_servers, topic, values)

    storage = f"file://{tmp_path}/store"
    env = job_env(tmp_path)
    cmd = job_cmd(
        kafka_service.bootstrap_servers,
        topic,
        storage,
        "--trigger",
        "1 second",
        "--max-offsets-per-trigger",
        "1000",
    )
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        wait_for_batches(tmp_path / "data" / "status" / "stream.json", "ingest", 3, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the job and its JVM, no chance to clean up
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    partial = read(spark, f"{storage}/{datasets.RAW_DATA}").count()
    assert 0 < partial < len(valid)  # killed mid-stream

    run_available_now(cmd, env)

    raw_ids = Counter(
        r.message_id for r in read(spark, f"{storage}/{datasets.RAW_DATA}").select("message_id").collect()
    )
    assert set(raw_ids) == {m["message_id"] for m in valid}
    assert max(raw_ids.values()) == 1
    quarantine = read(spark, f"{storage}/{datasets.QUARANTINE}").collect()
    assert sorted(bytes(q.value) for q in quarantine) == sorted(MALFORMED)


def test_sigterm_stops_cleanly_with_exit_zero(kafka_service, tmp_path):
    topic = new_topic(kafka_service, partitions=1)
    publish(kafka_service.bootstrap_servers, topic, [schema.encode(m) for m in messages(50)])
    env = job_env(tmp_path)
    cmd = job_cmd(kafka_service.bootstrap_servers, topic, f"file://{tmp_path}/store", "--trigger", "1 second")
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        wait_for_batches(tmp_path / "data" / "status" / "stream.json", "ingest", 0, proc)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    assert proc.returncode == 0, stderr[-3000:]
    assert "received SIGTERM" in stderr


def test_configuration_error_exits_2_with_a_reason(tmp_path):
    """A fatal configuration error exits non-zero with a one-line reason."""
    result = subprocess.run(
        [sys.executable, str(JOB), "--storage-root", "s3://bucket/x"],
        env=job_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "BTC_STORAGE_ROOT" in result.stderr and "s3://bucket/x" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_storage_on_hdfs(kafka_service, hdfs_service, spark, tmp_path):
    topic = new_topic(kafka_service, partitions=2)
    valid = messages(200)
    publish(kafka_service.bootstrap_servers, topic, [schema.encode(m) for m in valid] + MALFORMED)
    storage = f"{hdfs_service.uri}/bitcoin-{uuid.uuid4().hex[:6]}"
    env = job_env(
        tmp_path, {"BTC_HDFS_NAMENODE_HTTP_PORT": str(hdfs_service.settings.hdfs_namenode_http_port)}
    )
    result = run_available_now(job_cmd(kafka_service.bootstrap_servers, topic, storage), env)
    assert "ready: safe mode off" in result.stderr

    raw_ids = Counter(
        r.message_id for r in read(spark, f"{storage}/{datasets.RAW_DATA}").select("message_id").collect()
    )
    assert set(raw_ids) == {m["message_id"] for m in valid} and max(raw_ids.values()) == 1
    assert read(spark, f"{storage}/{datasets.QUARANTINE}").count() == len(MALFORMED)
    status = read_status(tmp_path / "data" / "status" / "stream.json")
    assert status["queries"]["ingest"]["valid_total"] == len(valid)
