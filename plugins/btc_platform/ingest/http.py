"""The polite HTTP layer shared by the exchange clients (Binance, CoinGecko).

Rules, applied to every request made through :class:`HttpClient`:

* connect and read timeouts on every request (``http_connect_timeout_s``/``http_read_timeout_s``);
* 5xx and every transport failure of ``requests`` (timeout, connection refused/reset, SSL,
  truncated body, bad content encoding, too many redirects) and a 2xx body that is not JSON:
  bounded exponential backoff with jitter (``http_backoff_base_s`` doubling up to
  ``http_backoff_max_s``, at most ``http_max_retries`` retries), then
  :class:`ExchangeUnavailable` (:class:`InvalidResponse` for a body that stayed invalid JSON).
  Each failure is counted by kind (:data:`ERROR_KINDS`) in ``counters.errors``, which the
  producer puts in its status record. While failures go on, ``failing`` (:class:`Failing`) says
  since when, of which kind the last one was and when the next attempt is due (None once the
  client gave up: the caller's next poll is the next attempt); the first good answer clears it;
* HTTP 429: wait ``Retry-After`` and slow down (a minimum spacing between requests that doubles
  on every 429 and decays slowly, x0.9 per success);
* HTTP 418 (Binance IP ban): log loudly, remember when the ban ends (``Retry-After``) and raise
  :class:`IPBanned` for every call until then, without touching the network;
* other 4xx: :class:`ClientError`.

Limits survive restarts: with a ``state_path`` (``<status_dir>/http_<name>.json``, next to the
CoinGecko call budget) the ban end, the 429 pause and the request spacing are written atomically
whenever they change and read back by the next process, which therefore makes no call before a
ban (or a 429's ``Retry-After``) ends.

JSON numbers are parsed as ``Decimal`` so that prices are never rounded through ``float``.
``clock`` and ``sleep`` are injected so tests assert on the requested waits without sleeping.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import requests

from btc_platform.status import StatusError, read_status, write_status

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


#: Kinds of failed attempts counted in ``HttpCounters.errors`` (transport kinds first).
ERROR_KINDS = (
    "timeout",  # requests.Timeout (connect or read)
    "ssl",  # requests.exceptions.SSLError
    "connection",  # other requests.ConnectionError (refused, reset, DNS)
    "truncated",  # requests.exceptions.ChunkedEncodingError (body shorter than announced, bad chunk)
    "decoding",  # requests.exceptions.ContentDecodingError (Content-Encoding the body does not match)
    "too_many_redirects",  # requests.exceptions.TooManyRedirects
    "other_transport",  # any other requests.RequestException
    "invalid_json",  # 2xx body that is not JSON
    "http_5xx",
    "http_429",
    "http_418",
)


def transport_error_kind(exc: requests.RequestException) -> str:
    """The :data:`ERROR_KINDS` entry of a ``requests`` exception (most specific class first)."""
    for cls, kind in (
        (requests.Timeout, "timeout"),
        (requests.exceptions.SSLError, "ssl"),
        (requests.ConnectionError, "connection"),
        (requests.exceptions.ChunkedEncodingError, "truncated"),
        (requests.exceptions.ContentDecodingError, "decoding"),
        (requests.TooManyRedirects, "too_many_redirects"),
    ):
        if isinstance(exc, cls):
            return kind
    return "other_transport"


@dataclass
class Failing:
    """An exchange that keeps failing: consecutive failed attempts since the last good answer."""

    kind: str  # the :data:`ERROR_KINDS` entry of the last failure
    reason: str
    since: float  # epoch of the first failure of the run
    last_at: float  # epoch of the last failure
    failures: int = 1
    retry_at: float | None = None  # epoch of the next retry inside this call; None once given up


@dataclass
class HttpCounters:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    failures: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # failed attempts by ERROR_KINDS entry

    def count(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


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


def read_limits(state_path: Path, name: str) -> tuple[float, float, float] | None:
    """(banned_until, pause_until, min_interval_s) persisted by an earlier run, or None when there are none."""
    try:
        record = read_status(state_path)
    except StatusError as exc:
        raise ExchangeError(f"{name}: cannot read the persisted rate-limit state: {exc}") from exc
    if not record:
        return None
    try:
        return (float(record.get("banned_until") or 0.0), float(record.get("pause_until") or 0.0),
                float(record.get("min_interval_s") or 0.0))  # fmt: skip
    except (TypeError, ValueError) as exc:
        raise ExchangeError(f"{state_path}: bad rate-limit state {record!r}: {exc}") from exc


def decode_json(response: requests.Response, endpoint: str) -> Any:
    """The JSON body of ``response`` (numbers as Decimal/int), else :class:`InvalidResponse`."""
    try:
        return json.loads(response.text, parse_float=Decimal)
    except (json.JSONDecodeError, ValueError) as exc:
        raise InvalidResponse(
            f"{endpoint}: invalid JSON in HTTP {response.status_code} body: {exc}; "
            f"body starts {response.text[:120]!r}",
            endpoint=endpoint, status=response.status_code,
        ) from exc


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
        state_path: str | Path | None = None,
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
        self.failing: Failing | None = None
        #: called (no arguments) whenever the ban, the 429 pause or ``failing`` changes, before any wait
        self.on_change: Callable[[], None] | None = None
        self.state_path = Path(state_path) if state_path is not None else None
        self._load_state()

    # ---- limits that survive restarts ------------------------------------------------------
    @property
    def pause_until(self) -> float:
        """Epoch seconds before which no request is sent (a 429's ``Retry-After``)."""
        return self._pause_until

    def _load_state(self) -> None:
        limits = None if self.state_path is None else read_limits(self.state_path, self.name)
        if limits is None:
            return
        self.banned_until, self._pause_until, self.min_interval_s = limits
        now = self.clock()
        if self.banned_until > now:
            log.error(
                "!!! %s: IP ban from an earlier run lasts until %s (%.0fs more): no request before then",
                self.name, datetime.fromtimestamp(self.banned_until, tz=UTC).isoformat(), self.banned_until - now,
            )
        elif self._pause_until > now:
            log.warning("%s: rate-limit pause from an earlier run: %.1fs more, requests spaced by %.2fs",
                        self.name, self._pause_until - now, self.min_interval_s)

    def _save_state(self) -> None:
        if self.state_path is None:
            return

        write_status(self.state_path, {
            "name": self.name,
            "banned_until": self.banned_until,
            "pause_until": self._pause_until,
            "min_interval_s": self.min_interval_s,
            "updated_at": self.clock(),
        })  # fmt: skip

    def waiting_until(self) -> tuple[str, float] | None:
        """(``"ip_ban"`` or ``"rate_limit"``, epoch end) while a ban or 429 pause lasts, else None."""
        now = self.clock()
        if self.banned_until > now:
            return "ip_ban", self.banned_until
        if self._pause_until > now:
            return "rate_limit", self._pause_until
        return None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _failed(self, kind: str, reason: str, retry_in: float | None) -> None:
        now = self.clock()
        retry_at = None if retry_in is None else now + retry_in
        if self.failing is None:
            self.failing = Failing(kind, reason, since=now, last_at=now, retry_at=retry_at)
        else:
            self.failing = Failing(kind, reason, since=self.failing.since, last_at=now,
                                   failures=self.failing.failures + 1, retry_at=retry_at)  # fmt: skip
        self._changed()

    def _recovered(self) -> None:
        if self.failing is not None:
            log.info("%s: answering again after %d failed attempts (last: %s)",
                     self.name, self.failing.failures, self.failing.reason)  # fmt: skip
            self.failing = None
            self._changed()

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
        self._save_state()
        log.warning(
            "%s: rate limited (429), waiting %.1fs and spacing requests by %.2fs",
            self.name, retry_after, self.min_interval_s,
        )

    def _speed_up(self) -> None:
        if self.min_interval_s:
            self.min_interval_s *= SPEED_UP_FACTOR
            if self.min_interval_s < self.backoff_base_s / 8:
                self.min_interval_s = 0.0
                self._save_state()  # back to full speed: the next process need not slow down

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
            invalid: InvalidResponse | None = None
            try:
                response = self.session.get(url, params=params, timeout=self.timeout)
            except requests.RequestException as exc:  # every transport failure: retried below
                kind = transport_error_kind(exc)
                reason = _short_reason(exc)
            else:
                status = response.status_code
                if on_response is not None:
                    on_response(response)
                if 200 <= status < 300:
                    try:
                        payload = decode_json(response, endpoint)
                    except InvalidResponse as exc:
                        invalid, kind, reason = exc, "invalid_json", f"invalid JSON in HTTP {status} body"
                    else:
                        self._speed_up()
                        self._recovered()
                        return payload
                elif status == 418:
                    self.counters.count("http_418")
                    self._ban(response, endpoint, path)
                elif status == 429:
                    self.counters.count("http_429")
                    self.counters.rate_limited += 1
                    retry_after = parse_retry_after(response.headers.get("Retry-After"), self.clock())
                    if retry_after is None:
                        retry_after = self.backoff_delay(attempt)
                    self._slow_down(retry_after)  # also when giving up: the next call (or process) waits
                    self._changed()
                    if attempt >= self.max_retries:
                        self.counters.failures += 1
                        raise ExchangeUnavailable(
                            f"{endpoint}: still rate limited (429) after {attempt} retries",
                            endpoint=path, status=status,
                        )
                    attempt += 1
                    self.counters.retries += 1
                    continue
                elif status < 500:
                    self.counters.failures += 1
                    raise ClientError(
                        f"{endpoint}: HTTP {status}: {response.text[:200]!r}", endpoint=path, status=status
                    )
                else:
                    kind, reason = "http_5xx", f"HTTP {status}"
            self.counters.count(kind)
            if attempt >= self.max_retries:
                self.counters.failures += 1
                self._failed(kind, reason, None)
                log.warning("%s: giving up after %d retries (%s)", endpoint, attempt, reason)
                if invalid is not None:
                    raise invalid
                raise ExchangeUnavailable(
                    f"{endpoint}: unavailable after {attempt} retries ({reason})", endpoint=path, status=status
                )
            delay = self.backoff_delay(attempt)
            self._failed(kind, reason, delay)
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
        self._save_state()
        self._changed()
        self.counters.failures += 1
        until = datetime.fromtimestamp(self.banned_until, tz=UTC).isoformat()
        log.error(
            "!!! %s: HTTP 418 - this IP is BANNED by %s until %s (%.0fs). No request will be sent "
            "before then. Reduce the request rate (poll interval, weight share) before restarting.",
            endpoint, self.name, until, wait,
        )
        raise IPBanned(f"{endpoint}: IP banned (418) until {until}", until=self.banned_until, endpoint=path)

    def close(self) -> None:
        self.session.close()
