"""Alert channels on Airflow's notifier mechanism, and the thread that delivers the outbox.

* e-mail: the SMTP provider's ``SmtpNotifier`` (``apache-airflow-providers-smtp``), through the
  Airflow connection :data:`SMTP_CONN_ID`, which :func:`use_smtp_settings` builds from the
  ``BTC_ALERT_SMTP_*`` settings (an ``AIRFLOW_CONN_*`` variable of this process);
* webhook: :class:`WebhookNotifier`, a ``BaseNotifier`` that POSTs Slack-compatible JSON
  (``{"text": ...}``) to ``BTC_ALERT_WEBHOOK_URL``.

Both are ordinary Airflow notifiers (a DAG may use them as callbacks too). The monitor calls
their ``notify`` from :class:`Deliverer`, a thread of its own: the rules loop only queues
messages (``btc_platform.monitoring.state``), so a channel that hangs or is unreachable delays
nothing but its own messages. A failed send is logged and tried again after a doubling pause
(``state.failed``); the provider's own SMTP retries are off (``retry_limit`` 0), the pause is ours.

Airflow is imported by the first send (a few seconds, once per process), never by the rules.
"""

from __future__ import annotations

import html
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from btc_platform.monitoring import state as alert_state
from btc_platform.settings import Settings

log = logging.getLogger(__name__)

SMTP_CONN_ID = "btc_alert_smtp"
EMAIL, WEBHOOK = "email", "webhook"
#: Longest sleep of the delivery thread when nothing is due (it is woken for new messages).
IDLE_S = 30.0


class DeliveryError(RuntimeError):
    """A channel refused or could not take a message; the text says which and why."""


def channels(settings: Settings) -> list[str]:
    """The configured channels (none configured: alerts are only kept and shown on the dashboard)."""
    found = []
    if settings.alert_email_to.strip():
        found.append(EMAIL)
    if settings.alert_webhook_url.strip():
        found.append(WEBHOOK)
    return found


def smtp_connection(settings: Settings) -> str:
    """The Airflow connection (JSON form) of the alert SMTP server."""
    extra = {
        "disable_ssl": settings.alert_smtp_security != "ssl",
        "disable_tls": settings.alert_smtp_security != "starttls",
        "timeout": max(1, round(settings.alert_send_timeout_s)),
        "retry_limit": 0,
    }
    conn: dict[str, Any] = {"conn_type": "smtp", "host": settings.alert_smtp_host, "port": settings.alert_smtp_port,
                            "extra": extra}  # fmt: skip
    if settings.alert_smtp_user:
        conn.update(login=settings.alert_smtp_user, password=settings.alert_smtp_password)
    return json.dumps(conn)


def use_smtp_settings(settings: Settings) -> None:
    """Define :data:`SMTP_CONN_ID` for this process from the settings (one source of truth)."""
    os.environ[f"AIRFLOW_CONN_{SMTP_CONN_ID.upper()}"] = smtp_connection(settings)


def _webhook_class():
    from airflow.sdk import BaseNotifier

    class WebhookNotifier(BaseNotifier):
        """POST ``{"text": text}`` (Slack's incoming-webhook format) to ``url``; a non-2xx answer
        or a transport error raises :class:`DeliveryError`."""

        template_fields = ("text",)

        def __init__(self, *, url: str, text: str, timeout_s: float = 10.0, **kwargs: Any):
            super().__init__(**kwargs)
            self.url = url
            self.text = text
            self.timeout_s = timeout_s

        def notify(self, context: Any) -> None:
            import requests

            try:
                answer = requests.post(self.url, json={"text": self.text}, timeout=(self.timeout_s, self.timeout_s))
            except requests.RequestException as exc:
                raise DeliveryError(f"webhook {self.url}: {type(exc).__name__}: {exc}") from exc
            if not 200 <= answer.status_code < 300:
                raise DeliveryError(f"webhook {self.url} answered HTTP {answer.status_code}: {answer.text[:200]}")

    WebhookNotifier.__module__ = __name__
    return WebhookNotifier


_NOTIFIERS: dict[str, type] = {}
#: Importing Airflow from two delivery threads at once breaks its configuration: one at a time.
_IMPORT_LOCK = threading.Lock()


