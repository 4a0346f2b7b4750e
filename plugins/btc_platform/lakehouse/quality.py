"""Data-quality checks of ``hourly_metrics``: definitions, results and the failure rule.

Spark-free on purpose: Airflow tasks and tests import :class:`DataQualityError` and
:func:`raise_on_errors` without pyspark; ``spark_jobs/quality_transforms.py`` evaluates the
checks on a DataFrame and hands back :class:`CheckResult` objects built here.

Checks (decided for every symbol and hour of a checked range ``[start, end)`` - the rows of the
``data_quality`` table - and summed up into one :class:`CheckResult` per check and range):

============================  ========  ==================================================
check                         severity  fails when
============================  ========  ==================================================
``coverage_below_threshold``  warning   ``coverage < settings.dq_min_coverage``
``high_below_low``            error     ``high < low``
``non_positive_price``        error     open/high/low/close ``<= 0`` or missing
``negative_spread``           error     a spread field (mean/max, absolute or %) ``< 0``
``duplicate_symbol_hour``     error     more than one row for the same (symbol, hour_start)
``hour_gap``                  warning   an expected (symbol, hour) of the range has no row
``volume_incomplete``         warning   a stream hour's volume sums fewer than 60 minutes'
                                        1m klines (``volume_minutes < 60`` or null)
============================  ========  ==================================================

The hourly ingest audit (``spark_jobs/audit_transforms.py``, its own task of the consolidation
DAG) writes one more check to the same table, per symbol and hour of Kafka arrival:

============================  ========  ==================================================
``ingest_complete``           error     a valid message of the hour in Kafka is not in raw_data,
                                        a bad one not in quarantine, or raw_data holds one of
                                        the hour's message_ids more than once
============================  ========  ==================================================

A failing ``error`` check makes the run fail (:func:`raise_on_errors` raises
:class:`DataQualityError` naming the check and the hours); failing warnings are only logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

log = logging.getLogger(__name__)

ERROR = "error"
WARNING = "warning"

COVERAGE = "coverage_below_threshold"
HIGH_BELOW_LOW = "high_below_low"
NON_POSITIVE_PRICE = "non_positive_price"
NEGATIVE_SPREAD = "negative_spread"
DUPLICATE = "duplicate_symbol_hour"
HOUR_GAP = "hour_gap"
VOLUME_INCOMPLETE = "volume_incomplete"
#: The ingest audit's check (not among :data:`CHECKS`: it looks at Kafka and raw_data, not at hourly rows).
INGEST_COMPLETE = "ingest_complete"

#: check name -> (severity, what a failure means); order = report order.
CHECKS: dict[str, tuple[str, str]] = {
    COVERAGE: (WARNING, "coverage below {threshold}"),
    HIGH_BELOW_LOW: (ERROR, "high < low"),
    NON_POSITIVE_PRICE: (ERROR, "open/high/low/close not positive or missing"),
    NEGATIVE_SPREAD: (ERROR, "negative spread"),
    DUPLICATE: (ERROR, "more than one row for the same (symbol, hour)"),
    HOUR_GAP: (WARNING, "no row for the hour (gap in the hour sequence)"),
    VOLUME_INCOMPLETE: (WARNING, "stream hour's volume from fewer than 60 one-minute klines"),
}

#: How many failing (symbol, hour) pairs a result names in its message / report record.
MAX_LISTED = 20


class DataQualityError(RuntimeError):
    """At least one error-severity check failed; the message names each check and hour."""

    def __init__(self, message: str, results: Sequence[CheckResult] = ()):
        super().__init__(message)
        self.results = list(results)


def format_hour(value: datetime) -> str:
    """``2024-01-01T05:00Z`` (UTC)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check over one hour range."""

    check: str
    severity: str
    range_start: datetime
    range_end: datetime
    rows_checked: int
    failed_count: int
    failed: tuple[str, ...] = field(default=())  # "SYMBOL@2024-01-01T05:00Z", at most MAX_LISTED
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.failed_count == 0

    @property
    def status(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def message(self) -> str:
        span = f"[{format_hour(self.range_start)}, {format_hour(self.range_end)})"
        if self.passed:
            return f"{self.check}: ok for {self.rows_checked} row(s) in {span}"
        listed = ", ".join(self.failed)
        more = f" (+{self.failed_count - len(self.failed)} more)" if self.failed_count > len(self.failed) else ""
        return f"{self.check} ({self.severity}): {self.detail} at {listed}{more} in {span}"


def make_result(
    check: str,
    range_start: datetime,
    range_end: datetime,
    rows_checked: int,
    failures: Iterable[tuple[str, datetime]],
    failed_count: int | None = None,
    *,
    threshold: float | None = None,
) -> CheckResult:
    """Build the result of ``check`` from its failing (symbol, hour_start) pairs (sorted, capped)."""
    if check not in CHECKS:
        raise ValueError(f"unknown data-quality check {check!r}")
    severity, detail = CHECKS[check]
    pairs = sorted(set(failures), key=lambda p: (p[1], p[0]))
    listed = tuple(f"{symbol}@{format_hour(hour)}" for symbol, hour in pairs[:MAX_LISTED])
    return CheckResult(
        check=check,
        severity=severity,
        range_start=range_start,
        range_end=range_end,
        rows_checked=rows_checked,
        failed_count=len(pairs) if failed_count is None else failed_count,
        failed=listed,
        detail=detail.format(threshold=threshold),
    )


def log_results(results: Sequence[CheckResult]) -> None:
    for result in results:
        if result.passed:
            log.info("%s", result.message)
        elif result.severity == WARNING:
            log.warning("data-quality warning: %s", result.message)
        else:
            log.error("data-quality error: %s", result.message)


def raise_on_errors(results: Sequence[CheckResult]) -> None:
    """Raise :class:`DataQualityError` if any error-severity check failed."""
    failed = [r for r in results if r.severity == ERROR and not r.passed]
    if failed:
        raise DataQualityError(
            "data-quality check(s) failed: " + "; ".join(r.message for r in failed), failed
        )
