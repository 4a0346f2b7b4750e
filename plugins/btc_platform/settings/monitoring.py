"""Settings of the monitor and its alerts (``btc_platform.monitoring``, docs/monitoring.md; part of
:class:`btc_platform.settings.Settings`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, PositiveFloat, PositiveInt


class MonitoringSettings(BaseModel):
    """The monitor's metrics exporter, alert rules and alert channels."""

    # ---- Monitoring: metrics exporter and alerts (btc_platform.monitoring, docs/monitoring.md) ----
    monitor_port: PositiveInt = Field(
        default=9464,
        description="Port of the monitor process on 127.0.0.1: Prometheus metrics at /metrics (no login: "
        "loopback only). `make run` starts it; the supervisor keeps it up.",
    )
    monitor_interval_s: PositiveFloat = Field(
        default=10.0,
        description="How often the monitor evaluates the alert rules on the status files, process records, "
        "Kafka lag, disk and spool.",
    )
    monitor_slow_interval_s: PositiveFloat = Field(
        default=60.0,
        description="How often the monitor reads the Delta tables' last commits and Airflow's DAG runs "
        "(REST API) for the table, consolidation, DAG-run, data-quality and forecast rules.",
    )
    alert_email_to: str = Field(
        default="", description="Comma-separated recipients of alert e-mails; empty: no e-mail."
    )
    alert_email_from: str = Field(default="btc-platform@localhost", description="From address of alert e-mails.")
    alert_smtp_host: str = Field(default="127.0.0.1", description="SMTP server of alert e-mails.")
    alert_smtp_port: PositiveInt = Field(default=25, description="Port of the SMTP server.")
    alert_smtp_user: str = Field(default="", description="SMTP login; empty: no authentication.")
    alert_smtp_password: str = Field(default="", description="SMTP password (with BTC_ALERT_SMTP_USER).")
    alert_smtp_security: Literal["starttls", "ssl", "none"] = Field(
        default="starttls",
        description="starttls (upgrade the plain connection), ssl (implicit TLS, usually port 465) or none "
        "(plain text: only for a relay on this machine).",
    )
    alert_webhook_url: str = Field(
        default="",
        description="URL that receives each alert as a POST of Slack-compatible JSON ({\"text\": ...}); "
        "empty: no webhook.",
    )
    alert_send_timeout_s: PositiveFloat = Field(
        default=10.0, description="Connect/read timeout of one alert delivery (SMTP or webhook)."
    )
    alert_retry_max_s: PositiveFloat = Field(
        default=300.0, description="Longest pause between two delivery attempts of an alert (backoff doubles up to it)."
    )
    alert_give_up_s: PositiveFloat = Field(
        default=86400.0,
        description="An alert not delivered after this long is given up on that channel (logged as an error, "
        "shown on the dashboard).",
    )
    alert_max_per_hour: PositiveInt = Field(
        default=20,
        description="Messages per channel and hour; alerts beyond it wait and go out together in one digest.",
    )
    alert_startup_grace_s: PositiveFloat = Field(
        default=300.0,
        description="A producer or stream that has never been started is reported down only this long after the "
        "monitor started (`make run` starts them through Airflow).",
    )
    alert_max_restarts_per_hour: PositiveInt = Field(
        default=3, description="Alert when the producer or the stream was restarted more often in the last hour."
    )
    alert_raw_stale_s: PositiveFloat = Field(
        default=120.0, description="Alert when raw_data got no new row for this long while the producer runs."
    )
    alert_lag_window_s: PositiveFloat = Field(
        default=300.0, description="Kafka lag is 'growing' when it rose over this window and stayed above the minimum."
    )
    alert_lag_min_messages: PositiveInt = Field(
        default=1000, description="Kafka lag below this never alerts (a micro-batch's worth of backlog is normal)."
    )
    alert_consolidation_delay_s: PositiveFloat = Field(
        default=1200.0, description="Alert when an hour is not consolidated this long after its end."
    )
    alert_quarantine_ratio: float = Field(
        default=0.01, gt=0, le=1, description="Alert when more than this share of the records was quarantined ..."
    )
    alert_quarantine_window_s: PositiveFloat = Field(default=600.0, description="... over this window ...")
    alert_quarantine_min_records: PositiveInt = Field(
        default=100, description="... counting only windows with at least this many records."
    )
    alert_forecast_stale_s: PositiveFloat = Field(
        default=7200.0, description="Alert when future_predictions got no new commit for this long."
    )
    alert_disk_free_ratio: float = Field(
        default=0.10, gt=0, lt=1, description="Alert when the data directory's file system has less free space."
    )
    alert_spool_s: PositiveFloat = Field(
        default=300.0, description="Alert when the producer's spool (undelivered messages) is not empty for this long."
    )