def notifier_classes() -> dict[str, type]:
    """The notifier class of each channel (built on first use: importing Airflow takes seconds)."""
    with _IMPORT_LOCK:
        if not _NOTIFIERS:
            from airflow.providers.smtp.notifications.smtp import SmtpNotifier

            _NOTIFIERS.update({EMAIL: SmtpNotifier, WEBHOOK: _webhook_class()})
    return _NOTIFIERS


def webhook_notifier(**kwargs: Any):
    """A :class:`WebhookNotifier` for one message."""
    return notifier_classes()[WEBHOOK](**kwargs)


def email_notifier(settings: Settings, subject: str, body: str):
    """The SMTP provider's notifier for one message (plain text kept as preformatted HTML)."""
    SmtpNotifier = notifier_classes()[EMAIL]  # noqa: N806 - a class

    recipients = [a.strip() for a in settings.alert_email_to.split(",") if a.strip()]
    return SmtpNotifier(to=recipients, from_email=settings.alert_email_from, subject=subject,
                        html_content=f"<pre>{html.escape(body)}</pre>", smtp_conn_id=SMTP_CONN_ID)  # fmt: skip


def send(settings: Settings, channel: str, messages: list[dict[str, Any]]) -> None:
    """One send of ``messages`` (one message or a digest) on ``channel``; raises on failure."""
    subject, body = alert_state.render(messages)
    if channel == EMAIL:
        notifier = email_notifier(settings, subject, body)
    elif channel == WEBHOOK:
        notifier = webhook_notifier(url=settings.alert_webhook_url, text=f"{subject}\n{body}",
                                    timeout_s=settings.alert_send_timeout_s)  # fmt: skip
    else:
        raise DeliveryError(f"unknown alert channel {channel!r}")
    # notify(), not __call__: the texts are ours, not Jinja templates to render
    notifier.notify({})


class Deliverer(threading.Thread):
    """Sends one channel's outbox, off the rules loop (one thread per channel, so a channel that
    hangs delays only its own messages). ``lock`` guards ``state``; ``persist`` saves it (called
    under the lock); :meth:`wake` after queueing messages."""

    def __init__(self, settings: Settings, channel: str, state: alert_state.AlertState, lock: threading.Lock,
                 persist: Callable[[], None], sender: Callable[..., None] = send):  # fmt: skip
        super().__init__(name=f"alert-{channel}", daemon=True)
        self.settings = settings
        self.channel = channel
        self.state = state
        self.lock = lock
        self.persist = persist
        self.sender = sender
        self._wake = threading.Event()
        self._stopping = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        self.join(timeout_s)

    def run(self) -> None:
        if self.channel == EMAIL:
            use_smtp_settings(self.settings)
        try:
            notifier_classes()  # at start, not when the first alert is due
        except Exception:  # noqa: BLE001 - the send will fail with it again, logged and retried
            log.exception("alert delivery by %s: loading Airflow's notifiers failed", self.channel)
        while not self._stopping.is_set():
            pause = self.deliver_due(time.time())
            self._wake.wait(pause)
            self._wake.clear()

    def deliver_due(self, now: float) -> float:
        """One send of what is due; returns how long to wait for the next due entry."""
        s, channel = self.settings, self.channel
        with self.lock:
            entries = alert_state.due(self.state, channel, now, s.alert_max_per_hour)
        if entries:
            messages = [e["message"] for e in entries]
            try:
                self.sender(s, channel, messages)
            except Exception as exc:  # noqa: BLE001 - any channel failure is logged and retried later
                error = f"{type(exc).__name__}: {exc}"
                with self.lock:
                    pause = alert_state.failed(self.state, channel, entries, time.time(), error, s.alert_retry_max_s,
                                               s.alert_give_up_s)  # fmt: skip
                    self.persist()
                log.warning("alert delivery by %s failed (%s); %d message(s) tried again in %.0f s",
                            channel, error, len(entries), pause)  # fmt: skip
            else:
                with self.lock:
                    alert_state.delivered(self.state, channel, entries, time.time())
                    self.persist()
                log.info("alert delivery by %s: sent %d message(s): %s", channel, len(messages),
                         ", ".join(f"{m['kind']} {m['key']}" for m in messages))  # fmt: skip
        return self._next_pause(time.time())

    def _next_pause(self, now: float) -> float:
        with self.lock:
            at = alert_state.next_due_at(self.state, self.channel, now, self.settings.alert_max_per_hour)
        return IDLE_S if at is None else max(0.2, min(IDLE_S, at - now))
