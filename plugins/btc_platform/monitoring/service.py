"""The monitor process: the alert rules' loop, the delivery threads and the metrics endpoint.

``python -m btc_platform.monitoring`` (``btc-services`` starts it with the platform and the
supervisor restarts it like Kafka). Every ``BTC_MONITOR_INTERVAL_S`` it observes the platform
(:class:`~btc_platform.monitoring.observe.Observer`), evaluates the rules, opens and closes
incidents and queues their messages (``state.apply``), saves the state, and hands the
observation to the metrics collector. Sending happens in one
:class:`~btc_platform.monitoring.channels.Deliverer` thread per channel; the metrics are served
by prometheus-client's HTTP server on ``127.0.0.1:BTC_MONITOR_PORT`` (``/metrics``; no login,
so loopback only).

Why a process of its own rather than the supervisor's trigger in Airflow's triggerer or a route
of the dashboard: alerts must come when Airflow itself is in trouble (a dead scheduler, failing
DAG runs), Prometheus cannot log in to Airflow's API server, and the process costs one Python
interpreter that sleeps between ticks (its figures: docs/monitoring.md).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from btc_platform.monitoring import channels as alert_channels
from btc_platform.monitoring import rules
from btc_platform.monitoring import state as alert_state
from btc_platform.settings import Settings

log = logging.getLogger(__name__)


def alerts_summary(state: alert_state.AlertState) -> dict[str, Any]:
    """What the metrics export of the alert state."""
    outbox: dict[str, int] = {}
    for entry in state.outbox:
        outbox[entry["channel"]] = outbox.get(entry["channel"], 0) + 1
    return {"open": dict(state.open), "outbox": outbox, "undelivered": len(state.undelivered)}


class Monitor:
    """One monitor: :meth:`tick` is one evaluation (tests call it), :meth:`run` the loop."""

    def __init__(self, settings: Settings, observer=None, now: float | None = None):
        from btc_platform.monitoring.metrics import PlatformCollector
        from btc_platform.monitoring.observe import Observer

        self.settings = settings
        self.config = rules.RuleConfig.from_settings(settings)
        self.channels = alert_channels.channels(settings)
        self.lock = threading.Lock()
        self.state = alert_state.load(settings)
        self._drop_unconfigured(time.time() if now is None else now)
        self.observer = observer or Observer(settings, now)
        self.collector = PlatformCollector(settings.alert_consolidation_delay_s)
        self.deliverers = [alert_channels.Deliverer(settings, channel, self.state, self.lock, self.persist)
                           for channel in self.channels]  # fmt: skip
        self.stopping = threading.Event()

    def _drop_unconfigured(self, now: float) -> None:
        """Messages queued for a channel that is no longer configured are given up (logged)."""
        for entry in [e for e in self.state.outbox if e["channel"] not in self.channels]:
            alert_state.failed(self.state, entry["channel"], [entry], now, "channel no longer configured", 0.0, 0.0)

    def persist(self) -> None:
        alert_state.save(self.settings, self.state)

    def tick(self, now: float | None = None) -> list[dict[str, Any]]:
        """Observe, evaluate, update the incidents and the metrics; returns the new messages."""
        obs, details = self.observer.observe(now)
        with self.lock:
            self.state.history = rules.remember(self.state.history, obs, self.config)
            findings = rules.evaluate(obs, self.state.history, self.config)
            messages = alert_state.apply(self.state, findings, obs.at, self.channels)
            self.persist()
            summary = alerts_summary(self.state)
        self.collector.update(obs, details, summary)
        if messages:
            for deliverer in self.deliverers:
                deliverer.wake()
        return messages

    def serve_metrics(self):
        """Start the ``/metrics`` endpoint on 127.0.0.1 (returns the server, to shut it down)."""
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.collector)
        server, _thread = start_http_server(self.settings.monitor_port, addr="127.0.0.1", registry=registry)
        log.info("metrics on http://127.0.0.1:%d/metrics", self.settings.monitor_port)
        return server

    def run(self) -> None:
        """The loop until SIGTERM / SIGINT (or :attr:`stopping`)."""
        server = self.serve_metrics()
        for deliverer in self.deliverers:
            deliverer.start()
        log.info("monitoring every %g s; alert channels: %s", self.settings.monitor_interval_s,
                 ", ".join(self.channels) or "none (alerts are kept and shown on the dashboard only)")  # fmt: skip
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                try:
                    self.tick()
                except Exception:  # noqa: BLE001 - one failed tick must not end monitoring; logged, next tick
                    log.exception("monitor tick failed; next try in %g s", self.settings.monitor_interval_s)
                self.stopping.wait(max(0.0, self.settings.monitor_interval_s - (time.monotonic() - started)))
        finally:
            for deliverer in self.deliverers:
                deliverer.stop()
            server.shutdown()
            self.observer.close()
            log.info("monitor stopped")


def main() -> int:
    from btc_platform.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    monitor = Monitor(get_settings())
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: monitor.stopping.set())
    monitor.run()
    return 0
