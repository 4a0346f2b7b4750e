"""Producer benchmark: the simulate source publishing as fast as it can into a real Kafka.

Prints messages/s (accepted by librdkafka and confirmed by the broker) and the p50/p99 delivery
latency (delivery report time - produce time, ``Message.latency()``) over ``--duration`` seconds
(default 30), plus the simulator's own generation rate without Kafka, the producer process's CPU
time and messages per CPU-second (a figure that stays meaningful when other work shares the cores;
the 1-minute load average is printed too).

Kafka: ``BTC_KAFKA_BOOTSTRAP_SERVERS`` if set in the environment, else a temporary single-node
broker started with btc_platform.ops.services on free ports (stopped at the end). The price path is
driven by the 1-minute candles in ``$BTC_BENCH_DATA_DIR/btc_usdt_1m_2023-03_2023-05.csv``
(default ../shared/data) when present, else a random walk.

    .venv/bin/python bench/bench_producer.py [--duration 30]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("bench.producer")

CANDLES = "btc_usdt_1m_2023-03_2023-05.csv"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _candles() -> Path | None:
    data_dir = Path(os.environ.get("BTC_BENCH_DATA_DIR", ROOT.parent / "shared" / "data"))
    path = data_dir / CANDLES
    if path.is_file():
        return path
    log.info("candle file %s not found: using the random-walk price path", path)
    return None


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


class _NullContext:
    def idle(self, seconds):
        return True

    def stopping(self):
        return False

    def reject(self, source, reason, payload):
        raise RuntimeError(reason)

    def poll_ok(self, source):
        pass


def generation_rate(candles: Path | None, seconds: float = 5.0) -> float:
    """Messages/s the simulate source produces with no Kafka behind it."""
    from btc_platform.ingest.sources import SimulateSource

    source = SimulateSource(["BTCUSDT"], coingecko_symbol="BTCUSDT", candles=candles, speed=0, seed=1)
    iterator = source.messages(_NullContext())
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in itertools.islice(iterator, 10000):
            count += 1
    return count / (time.perf_counter() - started)


def run(duration_s: float, workdir: Path) -> dict[str, float]:
    from btc_platform.ingest.producer import FeedProducer
    from btc_platform.ingest.sources import SimulateSource
    from btc_platform.ops import services
    from btc_platform.settings import load_settings

    topic = f"bench-producer-{uuid.uuid4().hex[:8]}"
    external = os.environ.get("BTC_KAFKA_BOOTSTRAP_SERVERS")
    if external:
        settings = load_settings(data_dir=workdir, kafka_topic=topic)
        log.info("using Kafka at %s", external)
    else:
        port, controller = _free_port(), _free_port()
        settings = load_settings(data_dir=workdir, kafka_topic=topic, kafka_port=port,
                                 kafka_controller_port=controller, kafka_bootstrap_servers=f"127.0.0.1:{port}")
        log.info("starting a temporary Kafka on 127.0.0.1:%d", port)
        services.start_kafka(settings)
    try:
        services.ensure_topic(settings, topic, settings.kafka_partitions)
        candles = _candles()
        gen = generation_rate(candles)
        app = FeedProducer(settings, source_mode="simulate", collect_latency=True)
        source = SimulateSource(settings.binance_symbols, coingecko_symbol=settings.coingecko_symbol,
                                candles=candles, speed=0, seed=1)
        started, cpu_started = time.perf_counter(), time.process_time()
        app.run(source, duration_s=duration_s)
        total = time.perf_counter() - started
        cpu = time.process_time() - cpu_started  # this process incl. librdkafka threads
        latencies = sorted(x for x in app.latencies if x is not None)
        return {
            "duration_s": duration_s,
            "wall_s_incl_flush": total,
            "accepted": app.accepted,
            "published": app.published,
            "failed": app.failed,
            "accepted_per_s": app.accepted / duration_s,
            "published_per_s": app.published / total,
            "generation_only_per_s": gen,
            "producer_cpu_s": cpu,
            "published_per_producer_cpu_s": app.published / cpu if cpu else float("nan"),
            "latency_p50_ms": _percentile(latencies, 0.50) * 1000,
            "latency_p99_ms": _percentile(latencies, 0.99) * 1000,
            "latency_max_ms": (latencies[-1] if latencies else float("nan")) * 1000,
            "partitions": settings.kafka_partitions,
            "load_avg_1m": os.getloadavg()[0],
        }
    finally:
        if not external:
            services.stop("kafka", settings)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of publishing (default 30)")
    args = parser.parse_args(argv if argv is not None else [])
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="bench-producer-") as tmp:
        figures = run(args.duration, Path(tmp))
    log.info("producer benchmark (simulate source -> Kafka, acks=all, idempotent, lz4)")
    for key, value in figures.items():
        log.info("  %-24s %14s", key, f"{value:,.1f}" if isinstance(value, float) else f"{value:,}")
    target = 50_000
    verdict = "meets" if figures["published_per_s"] >= target else "BELOW"
    log.info("  published msg/s %s the %d msg/s target", verdict, target)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
