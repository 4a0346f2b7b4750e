"""Monitoring that tells someone: alert rules, their incidents and messages, the channels that
deliver them, and the platform's metrics for Prometheus (docs/monitoring.md).

Modules: ``rules`` (pure functions of observations: firing or not, with what to say),
``state`` (incidents opened once and resolved once, the channels' outboxes with rate limit and
backoff, persisted under ``<data_dir>/monitoring/``), ``channels`` (e-mail through the SMTP
provider's notifier, a Slack-compatible webhook notifier, the delivery threads), ``observe``
(what is read from the platform), ``metrics`` (the Prometheus collector), ``service`` (the
monitor process: loop, delivery, ``/metrics`` on 127.0.0.1), ``prometheus`` (Debian's
Prometheus for the test and the shipped alerting rules).
"""
