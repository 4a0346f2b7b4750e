"""The polite HTTP layer shared by the exchange clients (Binance, CoinGecko).

Rules, applied to every request made through :class:`HttpClient`:

* connect and read timeouts on every request (``http_connect_timeout_s``/``http_read_timeout_s``);
* 5xx, timeouts and connection errors: bounded exponential backoff with jitter
  (``http_backoff_base_s`` doubling up to ``http_backoff_max_s``, at most ``http_max_retries``
  retries), then :class:`ExchangeUnavailable`;
* HTTP 429: wait ``Retry-After`` and slow down (a minimum spacing between requests that doubles
  on every 429 and decays slowly, x0.9 per success);
* HTTP 418 (Binance IP ban): log loudly, remember when the ban ends (``Retry-After``) and raise
  :class:`IPBanned` for every call until then, without touching the network;
* a 2xx body that is not JSON: :class:`InvalidResponse`; other 4xx: :class:`ClientError`.

JSON numbers are parsed as ``Decimal`` so that prices are never rounded through ``float``.
``clock`` and ``sleep`` are injected so tests assert on the requested waits without sleeping.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import requests

log = logging.getLogger(__name__)

#: Binance bans start at 2 minutes; used when a 418 comes without Retry-After.
DEFAULT_BAN_S = 120.0
#: After a 429 the spacing between requests doubles; each success shrinks it by this factor.
SPEED_UP_FACTOR = 0.9


class ExchangeError(Exception):
    """Base of every error raised by the exchange clients."""

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None):
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status


class ExchangeUnavailable(ExchangeError):
    """5xx / timeout / connection error persisted after all retries (or 429 never cleared)."""


class IPBanned(ExchangeError):
    """The exchange banned this IP (HTTP 418); no request is made before ``until`` (epoch s)."""

    def __init__(self, message: str, *, until: float, endpoint: str = "", status: int | None = 418):
        super().__init__(message, endpoint=endpoint, status=status)
        self.until = until


class InvalidResponse(ExchangeError):
    """A response body that is not the JSON the client expects."""


class ClientError(ExchangeError):
    """A non-retryable 4xx answer (bad symbol, bad key, ...)."""


@dataclass
class HttpCounters:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    failures: int = 0


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        log.warning("unparseable Retry-After header %r", value)
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _short_reason(exc: BaseException) -> str:
    """One readable line for a requests transport error (its innermost cause, not the whole chain)."""
    inner: BaseException = exc
    while True:
        nxt = getattr(inner, "reason", None) or (inner.args[0] if inner.args else None)
        if not isinstance(nxt, BaseException) or nxt is inner:
            break
        inner = nxt
    text = str(inner)
    if "): " in text and text.startswith("HTTP"):  # urllib3 prefixes the connection repr
        text = text.split("): ", 1)[1]
    return f"{type(exc).__name__}: {text[:200]}"


class HttpClient:
    """A ``requests.Session`` for one exchange with the politeness rules above."""

    def __init__(
        self,
        base_url: str,
        *,
        name: str,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_retries: int,
        backoff_base_s: float,
        backoff_max_s: float,
        headers: Mapping[str, str] | None = None,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = time.sleep,
        rng: Callable[[], float] = random.random,
    ):
        self.base_url = base_url.rstrip("/")
        self.name = name
        self.timeout = (connect_timeout_s, read_timeout_s)
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.session = session or requests.Session()
        if headers:
            self.session.headers.update(headers)
        self.clock = clock
        self.sleep = sleep
        self.rng = rng
        self.counters = HttpCounters()
        self.min_interval_s = 0.0  # raised by 429s, decays on success
        self.banned_until = 0.0
        self._pause_until = 0.0
        self._last_request_at: float | None = None

    @classmethod
    def from_settings(cls, base_url: str, settings, *, name: str, **kwargs) -> HttpClient:
        return cls(
            base_url,
            name=name,
            connect_timeout_s=settings.http_connect_timeout_s,
            read_timeout_s=settings.http_read_timeout_s,
            max_retries=settings.http_max_retries,
            backoff_base_s=settings.http_backoff_base_s,
            backoff_max_s=settings.http_backoff_max_s,
            **kwargs,
        )

    # ---- waits ---------------------------------------------------------------------------
    def backoff_delay(self, attempt: int) -> float:
        """Delay before retry ``attempt`` (0-based): equal jitter over a doubling, capped base."""
        cap = min(self.backoff_max_s, self.backoff_base_s * (2**attempt))
        return cap / 2 + self.rng() * cap / 2

    def _wait_turn(self) -> None:
        now = self.clock()
        ready = self._pause_until
        if self._last_request_at is not None and self.min_interval_s > 0:
            ready = max(ready, self._last_request_at + self.min_interval_s)
        if ready > now:
            self.sleep(ready - now)

    def _slow_down(self, retry_after: float) -> None:
        self._pause_until = self.clock() + retry_after
        self.min_interval_s = min(self.backoff_max_s, max(self.backoff_base_s, self.min_interval_s * 2))
        log.warning(
            "%s: rate limited (429), waiting %.1fs and spacing requests by %.2fs",
            self.name, retry_after, self.min_interval_s,
        )

    def _speed_up(self) -> None:
        if self.min_interval_s:
            self.min_interval_s *= SPEED_UP_FACTOR
            if self.min_interval_s < self.backoff_base_s / 8:
                self.min_interval_s = 0.0

    # ---- requests ------------------------------------------------------------------------
    def get_json(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        before_attempt: Callable[[], None] | None = None,
        on_response: Callable[[requests.Response], None] | None = None,
    ) -> Any:
        """GET ``base_url + path`` and return the decoded JSON body (numbers as Decimal/int).

        ``before_attempt`` runs before every HTTP attempt (weight throttle, call budget),
        ``on_response`` after every response received (rate-limit headers).
        """
        endpoint = f"{self.name} {path}"
        now = self.clock()
        if now < self.banned_until:
            raise IPBanned(
                f"{endpoint}: IP banned for another {self.banned_until - now:.0f}s, not calling",
                until=self.banned_until, endpoint=path,
            )
        url = self.base_url + path
        attempt = 0
        while True:
            self._wait_turn()
            if before_attempt is not None:
                before_attempt()
            self.counters.requests += 1
            self._last_request_at = self.clock()
            status: int | None = None
            try:
                response = self.session.get(url, params=params, timeout=self.timeout)
            except (requests.Timeout, requests.ConnectionError) as exc:
                reason = _short_reason(exc)
            else:
                status = response.status_code
                if on_response is not None:
                    on_response(response)
                if 200 <= status < 300:
                    self._speed_up()
                    return self._decode(response, endpoint)
                if status == 418:
                    self._ban(response, endpoint, path)
                if status == 429:
                    self.counters.rate_limited += 1
                    retry_after = parse_retry_after(response.headers.get("Retry-After"), self.clock())
                    if retry_after is None:
                        retry_after = self.backoff_delay(attempt)
                    if attempt >= self.max_retries:
                        self.counters.failures += 1
                        raise ExchangeUnavailable(
                            f"{endpoint}: still rate limited (429) after {attempt} retries",
                            endpoint=path, status=status,
                        )
                    self._slow_down(retry_after)
                    attempt += 1
                    self.counters.retries += 1
                    continue
                if status < 500:
                    self.counters.failures += 1
                    raise ClientError(
                        f"{endpoint}: HTTP {status}: {response.text[:200]!r}", endpoint=path, status=status
                    )
                reason = f"HTTP {status}"
            if attempt >= self.max_retries:
                self.counters.failures += 1
                log.warning("%s: giving up after %d retries (%s)", endpoint, attempt, reason)
                raise ExchangeUnavailable(
                    f"{endpoint}: unavailable after {attempt} retries ({reason})", endpoint=path, status=status
                )
            delay = self.backoff_delay(attempt)
            log.warning("%s: %s; retry %d/%d in %.2fs", endpoint, reason, attempt + 1, self.max_retries, delay)
            attempt += 1
            self.counters.retries += 1
            self.sleep(delay)

    def _ban(self, response: requests.Response, endpoint: str, path: str) -> None:
        now = self.clock()
        wait = parse_retry_after(response.headers.get("Retry-After"), now)
        if wait is None:
            wait = DEFAULT_BAN_S
        self.banned_until = now + wait
        self.counters.failures += 1
        until = datetime.fromtimestamp(self.banned_until, tz=UTC).isoformat()
        log.error(
            "!!! %s: HTTP 418 - this IP is BANNED by %s until %s (%.0fs). No request will be sent "
            "before then. Reduce the request rate (poll interval, weight share) before restarting.",
            endpoint, self.name, until, wait,
        )
        raise IPBanned(f"{endpoint}: IP banned (418) until {until}", until=self.banned_until, endpoint=path)

    @staticmethod
    def _decode(response: requests.Response, endpoint: str) -> Any:
        try:
            return json.loads(response.text, parse_float=Decimal)
        except (json.JSONDecodeError, ValueError) as exc:
            raise InvalidResponse(
                f"{endpoint}: invalid JSON in HTTP {response.status_code} body: {exc}; "
                f"body starts {response.text[:120]!r}",
                endpoint=endpoint, status=response.status_code,
            ) from exc

    def close(self) -> None:
        self.session.close()
