"""Time to alert in ``make chaos``: the platform's own monitor (``python -m btc_platform.monitoring``,
started as ``btc-services`` starts it, with the suite's platform settings) watches the platform
under fault, and a local webhook receiver (Slack-compatible ``{"text": ...}``, what
``BTC_ALERT_WEBHOOK_URL`` posts) notes when each FIRING and RESOLVED line arrives.

Per scenario (``bench/chaos.py``): the first alert that fired after the fault began (seconds,
incident key), and when the last of the incidents opened in the scenario was resolved. A scenario
listed in :data:`EXPECTED` must raise its alert within the limit (a process death 60 s, staleness
3 min: issue 28); otherwise its row is not ok.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("chaos")

DEATH_S = 60.0
STALE_S = 180.0
#: scenario part -> (incident key prefix that must fire, within seconds of the fault)
EXPECTED = {
    "producer_kill": ("process_down:producer", DEATH_S),
    "stream_kill": ("process_down:stream", DEATH_S),
    "producer_down": ("process_down:producer", DEATH_S),
    "stream_down": ("process_down:stream", DEATH_S),
    "crash_all": ("process_down:", DEATH_S),
    "scheduler_kill": ("process_down:producer", DEATH_S),
    "spool_full": ("raw_stale", STALE_S),
}


@dataclass(frozen=True)
class Arrival:
    at: float  # epoch seconds the receiver got it
    kind: str  # "firing" | "resolved"
    key: str


def parse(text: str, at: float) -> list[Arrival]:
    """The FIRING / RESOLVED lines of one webhook text (the subject line, then one line per
    message: ``btc_platform.monitoring.state.render``)."""
    out = []
    for line in text.splitlines()[1:]:
        kind, _, rest = line.partition(" ")
        key, colon, _ = rest.partition(": ")  # keys have no ": " (``rule`` or ``rule:subject``)
        if kind in ("FIRING", "RESOLVED") and colon:
            out.append(Arrival(at, kind.lower(), key))
    return out


class Receiver:
    """The webhook receiver on 127.0.0.1 (a free port); :attr:`arrivals` in arrival order."""

    def __init__(self):
        self.arrivals: list[Arrival] = []
        self._lock = threading.Lock()
        receiver = self

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's hook name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                got = parse(str(body.get("text", "")), time.time())
                with receiver._lock:
                    receiver.arrivals.extend(got)
                for a in got:
                    log.info("alert webhook: %s %s", a.kind.upper(), a.key)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, name="chaos-webhook", daemon=True).start()

    def since(self, start: float) -> list[Arrival]:
        with self._lock:
            return [a for a in self.arrivals if a.at >= start]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Told:
    """What the alerts said about one scenario (seconds from the fault)."""

    first_s: float | None = None
    first_key: str = ""
    resolved_s: float | None = None  # the last incident opened in the scenario was resolved
    still_open: tuple[str, ...] = ()
    note: str = ""


def told(arrivals: list[Arrival], fault_at: float) -> Told:
    """Time to the first alert after ``fault_at`` and to the resolution of every incident opened."""
    fired: dict[str, float] = {}
    resolved: dict[str, float] = {}
    for a in arrivals:
        if a.at < fault_at:
            continue
        if a.kind == "firing":
            fired.setdefault(a.key, a.at)
        elif a.key in fired and a.at >= fired[a.key]:
            resolved[a.key] = a.at
    if not fired:
        return Told(note="no alert")
    first_key = min(fired, key=fired.get)
    still_open = tuple(sorted(k for k in fired if k not in resolved))
    parts = [f"{k} +{fired[k] - fault_at:.0f} s" + (f" (resolved +{resolved[k] - fault_at:.0f} s)" if k in resolved
                                                       else " (still open)")
             for k in sorted(fired, key=fired.get)]  # fmt: skip
    return Told(first_s=fired[first_key] - fault_at, first_key=first_key,
                resolved_s=None if still_open else max(resolved.values()) - fault_at, still_open=still_open,
                note="alerts: " + ", ".join(parts))  # fmt: skip


def judge(scenario_parts: list[str], arrivals: list[Arrival], fault_at: float) -> str | None:
    """Why the alerts of a scenario fall short of :data:`EXPECTED` (None: they do not)."""
    for part in scenario_parts:
        if part not in EXPECTED:
            continue
        prefix, limit = EXPECTED[part]
        times = [a.at - fault_at for a in arrivals if a.kind == "firing" and a.at >= fault_at and a.key.startswith(prefix)]
        if not times:
            return f"no {prefix} alert (expected within {limit:.0f} s)"
        if min(times) > limit:
            return f"{prefix} alert after {min(times):.0f} s (limit {limit:.0f} s)"
    return None


#: Sends per channel and hour (``BTC_ALERT_MAX_PER_HOUR``, 20 by default): the suite opens an
#: incident every few minutes, more than the live limit lets through in an hour (what is due beyond
#: it waits for the budget, then goes out as one digest, which would be timed here as a late alert).
MAX_PER_HOUR = 1000


def start_monitor(platform, receiver: Receiver) -> None:
    """The platform's monitor with this platform's settings, posting to ``receiver``; every
    ``monitor_interval_s`` as configured (10 s by default), without the hourly send limit."""
    from btc_platform.ops import services
    from btc_platform.testing.polling import free_ports

    (port,) = free_ports(1)
    platform.build_settings(monitor_port=port, alert_webhook_url=receiver.url, alert_max_per_hour=MAX_PER_HOUR)
    services.start_monitor(platform.settings)


def stop_monitor(platform) -> None:
    from btc_platform.ops import services

    services.stop("monitor", platform.settings)
