"""CoinGecko REST client: bitcoin price, market cap, 24 h volume and change in one currency.

Endpoints: ``/api/v3/simple/price`` (with include_market_cap, include_24hr_vol,
include_24hr_change and include_last_updated_at) and ``/api/v3/coins/markets``.

API keys: a *demo* key is sent as the ``x-cg-demo-api-key`` header to the public base URL
(https://api.coingecko.com); a *pro* key is sent as ``x-cg-pro-api-key`` and pro keys only work
against the pro base URL (https://pro-api.coingecko.com), so set ``BTC_COINGECKO_BASE_URL`` with
``BTC_COINGECKO_API_PLAN=pro``. Without a key no header is sent (public, lowest rate limit).

Cadence and budget: the client is never due more often than ``coingecko_poll_interval_s``, and
the calls left in the month (``coingecko_monthly_call_budget`` minus the calls already made,
persisted in the status directory so restarts do not reset it) are spread evenly over the time
left in the month. Every HTTP attempt, retries included, counts against the budget; when it is
spent :class:`BudgetExhausted` is raised until the next UTC month.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from btc_platform.ingest.clients.base import RestClient
from btc_platform.ingest.http import ExchangeError, HttpClient
from btc_platform.settings import Settings
from btc_platform.status import read_status, write_status

log = logging.getLogger(__name__)

DEMO_KEY_HEADER = "x-cg-demo-api-key"
PRO_KEY_HEADER = "x-cg-pro-api-key"
BUDGET_FILE = "coingecko_budget.json"


class BudgetExhausted(ExchangeError):
    """The monthly call budget is spent; no call until ``until`` (epoch seconds)."""

    def __init__(self, message: str, *, until: float):
        super().__init__(message, endpoint="budget")
        self.until = until


def _month_bounds(now: float) -> tuple[str, float, float]:
    moment = datetime.fromtimestamp(now, tz=UTC)
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.strftime("%Y-%m"), start.timestamp(), nxt.timestamp()


class CallBudget:
    """Monthly call counter persisted atomically as JSON (``month``, ``calls``, ``last_call_at``)."""

    def __init__(self, path: str | Path, monthly_budget: int, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.monthly_budget = monthly_budget
        self.clock = clock
        record = read_status(self.path) or {}
        month, _, _ = _month_bounds(clock())
        if record.get("month") == month:
            self.calls = int(record.get("calls", 0))
            self.last_call_at: float | None = record.get("last_call_at")
        else:
            self.calls, self.last_call_at = 0, record.get("last_call_at")
        self.month = month

    def _roll(self, now: float) -> None:
        month, _, _ = _month_bounds(now)
        if month != self.month:
            log.info("coingecko: new month %s, call budget of %d restored", month, self.monthly_budget)
            self.month, self.calls = month, 0

    @property
    def remaining(self) -> int:
        self._roll(self.clock())
        return max(0, self.monthly_budget - self.calls)

    def spacing_s(self) -> float:
        """Seconds between calls that spreads the remaining budget over the rest of the month."""
        now = self.clock()
        self._roll(now)
        _, _, month_end = _month_bounds(now)
        remaining = self.monthly_budget - self.calls
        if remaining <= 0:
            return month_end - now
        return (month_end - now) / remaining

    def record_call(self) -> None:
        """Count one HTTP attempt (raise ``BudgetExhausted`` instead when none is left)."""
        now = self.clock()
        self._roll(now)
        if self.calls >= self.monthly_budget:
            _, _, month_end = _month_bounds(now)
            raise BudgetExhausted(
                f"coingecko: monthly call budget of {self.monthly_budget} spent; next call in month starting "
                f"{datetime.fromtimestamp(month_end, tz=UTC).isoformat()}",
                until=month_end,
            )
        self.calls += 1
        self.last_call_at = now
        write_status(self.path, {"month": self.month, "calls": self.calls, "last_call_at": now,
                                 "monthly_budget": self.monthly_budget})


class CoinGeckoClient(RestClient):
    """CoinGecko market data for one coin, with its own cadence and the monthly call budget."""

    name = "coingecko"
    base_url_setting = "coingecko_base_url"

    def __init__(
        self,
        http: HttpClient,
        *,
        coin_id: str,
        vs_currency: str,
        poll_interval_s: float,
        budget: CallBudget,
    ):
        super().__init__(http)
        self.coin_id = coin_id
        self.vs_currency = vs_currency.lower()
        self.poll_interval_s = poll_interval_s
        self.budget = budget

    @classmethod
    def headers(cls, settings: Settings) -> dict[str, str]:
        """The API key's header (none without a key), see the module doc."""
        if not settings.coingecko_api_key:
            return {}
        if settings.coingecko_api_plan == "pro" and "pro-api." not in settings.coingecko_base_url:
            log.warning(
                "coingecko: pro plan key with base URL %s; pro keys are served by the pro-api host "
                "(set BTC_COINGECKO_BASE_URL)", settings.coingecko_base_url,
            )
        header = PRO_KEY_HEADER if settings.coingecko_api_plan == "pro" else DEMO_KEY_HEADER
        return {header: settings.coingecko_api_key}

    @classmethod
    def from_http(cls, http: HttpClient, settings: Settings) -> CoinGeckoClient:
        return cls(
            http,
            coin_id=settings.coingecko_coin_id,
            vs_currency=settings.coingecko_vs_currency,
            poll_interval_s=settings.coingecko_poll_interval_s,
            budget=CallBudget(settings.status_dir / BUDGET_FILE, settings.coingecko_monthly_call_budget, http.clock),
        )

    # ---- cadence -------------------------------------------------------------------------
    def effective_interval_s(self) -> float:
        return max(self.poll_interval_s, self.budget.spacing_s())

    def seconds_until_due(self) -> float:
        """0 when a call may be made now, else how long to wait (cadence and budget)."""
        last = self.budget.last_call_at
        if last is None:
            return 0.0 if self.budget.remaining > 0 else self.budget.spacing_s()
        return max(0.0, last + self.effective_interval_s() - self.http.clock())

    # ---- endpoints -----------------------------------------------------------------------
    def _get(self, path: str, params: dict[str, Any]) -> Any:
        return self.http.get_json(path, params, before_attempt=self.budget.record_call)

    def simple_price(self) -> dict[str, Any]:
        """``/api/v3/simple/price`` for the coin with market cap, 24 h volume/change and update time."""
        payload = self._get(
            "/api/v3/simple/price",
            {
                "ids": self.coin_id,
                "vs_currencies": self.vs_currency,
                "include_market_cap": "true",
                "include_24hr_vol": "true",
                "include_24hr_change": "true",
                "include_last_updated_at": "true",
                "precision": "full",
            },
        )
        return self._expect(payload, dict, "simple/price", endpoint="/api/v3/simple/price")

    def coins_markets(self) -> list[dict[str, Any]]:
        """``/api/v3/coins/markets`` for the coin (price, market cap, volume, 24 h change, high/low)."""
        payload = self._get(
            "/api/v3/coins/markets",
            {"vs_currency": self.vs_currency, "ids": self.coin_id, "precision": "full"},
        )
        return self._expect(payload, list, "coins/markets", endpoint="/api/v3/coins/markets")
