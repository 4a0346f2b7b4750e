"""Settings of the producer: its source, the exchanges it polls, their HTTP client, its Kafka
delivery, journal and spool, and the simulator (part of :class:`btc_platform.settings.Settings`)."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator
from pydantic_settings import NoDecode


class IngestSettings(BaseModel):
    """The producer, the exchanges and the simulator."""

    # ---- Producer ---------------------------------------------------------------------------
    producer_source: Literal["live", "simulate", "replay"] = Field(
        default="live",
        description="Where the producer gets data: live exchange APIs, the simulator, or a replay file "
        "(`btc-services run --source` sets it).",
    )
    binance_base_url: str = "https://api.binance.com"
    binance_symbols: Annotated[tuple[str, ...], NoDecode] = ("BTCUSDT",)
    binance_poll_interval_s: PositiveFloat = 1.0
    binance_weight_limit_1m: PositiveInt = 6000
    binance_weight_share: float = Field(default=0.5, gt=0, le=1)
    coingecko_base_url: str = "https://api.coingecko.com"
    coingecko_api_key: str = ""
    coingecko_api_plan: Literal["demo", "pro"] = "demo"
    coingecko_coin_id: str = "bitcoin"
    coingecko_vs_currency: str = "usd"
    coingecko_symbol: str = Field(
        default="BTCUSDT",
        description="Symbol (Kafka key) that CoinGecko messages carry, so that minute metrics "
        "of that Binance symbol pick up the CoinGecko fields.",
    )
    coingecko_poll_interval_s: float = Field(default=60.0, ge=1.0)
    coingecko_monthly_call_budget: PositiveInt = 10000
    http_connect_timeout_s: PositiveFloat = 3.05
    http_read_timeout_s: PositiveFloat = 10.0
    http_max_retries: NonNegativeInt = 5
    http_backoff_base_s: PositiveFloat = 0.5
    http_backoff_max_s: PositiveFloat = 30.0
    producer_status_interval_s: PositiveFloat = 5.0
    producer_flush_timeout_s: PositiveFloat = Field(
        default=20.0,
        description="How long the producer waits for outstanding deliveries on shutdown before it spools them "
        "(keep it below BTC_SUPERVISOR_STOP_TIMEOUT_S, so the spool is written before a SIGKILL).",
    )
    producer_message_timeout_s: PositiveFloat = Field(
        default=300.0,
        description="How long librdkafka keeps retrying an accepted message (e.g. Kafka down) before "
        "reporting it failed (message.timeout.ms).",
    )
    producer_queue_max_messages: PositiveInt = Field(
        default=500000, description="Local producer queue bound; when full the source waits (backpressure)."
    )
    producer_linger_ms: NonNegativeInt = Field(default=5, description="Batching delay (linger.ms).")
    producer_journal: bool = Field(
        default=True,
        description="Write-ahead journal of accepted messages (<data_dir>/spool/producer.wal) until Kafka "
        "confirmed them: a producer killed with SIGKILL loses nothing, its next start re-sends them.",
    )
    producer_spool_max_mb: PositiveFloat = Field(
        default=512.0,
        description="Bound of the producer's spool (<data_dir>/spool, undelivered messages on disk, MiB). When it "
        "is reached (a long Kafka outage) the producer stops polling its source and records the gap (start, end, "
        "reason) in its status record instead of filling the disk; it polls again once the spool drained below "
        "half the bound.",
    )
    producer_accepted_log: str = Field(
        default="",
        description="File to append the message_id of every message the producer accepted (one a line; "
        "audit, used by the fault-injection suite `make chaos`). Empty: off.",
    )
    producer_compression: Literal["none", "lz4", "snappy", "gzip", "zstd"] = Field(
        default="lz4", description="Kafka compression.type of the producer."
    )
    producer_replay_file: str = Field(
        default="", description="Default --replay-file of the replay source (JSONL written by --record)."
    )
    producer_simulate_candles: str = Field(
        default="", description="Default --candles CSV of the simulate source; empty means a random walk."
    )
    producer_speed: float = Field(
        default=1.0, ge=0, description="Default --speed of simulate/replay (0 = as fast as possible)."
    )
    simulate_start_price: PositiveFloat = Field(
        default=30000.0,
        description="Price the simulator's random walk starts from (the producer's --start-price default) and "
        "at which the simulated first-run history ends, so the two join.",
    )


    @field_validator("binance_symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError("at least one symbol is required")
            return tuple(str(v).upper() for v in value)
        return value

    @field_validator("binance_base_url", "coingecko_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"expected an http(s) URL with a host, got {value!r}")
        return value.rstrip("/")
