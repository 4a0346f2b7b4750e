"""The monitor process end to end: a supervised process killed with SIGKILL gives one e-mail
(a real SMTP server, aiosmtpd) and one webhook call (a local HTTP receiver, first unreachable:
retried with backoff), and one "resolved" of each once it runs again; a real Prometheus
(Debian's package, ``make prometheus``) scrapes the metrics and fires the shipped rule; the
shipped rules pass ``promtool check rules``."""

from __future__ import annotations

import email
import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from btc_platform.testing.polling import free_ports, wait_until

pytestmark = [pytest.mark.integration]


class Mailbox:
    """aiosmtpd handler: keeps each message's subject."""

    def __init__(self):
        self.subjects: list[str] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.subjects.append(str(email.message_from_bytes(envelope.content)["Subject"]).replace("\n", ""))
        return "250 OK"


def webhook_receiver(port: int) -> tuple[ThreadingHTTPServer, list[dict]]:
    calls: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's hook name
            calls.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, calls


def _start_fake(settings, name: str):
    """A process with the supervisor's pid record of ``name`` (what the supervisor starts)."""
    from btc_platform.ops import process
    from btc_platform.ops.supervisor import log_path, record_path

    return process.start(name, ["sleep", "600"], log_file=log_path(settings, name),
                         record_file=record_path(settings, name), env=dict(os.environ), cwd=settings.data_dir)  # fmt: skip


def _kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_the_shipped_prometheus_rules_pass_promtool():
    from btc_platform.monitoring.prometheus import RULES_FILE, ensure_prometheus

    promtool = ensure_prometheus(install=False)["promtool"]
    done = subprocess.run([promtool, "check", "rules", str(RULES_FILE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 12 rules found" in done.stdout


def test_a_killed_stream_is_told_once_by_mail_and_webhook_resolved_once_and_scraped(tmp_path):
    from aiosmtpd.controller import Controller

    from btc_platform.monitoring.prometheus import RULES_FILE, ensure_prometheus
    from btc_platform.settings import load_settings

    binaries = ensure_prometheus(install=False)
    smtp_port, hook_port, metrics_port, prom_port = free_ports(4)
    data = tmp_path / "data"
    settings = load_settings(data_dir=data)
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "BTC_DATA_DIR": str(data),
           "BTC_MONITOR_PORT": str(metrics_port), "BTC_MONITOR_INTERVAL_S": "1",
           "BTC_ALERT_EMAIL_TO": "ops@example.org", "BTC_ALERT_SMTP_PORT": str(smtp_port),
           "BTC_ALERT_SMTP_SECURITY": "none", "BTC_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/hook",
           "BTC_ALERT_RAW_STALE_S": "3600", "BTC_ALERT_DISK_FREE_RATIO": "0.0001"}  # fmt: skip
    producer, stream = _start_fake(settings, "producer"), _start_fake(settings, "stream")
    log_file = open(tmp_path / "monitor.log", "wb")  # noqa: SIM115 - closed in finally
    monitor = subprocess.Popen([sys.executable, "-m", "btc_platform.monitoring"], env=env, stdout=log_file,
                               stderr=subprocess.STDOUT)  # fmt: skip
    prometheus = hook = None
    try:
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        wait_until(lambda: _get(metrics_url) and 'btc_process_up{process="stream"} 1.0' in _get(metrics_url), 60,
                 "the monitor's metrics with the stream up")  # fmt: skip
        _kill9(stream.pid)
        wait_until(lambda: any("FIRING" in s for s in mailbox.subjects), 60, "the alert e-mail")
        monitor_log = lambda: (tmp_path / "monitor.log").read_text()  # noqa: E731
        wait_until(lambda: "alert delivery by webhook failed" in monitor_log(), 30, "the failed webhook attempt")
        hook, calls = webhook_receiver(hook_port)  # the receiver comes up: the next attempt gets through
        wait_until(lambda: calls, 60, "the webhook call after the backoff")

        config = tmp_path / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES_FILE)],
            "scrape_configs": [{"job_name": "btc", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
        }))  # fmt: skip
        prometheus = subprocess.Popen([binaries["prometheus"], f"--config.file={config}",
                                       f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                       f"--web.listen-address=127.0.0.1:{prom_port}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        api = f"http://127.0.0.1:{prom_port}/api/v1"
        wait_until(lambda: _firing(api, "BtcProcessDown", "stream"), 90, "Prometheus firing BtcProcessDown")
        up = requests.get(f"{api}/query", params={"query": "btc_process_up"}, timeout=5).json()["data"]["result"]
        assert {r["metric"]["process"]: r["value"][1] for r in up} == {"producer": "1", "stream": "0"}

        _start_fake(settings, "stream")  # what the supervisor does
        wait_until(lambda: any("RESOLVED" in s for s in mailbox.subjects) and
                 any("RESOLVED" in c["text"] for c in calls), 60, "the resolved messages")  # fmt: skip
        seen = _observed_at(metrics_url)  # three more evaluations: nothing more may be sent
        wait_until(lambda: _observed_at(metrics_url) > seen + 3, 30, "three more evaluations")
        assert [s.split(":")[0] for s in mailbox.subjects] == ["[BTC FIRING] process_down", "[BTC RESOLVED] process_down"]
        assert [c["text"].split(":")[0] for c in calls] == ["[BTC FIRING] process_down", "[BTC RESOLVED] process_down"]
        assert "stream is down: process" in mailbox.subjects[0]
    finally:
        for child in (prometheus, monitor):
            if child is not None:
                child.terminate()
                child.wait(30)
        log_file.close()
        smtp.stop()
        if hook is not None:
            hook.shutdown()
        for record in (producer,):
            _kill9(record.pid)
    state = json.loads((data / "monitoring" / "alerts.json").read_text())
    assert state["open"] == {} and state["outbox"] == []
    assert [r["key"] for r in state["recent"]] == ["process_down:stream"]
    assert Path(tmp_path / "monitor.log").read_text().count("tried again in") >= 1


def _get(url: str) -> str | None:
    try:
        answer = requests.get(url, timeout=2)
    except requests.RequestException:
        return None
    return answer.text if answer.status_code == 200 else None


def _observed_at(url: str) -> float:
    for line in (_get(url) or "").splitlines():
        if line.startswith("btc_monitor_last_observation_timestamp_seconds "):
            return float(line.split()[1])
    return 0.0


def _firing(api: str, name: str, process: str) -> bool:
    try:
        alerts = requests.get(f"{api}/alerts", timeout=2).json()["data"]["alerts"]
    except requests.RequestException:
        return False
    return any(a["labels"].get("alertname") == name and a["labels"].get("process") == process
               and a["state"] == "firing" for a in alerts)  # fmt: skip
