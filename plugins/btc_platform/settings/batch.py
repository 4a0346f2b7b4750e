"""Settings of the scheduled work: the DAGs' schedules and first run, the models, the batch jobs
(consolidation, gap repair, data quality) and table maintenance (part of
:class:`btc_platform.settings.Settings`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, NonNegativeInt, PositiveFloat, PositiveInt


class BatchSettings(BaseModel):
    """Orchestration, models, batch jobs and table maintenance."""

    # ---- Orchestration (Airflow DAGs) -------------------------------------------------------
    schedule_start_date: str = Field(
        default="",
        description="UTC date/time (ISO) from which btc_hourly_consolidation catches up missed hours; "
        "empty means the start of the current UTC day (`make run` pins it to its first start).",
    )
    retrain_schedule: str = Field(default="@daily", description="Cron/preset schedule of btc_retrain.")
    first_run_backfill: bool = Field(
        default=True,
        description="On the first start (the one scheduled run of btc_backfill) with an empty hourly_metrics, "
        "fill it: BTC_FIRST_RUN_SIMULATE_HOURS of simulated history when the producer source is simulate, the "
        "last BTC_FIRST_RUN_BACKFILL_DAYS of Binance klines when it is live (nothing for replay). The "
        "retrain follows on the hourly_metrics asset event. Off: no automatic history.",
    )
    first_run_backfill_days: PositiveInt = Field(
        default=45,
        description="Days of Binance klines the first start backfills in live mode (the retrain's defaults need "
        "1004 hours, almost 42 days, to train and evaluate the LSTM; 1,080 hours are two klines requests).",
    )
    first_run_simulate_hours: PositiveInt = Field(
        default=1200,
        description="Hours of simulated history the first start backfills in simulate mode (the retrain's "
        "defaults need about 1,000: lookback + horizon + 224 training windows + the 672 h test window).",
    )

    # ---- Models (LSTM forecast) -------------------------------------------------------------
    model_tf_threads: PositiveInt = Field(
        default=2, description="TensorFlow intra/inter-op threads for training and prediction."
    )
    model_promotion_policy: Literal["beat_current_and_persistence", "beat_persistence"] = Field(
        default="beat_current_and_persistence",
        description="What a candidate must beat (overall RMSE on the latest test window) to become "
        "the `current` model; a forced promotion bypasses it and is recorded.",
    )

    # ---- Batch jobs (consolidation, backfill, data quality) --------------------------------
    dq_min_coverage: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="Data-quality warning when an hour's coverage (minutes present / 60) is below this.",
    )
    consolidation_max_wait_s: PositiveFloat = Field(
        default=900.0,
        description="How long after an hour's end its consolidation waits for the stream's minute_metrics "
        "watermark to pass it (minute H:59 is only written then); after that the hour is consolidated "
        "with the minutes that exist, and its coverage shows what is missing.",
    )

    hourly_min_stream_coverage: float = Field(
        default=0.95,
        ge=0,
        le=1,
        description="A stream-consolidated hour replaces a backfilled or repaired candle in hourly_metrics "
        "only when its coverage (minutes present / 60) is at least this (or above the candle's); a "
        "candle replaces a stream hour below it. The gap repair fetches candles for hours below it.",
    )
    gap_repair_lookback_hours: NonNegativeInt = Field(
        default=48,
        description="In live mode the hourly DAG repairs missing or under-covered hours of hourly_metrics "
        "this far back from 1-hour klines (0 = no repair).",
    )
    gap_repair_max_requests: PositiveInt = Field(
        default=8,
        description="At most this many klines requests (each one range of hours, one symbol) per gap-repair "
        "run; the rest waits for the next hour (the requests also share BTC_BINANCE_WEIGHT_SHARE).",
    )

    # ---- Table maintenance (btc_maintenance DAG) ----------------------------------------------
    maintenance_vacuum_retention_hours: NonNegativeInt = Field(
        default=168,
        description="VACUUM keeps files a table stopped referencing less than this many hours ago "
        "(time travel and readers of older versions need them). Below Delta's default of 168 h, "
        "Delta's retention check is switched off for that run, and the job logs it.",
    )
    maintenance_airflow_retention_days: PositiveInt = Field(
        default=7,
        description="The maintenance DAG purges Airflow metadata (DAG runs, task instances, logs "
        "table, XComs...) older than this many days with `airflow db clean`.",
    )
